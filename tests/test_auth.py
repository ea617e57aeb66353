"""Passwords, throttling, session lifetimes, logout and security events, as users meet them."""

from __future__ import annotations

import gzip
import logging
import re
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from backoffice.auth.passwords import hash_password, verify_password
from backoffice.extensions import db, limiter
from backoffice.models import Role, RoleName, User, utcnow
from backoffice.services.users import (
    COMMON_PASSWORDS_FILE,
    UserError,
    common_passwords,
    set_password,
    validate_new_password,
)
from tests.conftest import PASSWORD, AuthActions, csrf_token_from, form_token, make_user

ALERT_RE = re.compile(r'role="alert">([^<]*)<')
FAILED = "Invalid email or password."


def alerts(response) -> list[str]:  # noqa: ANN001
    return [m.strip() for m in ALERT_RE.findall(response.get_data(as_text=True))]


def is_sent_to_login(response) -> bool:  # noqa: ANN001
    return response.status_code == 302 and response.headers["Location"].startswith("/login")


def fresh(user: User) -> User:
    db.session.expire_all()
    return db.session.get(User, user.id)


def session_cookie(client: FlaskClient, app: Flask) -> str:
    cookie = client.get_cookie(app.config["SESSION_COOKIE_NAME"])
    assert cookie is not None
    return cookie.value


# --- password hashing and policy -------------------------------------------------------------


def test_passwords_are_stored_as_argon2id_hashes():
    user = make_user("hash@test.example.com", RoleName.SUPPORT)
    stored = db.session.scalar(select(User.password_hash).where(User.id == user.id))
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored
    assert hash_password(PASSWORD) != hash_password(PASSWORD)  # salted
    assert user.check_password(PASSWORD)
    assert not user.check_password(PASSWORD.upper())


@pytest.mark.parametrize("length", [64, 200])
def test_long_passwords_are_accepted_and_verified_in_full(length):
    password = "".join(chr(ord("a") + (i * 7) % 26) for i in range(length - 1)) + "Q"
    assert len(password) == length
    user = make_user("long@test.example.com", RoleName.SUPPORT)
    set_password(user, password)
    db.session.commit()
    user = fresh(user)
    assert user.check_password(password)
    assert not user.check_password(password[:-1] + "R")  # the last character counts
    if length > 72:
        assert not user.check_password(password[:72])  # no bcrypt-style cut at 72 bytes
    assert not user.check_password(password[:-1])


def test_a_200_character_password_logs_in_through_the_form(client):
    password = "a very long passphrase that keeps going " * 5
    assert len(password) == 200
    user = make_user("long-login@test.example.com", RoleName.SUPPORT, password=password)
    auth = AuthActions(client)
    assert alerts(auth.login(user.email, password[:-1] + "X")) == [FAILED]
    response = auth.login(user.email, password)
    assert response.headers["Location"] == "/admin/"


@pytest.mark.parametrize("password", ["", "short", "elevenchars"])
def test_passwords_under_12_characters_are_refused(password):
    with pytest.raises(UserError, match="at least 12 characters"):
        validate_new_password(password)


def test_a_password_from_the_shipped_common_list_is_refused():
    with gzip.open(COMMON_PASSWORDS_FILE, "rt", encoding="utf-8") as fh:
        listed = [line.strip() for line in fh if len(line.strip()) >= 12]
    assert "1qaz2wsx3edc" in listed
    user = make_user("common@test.example.com", RoleName.SUPPORT)
    for candidate in ("1qaz2wsx3edc", "1QAZ2WSX3EDC", listed[-1]):
        with pytest.raises(UserError, match="too common"):
            set_password(user, candidate)
    assert fresh(user).check_password(PASSWORD)  # unchanged


@pytest.mark.parametrize(
    "password",
    [
        "twelve chars",  # spaces and lower case only
        "qwxzvbnmlkjh",  # letters only
        "948271635049",  # digits only
        "ÄÖÜäöüßéèêñç",  # no ASCII at all
    ],
)
def test_no_composition_rules(password):
    assert password.lower() not in common_passwords()
    assert validate_new_password(password) == password
    user = make_user("compose@test.example.com", RoleName.SUPPORT)
    set_password(user, password)
    assert user.check_password(password)


def test_hash_verification_refuses_junk():
    assert not verify_password(None, PASSWORD)
    assert not verify_password("", PASSWORD)
    assert not verify_password("not-a-hash", PASSWORD)


# --- login throttling ------------------------------------------------------------------------


