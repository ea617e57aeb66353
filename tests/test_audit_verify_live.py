"""``flask audit verify`` while people work: no false alarm, and a real removal still caught.

A database of its own (PostgreSQL when the suite runs on it, else an SQLite file in WAL mode),
migrated by the app's command; four writer threads append entries as every save does (each in
its own transaction, through ``append_entries``) while the command runs a hundred times.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from flask import Flask
from sqlalchemy import func, select, text

from backoffice import create_app
from backoffice.extensions import db
from backoffice.models import AuditEntry
from backoffice.services.audit import Actor, append_entries, make_entry
from tests.live import flask_command, live_database, server_env

WRITERS = 4
RUNS = 100


@pytest.fixture(scope="module")
def trail() -> Iterator[Flask]:
    """An app bound to a migrated database of its own (not the suite's rolled-back one)."""
    with live_database("audit") as url:
        flask_command(server_env(url), "db", "upgrade")
        app = create_app({"ENV_NAME": "testing", "SQLALCHEMY_DATABASE_URI": url})
        yield app
        with app.app_context():
            db.engine.dispose()


def _verify(app: Flask) -> tuple[int, str]:
    """``flask audit verify`` on ``app`` (in its context: the suite's app is current here)."""
    with app.app_context():
        result = app.test_cli_runner().invoke(args=["audit", "verify"])
    return result.exit_code, result.output


def test_a_hundred_verifications_while_four_writers_save_raise_no_alarm(trail):
    with trail.app_context():
        engine = db.engine
    stop = threading.Event()
    written = [0] * WRITERS
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        actor = Actor(label=f"writer-{n}")
        try:
            while not stop.is_set():
                with engine.begin() as conn:
                    entries = [
                        make_entry("UPDATE", "clinic", written[n], actor=actor),
                        make_entry("VIEW", "patient", n, actor=actor),
                    ]
                    append_entries(conn, entries)
                written[n] += 2
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    for t in threads:
        t.start()
    outcomes = []
    try:
        for _run in range(RUNS):
            # each run starts after at least one more save: the walk and the saves interleave
            seen = sum(written)
            while sum(written) == seen and not errors:
                threading.Event().wait(0.001)
            outcomes.append(_verify(trail))
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not errors, errors
    assert sum(written) > 2 * RUNS  # the writers saved between and during the runs
    alarms = [output for code, output in outcomes if code != 0]
    assert alarms == [], alarms[:3]
    assert all("Audit trail intact" in output for _code, output in outcomes)
    code, output = _verify(trail)  # and once at rest, every entry counted
    total = _count(engine)
    assert code == 0 and f"{total} entries verified" in output


def _count(engine) -> int:  # noqa: ANN001
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(AuditEntry)).scalar_one()


def _remove(engine, entry_id: int) -> None:  # noqa: ANN001
    """Delete an entry as only someone with the database's own rights can (the triggers that
    refuse it are put aside for the statement)."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
            conn.execute(text("DELETE FROM audit_log WHERE id = :id"), {"id": entry_id})
            conn.execute(text("ALTER TABLE audit_log ENABLE TRIGGER USER"))
        else:
            names = conn.execute(
                text(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                    "AND tbl_name = 'audit_log'"
                )
            ).all()
            for name, _sql in names:
                conn.execute(text(f'DROP TRIGGER "{name}"'))
            conn.execute(text("DELETE FROM audit_log WHERE id = :id"), {"id": entry_id})
            for _name, sql in names:
                conn.execute(text(sql))


def test_an_entry_slipped_in_after_the_head_is_caught(trail):
    """An INSERT that bypasses the application leaves the head behind: in one snapshot, an
    entry past the head is not one the application appended."""
    with trail.app_context():
        engine = db.engine
    with engine.begin() as conn:
        last = conn.execute(select(func.max(AuditEntry.id))).scalar_one()
        conn.execute(
            AuditEntry.__table__.insert().values(
                at=datetime.now(UTC), action="VIEW", prev_hash="0" * 64, entry_hash="1" * 64
            )
        )
        forged = conn.execute(select(func.max(AuditEntry.id))).scalar_one()
    assert forged > last
    code, output = _verify(trail)
    assert code == 1
    assert f"BROKEN at entry #{forged}" in output and "not appended by the application" in output
    _remove(engine, forged)
    assert _verify(trail)[0] == 0


def test_a_removed_entry_is_still_caught(trail):
    """Runs after the writers: the same command names the entry after a removed one, and says
    that the chain ends early when its last entries are removed."""
    with trail.app_context():
        engine = db.engine
        with engine.begin() as conn:
            entries = [make_entry("VIEW", "patient", i, actor=Actor(label="t")) for i in range(5)]
            append_entries(conn, entries)
    with engine.connect() as conn:
        ids = conn.execute(select(AuditEntry.id).order_by(AuditEntry.id)).scalars().all()
    middle, last = ids[len(ids) // 2], ids[-1]

    _remove(engine, last)
    assert _count(engine) == len(ids) - 1
    code, output = _verify(trail)
    assert code == 1, output
    assert "BROKEN at the end of the chain" in output

    _remove(engine, middle)
    code, output = _verify(trail)
    following = next(i for i in ids if i > middle)
    assert code == 1 and f"BROKEN at entry #{following}" in output
    assert "removed or inserted" in output
