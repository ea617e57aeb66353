"""Test fixtures: one app and schema per session, one rolled-back transaction per test.

The database is SQLite (a file in a temporary folder) unless ``TEST_DATABASE_URL`` points at
PostgreSQL. The schema is built by the migrations, so every run also proves they work.
"""

from __future__ import annotations

import contextvars
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.globals import _cv_app, _cv_request
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text

from backoffice import create_app
from backoffice.auth.scope import EVERYTHING, using_scope
from backoffice.extensions import db
from backoffice.models import Role, RoleName, User

PASSWORD = "correct horse battery staple"
_TMP = tempfile.mkdtemp(prefix="backoffice-tests-")


def _database_url() -> str:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        from config import normalise_database_url

        return normalise_database_url(url)  # type: ignore[return-value]
    return f"sqlite:///{Path(_TMP) / 'test.sqlite'}"


def _reset_database(url: str) -> None:
    """Drop everything so the migrations start from nothing."""
    if url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        return
    engine = create_engine(url)
    with engine.begin() as conn:
        # Everything the migrations create (tables, trigger functions, extensions' objects):
        # this is the test database named by TEST_DATABASE_URL, never a real one.
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


class IsolatedClient(FlaskClient):
    """A test client whose every request gets its own app context, as under a real server.

    pytest-flask keeps a request context pushed for each test; Flask reuses an active app
    context for a test-client request, which would share ``g`` (Flask-Login's cached user) and
    the database session between requests and hide real bugs.
    """

    def open(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        def run():  # noqa: ANN202
            _cv_app.set(None)
            _cv_request.set(None)
            try:
                return super(IsolatedClient, self).open(*args, **kwargs)
            finally:
                # pop the preserved contexts here, in the context that pushed them
                self._context_stack.close()

        return contextvars.copy_context().run(run)


@pytest.fixture(scope="session")
def app() -> Iterator[Flask]:
    url = _database_url()
    _reset_database(url)
    app = create_app({"ENV_NAME": "testing", "SQLALCHEMY_DATABASE_URI": url})
    app.test_client_class = IsolatedClient
    with app.app_context():
        from flask_migrate import upgrade

        upgrade()
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture(autouse=True)
def _db_transaction(app: Flask) -> Iterator[None]:
    """Each test runs inside a transaction that is rolled back; commits become SAVEPOINTs.

    The test's own code (setting up records, checking what the database holds) sees every
    record, as a command does; each client request runs in its logged-in user's scope.
    """
    with app.app_context(), using_scope(EVERYTHING):
        engines = db.engines
        originals = dict(engines)
        connection = originals[None].connect()
        transaction = connection.begin()
        engines[None] = connection  # every session binds to this one connection
        db.session.remove()
        factory = db.session.session_factory
        previous_mode = factory.kw.get("join_transaction_mode")
        factory.kw["join_transaction_mode"] = "create_savepoint"
        try:
            yield
        finally:
            db.session.remove()
            factory.kw.pop("join_transaction_mode", None)
            if previous_mode is not None:
                factory.kw["join_transaction_mode"] = previous_mode
            if transaction.is_active:
                transaction.rollback()
            connection.close()
            engines.clear()
            engines.update(originals)


@pytest.fixture
def csrf_app(app: Flask) -> Iterator[Flask]:
    """The same app with CSRF checking on (it is on by default; this makes it explicit)."""
    previous = app.config["WTF_CSRF_ENABLED"]
    app.config["WTF_CSRF_ENABLED"] = True
    yield app
    app.config["WTF_CSRF_ENABLED"] = previous


@pytest.fixture
def no_csrf(app: Flask) -> Iterator[Flask]:
    """Turn CSRF checking off, for tests about something else than CSRF."""
    previous = app.config["WTF_CSRF_ENABLED"]
    app.config["WTF_CSRF_ENABLED"] = False
    yield app
    app.config["WTF_CSRF_ENABLED"] = previous


def make_user(
    email: str,
    *roles: RoleName | str,
    password: str = PASSWORD,
    active: bool = True,
    name: str | None = None,
) -> User:
    role_rows = {r.name: r for r in db.session.scalars(db.select(Role))}
    user = User(
        email=email,
        display_name=name or email.split("@")[0],
        active=active,
        roles=[role_rows[RoleName(r)] for r in roles],
    )
    user.set_password(password)
    db.session.add(user)
    db.session.commit()
    return user


CSRF_RE = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def csrf_token_from(html: str) -> str:
    """Pull the CSRF token out of a rendered form, as a browser would submit it."""
    match = CSRF_RE.search(html) or re.compile(r'value="([^"]+)"[^>]*name="csrf_token"').search(
        html
    )
    assert match, "no csrf_token in the page"
    return match.group(1)


class AuthActions:
    """Log in and out through the real login form (CSRF token included)."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def login(self, email: str, password: str = PASSWORD, follow: bool = False):  # noqa: ANN201
        page = self.client.get("/login")
        token = csrf_token_from(page.get_data(as_text=True))
        return self.client.post(
            "/login",
            data={"email": email, "password": password, "csrf_token": token},
            follow_redirects=follow,
        )

    def logout(self):  # noqa: ANN201
        page = self.client.get("/admin/")
        token = csrf_token_from(page.get_data(as_text=True))
        return self.client.post("/logout", data={"csrf_token": token})

    def as_role(self, *roles: RoleName | str, email: str | None = None) -> User:
        email = email or f"{'-'.join(str(r).lower() for r in roles) or 'norole'}@test.example.com"
        user = make_user(email, *roles)
        response = self.login(email)
        assert response.status_code == 302, response.get_data(as_text=True)[:500]
        return user


@pytest.fixture
def auth(client: FlaskClient) -> AuthActions:
    return AuthActions(client)


def form_token(client: FlaskClient, url: str) -> str:
    """GET a page and return the CSRF token of its form."""
    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return csrf_token_from(response.get_data(as_text=True))
