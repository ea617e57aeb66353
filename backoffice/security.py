"""Per-request security helpers: the Content-Security-Policy nonce and response headers."""

from __future__ import annotations

import secrets

from flask import Flask, Response, g, request


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
    if not request.path.startswith(("/static/", "/admin/static/")):
        # Pages and downloads may carry patient data: never store them in a cache.
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
    return response


def register_security(app: Flask) -> None:
    app.after_request(_set_security_headers)
    app.jinja_env.globals["csp_nonce"] = csp_nonce
