"""A database outage against a real server: gunicorn on a PostgreSQL instance of the test's
own, stopped (as a crash: ``pg_ctl stop -m immediate``) and started again while a user is
signed in. Opt in with BACKOFFICE_FAULT_TESTS=1 (``.ci/run`` sets it): it starts a private
PostgreSQL (initdb in a temporary folder, pg_ctl on a free port; never the shared server).

While the database is down every page, the login page included, is the app's own 503 page
with its headers (never the login page, never the server's bare "Internal Server Error"),
static files still load, and the log says what failed without any message. Once it is back,
the same session goes on.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from tests.live import (
    LiveServer,
    PrivatePostgres,
    Visitor,
    flask_command,
    gunicorn,
    prepare,
    server_env,
)

pytestmark = pytest.mark.skipif(
    os.environ.get("BACKOFFICE_FAULT_TESTS") != "1",
    reason="starts and stops a PostgreSQL of its own: opt in with BACKOFFICE_FAULT_TESTS=1",
)

ADMIN = "outage-admin@clinic.example.com"
PAGES = (
    "/admin/",
    "/admin/patient/",
    "/admin/patient/?search=a",
    "/admin/patient/details/?id=1",
    "/admin/study/",
    "/admin/clinic/",
    "/admin/patient-studies/",
    "/admin/patient/export/csv/",
    "/admin/audit/",
    "/admin/bulk-upload/",
)
# What the log must never hold: the server's own error pages, tracebacks, the driver's words.
NEVER_LOGGED = (
    "Traceback",
    "Internal Server Error",
    "Error handling request",
    "Exception during reset",
    "Connection refused",
    "could not connect",
    "server closed the connection",
    "terminating connection",
    "Unhandled",
)


@pytest.fixture(scope="module")
def database() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres()
    try:
        pg.start()
        yield pg
    finally:
        pg.remove()


@pytest.fixture(scope="module")
def server(database: PrivatePostgres) -> Iterator[LiveServer]:
    env = server_env(database.url, LOG_LEVEL="INFO", DB_CONNECT_TIMEOUT_SECONDS="3")
    prepare(env, {ADMIN: "admin"})
    flask_command(env, "seed", "--patients", "5", "--studies", "5")
    with gunicorn(env, workers=2, threads=2) as live:
        yield live


def is_the_503_page(answer) -> bool:  # noqa: ANN001
    return (
        answer.status == 503
        and "Temporarily unavailable" in answer.body
        and "Nothing was changed" in answer.body
        and answer.headers.get("Cache-Control") == "no-store"
        and "frame-ancestors 'none'" in answer.headers.get("Content-Security-Policy", "")
        and answer.headers.get("Retry-After") == "30"
    )


def wait_for(check, seconds: float = 60) -> None:  # noqa: ANN001
    deadline = time.time() + seconds
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError("timed out")


def test_an_outage_is_the_503_page_everywhere_and_the_session_survives_it(database, server):
    user = Visitor(server.base)
    assert user.login(ADMIN).status == 302
    for page in PAGES:
        assert user.request(page).status == 200, page

    database.stop("immediate")
    try:
        for page in PAGES:
            assert is_the_503_page(user.request(page)), page
        stranger = Visitor(server.base)
        assert is_the_503_page(stranger.request("/login"))
        login = stranger.request("/login", {"email": ADMIN, "password": "x" * 12})
        assert is_the_503_page(login)
        health = user.request("/healthz")
        assert health.status == 503 and health.body.strip() == '{"status":"unavailable"}'
        assert user.request("/static/css/backoffice.css").status == 200
    finally:
        database.start()

    wait_for(lambda: user.request("/healthz").status == 200)
    for page in PAGES:
        assert user.request(page).status == 200, page  # still signed in: nobody was sent away
    log = server.log()
    assert "database unavailable (OperationalError)" in log
    for sign in NEVER_LOGGED:
        assert sign not in log, sign


def test_a_restart_under_signed_in_users_loses_no_session(database, server):
    """PostgreSQL restarted cleanly (``-m fast``): the pooled connections are dead, the next
    requests reconnect, and nothing but 503 pages or the pages themselves are answered."""
    user = Visitor(server.base)
    assert user.login(ADMIN).status == 302
    database.stop("fast")
    database.start()
    statuses = {user.request(page).status for page in PAGES}
    assert statuses <= {200, 503}
    wait_for(lambda: all(user.request(page).status == 200 for page in PAGES))
    for sign in NEVER_LOGGED:
        assert sign not in server.log(), sign
