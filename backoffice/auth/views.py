"""Login and logout pages, and how a session cookie is turned back into a user."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user, login_required, login_user, logout_user

from backoffice.auth.forms import LoginForm
from backoffice.auth.passwords import burn_verify_time
from backoffice.extensions import db, login_manager
from backoffice.i18n import _, _l
from backoffice.models import User
from backoffice.models.user import touch_last_login

bp = Blueprint("auth", __name__)


def is_safe_next(target: str | None) -> bool:
    """Only same-site relative paths are followed after login (no open redirect)."""
    if not target:
        return False
    parts = urlsplit(target)
    return not parts.scheme and not parts.netloc and target.startswith("/") and "\\" not in target


def init_login(app: Flask) -> None:
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = _l("Please log in to open this page.")
    login_manager.login_message_category = "info"
    login_manager.session_protection = "basic"

    @login_manager.user_loader
    def load_user(user_key: str) -> User | None:
        # The cookie carries "id:session_token"; a rotated token (logout elsewhere, password
        # change, deactivation) makes every older session worthless.
        user_id, _sep, token = user_key.partition(":")
        if not user_id.isdigit() or not token:
            return None
        user = db.session.get(User, int(user_id))
        if user is None or not user.active or user.session_token != token:
            return None
        return user


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(url_for("admin.index"))
    form = LoginForm()
    if request.method == "GET":
        form.next.data = request.args.get("next", "")
    if form.validate_on_submit():
        email = (form.email.data or "").strip().lower()
        user = db.session.execute(db.select(User).where(User.email == email)).scalar_one_or_none()
        if user is None:
            burn_verify_time(form.password.data or "")
            ok = False
        else:
            ok = user.check_password(form.password.data or "") and user.active
        if ok:
            session.clear()  # nothing from before the login is carried over
            touch_last_login(user)
            db.session.commit()
            login_user(user)
            current_app.logger.info("login user_id=%s addr=%s", user.id, request.remote_addr)
            target = form.next.data
            return redirect(target if is_safe_next(target) else url_for("admin.index"))
        current_app.logger.info("failed login addr=%s", request.remote_addr)
        flash(_("Invalid email or password."), "error")
    return render_template("auth/login.html", form=form)


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    user = current_user._get_current_object()
    user.rotate_session_token()
    db.session.commit()
    logout_user()
    session.clear()
    flash(_("You have been logged out."), "info")
    return redirect(url_for("auth.login"))
