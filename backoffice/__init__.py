"""Clinic back office: the application factory."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flask import Flask, redirect, render_template, url_for
from sqlalchemy import event

from config import Config, get_config


def create_app(config: str | type[Config] | dict[str, Any] | None = None) -> Flask:
    """Build an app. ``config`` is a config name, a Config class, or a dict of overrides
    applied on top of the environment's config (as in Flask's tutorial ``test_config``)."""
    from backoffice.security import SafeLoggingFlask

    app = SafeLoggingFlask(__name__, instance_relative_config=True)
    overrides: dict[str, Any] = {}
    if isinstance(config, dict):
        overrides = config
        config_cls = get_config(overrides.pop("ENV_NAME", None))
    elif isinstance(config, type):
        config_cls = config
    else:
        config_cls = get_config(config)
    app.config.from_object(config_cls())
    app.config.update(overrides)
    config_cls.validate(app.config)
    if app.config.get("TRUSTED_PROXY_COUNT"):
        from werkzeug.middleware.proxy_fix import ProxyFix

        n = app.config["TRUSTED_PROXY_COUNT"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)  # type: ignore[method-assign]
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    if not app.config.get("SQLALCHEMY_DATABASE_URI"):
        db_file = Path(app.instance_path) / "backoffice.sqlite"
        app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{db_file}"

    configure_logging(app)
    register_extensions(app)
    register_blueprints(app)
    register_error_handlers(app)
    register_commands(app)
    from backoffice.admin_views import init_admin

    init_admin(app)
    return app


def configure_logging(app: Flask) -> None:
    level = getattr(logging, str(app.config.get("LOG_LEVEL", "INFO")).upper(), logging.INFO)
    logging.getLogger("backoffice").setLevel(level)
    # Flask-Admin logs whole exceptions (with SQL parameters) on failed saves: our views handle
    # those errors themselves, and its logger is kept quiet so no patient value reaches a log.
    logging.getLogger("flask-admin.sqla").setLevel(logging.CRITICAL)
    app.logger.setLevel(level)


def register_extensions(app: Flask) -> None:
    from backoffice.auth import init_login
    from backoffice.extensions import babel, csrf, db, limiter, migrate
    from backoffice.locale import select_locale, select_timezone
    from backoffice.models import register_integrity_guards
    from backoffice.security import register_security

    db.init_app(app)
    migrate.init_app(
        app,
        db,
        directory=str(Path(__file__).resolve().parent.parent / "migrations"),
        render_as_batch=True,
        compare_type=True,
    )
    csrf.init_app(app)
    limiter.init_app(app)
    babel.init_app(app, locale_selector=select_locale, timezone_selector=select_timezone)
    init_login(app)
    register_security(app)
    register_integrity_guards()
    from backoffice.services.audit import register_audit_hooks
    from backoffice.services.care_team import register_care_team_hooks
    from backoffice.services.record_numbers import register_record_number_hooks

    # Before the audit hooks: the rows these add or change are recorded with the rest.
    register_record_number_hooks()
    register_care_team_hooks()

    register_audit_hooks()
    from backoffice.auth.scope import register_scope

    register_scope(app)
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            _tune_sqlite(db.engine)


def _tune_sqlite(engine: Any) -> None:
    """Foreign keys on (SQLite leaves them off), WAL for concurrent readers, and real SAVEPOINTs
    (pysqlite's own transaction handling breaks nested transactions)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN")


def register_blueprints(app: Flask) -> None:
    from backoffice.auth import bp as auth_bp

    app.register_blueprint(auth_bp)
    from backoffice.locale import bp as locale_bp
    from backoffice.locale import template_globals

    app.register_blueprint(locale_bp)
    app.jinja_env.globals.update(template_globals())

    @app.route("/")
    def root() -> Any:
        return redirect(url_for("admin.index"))

    @app.route("/healthz")
    def healthz() -> Any:
        from sqlalchemy import text

        from backoffice.extensions import db

        try:
            db.session.execute(text("SELECT 1"))
        except Exception:  # noqa: BLE001 - the probe only says up or down
            return {"status": "unavailable"}, 503
        return {"status": "ok"}


def register_error_handlers(app: Flask) -> None:
    from flask_wtf.csrf import CSRFError

    def _page(code: int, template: str) -> Any:
        return render_template(template), code

    app.register_error_handler(400, lambda e: _page(400, "errors/400.html"))
    app.register_error_handler(CSRFError, lambda e: _page(400, "errors/400.html"))
    app.register_error_handler(403, lambda e: _page(403, "errors/403.html"))
    app.register_error_handler(404, lambda e: _page(404, "errors/404.html"))
    app.register_error_handler(405, lambda e: _page(405, "errors/405.html"))
    app.register_error_handler(413, lambda e: _page(413, "errors/413.html"))
    app.register_error_handler(429, lambda e: _page(429, "errors/429.html"))

    @app.errorhandler(500)
    def _internal(e: Any) -> Any:
        from flask import Response

        from backoffice.extensions import db

        try:
            db.session.rollback()
            return _page(500, "errors/500.html")
        except Exception:  # noqa: BLE001 - the error page itself failed: a fixed page, no details
            app.logger.error("the 500 page could not be rendered; a plain one was sent")
            return Response(
                "<!DOCTYPE html><title>Error</title><h1>Something went wrong</h1>"
                "<p>Nothing was saved. The error has been logged.</p>",
                status=500,
                mimetype="text/html",
            )


def register_commands(app: Flask) -> None:
    from backoffice.cli import register

    register(app)


__all__ = ["create_app"]
