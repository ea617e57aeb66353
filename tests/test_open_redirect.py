"""Only same-site paths are followed: the ``url`` return argument of every admin view, the
login's ``next`` and the language switcher's ``next``. CSRF stays on."""

from __future__ import annotations

import re
from datetime import date
from html import unescape
from urllib.parse import quote

import pytest
from flask_admin.contrib.sqla import ModelView

from backoffice.extensions import db
from backoffice.models import Clinic, RoleName
from backoffice.security import is_same_site_path
from tests.conftest import PASSWORD, AuthActions, csrf_token_from, form_token, make_user
from tests.factories import make_clinic

# Each of these leads a browser off the site.
OFF_SITE = (
    "http:///evil.example",
    "https:///evil.example/x",
    "//evil.example",
    "///evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    " //evil.example",
    "https://evil.example/",
    "javascript:alert(1)",
    "http:evil.example",
)


@pytest.mark.parametrize("target", OFF_SITE)
def test_off_site_targets_are_not_same_site_paths(target):
    assert not is_same_site_path(target)


@pytest.mark.parametrize(
    "target", ["/admin/", "/admin/patient/?search=a%20b&page=2", "/admin/clinic/edit/?id=3"]
)
def test_paths_of_the_site_are(target):
    assert is_same_site_path(target)


LINK_RE = re.compile(r'(?<![\w-])(?:href|action)="([^"]*)"')
RETURN_FIELD_RE = re.compile(r'<input[^>]*\bname="url"[^>]*\bvalue="([^"]*)"')


def _location(response) -> str:  # noqa: ANN001
    assert response.status_code in (302, 303), response.status_code
    return response.headers["Location"]


def _stays_on_site(location: str) -> bool:
    return is_same_site_path(location) or location.startswith("http://localhost/")


def _model_views(app):  # noqa: ANN001, ANN202
    return [v for v in app.extensions["admin"][0]._views if isinstance(v, ModelView)]


@pytest.fixture
def admin(client, csrf_app):  # noqa: ANN001, ANN201
    AuthActions(client).as_role(RoleName.ADMIN, email="redirect-admin@test.example.com")
    return client


@pytest.mark.parametrize("target", OFF_SITE[:6])
def test_no_view_puts_an_off_site_address_in_its_pages(app, admin, target):
    """Create, edit and details pages of every model view: the hidden ``url`` field, the
    cancel and list links never carry the address."""
    clinic = make_clinic("Clínica Redirección")
    db.session.commit()
    checked = 0
    for view in _model_views(app):
        pages = [f"{view.url}/new/?url={quote(target)}", f"{view.url}/?url={quote(target)}"]
        if view.model is Clinic:
            pages += [
                f"{view.url}/edit/?id={clinic.id}&url={quote(target)}",
                f"{view.url}/details/?id={clinic.id}&url={quote(target)}",
            ]
        for page in pages:
            response = admin.get(page)
            if response.status_code != 200:
                continue
            html = response.get_data(as_text=True)
            links = [unescape(v) for v in LINK_RE.findall(html)]
            assert links, page
            for link in links:
                harmless = link in ("", "javascript:void(0)") or link.startswith("#")
                assert harmless or is_same_site_path(link), (page, link)
            for value in RETURN_FIELD_RE.findall(html):
                assert is_same_site_path(unescape(value)), (page, value)
            checked += 1
    assert checked >= 8


@pytest.mark.parametrize("target", OFF_SITE)
def test_create_edit_and_delete_never_send_the_browser_off_site(admin, target):
    new = "/admin/clinic/new/"
    name = f"Clínica {len(target)}{ord(target[1])}"
    response = admin.post(
        f"{new}?url={quote(target)}", data={"name": name, "csrf_token": form_token(admin, new)}
    )
    assert _stays_on_site(_location(response)), response.headers["Location"]
    clinic = db.session.scalars(db.select(Clinic).order_by(Clinic.id.desc())).first()
    clinic_id = clinic.id

    edit = f"/admin/clinic/edit/?id={clinic.id}"
    page = admin.get(edit).get_data(as_text=True)
    token = csrf_token_from(page)
    version = re.search(r'name="opened_version"[^>]*value="(\d+)"', page)
    response = admin.post(
        f"{edit}&url={quote(target)}",
        data={
            "name": clinic.name + " B",
            "csrf_token": token,
            "url": target,  # the hidden field, as a tampered form would send it
            "opened_version": version.group(1) if version else "",
        },
    )
    assert _stays_on_site(_location(response)), response.headers["Location"]
    db.session.expire_all()
    assert db.session.get(Clinic, clinic.id).name.endswith(" B")  # the save itself happened

    token = form_token(admin, "/admin/clinic/")
    response = admin.post(
        "/admin/clinic/delete/", data={"id": clinic_id, "url": target, "csrf_token": token}
    )
    assert _stays_on_site(_location(response)), response.headers["Location"]
    db.session.expire_all()
    assert db.session.scalar(db.select(Clinic.id).where(Clinic.id == clinic_id)) is None


@pytest.mark.parametrize("target", OFF_SITE)
def test_login_and_language_never_send_the_browser_off_site(client, csrf_app, target):
    user = make_user("redirect-login@test.example.com", RoleName.SUPPORT)
    token = form_token(client, "/login")
    response = client.post(
        "/login",
        data={"email": user.email, "password": PASSWORD, "csrf_token": token, "next": target},
    )
    assert _location(response) == "/admin/"
    token = form_token(client, "/admin/")
    response = client.post("/language", data={"lang": "es", "next": target, "csrf_token": token})
    assert _location(response) == "/admin/"


def test_a_same_site_return_address_is_still_followed(admin):
    """The record page the user came from (a save lands back there)."""
    clinic = make_clinic("Clínica de Origen")
    db.session.commit()
    new = "/admin/clinic/new/"
    back = f"/admin/clinic/details/?id={clinic.id}"
    response = admin.post(
        f"{new}?url={quote(back)}",
        data={"name": f"Clínica Vuelta {date.today()}", "csrf_token": form_token(admin, new)},
    )
    assert _location(response) == back
