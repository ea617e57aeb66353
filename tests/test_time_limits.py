"""Every web request's database time is capped, exports have their own cap, a block (an
import) may set its own, and a statement stopped by its cap is a page in words, not a 500."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from backoffice.admin_views.patient import PatientView
from backoffice.database import (
    install_statement_timeouts,
    is_timeout,
    limit_this_request,
    statement_time_limit,
    tune_sqlite,
)
from backoffice.extensions import db
from backoffice.models import RoleName
from backoffice.services import export as export_service
from tests.conftest import AuthActions

SQLITE_SLOW = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000000) "
    "SELECT count(*) FROM c"
)


def slow_statement(dialect: str) -> str:
    """A statement that takes far longer than the limits the tests set (seconds)."""
    return "SELECT pg_sleep(3)" if dialect == "postgresql" else SQLITE_SLOW


@pytest.fixture
def engine(app, tmp_path):  # noqa: ANN001, ANN201
    """An engine of its own, set up as the app sets up its own: on the test database's server
    (PostgreSQL), or an SQLite file of its own (the statements need no table)."""
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    if url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'limits.sqlite'}"
    own = create_engine(url)
    if own.dialect.name == "sqlite":
        tune_sqlite(own)
    install_statement_timeouts(own)
    yield own
    own.dispose()


@contextmanager
def limited() -> Iterator[None]:
    limit_this_request()
    yield


def _limit(conn) -> str:  # noqa: ANN001
    if conn.dialect.name == "postgresql":
        return conn.execute(text("SHOW statement_timeout")).scalar()
    from backoffice.database import LIMIT_KEY

    return str(conn.info.get(LIMIT_KEY))


def test_a_connection_checked_out_for_a_request_carries_the_request_limit(app, engine, monkeypatch):
    monkeypatch.setitem(app.config, "REQUEST_STATEMENT_TIMEOUT_SECONDS", 7)
    with app.test_request_context("/admin/"):
        limit_this_request()  # what the request's first check does
        with engine.connect() as conn:
            assert _limit(conn) in ("7s", "7000")
        with app.app_context(), engine.connect() as conn:  # a job the request runs: its own
            assert _limit(conn) in ("0", "0")
    seen = outside_a_request(lambda: _limit_of(engine))  # a command, a worker, an export
    assert seen in ("0", "0")


def _limit_of(engine) -> str:  # noqa: ANN001
    with engine.connect() as conn:
        return _limit(conn)


def outside_a_request(work):  # noqa: ANN001, ANN201
    """Run ``work`` in a thread of its own: no request context (pytest-flask pushes one for
    every test), as in a command, an RQ worker or an export's helper thread."""
    import threading

    result = []
    thread = threading.Thread(target=lambda: result.append(work()))
    thread.start()
    thread.join(timeout=30)
    return result[0]


def test_a_statement_past_the_request_limit_is_stopped(app, engine, monkeypatch):
    monkeypatch.setitem(app.config, "REQUEST_STATEMENT_TIMEOUT_SECONDS", 0.2)
    with app.test_request_context("/admin/"), limited(), engine.connect() as conn:
        with pytest.raises(OperationalError) as stopped:
            conn.execute(text(slow_statement(conn.dialect.name)))
        assert is_timeout(stopped.value)
        conn.rollback()
        assert conn.execute(text("SELECT 1")).scalar() == 1  # the connection goes on


def test_a_block_sets_its_own_limit_over_the_request_one(app, engine, monkeypatch):
    """What an import inside a request does: its transaction's own limit (SET LOCAL on
    PostgreSQL), and the request's again once the transaction is over."""
    monkeypatch.setitem(app.config, "REQUEST_STATEMENT_TIMEOUT_SECONDS", 0.2)
    with app.test_request_context("/admin/"), limited(), engine.connect() as conn:
        with conn.begin(), statement_time_limit(conn, 60):
            assert _limit(conn) in ("1min", "60000")
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_sleep(0.5)"))  # past the request's limit: allowed
        assert _limit(conn) in ("200ms", "200")


def test_an_export_has_its_own_limit(engine):
    """Exports run on their own connection outside the request: their own cap."""
    statement = text(slow_statement(engine.dialect.name))
    with pytest.raises(OperationalError) as stopped:
        list(export_service.iter_batches(engine, statement, 10, time_limit=0.2))
    assert is_timeout(stopped.value)
    if export_service.uses_copy(engine):
        from sqlalchemy import func, select

        with pytest.raises(Exception) as copy_stopped:  # noqa: PT011 - psycopg2's own error
            list(export_service.csv_chunks(engine, select(func.pg_sleep(3)), 10, time_limit=0.2))
        assert getattr(copy_stopped.value, "pgcode", None) == "57014"


def test_a_page_stopped_by_its_limit_says_so_in_words(app, client, monkeypatch, caplog):
    """A list whose statement runs past its limit: the 'took too long' page, with the usual
    headers, nothing in the log but the fact; the session goes on."""
    AuthActions(client).as_role(RoleName.MANAGER, email="slow@test.example.com")
    monkeypatch.setitem(app.config, "PROPAGATE_EXCEPTIONS", False)

    def slow_list(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        conn = db.session.connection()
        with statement_time_limit(conn, 0.2):
            conn.execute(text(slow_statement(conn.dialect.name)), {"name": "Zamudiotl"})

    caplog.set_level(logging.INFO)
    monkeypatch.setattr(PatientView, "get_list", slow_list)
    response = client.get("/admin/patient/?search=Zamudiotl")
    monkeypatch.undo()
    assert response.status_code == 503
    page = response.get_data(as_text=True)
    assert "This took too long" in page and "nothing was changed" in page
    assert not re.search(r"Traceback|SELECT|pg_sleep|RECURSIVE", page)
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    log = caplog.text
    assert "statement time limit reached on GET /admin/patient/" in log
    assert "Zamudiotl" not in log and "Unhandled" not in log
    assert client.get("/admin/patient/").status_code == 200


def test_the_request_limit_is_sent_only_when_a_pooled_connection_needs_it(app, monkeypatch):
    """PostgreSQL: the SET goes out when a connection's limit must change, and is committed at
    once (a rolled-back transaction would undo it); a pooled connection that has it costs no
    round trip."""
    from backoffice.database import LIMIT_KEY, _on_checkout

    class Connection:
        def __init__(self) -> None:
            self.sent: list[tuple] = []
            self.commits = 0

        def cursor(self):  # noqa: ANN201
            outer = self

            class Cursor:
                def execute(self, sql, params):  # noqa: ANN001, ANN202
                    outer.sent.append((sql, params))

                def close(self) -> None:
                    pass

            return Cursor()

        def commit(self) -> None:
            self.commits += 1

    record = type("Record", (), {"info": {}})()
    monkeypatch.setitem(app.config, "REQUEST_STATEMENT_TIMEOUT_SECONDS", 9)
    conn = Connection()
    with app.test_request_context("/admin/"), limited():
        for _ in range(3):
            _on_checkout(conn, record, None)
    assert conn.sent == [("SET statement_timeout = %s", (9000,))] and conn.commits == 1
    assert record.info[LIMIT_KEY] == 9000
    outside_a_request(lambda: _on_checkout(conn, record, None))  # outside a request: none
    assert conn.sent[-1] == ("SET statement_timeout = %s", (0,)) and conn.commits == 2
