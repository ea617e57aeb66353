"""Locale and time-zone selection for Flask-Babel."""

from __future__ import annotations

from flask import current_app, has_request_context, request, session
from flask_login import current_user


def select_locale() -> str:
    """The user's saved choice, then the session's switcher choice, then the browser, then en."""
    languages = current_app.config["LANGUAGES"]
    if not has_request_context():
        return current_app.config["BABEL_DEFAULT_LOCALE"]
    saved = getattr(current_user, "locale", None) if current_user else None
    if saved in languages:
        return saved
    chosen = session.get("locale")
    if chosen in languages:
        return chosen
    return (
        request.accept_languages.best_match(languages) or current_app.config["BABEL_DEFAULT_LOCALE"]
    )


def select_timezone() -> str:
    return current_app.config["BABEL_DEFAULT_TIMEZONE"]
