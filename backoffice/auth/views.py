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
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user, login_required, login_user, logout_user
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from backoffice.auth.events import security_event
from backoffice.auth.forms import LoginForm
from backoffice.auth.passwords import burn_verify_time, verify_password
from backoffice.auth.throttle import claim_attempt, record_failure, record_success
from backoffice.database import (
    DatabaseUnavailable,
    database_unavailable,
    is_timeout,
    mark_unavailable,
    safe_rollback,
)
from backoffice.extensions import db, limiter, login_manager
from backoffice.i18n import _, _l
from backoffice.models import User
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
        if not (user_id.isascii() and user_id.isdigit()) or len(user_id) > 9 or not token:
            return None
        if database_unavailable():
            # The error page of this request, after the database failed: no second try (its
            # error would escape Flask's handler), and nobody is treated as logged out.
            return None
        try:
            user = db.session.get(User, int(user_id))
        except SQLAlchemyError as exc:
            # Not "logged out" (the login page would be a lie, and a wrong one to send a user
            # to): the request is answered with the 503 page (or, past its time limit, the
            # "took too long" page).
            mark_unavailable()
            safe_rollback()
            if is_timeout(exc):
                raise
            log.warning("user loader: database unavailable (%s)", type(exc).__name__)
            raise DatabaseUnavailable() from None
        if user is None or not user.active or user.session_token != token:
            return None
        return user

    app.before_request(enforce_session_lifetime)


def enforce_session_lifetime() -> Any:
    """End sessions idle for too long or older than the absolute lifetime.

    ``seen_at`` is the time of the session's last request, to the fraction of a second and
    rewritten by every request (the cookie of a permanent session is sent again with every
    response anyway), so a session ends only once it has been idle for longer than the idle
    time, never before.
    """
    if "_user_id" not in session:
        return None
    now = time.time()
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
    session["seen_at"] = now
    return None


def _user_id_from_session() -> int | None:
    raw = str(session.get("_user_id", "")).partition(":")[0]
    return int(raw) if raw.isdecimal() else None


def _login_rate_limit() -> str:
    return current_app.config.get("LOGIN_RATE_LIMIT", "30 per 15 minutes")


def _login_failed(response: Any) -> bool:
    """The per-address limit counts failed attempts only: behind one shared address (a clinic's
    proxy) a shift of staff logging in does not lock the next one out."""
    return bool(g.get("login_failed"))


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(_login_rate_limit, methods=["POST"], deduct_when=_login_failed)
def login() -> Any:
    if current_user.is_authenticated:
        return redirect(url_for("admin.index"))
    form = LoginForm()
    if request.method == "GET":
        form.next.data = request.args.get("next", "")
    if form.validate_on_submit():
        email = (form.email.data or "").strip().lower()
        password = form.password.data or ""
        account = db.session.execute(
            select(User.id, User.email, User.password_hash, User.active).where(User.email == email)
        ).first()
        # The read ends here: each step of the attempt starts with its own write (SQLite, in
        # WAL mode, refuses a write to a read transaction once another connection has written).
        db.session.rollback()
        if account is not None and _attempt(account, password):
            return _logged_in(db.session.get(User, account.id), form.next.data)
        if account is None:
            burn_verify_time(password)  # same time as a real check
            security_event("login_failed", None, reason="unknown_account")
        g.login_failed = True
        flash(str(LOGIN_FAILED_MESSAGE), "error")
    elif request.method == "POST":
        g.login_failed = True  # a form without its token or its fields is a failure too
    return render_template("auth/login.html", form=form)


def _attempt(account: Any, password: str) -> bool:
    """One login attempt on an existing account (see backoffice/auth/throttle.py); True if
    the user is let in. Every outcome is recorded, with its state change, in one transaction."""
    attempt = claim_attempt(account.id)
    if attempt is None:
        burn_verify_time(password)  # a locked account answers as slowly as a wrong password
        security_event("login_refused_locked", account.id)
        return False
    if not verify_password(account.password_hash, password) or not account.active:
        locked = record_failure(account.id, attempt)
        security_event("login_failed", account.id, commit=False, reason="bad_password_or_inactive")
        if locked:
            security_event("account_locked", account.id, commit=False)
        db.session.commit()
        return False
    if not record_success(account.id):
        # locked by other attempts while this password was being verified
        db.session.rollback()
        security_event("login_refused_locked", account.id)
        return False
    security_event("login", account.id, commit=False, actor_label=account.email)
    db.session.commit()
    return True


def _logged_in(user: User, target: str | None) -> Any:
    language = session.get("locale")  # but the language chosen on the login page
    session.clear()  # a new session: nothing from before the login is carried over
    if language:
        session["locale"] = language
    login_user(user)
    session.permanent = True
    now = time.time()
    session["login_at"] = now
    session["seen_at"] = now
    return redirect(target if is_same_site_path(target) else url_for("admin.index"))


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
