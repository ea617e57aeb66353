"""Per-request security helpers: the Content-Security-Policy nonce and response headers."""

from __future__ import annotations

import secrets
import sys
import traceback
from types import TracebackType
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, g, request
from werkzeug.datastructures import ImmutableMultiDict
from werkzeug.exceptions import BadRequest

#: the query or form argument through which Flask-Admin is told where to go back to
RETURN_ARGUMENT = "url"


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


def is_same_site_path(target: str | None) -> bool:
    r"""A path on this site (``/admin/patient/?page=2``): the only kind of return address the
    app follows (after login, a language change, a save, a delete, a cancel).

    Refused: anything with a scheme or a host (``http:///evil.example``, ``//evil.example``), a
    backslash (browsers read ``/\evil.example`` as ``//evil.example``), and any whitespace or
    control character (browsers drop tabs and line breaks, so ``/\t/evil.example`` would become
    ``//evil.example``).
    """
    if not target or not target.startswith("/") or target.startswith("//"):
        return False
    if "\\" in target or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in target):
        return False
    parts = urlsplit(target)
    return not parts.scheme and not parts.netloc


def forget_unsafe_return_address(name: str = RETURN_ARGUMENT) -> None:
    """Drop a return address that leads off the site from this request's arguments and form.

    Flask-Admin follows ``url`` after a save, an edit, a delete or a bulk action, and puts it
    in its cancel links and the forms' hidden field; its own check lets ``http:///evil.example``
    through. Without the argument every page falls back to its list, as if none was given.
    """
    for source in ("args", "form"):
        values = getattr(request, source)
        if name in values and not all(is_same_site_path(v) for v in values.getlist(name)):
            kept = values.copy()
            kept.poplist(name)
            setattr(request, source, ImmutableMultiDict(kept))
            request.__dict__.pop("values", None)  # rebuilt from args and form on next use


class NulByteRefused(BadRequest):
    """A NUL character in an argument or a form field (the 400 page says so)."""


def refuse_nul_bytes() -> None:
    """A NUL character in an argument or a form field is refused with a 400.

    No text the app stores or searches can hold one (PostgreSQL refuses it in any string), and
    a browser never sends one: it comes from a script or a hostile link.
    """
    fields = [request.args]
    if request.method in ("POST", "PUT", "PATCH"):
        fields.append(request.form)
    for values in fields:
        for key, value in values.items(multi=True):
            if "\x00" in key or "\x00" in value:
                raise NulByteRefused()


def register_security(app: Flask) -> None:
    app.before_request(refuse_nul_bytes)
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
