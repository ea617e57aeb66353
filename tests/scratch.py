"""A database of a test's own, on the engine the suite runs on (SQLite file or PostgreSQL).

Tests that need committed data seen by other connections (a real server, migrations run from
an old revision) cannot use the per-test rolled-back transaction: they get a fresh database,
dropped afterwards. On PostgreSQL it is created beside the test database on the same server.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url


def is_postgresql() -> bool:
    return bool(os.environ.get("TEST_DATABASE_URL"))


@contextlib.contextmanager
def scratch_database(tmp_path: Path, label: str) -> Iterator[str]:
    """The URL of an empty database, removed when the block ends."""
    if not is_postgresql():
        yield f"sqlite:///{tmp_path / f'{label}.sqlite'}"
        return
    from config import normalise_database_url

    base = make_url(normalise_database_url(os.environ["TEST_DATABASE_URL"]))
    name = f"{base.database}_{label}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()
