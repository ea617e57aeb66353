"""How the app holds its database: SQLite's settings, a time limit on every statement a web
request runs, and what a user sees when the database fails (a 503 page, never a bare error).

Time limits. Every connection a web request checks out of the pool for its own work carries the
request limit (``REQUEST_STATEMENT_TIMEOUT_SECONDS``): on PostgreSQL a session-level
``SET statement_timeout`` made when the connection is checked out and changed only when the
wanted value changes (a pooled connection keeps it, so a request pays nothing); on SQLite a
progress handler that interrupts a statement past its deadline. "Its own work" is the request's
app context (``limit_this_request`` marks it); connections checked out elsewhere carry no limit:
the commands, the RQ worker, an export's own connection, and a job a request runs in an app
context of its own (an import without RQ). A block that needs a limit of its own sets it for
its transaction only (``statement_time_limit``: ``SET LOCAL`` on PostgreSQL, which overrides the
session's value and ends with the transaction): exports (``EXPORT_STATEMENT_TIMEOUT_SECONDS``) and
imports do.
A statement stopped by its limit reaches the user as the "took too long" page.

Failures. A request that cannot reach the database (it is down, restarting or refusing
connections, or the pool has none to give) is answered 503 with the app's own page, whatever
the door: a before-request check holds every page but static files and ``/healthz`` (which
answers for itself), the login page included; the user loader raises the same 503 instead of
treating the user as logged out; the session's teardown never lets a failed rollback escape to
the server. Logs say what failed (the exception's type) and never its message.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask, current_app, g, has_request_context, request
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import ServiceUnavailable

log = logging.getLogger("backoffice.database")

#: the limit (in ms) a pooled connection carries (PostgreSQL: the one last SET on it)
LIMIT_KEY = "backoffice_statement_timeout_ms"
#: SQLite: when the statement running on the connection must stop (time.monotonic())
DEADLINE_KEY = "backoffice_statement_deadline"
#: SQLite calls the progress handler every this many virtual machine instructions
SQLITE_PROGRESS_STEPS = 20_000
#: PostgreSQL's code for a statement cancelled by statement_timeout (or a cancel request)
QUERY_CANCELED = "57014"
# Endpoints that never need the database (``healthz`` answers for itself).
NO_DATABASE_ENDPOINTS = frozenset({"static", "admin.static", "healthz"})

# The exceptions that mean "the database cannot be used right now".
UNAVAILABLE_ERRORS = (OperationalError, InterfaceError, DisconnectionError, PoolTimeoutError)


class DatabaseUnavailable(ServiceUnavailable):
    """The database cannot be reached: the request is answered with the 503 page."""


# --------------------------------------------------------------------------- classification


def is_timeout(exc: BaseException) -> bool:
    """Whether ``exc`` is a statement stopped by its time limit."""
    orig = getattr(exc, "orig", exc)
    if getattr(orig, "pgcode", None) == QUERY_CANCELED:
        return True
    return isinstance(orig, sqlite3.OperationalError) and "interrupted" in str(orig)


# SQLite reports a statement's mistakes ("no such column") as OperationalError too: only these
# mean that the database file cannot be used right now.
SQLITE_UNAVAILABLE = (
    "database is locked",
    "database table is locked",
    "unable to open database",
    "disk i/o error",
    "database or disk is full",
)


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot be used now (down, restarting, locked, no
    free connection), as opposed to a bug in a statement."""
    if isinstance(exc, DatabaseUnavailable):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if not isinstance(exc, UNAVAILABLE_ERRORS) or is_timeout(exc):
        return False
    orig = getattr(exc, "orig", None)
    if isinstance(orig, sqlite3.Error):
        return str(orig).lower().startswith(SQLITE_UNAVAILABLE)
    return True


def mark_unavailable() -> None:
    """Remember for the rest of the request that the database failed: the error page and the
    user loader then do not try it again (a second failure would escape the error handler)."""
    if has_request_context():
        g.database_unavailable = True


def database_unavailable() -> bool:
    return has_request_context() and bool(g.get("database_unavailable"))


def safe_rollback() -> None:
    """Roll the request's session back; a rollback that fails (the connection is gone) is
    discarded with the connection."""
    from backoffice.extensions import db

    try:
        db.session.rollback()
    except Exception as exc:  # noqa: BLE001 - nothing more to roll back: the connection is gone
        log.warning("rollback failed (%s): the connection is discarded", type(exc).__name__)
        try:
            db.session.invalidate()
        except Exception:  # noqa: BLE001, S110 - nothing left to close
            pass


# --------------------------------------------------------------------------- the request side


def require_database() -> None:
    """Before a request: a page that needs the database answers 503 when it is unreachable.

    Checking a connection out of the pool pings the server (``pool_pre_ping``), so the request
    that would have met the outage half-way meets it here, before anything was done.
    """
    from backoffice.extensions import db

    if request.endpoint in NO_DATABASE_ENDPOINTS:
        return
    limit_this_request()
    try:
        db.session.connection()
    except SQLAlchemyError as exc:
        mark_unavailable()
        safe_rollback()
        log.warning(
            "database unavailable (%s) on %s %s", type(exc).__name__, request.method, request.path
        )
        raise DatabaseUnavailable() from None


