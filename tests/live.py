"""Real servers for the tests that need them: gunicorn with several workers, a database of its
own (a fresh PostgreSQL database beside the test database, or an SQLite file), and a private
PostgreSQL instance a test may stop and start (never the shared server on 5432).

Each server is migrated and given its users through the app's own commands, as e2e/conftest.py
does; the tests talk to it over HTTP with ``Visitor`` (a cookie jar, no redirect following).
"""

from __future__ import annotations

import http.cookiejar
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.scratch import scratch_database

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _pg_bin() -> Path:
    """PG_BIN, else the newest /usr/lib/postgresql/<version>/bin (Debian's layout)."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _pg_bin()
PASSWORD = "live server passphrase 2026"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- databases


@contextmanager
def live_database(name: str) -> Iterator[str]:
    """A database of the server's own, dropped afterwards (``tests/scratch.py``: beside the test
    database on PostgreSQL when TEST_DATABASE_URL is set, else an SQLite file)."""
    folder = Path(tempfile.mkdtemp(prefix=f"bo-live-{name}-"))
    try:
        with scratch_database(folder, name) as url:
            yield url
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class PrivatePostgres:
    """A PostgreSQL instance of the test's own (initdb in a temporary folder, pg_ctl on a free
    port), which the test may stop and start: the shared server on 5432 is never touched."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="bo-live-pg-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.log = self.folder / "postgres.log"
        # initdb and postgres refuse to run as root: as the postgres account, which owns the
        # folder.
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(self.folder, "postgres")
        self._run(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        )

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder}"
        self._run(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.log),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.folder, ignore_errors=True)


# --------------------------------------------------------------------------- the server


@dataclass
class LiveServer:
    base: str
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen
    folder: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def server_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "BACKOFFICE_ENV": "development",
        "DATABASE_URL": database_url,
        "SECRET_KEY": "live-server-secret-key-" + "x" * 40,
        "FLASK_APP": "run",
        "LOGIN_RATE_LIMIT": "10000 per minute",
        "BACKOFFICE_PASSWORD": PASSWORD,
        "BACKOFFICE_OPERATOR": "live-test",
        **extra,
    }
    for name in ("TEST_DATABASE_URL", "RQ_REDIS_URL", "FLASK_DEBUG"):
        env.pop(name, None)
    return env


def flask_command(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(BIN / "flask"), *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done.stdout


def prepare(env: dict[str, str], users: dict[str, str]) -> None:
    """Migrate the database and create ``users`` (email -> role)."""
    flask_command(env, "db", "upgrade")
    for email, role in users.items():
        flask_command(env, "users", "create", email, "--role", role)


@contextmanager
def gunicorn(env: dict[str, str], workers: int = 4, threads: int = 4) -> Iterator[LiveServer]:
    folder = Path(tempfile.mkdtemp(prefix="bo-live-server-"))
    port = free_port()
    log_path = folder / "server.log"
    with open(log_path, "w") as log:  # noqa: PTH123
        process = subprocess.Popen(
            [
                str(BIN / "gunicorn"),
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(workers),
                "--worker-class",
                "gthread",
                "--threads",
                str(threads),
                "--timeout",
                "120",
                "--access-logfile",
                "-",
                "run:app",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(f"http://127.0.0.1:{port}", env, log_path, process, folder)
    try:
        wait_until_up(server)
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def wait_until_up(server: LiveServer, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError("the server stopped:\n" + server.log())
        try:
            with urllib.request.urlopen(server.base + "/static/favicon.svg", timeout=2):  # noqa: S310
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the server did not start:\n" + server.log())


# --------------------------------------------------------------------------- a browser


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        return None


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: str


CSRF_RE = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


@dataclass
class Visitor:
    """One person's browser: its own cookies, no redirect following."""

    base: str
    jar: http.cookiejar.CookieJar = field(default_factory=http.cookiejar.CookieJar)

    def __post_init__(self) -> None:
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect()
        )

    def request(self, path: str, data: dict[str, str] | None = None) -> Answer:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        try:
            with self.opener.open(self.base + path, data=body, timeout=60) as r:
                return Answer(r.status, dict(r.headers), r.read().decode("utf-8", "replace"))
        except urllib.error.HTTPError as e:
            return Answer(e.code, dict(e.headers), e.read().decode("utf-8", "replace"))

    def token(self, path: str = "/login") -> str:
        page = self.request(path)
        match = CSRF_RE.search(page.body)
        assert match, (path, page.status, page.body[:300])
        return match.group(1)

    def login(self, email: str, password: str = PASSWORD, token: str | None = None) -> Answer:
        token = token or self.token()
        return self.request("/login", {"email": email, "password": password, "csrf_token": token})
