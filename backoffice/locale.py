"""Language and time zone: Flask-Babel's selectors and the language switcher."""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    has_request_context,
    redirect,
    request,
    session,
    url_for,
)
from flask_babel import get_locale
from flask_login import current_user

bp = Blueprint("locale", __name__)

LANGUAGE_NAMES = {"en": "English", "es": "Español", "fr": "Français"}


def select_locale() -> str:
    """The user's saved choice, then this session's choice, then the browser, then English.

    The language is returned with its regional formats (``es`` -> ``es_MX``, LOCALE_FORMATS);
    its messages come from the language's catalog (``translations/es``).
    """
    return with_formats(select_language())


def select_language() -> str:
    languages = current_app.config["LANGUAGES"]
    if not has_request_context():
        return current_app.config["BABEL_DEFAULT_LOCALE"]
    from backoffice.database import database_unavailable

    # Once the database has failed, the user is not loaded again (the 503 page's language
    # comes from the session or the browser).
    saved = None if database_unavailable() else getattr(current_user, "locale", None)
    if saved in languages:
        return saved
    chosen = session.get("locale")
    if chosen in languages:
        return chosen
    return (
        request.accept_languages.best_match(languages) or current_app.config["BABEL_DEFAULT_LOCALE"]
    )


def with_formats(language: str) -> str:
    return current_app.config.get("LOCALE_FORMATS", {}).get(language, language)


def current_language() -> str:
    """The language code of this request (``es``, not ``es_MX``): the switcher, ``<html lang>``."""
    locale = get_locale()
    return locale.language if locale is not None else "en"


def select_timezone() -> str:
    return current_app.config["BABEL_DEFAULT_TIMEZONE"]


@bp.route("/language", methods=["POST"])
def set_language() -> Any:
    """Remember the chosen language: on the user when logged in, in the session otherwise."""
    from backoffice.extensions import db
    from backoffice.security import is_same_site_path

    lang = request.form.get("lang", "")
    if lang not in current_app.config["LANGUAGES"]:
        abort(400)
    session["locale"] = lang
    if current_user.is_authenticated:
        current_user.locale = lang
        db.session.commit()
    target = request.form.get("next", "")
    return redirect(target if is_same_site_path(target) else url_for("admin.index"))


def datetime_input_value(moment: Any) -> str:
    """A UTC time as a ``datetime-local`` input shows it: the wall time in the display zone."""
    if moment is None:
        return ""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(current_app.config["BABEL_DEFAULT_TIMEZONE"])
    return moment.astimezone(zone).strftime("%Y-%m-%dT%H:%M")


def template_globals() -> dict[str, Any]:
    return {
        "current_locale": current_language,
        "language_names": LANGUAGE_NAMES,
        "display_timezone": lambda: current_app.config["BABEL_DEFAULT_TIMEZONE"],
        "datetime_input_value": datetime_input_value,
    }