def test_five_failures_lock_the_account_for_15_minutes(client):
    user = make_user("lock@test.example.com", RoleName.OPERATOR)
    auth = AuthActions(client)
    for _attempt in range(4):
        assert alerts(auth.login(user.email, "wrong password!")) == [FAILED]
    assert fresh(user).locked_until is None
    assert alerts(auth.login(user.email, "wrong password!")) == [FAILED]

    locked_until = fresh(user).locked_until
    assert locked_until is not None
    assert timedelta(minutes=14) < locked_until - utcnow() <= timedelta(minutes=15)

    # the right password is refused while the lock holds, with the same message
    response = auth.login(user.email, PASSWORD)
    assert response.status_code == 200
    assert alerts(response) == [FAILED]
    assert is_sent_to_login(client.get("/admin/"))
    assert fresh(user).last_login_at is None

    # once the lock has expired, the right password works
    db.session.execute(
        update(User).where(User.id == user.id).values(locked_until=utcnow() - timedelta(seconds=1))
    )
    db.session.commit()
    response = auth.login(user.email, PASSWORD)
    assert response.headers["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200
    after = fresh(user)
    assert after.locked_until is None and after.failed_login_count == 0


def test_a_successful_login_clears_earlier_failures(client):
    user = make_user("reset@test.example.com", RoleName.OPERATOR)
    auth = AuthActions(client)
    for _attempt in range(4):
        auth.login(user.email, "wrong password!")
    assert fresh(user).failed_login_count == 4
    assert auth.login(user.email, PASSWORD).status_code == 302
    assert fresh(user).failed_login_count == 0
    auth.logout()
    for _attempt in range(4):
        auth.login(user.email, "wrong password!")
    assert fresh(user).locked_until is None  # 4 + 4 failures with a success between: no lock


def test_the_message_is_the_same_for_unknown_wrong_and_locked(client):
    user = make_user("same@test.example.com", RoleName.OPERATOR)
    inactive = make_user("inactive@test.example.com", RoleName.OPERATOR, active=False)
    auth = AuthActions(client)
    unknown = auth.login("nobody@test.example.com", PASSWORD)
    wrong = auth.login(user.email, "wrong password!")
    disabled = auth.login(inactive.email, PASSWORD)
    for _attempt in range(4):
        auth.login(user.email, "wrong password!")
    locked = auth.login(user.email, PASSWORD)

    pages = {"unknown": unknown, "wrong": wrong, "inactive": disabled, "locked": locked}
    for name, response in pages.items():
        assert response.status_code == 200, name
        assert alerts(response) == [FAILED], name
        html = response.get_data(as_text=True)
        assert PASSWORD not in html and "wrong password!" not in html, name
        assert "locked" not in html.lower(), name

    def shape(response) -> str:  # noqa: ANN001
        html = response.get_data(as_text=True)
        html = re.sub(r'value="[^"]*"', 'value=""', html)  # typed email and CSRF token
        return html

    assert len({shape(r) for r in pages.values()}) == 1


@pytest.fixture
def small_login_limit(app: Flask) -> Iterator[None]:
    previous = app.config["LOGIN_RATE_LIMIT"]
    app.config["LOGIN_RATE_LIMIT"] = "3 per minute"
    limiter.reset()
    try:
        yield
    finally:
        app.config["LOGIN_RATE_LIMIT"] = previous
        limiter.reset()


def test_the_per_address_limit_answers_429(client, small_login_limit):
    user = make_user("limit@test.example.com", RoleName.OPERATOR)
    auth = AuthActions(client)
    for email in ("a@test.example.com", "b@test.example.com", "c@test.example.com"):
        assert alerts(auth.login(email, "wrong password!")) == [FAILED]
    response = auth.login(user.email, PASSWORD)  # right password, but from the same address
    assert response.status_code == 429
    assert "Too many attempts" in response.get_data(as_text=True)
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"
    assert is_sent_to_login(client.get("/admin/"))
    assert fresh(user).last_login_at is None
    assert client.get("/login").status_code == 200  # only the POSTs are counted


def test_the_per_address_limit_counts_failures_not_successful_logins(client, small_login_limit):
    """Behind one shared address (a clinic's proxy) a whole shift logs in at 8:00: the limit
    (3 here) counts failed attempts only, by address; the account lockout counts by account."""
    auth = AuthActions(client)
    for n in range(6):
        user = make_user(f"shift{n}@test.example.com", RoleName.OPERATOR)
        assert auth.login(user.email).headers["Location"] == "/admin/", n
        auth.logout()
    for _attempt in range(3):
        assert alerts(auth.login("shift0@test.example.com", "wrong password!")) == [FAILED]
    assert auth.login("shift1@test.example.com").status_code == 429
    assert client.get("/login").status_code == 200


class _Clock:
    """``time.time()`` for the session checks, moved forward by the test."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now


def test_a_session_never_ends_before_the_idle_time(app, client, monkeypatch):
    """Every request counts as activity, to the second: a session used 20 s after the login
    is still open 55 s later with a 60 s idle time, and ends once 60 s have passed."""
    clock = _Clock()
    monkeypatch.setattr("backoffice.auth.views.time", clock)
    monkeypatch.setitem(app.config, "SESSION_IDLE_TIMEOUT", timedelta(seconds=60))
    AuthActions(client).as_role(RoleName.SUPPORT, email="idle-exact@test.example.com")
    for step in (20, 55, 59.5, 59.9):
        clock.now += step
        assert client.get("/admin/").status_code == 200, step
    clock.now += 60.5
    assert is_sent_to_login(client.get("/admin/"))


# --- sessions ------------------------------------------------------------------------------------


def test_login_starts_a_new_session(app, client):
    user = make_user("newsession@test.example.com", RoleName.SUPPORT)
    token = form_token(client, "/login")
    with client.session_transaction() as sess:
        sess["planted"] = "by an attacker"
    before = session_cookie(client, app)
    response = client.post(
        "/login",
        data={"email": "newsession@test.example.com", "password": PASSWORD, "csrf_token": token},
    )
    assert response.headers["Location"] == "/admin/"
    assert session_cookie(client, app) != before
    with client.session_transaction() as sess:
        assert "planted" not in sess
        assert sess["_user_id"] == fresh(user).get_id()
    # the CSRF secret did not survive either: a token from before the login is worthless
    refused = client.post("/logout", data={"csrf_token": token})
    assert refused.status_code == 400
    assert client.get("/admin/").status_code == 200


def _age_session(client: FlaskClient, *, login_ago: timedelta, seen_ago: timedelta) -> None:
    now = int(time.time())
    with client.session_transaction() as sess:
        sess["login_at"] = now - int(login_ago.total_seconds())
        sess["seen_at"] = now - int(seen_ago.total_seconds())


def test_idle_timeout_is_enforced_on_the_server(client):
    AuthActions(client).as_role(RoleName.SUPPORT, email="idle@test.example.com")
    _age_session(client, login_ago=timedelta(minutes=40), seen_ago=timedelta(minutes=29))
    assert client.get("/admin/").status_code == 200  # 29 minutes idle: still fine
    _age_session(client, login_ago=timedelta(minutes=40), seen_ago=timedelta(minutes=31))
    response = client.get("/admin/patient/")
    assert is_sent_to_login(response)
    page = client.get(response.headers["Location"])
    assert "Your session has ended" in page.get_data(as_text=True)
    assert is_sent_to_login(client.get("/admin/"))  # the session is gone, not just refused once


def test_absolute_lifetime_is_enforced_on_the_server(client):
    AuthActions(client).as_role(RoleName.SUPPORT, email="absolute@test.example.com")
    _age_session(client, login_ago=timedelta(hours=11, minutes=59), seen_ago=timedelta(0))
    assert client.get("/admin/").status_code == 200
    _age_session(client, login_ago=timedelta(hours=12, minutes=1), seen_ago=timedelta(0))
    assert is_sent_to_login(client.get("/admin/"))
    assert is_sent_to_login(client.get("/admin/"))


def test_session_lifetimes_come_from_config(app, client, monkeypatch):
    AuthActions(client).as_role(RoleName.SUPPORT, email="config@test.example.com")
    monkeypatch.setitem(app.config, "SESSION_IDLE_TIMEOUT", timedelta(minutes=5))
    _age_session(client, login_ago=timedelta(minutes=6), seen_ago=timedelta(minutes=6))
    assert is_sent_to_login(client.get("/admin/"))

    AuthActions(client).login("config@test.example.com")
    monkeypatch.setitem(app.config, "SESSION_ABSOLUTE_LIFETIME", timedelta(hours=1))
    _age_session(client, login_ago=timedelta(minutes=61), seen_ago=timedelta(0))
    assert is_sent_to_login(client.get("/admin/"))


def test_a_session_cookie_copied_before_logout_is_refused_after(app, client):
    auth = AuthActions(client)
    auth.as_role(RoleName.OPERATOR, email="replay@test.example.com")
    copied = session_cookie(client, app)
    name = app.config["SESSION_COOKIE_NAME"]

    thief = app.test_client()
    thief.set_cookie(name, copied)
    assert thief.get("/admin/").status_code == 200  # the copy works while the session lives

    response = auth.logout()
    assert response.headers["Location"] == "/login"
    assert is_sent_to_login(client.get("/admin/"))

    replay = app.test_client()
    replay.set_cookie(name, copied)
    assert is_sent_to_login(replay.get("/admin/"))
    assert is_sent_to_login(replay.get("/admin/patient/"))


def _role_id(name: RoleName) -> str:
    return str(db.session.scalar(select(Role.id).where(Role.name == name)))


@pytest.fixture
def admin_client(app: Flask) -> FlaskClient:
    other = app.test_client()
    AuthActions(other).as_role(RoleName.ADMIN, email="sessions-admin@test.example.com")
    return other


def _edit_user(admin: FlaskClient, user: User, **changes: str | None) -> None:
    url = f"/admin/user/edit/?id={user.id}"
    data = {
        "email": user.email,
        "display_name": user.display_name,
        "roles": _role_id(RoleName.OPERATOR),
        "active": "y",
        "new_password": "",
        "csrf_token": form_token(admin, url),
    }
    data.update(changes)
    response = admin.post(url, data={k: v for k, v in data.items() if v is not None})
    assert response.status_code == 302, response.get_data(as_text=True)[:2000]


def test_deactivation_ends_the_users_other_sessions(client, admin_client):
    user = AuthActions(client).as_role(RoleName.OPERATOR, email="deact@test.example.com")
    assert client.get("/admin/").status_code == 200
    _edit_user(admin_client, user, active=None)
    assert fresh(user).active is False
    assert is_sent_to_login(client.get("/admin/"))
    assert alerts(AuthActions(client).login(user.email)) == [FAILED]
    assert admin_client.get("/admin/").status_code == 200  # the admin's own session lives on


def test_a_password_change_ends_the_users_other_sessions(client, admin_client):
    user = AuthActions(client).as_role(RoleName.OPERATOR, email="newpw@test.example.com")
    assert client.get("/admin/").status_code == 200
    _edit_user(admin_client, user, new_password="a brand new passphrase")
    assert is_sent_to_login(client.get("/admin/"))
    auth = AuthActions(client)
    assert alerts(auth.login(user.email, PASSWORD)) == [FAILED]
    assert auth.login(user.email, "a brand new passphrase").headers["Location"] == "/admin/"


def test_an_edit_without_password_or_status_change_keeps_the_session(client, admin_client):
    user = AuthActions(client).as_role(RoleName.OPERATOR, email="keep@test.example.com")
    _edit_user(admin_client, user, display_name="Renamed Operator")
    assert fresh(user).display_name == "Renamed Operator"
    assert client.get("/admin/").status_code == 200


# --- security events -----------------------------------------------------------------------------


def test_security_events_name_the_user_and_address_but_no_secret(client, caplog):
    caplog.set_level(logging.INFO, logger="backoffice.security")
    user = make_user("events@test.example.com", RoleName.OPERATOR)
    auth = AuthActions(client)
    auth.login(user.email)
    auth.logout()
    auth.login("unknown-typed@test.example.com", "typed secret one")
    for _attempt in range(5):
        auth.login(user.email, "typed secret two")

    lines = [r.getMessage() for r in caplog.records if r.name == "backoffice.security"]
    uid = f"user_id={user.id} addr=127.0.0.1 at="

    def found(event: str, who: str = uid) -> list[str]:
        return [line for line in lines if line.startswith(f"{event} {who}")]

    assert len(found("login")) == 1
    assert len(found("logout")) == 1
    assert len(found("login_failed", "user_id=- addr=127.0.0.1 at=")) == 1
    assert len(found("login_failed")) == 5
    assert len(found("account_locked")) == 1

    everything = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    for secret in (PASSWORD, "typed secret one", "typed secret two"):
        assert secret not in everything
    for typed in ("unknown-typed@test.example.com", user.email, "unknown-typed", "events@"):
        assert typed not in everything


def test_the_login_page_never_echoes_the_password(client):
    make_user("echo@test.example.com", RoleName.OPERATOR)
    response = AuthActions(client).login("echo@test.example.com", "typed secret three")
    html = response.get_data(as_text=True)
    assert "typed secret three" not in html
    assert csrf_token_from(html)  # the form is shown again, ready for another try
