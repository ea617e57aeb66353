"""Browser tests: the app served by a real server process, driven by headless Chromium.

Each session starts gunicorn on 127.0.0.1 with its own fresh SQLite database (migrated and
seeded with the demo set), and every page a journey opens must load without a JavaScript error,
a failed static request or a Content-Security-Policy violation.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
DEMO_PASSWORD = "clinic-demo-2026-e2e"
USERS = {
    "admin": "admin@backoffice.example.com",
    "manager": "manager@backoffice.example.com",
    "operator": "operator@backoffice.example.com",
    "support": "support@backoffice.example.com",
    "doctor": "doctor@backoffice.example.com",  # Dr. Ana Martínez (seeded servers only)
}
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(seed_data: bool) -> Iterator[str]:
    """Migrate a fresh SQLite database, add the demo users (and the demo data), serve it with
    gunicorn on a free port of 127.0.0.1, and stop it afterwards."""
    if not Path(CHROMIUM).exists():
        pytest.exit(
            f"Chromium not found at {CHROMIUM}: install it with `apt-get install chromium` "
            "(Debian's package; Playwright's own browser download is not used).",
            returncode=3,
        )
    workdir = Path(tempfile.mkdtemp(prefix="backoffice-e2e-"))
    port = _free_port()
    env = {
        **os.environ,
        "BACKOFFICE_ENV": "development",
        "DATABASE_URL": f"sqlite:///{workdir / 'e2e.sqlite'}",
        "SECRET_KEY": "e2e-secret-key-" + "x" * 40,
        "DEMO_PASSWORD": DEMO_PASSWORD,
        "BACKOFFICE_PASSWORD": DEMO_PASSWORD,
        "FLASK_APP": "run",
        "LOGIN_RATE_LIMIT": "1000 per minute",
        "IMPORT_UPLOAD_DIR": str(workdir / "uploads"),
    }
    for name in ("TEST_DATABASE_URL", "RQ_REDIS_URL"):
        env.pop(name, None)
    bin_dir = Path(sys.executable).parent
    flask = str(bin_dir / "flask")

    def run(*args: str) -> None:
        subprocess.run([flask, *args], cwd=ROOT, env=env, check=True, capture_output=True)

    run("db", "upgrade")
    if seed_data:
        run("seed", "--demo-users", "--operator", "e2e")
    else:
        for role, email in USERS.items():
            if role != "doctor":  # a doctor user is a seeded doctor: none without the demo data
                run("users", "create", email, "--role", role, "--operator", "e2e")
    log = open(workdir / "server.log", "w")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        [
            str(bin_dir / "gunicorn"),
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--threads",
            "4",
            "--timeout",
            "120",
            "run:app",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2) as r:  # noqa: S310
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.3)
    else:
        proc.terminate()
        raise RuntimeError("the server did not start: see " + str(workdir / "server.log"))
    try:
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def server() -> Iterator[str]:
    """The app with the demo data set (clinics, doctors, the reference and generated patients)."""
    yield from _start_server(seed_data=True)


@pytest.fixture(scope="session")
def empty_server() -> Iterator[str]:
    """The app with the four demo users and no records, for the upload journey."""
    yield from _start_server(seed_data=False)


@pytest.fixture
def base_url(server: str) -> str:
    """The server a test's pages open; a module can point it at ``empty_server``."""
    return server


@pytest.fixture(scope="session")
def browser():  # noqa: ANN201
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class PageProblems:
    """Everything a page must not do: console errors, failed requests, CSP violations."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def watch(self, page, base: str) -> None:  # noqa: ANN001
        def on_console(msg) -> None:  # noqa: ANN001
            if msg.type == "error":
                self.items.append(f"console error: {msg.text}")
            elif "Content Security Policy" in msg.text or "Content-Security-Policy" in msg.text:
                self.items.append(f"CSP: {msg.text}")

        def on_response(response) -> None:  # noqa: ANN001
            if response.status >= 400 and "/static/" in response.url:
                self.items.append(f"static file {response.status}: {response.url}")

        def on_failed(request) -> None:  # noqa: ANN001
            # A request still in flight when the page moves on (a progress poll, the favicon) is
            # cancelled by the browser itself: not a failure of the app.
            if "ERR_ABORTED" in (request.failure or ""):
                return
            if request.url.startswith(base) and request.resource_type != "document":
                self.items.append(f"request failed: {request.url} {request.failure}")
            elif not request.url.startswith(base) and not request.url.startswith("data:"):
                self.items.append(f"outside request: {request.url}")

        page.on("console", on_console)
        page.on("pageerror", lambda exc: self.items.append(f"page error: {exc}"))
        page.on("response", on_response)
        page.on("requestfailed", on_failed)
        page.on(
            "request",
            lambda r: None
            if r.url.startswith((base, "data:", "blob:"))
            else self.items.append(f"outside request: {r.url}"),
        )


@pytest.fixture
def new_page(browser, base_url: str):  # noqa: ANN001, ANN201
    """Open fresh browser contexts (one per user); fail the test on any page problem."""
    contexts = []
    problems = PageProblems()

    def _open(accept_downloads: bool = False, locale: str = "en-US"):  # noqa: ANN202
        context = browser.new_context(
            base_url=base_url,
            accept_downloads=accept_downloads,
            locale=locale,
            viewport={"width": 1400, "height": 1000},
        )
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        problems.watch(page, base_url)
        return page

    yield _open
    for context in contexts:
        context.close()
    assert not problems.items, "\n".join(problems.items)


def login(page, role: str, password: str = DEMO_PASSWORD) -> None:  # noqa: ANN001
    page.goto("/login")
    page.fill("#email", USERS.get(role, role))
    page.fill("#password", password)
    page.click("#login-form button[type=submit]")
    page.wait_for_url("**/admin/**")


def screenshot(page, name: str) -> None:  # noqa: ANN001
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
