"""Clinic back office: the application factory."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flask import Flask, redirect, render_template, url_for

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
    from backoffice.database import engine_options

    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(
        app.config["SQLALCHEMY_DATABASE_URI"],
        app.config.get("SQLALCHEMY_ENGINE_OPTIONS", {}),
        app.config.get("DB_CONNECT_TIMEOUT_SECONDS", 0),
    )

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
    from backoffice.database import quiet_library_logs

    quiet_library_logs()


def register_extensions(app: Flask) -> None:
    from backoffice.auth import init_login
    from backoffice.database import (
        install_safe_teardown,
        install_statement_timeouts,
        require_database,
        tune_sqlite,
    )
    from backoffice.extensions import babel, csrf, db, limiter, migrate
    from backoffice.locale import select_locale, select_timezone
    from backoffice.models import register_integrity_guards
    from backoffice.security import register_security

    db.init_app(app)
    install_safe_teardown(app)
    # First of the request's checks: a page that needs the database answers 503 without it.
    app.before_request(require_database)
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
            tune_sqlite(db.engine)
        install_statement_timeouts(db.engine)


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

    def _bad_request(e: Any) -> Any:
        from backoffice.i18n import _
        from backoffice.security import NulByteRefused

        message = None
        if isinstance(e, NulByteRefused):
            message = _(
                "The address or the form holds a character that cannot be used (a NUL byte). "
                "Remove it and try again."
            )
        return render_template("errors/400.html", message=message), 400

    app.register_error_handler(400, _bad_request)
    app.register_error_handler(CSRFError, lambda e: _page(400, "errors/400.html"))
    app.register_error_handler(403, lambda e: _page(403, "errors/403.html"))
    app.register_error_handler(404, lambda e: _page(404, "errors/404.html"))
    app.register_error_handler(405, lambda e: _page(405, "errors/405.html"))
    app.register_error_handler(413, lambda e: _page(413, "errors/413.html"))
    app.register_error_handler(429, lambda e: _page(429, "errors/429.html"))

    register_database_error_handlers(app)

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


def register_database_error_handlers(app: Flask) -> None:
    """The database down or too slow: the app's own 503 pages, with the usual headers.

    The pages read nothing from the database: once it has failed, the user loader and the
    language selector stop asking it for the rest of the request (``mark_unavailable``).
    """
    from flask import Response, request

    from backoffice.database import (
        UNAVAILABLE_ERRORS,
        DatabaseUnavailable,
        is_timeout,
        is_unavailable,
        mark_unavailable,
        safe_rollback,
    )

    def _render(template: str, **context: Any) -> Any:
        try:
            return render_template(template, **context)
        except Exception:  # noqa: BLE001 - the page itself failed: a fixed page, no details
            app.logger.error("the %s page could not be rendered; a plain one was sent", template)
            return Response(
                "<!DOCTYPE html><title>Temporarily unavailable</title>"
                "<h1>Temporarily unavailable</h1>"
                "<p>Nothing was changed. Try again in a minute.</p>",
                mimetype="text/html",
            )

    def _unavailable(e: Any) -> Any:
        mark_unavailable()
        safe_rollback()
        response = app.make_response((_render("errors/503.html"), 503))
        response.headers["Retry-After"] = "30"
        return response

    def _database_error(e: Any) -> Any:
        if is_unavailable(e):
            app.logger.warning(
                "database unavailable (%s) on %s %s", type(e).__name__, request.method, request.path
            )
            return _unavailable(e)
        if not is_timeout(e):
            raise e  # a mistake in a statement: the 500 page, logged as one
        safe_rollback()
        app.logger.warning("statement time limit reached on %s %s", request.method, request.path)
        seconds = app.config.get("REQUEST_STATEMENT_TIMEOUT_SECONDS")
        return _render("errors/timeout.html", seconds=seconds), 503

    app.register_error_handler(DatabaseUnavailable, _unavailable)
    for error in UNAVAILABLE_ERRORS:
        app.register_error_handler(error, _database_error)


def register_commands(app: Flask) -> None:
    from backoffice.cli import register

    register(app)


__all__ = ["create_app"]
