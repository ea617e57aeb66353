"""Account lockout: 5 failed logins on one account within 15 minutes lock it for 15 minutes.

Counters live in the user row and are changed with single UPDATE statements, so the rule holds
with any number of server processes and machines.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import case, update

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


def record_failure(user: User, now: datetime | None = None) -> bool:
    """Count a failed login; returns True if this failure locked the account."""
    now = now or utcnow()
    max_failures, window, lockout = _settings()
    window_open = User.failed_login_window_start > now - window
    db.session.execute(
        update(User)
        .where(User.id == user.id)
        .values(
            failed_login_count=case((window_open, User.failed_login_count + 1), else_=1),
            failed_login_window_start=case(
                (window_open, User.failed_login_window_start), else_=now
            ),
        )
        .execution_options(synchronize_session=False)
    )
    db.session.execute(
        update(User)
        .where(
            User.id == user.id,
            User.failed_login_count >= max_failures,
            (User.locked_until.is_(None)) | (User.locked_until <= now),
        )
        .values(locked_until=now + lockout, failed_login_count=0)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    db.session.refresh(user)
    return is_locked(user, now)


def record_success(user: User) -> None:
    user.failed_login_count = 0
    user.failed_login_window_start = None
    user.locked_until = None
