"""Configuration classes, read from the environment (12-factor), one per deployment kind."""

from __future__ import annotations

import os
from datetime import timedelta


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return raw.strip().lower() in {"1", "true", "yes", "on"}


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


def normalise_database_url(url: str | None) -> str | None:
    """Accept the ``postgres://`` scheme that hosting platforms hand out, and pin psycopg2."""
    if not url:
        return url
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url[len("postgresql://") :]
    return url


# Placeholder used by the development default; production refuses it.
INSECURE_DEV_SECRET = "dev-only-insecure-secret-key-change-me"  # noqa: S105


class Config:
    """Settings shared by every environment; each value can be overridden from the environment."""

    ENV_NAME = "base"
    SECRET_KEY = os.environ.get("SECRET_KEY", INSECURE_DEV_SECRET)
    SQLALCHEMY_DATABASE_URI = normalise_database_url(os.environ.get("DATABASE_URL"))
    SQLALCHEMY_ENGINE_OPTIONS: dict = {"pool_pre_ping": True}
    SQLALCHEMY_RECORD_QUERIES = False

    # Domain settings
    PHONE_DEFAULT_REGION = os.environ.get("PHONE_DEFAULT_REGION", "MX")
    BACKOFFICE_NAME = os.environ.get("BACKOFFICE_NAME", "Clinic Back Office")

    # Internationalisation
    BABEL_DEFAULT_LOCALE = "en"
    BABEL_DEFAULT_TIMEZONE = os.environ.get("BACKOFFICE_TIMEZONE", "America/Mexico_City")
    LANGUAGES = ("en", "es", "fr")

    # Sessions and cookies
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = _env_bool("SESSION_COOKIE_SECURE", False)
    REMEMBER_COOKIE_HTTPONLY = True
    SESSION_IDLE_TIMEOUT = timedelta(minutes=_env_int("SESSION_IDLE_MINUTES", 30))
    SESSION_ABSOLUTE_LIFETIME = timedelta(hours=_env_int("SESSION_ABSOLUTE_HOURS", 12))
    PERMANENT_SESSION_LIFETIME = SESSION_ABSOLUTE_LIFETIME

    # Login throttling: per account (in the database) and per address (Flask-Limiter)
    LOGIN_MAX_FAILURES = 5
    LOGIN_FAILURE_WINDOW_MINUTES = 15
    LOGIN_LOCKOUT_MINUTES = 15
    LOGIN_RATE_LIMIT = os.environ.get("LOGIN_RATE_LIMIT", "30 per 15 minutes")
    RATELIMIT_STORAGE_URI = os.environ.get("RATELIMIT_STORAGE_URI", "memory://")
    RATELIMIT_HEADERS_ENABLED = False

    # CSRF: one scheme for the whole app (Flask-WTF), Flask-Admin forms included.
    WTF_CSRF_ENABLED = True
    WTF_CSRF_TIME_LIMIT = None  # tied to the session instead, which has its own lifetime

    # Uploads
    MAX_CONTENT_LENGTH = _env_int("UPLOAD_MAX_BYTES", 50 * 1024 * 1024)
    IMPORT_MAX_ROWS = _env_int("IMPORT_MAX_ROWS", 1_000_000)

    # Flask-Admin: never let a view exception escape with a traceback
    FLASK_ADMIN_RAISE_ON_VIEW_EXCEPTION = False
    FLASK_ADMIN_FLUID_LAYOUT = True

    # Demo data
    DEMO_PASSWORD = os.environ.get("DEMO_PASSWORD", "clinic-demo-2026")

    LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
    HSTS_ENABLED = False

    @classmethod
    def validate(cls) -> None:
        """Refuse settings that are unsafe for this environment (overridden in production)."""


class DevelopmentConfig(Config):
    """Local development: SQLite file in the instance folder unless DATABASE_URL says otherwise."""

    ENV_NAME = "development"
    DEBUG = False  # the debugger is opt-in with `flask run --debug`


class TestingConfig(Config):
    """Test suite: SQLite file per run by default, PostgreSQL when TEST_DATABASE_URL is set."""

    ENV_NAME = "testing"
    TESTING = True
    SQLALCHEMY_DATABASE_URI = normalise_database_url(os.environ.get("TEST_DATABASE_URL"))
    SECRET_KEY = "testing-secret-key-not-for-production-use-0123456789"  # noqa: S105
    # Cheap hashes keep the suite fast; production uses the argon2 library's defaults.
    ARGON2_TIME_COST = 1
    ARGON2_MEMORY_COST = 8 * 1024
    # The suite logs in hundreds of times from one address; tests of the limit lower it.
    LOGIN_RATE_LIMIT = "10000 per minute"
    SERVER_NAME = None


class ProductionConfig(Config):
    """Production: PostgreSQL, secure cookies; refuses to start with unsafe settings."""

    ENV_NAME = "production"
    SESSION_COOKIE_SECURE = _env_bool("SESSION_COOKIE_SECURE", True)
    REMEMBER_COOKIE_SECURE = True
    PREFERRED_URL_SCHEME = "https"
    HSTS_ENABLED = _env_bool("HSTS_ENABLED", True)
    SESSION_COOKIE_NAME = (
        "__Host-session" if _env_bool("SESSION_COOKIE_SECURE", True) else "session"
    )

    @classmethod
    def validate(cls) -> None:
        problems = []
        key = os.environ.get("SECRET_KEY", "")
        if not key or key == INSECURE_DEV_SECRET or len(key) < 32:
            problems.append("SECRET_KEY must be set to a random value of at least 32 characters")
        if not os.environ.get("DATABASE_URL"):
            problems.append("DATABASE_URL must be set")
        if _env_bool("FLASK_DEBUG", False):
            problems.append("FLASK_DEBUG must be off in production")
        if problems:
            raise RuntimeError("Refusing to start: " + "; ".join(problems))


CONFIGS: dict[str, type[Config]] = {
    "development": DevelopmentConfig,
    "testing": TestingConfig,
    "production": ProductionConfig,
}


def get_config(name: str | None = None) -> type[Config]:
    """Pick a configuration class by name, defaulting to BACKOFFICE_ENV or development."""
    name = name or os.environ.get("BACKOFFICE_ENV", "development")
    try:
        return CONFIGS[name]
    except KeyError:
        raise RuntimeError(
            f"Unknown BACKOFFICE_ENV {name!r}; expected one of {sorted(CONFIGS)}"
        ) from None
