"""Login and logout, and how a session cookie is turned back into a user.

A session is tied to the user's ``session_token``: logout, a password change or deactivation
rotate it, and every cookie carrying the old one (a copy included) stops working. Idle and
absolute lifetimes are checked on the server from timestamps inside the signed session.
"""

from __future__ import annotations

import logging
import time
from typing import Any

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
from sqlalchemy.exc import SQLAlchemyError

from backoffice.auth.events import security_event
from backoffice.auth.forms import LoginForm
from backoffice.auth.passwords import burn_verify_time
from backoffice.auth.throttle import is_locked, record_failure, record_success
from backoffice.extensions import db, limiter, login_manager
from backoffice.i18n import _, _l
from backoffice.models import User
from backoffice.models.user import touch_last_login
from backoffice.security import is_same_site_path

bp = Blueprint("auth", __name__)
log = logging.getLogger("backoffice.auth")

LOGIN_FAILED_MESSAGE = _l("Invalid email or password.")


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
        try:
            user = db.session.get(User, int(user_id))
        except SQLAlchemyError as exc:
            # Fail closed: the request goes on as anonymous (login page) instead of raising again
            # from inside the 500 page, which loads the user for its menu and locale; a second
            # error there escapes Flask's handler and reaches the server's log with the first
            # one (and whatever patient values its SQL parameters held) chained to it.
            db.session.rollback()
            log.warning("user loader: database unavailable (%s)", type(exc).__name__)
            return None
        if user is None or not user.active or user.session_token != token:
            return None
        return user

    app.before_request(enforce_session_lifetime)


def enforce_session_lifetime() -> Any:
    """End sessions idle for too long or older than the absolute lifetime."""
    if "_user_id" not in session:
        return None
    now = int(time.time())
    idle = current_app.config["SESSION_IDLE_TIMEOUT"].total_seconds()
    absolute = current_app.config["SESSION_ABSOLUTE_LIFETIME"].total_seconds()
    started = session.get("login_at", 0)
    seen = session.get("seen_at", 0)
    if now - started > absolute or now - seen > idle:
        security_event("session_expired", _user_id_from_session())
        logout_user()
        session.clear()
        flash(_("Your session has ended. Please log in again."), "info")
        return None
    if now - seen >= 30:  # avoid rewriting the cookie on every request
        session["seen_at"] = now
    return None


def _user_id_from_session() -> int | None:
    raw = str(session.get("_user_id", "")).partition(":")[0]
    return int(raw) if raw.isdigit() else None


def _login_rate_limit() -> str:
    return current_app.config.get("LOGIN_RATE_LIMIT", "30 per 15 minutes")


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(_login_rate_limit, methods=["POST"])
def login() -> Any:
    if current_user.is_authenticated:
        return redirect(url_for("admin.index"))
    form = LoginForm()
    if request.method == "GET":
        form.next.data = request.args.get("next", "")
    if form.validate_on_submit():
        email = (form.email.data or "").strip().lower()
        password = form.password.data or ""
        user = db.session.execute(select_user(email)).scalar_one_or_none()
        if user is None:
            burn_verify_time(password)  # same time as a real check
            security_event("login_failed", None, reason="unknown_account")
        elif is_locked(user):
            burn_verify_time(password)
            security_event("login_refused_locked", user.id)
        elif not user.check_password(password) or not user.active:
            locked = record_failure(user)
            security_event("login_failed", user.id, reason="bad_password_or_inactive")
            if locked:
                security_event("account_locked", user.id)
        else:
            language = session.get("locale")  # but the language chosen on the login page
            session.clear()  # a new session: nothing from before the login is carried over
            if language:
                session["locale"] = language
            record_success(user)
            touch_last_login(user)
            db.session.commit()
            login_user(user)
            session.permanent = True
            now = int(time.time())
            session["login_at"] = now
            session["seen_at"] = now
            security_event("login", user.id)
            target = form.next.data
            return redirect(target if is_same_site_path(target) else url_for("admin.index"))
        flash(str(LOGIN_FAILED_MESSAGE), "error")
    return render_template("auth/login.html", form=form)


def select_user(email: str) -> Any:
    return db.select(User).where(User.email == email)


@bp.route("/logout", methods=["POST"])
@login_required
def logout() -> Any:
    user = current_user._get_current_object()
    user.rotate_session_token()  # a copy of this session's cookie is now worthless
    db.session.commit()
    security_event("logout", user.id)
    language = user.locale or session.get("locale")  # the login page stays in their language
    logout_user()
    session.clear()
    if language:
        session["locale"] = language
    flash(_("You have been logged out."), "info")
    return redirect(url_for("auth.login"))
