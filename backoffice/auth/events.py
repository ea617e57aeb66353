"""Security events (logins, logouts, failures, lockouts): logged with user id, address and time,
never with a password or an email typed at the login prompt."""

from __future__ import annotations

import logging

from flask import has_request_context, request

from backoffice.models import utcnow

security_log = logging.getLogger("backoffice.security")


def security_event(event: str, user_id: int | None = None, **details: object) -> None:
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
