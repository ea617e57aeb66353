"""Per-request security helpers: the Content-Security-Policy nonce and response headers."""

from __future__ import annotations

import secrets
import sys
import traceback
from types import TracebackType

from flask import Flask, Response, current_app, g, request


def csp_nonce() -> str:
    """One random nonce per request, used by every inline and external script tag."""
    if "csp_nonce" not in g:
        g.csp_nonce = secrets.token_urlsafe(18)
    return g.csp_nonce


def _set_security_headers(response: Response) -> Response:
    nonce = g.get("csp_nonce")
    script_src = f"'self' 'nonce-{nonce}'" if nonce else "'self'"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; "
        f"script-src {script_src}; "
        "style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; "
        "font-src 'self' data:; "
        "connect-src 'self'; "
        "object-src 'none'; "
        "base-uri 'self'; "
        "form-action 'self'; "
        "frame-ancestors 'none'"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    response.headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
    if current_app.config.get("HSTS_ENABLED"):
        response.headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
    if not request.path.startswith(("/static/", "/admin/static/")):
        # Pages and downloads may carry patient data: never store them in a cache.
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
    return response


def register_security(app: Flask) -> None:
    app.after_request(_set_security_headers)
    app.jinja_env.globals["csp_nonce"] = csp_nonce


class SafeLoggingFlask(Flask):
    """Flask whose unhandled-exception log carries the frames but not the message.

    An exception message can hold patient values (an integrity error quotes the row, a
    ValueError the input); the log gets the exception type, the route and the traceback's
    frames, which is what a developer needs to find the bug.
    """

    def log_exception(
        self,
        exc_info: tuple[type[BaseException], BaseException, TracebackType]
        | tuple[None, None, None],
    ) -> None:
        exc_type, _exc, tb = exc_info if exc_info[0] else sys.exc_info()
        name = exc_type.__name__ if exc_type else "Exception"
        frames = "".join(traceback.format_tb(tb)) if tb else ""
        self.logger.error("Unhandled %s on %s %s\n%s", name, request.method, request.path, frames)
