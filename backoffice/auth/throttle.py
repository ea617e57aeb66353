"""Account lockout: 5 failed logins on one account within 15 minutes lock it for 15 minutes.

The count and the check are one statement, so the rule holds for simultaneous attempts on any
number of server processes and machines. Before a password is verified the attempt claims a
place among the allowed attempts (``claim_attempt``: an UPDATE that adds one to the count only
while the account is not locked and the count is below the limit, and says whether it did);
an attempt that finds no place is refused without its password being verified. A failed
attempt that was the last allowed one locks the account (``record_failure``); a right password
is let in only if no lock was set while it was being verified (``record_success``, again one
conditional UPDATE). A row lock orders each of these statements with the others on the same
account, and the outcome's audit entries are written in the outcome's transaction.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import and_, case, or_, update

from backoffice.extensions import db
from backoffice.models import User, utcnow


def _settings() -> tuple[int, timedelta, timedelta]:
    cfg = current_app.config
    return (
        cfg.get("LOGIN_MAX_FAILURES", 5),
        timedelta(minutes=cfg.get("LOGIN_FAILURE_WINDOW_MINUTES", 15)),
        timedelta(minutes=cfg.get("LOGIN_LOCKOUT_MINUTES", 15)),
    )


def is_locked(user: User, now: datetime | None = None) -> bool:
    now = now or utcnow()
    return user.locked_until is not None and user.locked_until > now


def _not_locked(now: datetime) -> object:
    return or_(User.locked_until.is_(None), User.locked_until <= now)


def claim_attempt(user_id: int, now: datetime | None = None) -> int | None:
    """Take a place among the account's allowed attempts, committed at once so that every
    other attempt sees it. Returns the attempt's number in the window (1 to the limit), or
    None when the account is locked or its attempts are used up: then the password must not
    be verified."""
    now = now or utcnow()
    max_failures, window, _lockout = _settings()
    window_open = and_(
        User.failed_login_window_start.is_not(None), User.failed_login_window_start > now - window
    )
    number = db.session.execute(
        update(User)
        .where(
            User.id == user_id,
            _not_locked(now),
            or_(~window_open, User.failed_login_count < max_failures),
        )
        .values(
            failed_login_count=case((window_open, User.failed_login_count + 1), else_=1),
            failed_login_window_start=case(
                (window_open, User.failed_login_window_start), else_=now
            ),
        )
        .returning(User.failed_login_count)
        .execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    db.session.commit()
    return number


def record_failure(user_id: int, attempt: int, now: datetime | None = None) -> bool:
    """The claimed attempt had a wrong password (its place stays counted). If it was the last
    allowed one and no right password has cleared the count since, the account is locked.
    Returns True if this failure locked it. Not committed: the caller writes the audit entries
    in the same transaction."""
    now = now or utcnow()
    max_failures, _window, lockout = _settings()
    if attempt < max_failures:
        return False
    locked = db.session.execute(
        update(User)
        .where(User.id == user_id, User.failed_login_count >= max_failures, _not_locked(now))
        .values(locked_until=now + lockout, failed_login_count=0, failed_login_window_start=None)
        .returning(User.id)
        .execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    return locked is not None


def record_success(user_id: int, now: datetime | None = None) -> bool:
    """The claimed attempt had the right password: clear the count and let it in, unless the
    account was locked while the password was being verified (then False: refused). Not
    committed: the caller writes the login's audit entry in the same transaction."""
    now = now or utcnow()
    let_in = db.session.execute(
        update(User)
        .where(User.id == user_id, _not_locked(now))
        .values(
            failed_login_count=0,
            failed_login_window_start=None,
            locked_until=None,
            last_login_at=now,
        )
        .returning(User.id)
        .execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    return let_in is not None
