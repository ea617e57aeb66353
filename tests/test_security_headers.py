"""Security headers on every kind of response, nonce-only scripts, and the production settings."""

from __future__ import annotations

import secrets
from html.parser import HTMLParser

import pytest
from flask import Flask
from flask.testing import FlaskClient

from backoffice import create_app
from backoffice.models import RoleName
from tests.conftest import AuthActions
from tests.factories import make_clinic, make_doctor, make_patient


def csp(response) -> dict[str, list[str]]:  # noqa: ANN001
    header = response.headers.get("Content-Security-Policy", "")
    directives = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            directives[words[0]] = words[1:]
    return directives


class PageScan(HTMLParser):
    """Collects every <script> tag's attributes and every inline event handler attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.handlers: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.scripts.append(dict(attrs))
        self.handlers += [(tag, name) for name, _value in attrs if name.startswith("on")]


def scan(response) -> PageScan:  # noqa: ANN001
    parser = PageScan()
    parser.feed(response.get_data(as_text=True))
    return parser


def assert_security_headers(response, *, page: bool = True) -> None:  # noqa: ANN001
    policy = csp(response)
    script_src = policy.get("script-src", [])
    assert script_src, "no script-src"
    assert "'unsafe-inline'" not in script_src and "'unsafe-eval'" not in script_src
    assert all(s == "'self'" or s.startswith("'nonce-") for s in script_src), script_src
    assert policy.get("frame-ancestors") == ["'none'"]
    assert policy.get("object-src") == ["'none'"]
    assert policy.get("default-src") == ["'self'"]
    assert response.headers.get("X-Content-Type-Options") == "nosniff"
    assert response.headers.get("Referrer-Policy") in {"same-origin", "no-referrer"}
    assert response.headers.get("X-Frame-Options") == "DENY"
    if page:
        assert "no-store" in response.headers.get("Cache-Control", "")


def nonce_of(response) -> str | None:  # noqa: ANN001
    found = [s for s in csp(response).get("script-src", []) if s.startswith("'nonce-")]
    assert len(found) <= 1
    return found[0][len("'nonce-") : -1] if found else None


@pytest.fixture
def operator(client: FlaskClient) -> FlaskClient:
    AuthActions(client).as_role(RoleName.OPERATOR, email="headers@test.example.com")
    return client


def test_headers_on_a_normal_page(operator):
    response = operator.get("/admin/")
    assert response.status_code == 200 and "dashboard-figures" in response.get_data(as_text=True)
    assert_security_headers(response)


def test_headers_on_the_login_page(client):
    response = client.get("/login")
    assert 'id="login-form"' in response.get_data(as_text=True)
    assert_security_headers(response)


def test_headers_on_a_403(client):
    AuthActions(client).as_role(RoleName.MANAGER, email="headers-403@test.example.com")
    response = client.get("/admin/user/")
    assert response.status_code == 403 and "Access denied" in response.get_data(as_text=True)
    assert_security_headers(response)


@pytest.mark.parametrize("logged_in", [False, True])
def test_headers_on_a_404(client, logged_in):
    if logged_in:
        AuthActions(client).as_role(RoleName.SUPPORT, email="headers-404@test.example.com")
    response = client.get("/no/such/page")
    assert response.status_code == 404 and "Not found" in response.get_data(as_text=True)
    assert_security_headers(response)


def test_headers_on_a_500(app, client, monkeypatch):
    def broken() -> None:
        raise RuntimeError("boom")

    monkeypatch.setitem(app.view_functions, "healthz", broken)
    monkeypatch.setitem(app.config, "PROPAGATE_EXCEPTIONS", False)
    response = client.get("/healthz")
    assert response.status_code == 500
    assert "Something went wrong" in response.get_data(as_text=True)
    assert_security_headers(response)


def test_headers_on_a_400_and_a_405(operator):
    bad = operator.post("/admin/clinic/new/", data={"name": "No token"})
    assert bad.status_code == 400 and "Bad request" in bad.get_data(as_text=True)
    assert_security_headers(bad)
    wrong_method = operator.get("/logout")
    assert wrong_method.status_code == 405
    assert_security_headers(wrong_method)


@pytest.mark.parametrize(
    "path",
    ["/static/css/backoffice.css", "/static/js/backoffice.js", "/admin/static/admin/js/actions.js"],
)
def test_headers_on_static_files(client, path):
    response = client.get(path)
    assert response.status_code == 200 and response.get_data()
    assert_security_headers(response, page=False)


@pytest.mark.parametrize("kind", ["csv", "xlsx"])
def test_headers_on_a_download(client, kind):
    AuthActions(client).as_role(RoleName.MANAGER, email="headers-csv@test.example.com")
    make_patient("Descarga", "Header")
    response = client.get(f"/admin/patient/export/{kind}/")
    assert response.status_code == 200
    assert "attachment" in response.headers["Content-Disposition"]
    data = response.get_data()
    assert b"Descarga" in data if kind == "csv" else data[:2] == b"PK"
    assert_security_headers(response)


def test_headers_on_a_redirect(client):
    response = client.get("/")
    assert response.status_code == 302
    assert_security_headers(response)


def _pages(client: FlaskClient) -> dict[str, str]:
    clinic = make_clinic("Clinica Nonce")
    doctor = make_doctor("Nora", "Nonce", clinic=clinic, phones=["55 1111 3333"])
    patient = make_patient("Pia", "Nonce")
    return {
        "dashboard": "/admin/",
        "list": "/admin/doctor/",
        "list with search": "/admin/patient/?search=Nonce",
        "doctor create form": "/admin/doctor/new/",
        "doctor edit form": f"/admin/doctor/edit/?id={doctor.id}",
        "details": f"/admin/patient/details/?id={patient.id}",
        "users": "/admin/user/",
        "user create form": "/admin/user/new/",
    }


def test_every_script_carries_the_request_nonce(client):
    AuthActions(client).as_role(RoleName.ADMIN, email="headers-nonce@test.example.com")
    pages = _pages(client)
    seen_nonces = set()
    for name, url in pages.items():
        response = client.get(url)
        assert response.status_code == 200, name
        found = scan(response)
        nonce = nonce_of(response)
        assert found.scripts, f"{name}: expected the admin's scripts"
        assert nonce, f"{name}: scripts but no nonce in the policy"
        for script in found.scripts:
            assert script.get("nonce") == nonce, (name, script)
        assert found.handlers == [], (name, found.handlers)
        seen_nonces.add(nonce)
    assert len(seen_nonces) == len(pages)  # a fresh nonce per request


@pytest.mark.parametrize("path", ["/login", "/no/such/page"])
def test_anonymous_pages_have_no_unsigned_script_or_handler(client, path):
    response = client.get(path)
    found = scan(response)
    nonce = nonce_of(response)
    for script in found.scripts:
        assert nonce and script.get("nonce") == nonce, script
    assert found.handlers == []


def test_error_pages_have_no_inline_handlers(client):
    AuthActions(client).as_role(RoleName.MANAGER, email="headers-errors@test.example.com")
    for url, code in (("/admin/user/", 403), ("/missing", 404), ("/admin/clinic/new/", 403)):
        response = client.get(url)
        assert response.status_code == code
        assert scan(response).handlers == []


# --- production configuration ----------------------------------------------------------------


@pytest.fixture
def production_env(monkeypatch, tmp_path):  # noqa: ANN001, ANN201
    monkeypatch.setenv("SECRET_KEY", secrets.token_urlsafe(48))
    # A database that answers (the login page, like every page, needs one: see test_outage).
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'production.sqlite'}")
    monkeypatch.delenv("FLASK_DEBUG", raising=False)
    monkeypatch.delenv("SESSION_COOKIE_SECURE", raising=False)
    monkeypatch.delenv("HSTS_ENABLED", raising=False)
    return monkeypatch


def test_production_sends_hsts_and_secure_cookies(production_env):
    prod: Flask = create_app("production")
    assert prod.debug is False
    response = prod.test_client().get("/login", base_url="https://backoffice.example.com")
    assert response.status_code == 200
    hsts = response.headers.get("Strict-Transport-Security", "")
    assert "max-age=" in hsts and int(hsts.split("max-age=")[1].split(";")[0]) >= 15552000
    assert_security_headers(response)
    cookie = response.headers.get("Set-Cookie", "")
    assert cookie, "the login page starts a session for its CSRF token"
    attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
    assert {"secure", "httponly", "samesite"} <= attributes
    assert "samesite=lax" in cookie.lower() or "samesite=strict" in cookie.lower()
    assert cookie.startswith("__Host-")


@pytest.mark.parametrize("key", ["", "short", "dev-only-insecure-secret-key-change-me", "x" * 31])
def test_production_refuses_a_weak_or_missing_secret_key(production_env, key):
    if key:
        production_env.setenv("SECRET_KEY", key)
    else:
        production_env.delenv("SECRET_KEY")
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        create_app("production")


def test_production_refuses_debug(production_env):
    production_env.setenv("FLASK_DEBUG", "1")
    with pytest.raises(RuntimeError, match="FLASK_DEBUG"):
        create_app("production")


def test_production_refuses_a_weak_key_passed_as_an_override(production_env):
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        create_app({"ENV_NAME": "production", "SECRET_KEY": "weak"})


def test_production_refuses_debug_passed_as_an_override(production_env):
    with pytest.raises(RuntimeError):
        create_app({"ENV_NAME": "production", "DEBUG": True})
