"""The account lockout under simultaneous attempts, against a real server: gunicorn with four
worker processes of four threads, on a database of its own (PostgreSQL when the suite runs on
it, else SQLite). Each burst's requests have their CSRF token and are released together.

What the audit trail of the account says afterwards is what the server did: ``LOGIN_FAILED``
(reason ``bad_password_or_inactive``) is a password that was verified and wrong,
``LOGIN_REFUSED_LOCKED`` an attempt refused without verifying its password, ``LOGIN`` a
success. Each outcome is written in the transaction of the state change it records, so the
entries are in the order the changes were committed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import create_engine, select

from backoffice.models import AuditEntry, User
from tests.live import (
    PASSWORD,
    LiveServer,
    Visitor,
    gunicorn,
    live_database,
    prepare,
    server_env,
)

LIMIT = 5  # LOGIN_MAX_FAILURES
ACCOUNTS = {f"burst{i}@clinic.example.com": "operator" for i in range(1, 5)}


@dataclass
class Server:
    base: str
    url: str
    live: LiveServer


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with live_database("burst") as url:
        env = server_env(url)
        prepare(env, ACCOUNTS)
        with gunicorn(env, workers=4, threads=4) as live:
            yield Server(live.base, url, live)


def burst(base: str, attempts: list[tuple[str, str]]) -> list[int]:
    """Fire every (email, password) at once, each from its own browser; their status codes."""
    visitors = [Visitor(base) for _ in attempts]
    tokens = [v.token() for v in visitors]
    start = threading.Barrier(len(attempts))
    statuses: list[int] = [0] * len(attempts)

    def attempt(i: int) -> None:
        email, password = attempts[i]
        start.wait()
        statuses[i] = visitors[i].login(email, password, token=tokens[i]).status

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(len(attempts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return statuses


def outcomes(url: str, email: str) -> tuple[list[str], User]:
    """The account's login entries in the order they were committed, and its row."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            user_id = conn.execute(select(User.id).where(User.email == email)).scalar_one()
            rows = conn.execute(
                select(AuditEntry.action, AuditEntry.details)
                .where(AuditEntry.entity == "user", AuditEntry.entity_id == str(user_id))
                .order_by(AuditEntry.id)
            ).all()
            user = conn.execute(select(User.__table__).where(User.id == user_id)).one()
    finally:
        engine.dispose()
    names = []
    for action, details in rows:
        if action == "LOGIN_FAILED" and (details or {}).get("reason") == "bad_password_or_inactive":
            names.append("verified_wrong")
        elif action in ("LOGIN", "LOGIN_REFUSED_LOCKED", "ACCOUNT_LOCKED"):
            names.append(action)
    return names, user


def test_sixteen_simultaneous_wrong_passwords_verify_five_and_lock(server):
    email = "burst1@clinic.example.com"
    statuses = burst(server.base, [(email, "wrong password one")] * 16)
    assert statuses == [200] * 16  # the login page again, with the same message
    entries, user = outcomes(server.url, email)
    assert entries.count("verified_wrong") == LIMIT
    assert entries.count("LOGIN_REFUSED_LOCKED") == 16 - LIMIT
    assert entries.count("ACCOUNT_LOCKED") == 1
    assert user.locked_until is not None


def test_no_right_password_gets_in_once_the_wrong_ones_have_used_the_limit(server):
    email = "burst2@clinic.example.com"
    first = burst(server.base, [(email, "wrong password two")] * 10)
    assert first == [200] * 10
    mixed = [(email, PASSWORD if i % 3 == 0 else "wrong password two") for i in range(24)]
    statuses = burst(server.base, mixed)
    assert 302 not in statuses
    entries, user = outcomes(server.url, email)
    assert "LOGIN" not in entries
    assert entries.count("verified_wrong") == LIMIT
    assert user.locked_until is not None


def test_a_burst_with_the_right_password_inside_never_logs_in_after_a_lock(server):
    """Successes may come first (each clears the count, as a login does); once a lock is
    committed, no success follows it."""
    email = "burst3@clinic.example.com"
    mixed = [(email, PASSWORD if i in (7, 15, 23) else "wrong password three") for i in range(24)]
    statuses = burst(server.base, mixed)
    entries, _user = outcomes(server.url, email)
    logins = entries.count("LOGIN")
    assert statuses.count(302) == logins
    if "ACCOUNT_LOCKED" in entries:
        assert "LOGIN" not in entries[entries.index("ACCOUNT_LOCKED") :]
    # between two successes (or before the first), at most LIMIT claimed places were wrong
    assert entries.count("verified_wrong") <= LIMIT * (logins + 1)


def test_the_server_logged_no_error(server):
    log = server.live.log()
    for sign in ("Traceback", "Error handling request", "Internal Server Error", "Unhandled"):
        assert sign not in log
