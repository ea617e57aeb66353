"""Configuration classes, read from the environment when an app is built (12-factor).

Each class is instantiated by ``create_app``; its ``__init__`` reads the environment at that
moment (not at import), and ``validate`` checks the final values, overrides included.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from typing import Any


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
    SQLALCHEMY_ENGINE_OPTIONS: dict = {"pool_pre_ping": True}
    SQLALCHEMY_RECORD_QUERIES = False

    # Internationalisation
    BABEL_DEFAULT_LOCALE = "en"
    LANGUAGES = ("en", "es", "fr")
    # The regional formats (dates, numbers) a language is shown with: our Spanish-speaking users
    # are in Mexico (1,234.5 and 3:30 p.m., where Spain's Spanish writes 1.234,5 and 15:30).
    LOCALE_FORMATS = {"es": "es_MX"}

    # Sessions and cookies
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    REMEMBER_COOKIE_HTTPONLY = True

    # Login throttling: per account (in the database) and per address (Flask-Limiter)
    LOGIN_MAX_FAILURES = 5
    LOGIN_FAILURE_WINDOW_MINUTES = 15
    LOGIN_LOCKOUT_MINUTES = 15
    RATELIMIT_HEADERS_ENABLED = False

    # CSRF: one scheme for the whole app (Flask-WTF), Flask-Admin forms included.
    WTF_CSRF_ENABLED = True
    WTF_CSRF_TIME_LIMIT = None  # tied to the session instead, which has its own lifetime

    # Flask-Admin: never let a view exception escape with a traceback
    FLASK_ADMIN_RAISE_ON_VIEW_EXCEPTION = False
    FLASK_ADMIN_FLUID_LAYOUT = True
    HSTS_ENABLED = False

    def __init__(self) -> None:
        env = os.environ.get
        self.SECRET_KEY = env("SECRET_KEY", INSECURE_DEV_SECRET)
        self.SQLALCHEMY_DATABASE_URI = normalise_database_url(env("DATABASE_URL"))
        self.PHONE_DEFAULT_REGION = env("PHONE_DEFAULT_REGION", "MX")
        # Medical record numbers given to patients saved without one: prefix + zero-padded
        # number from a database sequence ("MRN-000042"); never handed out twice.
        self.MRN_PREFIX = env("MRN_PREFIX", "MRN-")
        self.MRN_DIGITS = _env_int("MRN_DIGITS", 6)
        self.BACKOFFICE_NAME = env("BACKOFFICE_NAME", "Clinic Back Office")
        self.BABEL_DEFAULT_TIMEZONE = env("BACKOFFICE_TIMEZONE", "America/Mexico_City")
        self.SESSION_COOKIE_SECURE = _env_bool("SESSION_COOKIE_SECURE", False)
        self.SESSION_IDLE_TIMEOUT = timedelta(minutes=_env_int("SESSION_IDLE_MINUTES", 30))
        self.SESSION_ABSOLUTE_LIFETIME = timedelta(hours=_env_int("SESSION_ABSOLUTE_HOURS", 12))
        self.PERMANENT_SESSION_LIFETIME = self.SESSION_ABSOLUTE_LIFETIME
        self.LOGIN_RATE_LIMIT = env("LOGIN_RATE_LIMIT", "30 per 15 minutes")
        self.RATELIMIT_STORAGE_URI = env("RATELIMIT_STORAGE_URI", "memory://")
        # Number of reverse proxies in front of the app whose X-Forwarded-* headers are trusted
        # (0: none). The login limits key on the client address, so this must be right.
        self.TRUSTED_PROXY_COUNT = _env_int("TRUSTED_PROXY_COUNT", 0)
        self.MAX_CONTENT_LENGTH = _env_int("UPLOAD_MAX_BYTES", 50 * 1024 * 1024)
        self.IMPORT_MAX_ROWS = _env_int("IMPORT_MAX_ROWS", 1_000_000)
        # Uploaded files wait under the instance folder (a folder per user) between preview and
        # confirm; removed after the confirm or after this many minutes.
        self.IMPORT_UPLOAD_DIR = env("IMPORT_UPLOAD_DIR") or None
        self.IMPORT_UPLOAD_TTL_MINUTES = _env_int("IMPORT_UPLOAD_TTL_MINUTES", 120)
        self.IMPORT_USER_QUOTA_BYTES = _env_int("IMPORT_USER_QUOTA_BYTES", 150 * 1024 * 1024)
        # Imports run as RQ jobs on this Redis when set; otherwise the same job runs in-process.
        self.RQ_REDIS_URL = env("RQ_REDIS_URL") or None
        self.RQ_IMPORT_QUEUE = env("RQ_IMPORT_QUEUE", "imports")
        self.IMPORT_JOB_TIMEOUT = _env_int("IMPORT_JOB_TIMEOUT", 3600)
        self.DEMO_PASSWORD = env("DEMO_PASSWORD", "clinic-demo-2026")
        self.LOG_LEVEL = env("LOG_LEVEL", "INFO")
        self.DEBUG = _env_bool("FLASK_DEBUG", False)

    @classmethod
    def validate(cls, config: Mapping[str, Any]) -> None:
        """Refuse settings that are unsafe for this environment (extended in production)."""
        check_record_numbers(config)


class DevelopmentConfig(Config):
    """Local development: SQLite file in the instance folder unless DATABASE_URL says otherwise."""

    ENV_NAME = "development"


class TestingConfig(Config):
    """Test suite: SQLite file per run by default, PostgreSQL when TEST_DATABASE_URL is set."""

    ENV_NAME = "testing"
    TESTING = True
    # Cheap hashes keep the suite fast; production uses the argon2 library's defaults.
    ARGON2_TIME_COST = 1
    ARGON2_MEMORY_COST = 8 * 1024

    def __init__(self) -> None:
        super().__init__()
        self.SQLALCHEMY_DATABASE_URI = normalise_database_url(os.environ.get("TEST_DATABASE_URL"))
        self.SECRET_KEY = "testing-secret-key-not-for-production-use-0123456789"  # noqa: S105
        # The suite logs in hundreds of times from one address; tests of the limit lower it.
        self.LOGIN_RATE_LIMIT = "10000 per minute"
        self.RATELIMIT_STORAGE_URI = "memory://"


class ProductionConfig(Config):
    """Production: PostgreSQL, secure cookies; refuses to start with unsafe settings."""

    ENV_NAME = "production"
    REMEMBER_COOKIE_SECURE = True
    PREFERRED_URL_SCHEME = "https"

    def __init__(self) -> None:
        super().__init__()
        self.SESSION_COOKIE_SECURE = _env_bool("SESSION_COOKIE_SECURE", True)
        self.HSTS_ENABLED = _env_bool("HSTS_ENABLED", True)
        # __Host- cookies are sent only over https, to this host, for the whole site.
        self.SESSION_COOKIE_NAME = "__Host-session" if self.SESSION_COOKIE_SECURE else "session"

    @classmethod
    def validate(cls, config: Mapping[str, Any]) -> None:
        super().validate(config)
        problems = []
        key = config.get("SECRET_KEY") or ""
        if key == INSECURE_DEV_SECRET or len(key) < 32:
            problems.append("SECRET_KEY must be set to a random value of at least 32 characters")
        if not config.get("SQLALCHEMY_DATABASE_URI"):
            problems.append("DATABASE_URL must be set")
        if config.get("DEBUG"):
            problems.append("FLASK_DEBUG must be off in production")
        if problems:
            raise RuntimeError("Refusing to start: " + "; ".join(problems))


def check_record_numbers(config: Mapping[str, Any]) -> None:
    """The MRN format fits the MRN column (64 characters) and reads as a record number."""
    prefix = str(config.get("MRN_PREFIX", "MRN-"))
    digits = config.get("MRN_DIGITS", 6)
    if not isinstance(digits, int) or not 1 <= digits <= 18:
        raise RuntimeError("Refusing to start: MRN_DIGITS must be a whole number from 1 to 18")
    if len(prefix) > 40 or not all(c.isalnum() or c in "-_./" for c in prefix):
        raise RuntimeError(
            "Refusing to start: MRN_PREFIX must be at most 40 letters, digits or - _ . /"
        )


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
