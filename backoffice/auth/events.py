"""Security events (logins, logouts, failures, lockouts): logged with user id, address and time,
never with a password or an email typed at the login prompt, and recorded in the audit trail."""

from __future__ import annotations

import logging

from flask import has_request_context, request

from backoffice.extensions import db
from backoffice.models import utcnow

security_log = logging.getLogger("backoffice.security")


def security_event(
    event: str,
    user_id: int | None = None,
    *,
    commit: bool = True,
    actor_label: str | None = None,
    **details: object,
) -> None:
    """Log the event and record it in the audit trail, committed on its own (a failed login
    leaves its trace even though nothing else is saved), or with ``commit=False`` in the
    caller's transaction (a lockout with the failure that caused it). ``actor_label`` names
    the account when it is the one acting (a login, written before the session is made)."""
    from backoffice.services.audit import Actor, append_entries, current_actor, make_entry

    address = request.remote_addr if has_request_context() else None
    extra = " ".join(f"{k}={v}" for k, v in sorted(details.items()))
    security_log.info(
        "%s user_id=%s addr=%s at=%s%s",
        event,
        user_id if user_id is not None else "-",
        address or "-",
        utcnow().isoformat(timespec="seconds"),
        f" {extra}" if extra else "",
    )
    actor = current_actor()
    # Nobody logged in yet (a login attempt): the account is the one acting. Someone else acting
    # (a command's operator, a logged-in admin) stays the actor; the account is the entity.
    someone_else = actor.user_id is not None or actor.label is not None
    entry_actor = Actor(
        user_id=actor.user_id if someone_else else user_id,
        label=actor.label if someone_else else (actor_label or actor.label),
        ip=actor.ip,
        request_id=actor.request_id,
    )
    append_entries(
        db.session.connection(),
        [
            make_entry(
                event.upper(),
                "user" if user_id is not None else None,
                user_id,
                details=dict(details) or None,
                actor=entry_actor,
            )
        ],
    )
    if commit:
        db.session.commit()