def remove_session_safely(exc: BaseException | None) -> None:
    """The app context's teardown: close the session; a close that fails never escapes.

    Flask-SQLAlchemy's own teardown lets the exception of a failed rollback out of the app,
    and the server then answers with its bare "Internal Server Error" (and logs the message).
    """
    from backoffice.extensions import db

    try:
        db.session.remove()
    except Exception as error:  # noqa: BLE001 - the connection is gone; the pool replaces it
        log.warning("closing the database session failed (%s)", type(error).__name__)
        try:
            db.session.invalidate()
        except Exception:  # noqa: BLE001, S110 - nothing left to close
            pass
        db.session.registry.clear()


def install_safe_teardown(app: Flask) -> None:
    """Replace Flask-SQLAlchemy's teardown with ``remove_session_safely``."""
    from backoffice.extensions import db

    app.teardown_appcontext_funcs[:] = [
        f
        for f in app.teardown_appcontext_funcs
        if getattr(f, "__func__", None) is not type(db)._teardown_session
    ]
    app.teardown_appcontext(remove_session_safely)


class MessageFreeLogs(logging.Filter):
    """Keeps a log record's exception type and drops its message and traceback text.

    SQLAlchemy's pool logs "Exception during reset or similar" with the whole exception when a
    connection dies; the message of a database error can quote the values of its statement.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[0] is not None:
            name = record.exc_info[0].__name__
            record.msg = f"{record.getMessage()} ({name})"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_library_logs() -> None:
    for name in ("sqlalchemy.pool", "sqlalchemy.engine"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, MessageFreeLogs) for f in logger.filters):
            logger.addFilter(MessageFreeLogs())


# --------------------------------------------------------------------------- time limits


LIMITED = "backoffice_statement_limits"


def limit_this_request() -> None:
    """Connections this request's app context checks out from now on carry the request limit
    (a job that pushes an app context of its own, as an import without RQ does, has its own
    ``g`` and is not limited)."""
    setattr(g, LIMITED, True)


def _request_limit_ms() -> int:
    if not (has_request_context() and g.get(LIMITED)):
        return 0
    return int(float(current_app.config.get("REQUEST_STATEMENT_TIMEOUT_SECONDS", 0)) * 1000)


def install_statement_timeouts(engine: Engine) -> None:
    """Give every connection checked out for a web request the request's time limit."""
    if event.contains(engine, "checkout", _on_checkout):
        return
    event.listen(engine, "checkout", _on_checkout)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "before_cursor_execute", _sqlite_deadline)


def _on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    wanted = _request_limit_ms()
    if isinstance(dbapi_connection, sqlite3.Connection):
        record.info[LIMIT_KEY] = wanted
        record.info[DEADLINE_KEY] = None
        return
    if record.info.get(LIMIT_KEY, 0) == wanted:
        return
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("SET statement_timeout = %s", (wanted,))
    finally:
        cursor.close()
    # Committed at once: a SET inside a transaction that is rolled back would be undone.
    dbapi_connection.commit()
    record.info[LIMIT_KEY] = wanted


def _sqlite_deadline(
    conn: Connection, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
) -> None:
    limit = conn.info.get(LIMIT_KEY) or 0
    conn.info[DEADLINE_KEY] = time.monotonic() + limit / 1000 if limit else None


def sqlite_progress_handler(info: dict) -> Any:
    """SQLite's progress handler for one connection: non-zero stops the running statement
    (``sqlite3.OperationalError: interrupted``) once it is past its deadline."""

    def handler() -> int:
        deadline = info.get(DEADLINE_KEY)
        return 1 if deadline is not None and time.monotonic() > deadline else 0

    return handler


@contextmanager
def statement_time_limit(conn: Connection, seconds: float) -> Iterator[None]:
    """A time limit for the statements of ``conn`` inside the block (0: none).

    PostgreSQL: ``SET LOCAL``, for the rest of the connection's current transaction (it
    overrides the request's session-level limit and ends with the transaction). SQLite: the
    connection's limit for the block.
    """
    ms = int(seconds * 1000)
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SET LOCAL statement_timeout = {ms}")
        yield
        return
    previous = conn.info.get(LIMIT_KEY)
    conn.info[LIMIT_KEY] = ms
    try:
        yield
    finally:
        conn.info[LIMIT_KEY] = previous


# --------------------------------------------------------------------------- SQLite


def tune_sqlite(engine: Engine) -> None:
    """Foreign keys on (SQLite leaves them off), WAL for concurrent readers, real SAVEPOINTs
    (pysqlite's own transaction handling breaks nested transactions), the functions the
    schema's triggers call, and the progress handler behind the time limits."""
    from backoffice.validation import clinic_name_key

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()
        dbapi_connection.create_function("bo_name_key", 1, clinic_name_key, deterministic=True)
        dbapi_connection.set_progress_handler(
            sqlite_progress_handler(record.info), SQLITE_PROGRESS_STEPS
        )

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN")


def engine_options(uri: str, options: dict[str, Any], connect_timeout: int) -> dict[str, Any]:
    """The engine options for ``uri``: a PostgreSQL connection attempt gives up after
    ``connect_timeout`` seconds (an unreachable host would otherwise hold the request for
    minutes before the 503)."""
    options = dict(options)
    if uri.startswith("postgresql") and connect_timeout:
        given = options.get("connect_args", {})
        options["connect_args"] = {"connect_timeout": connect_timeout, **given}
    return options
