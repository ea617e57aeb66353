"""Malformed and hostile parameters get the page, a 400 or a 404 with a message, never a 500.

The walk is discovered, not listed: every GET route of the app's ``url_map`` (so a view added
later is walked too) with a fixed set of hostile values in every argument the route reads (found
by recording what it reads), each view's filters and a create form's fields; every create and
edit form of every model view, inline rows included; every POST-only route. The values that
break parsers (``EACH``) go into each argument or field on its own, the others (``TOGETHER``:
sizes, formats, characters) into all of them at once. Nothing may answer 500 or raise.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from flask import Flask
from flask_admin.contrib.sqla import ModelView
from werkzeug.datastructures import ImmutableMultiDict
from wtforms.fields.core import UnboundField

from backoffice.extensions import db
from backoffice.models import CareTeamMember, PatientPhone, RoleName
from tests.conftest import AuthActions
from tests.factories import make_doctor, make_patient, make_study

# The fixed set: words a person or a script may put where a number, a code, a date or a short
# text is expected. Each of EACH goes into every argument on its own (the values that break a
# parser); TOGETHER go into all of a route's arguments at once (sizes, formats, characters).
EACH = (
    "abc",
    "-1",
    "123456789012345678901",
    "²",  # a digit to str.isdigit, not to int
)
TOGETHER = (
    "",
    "1.5",
    "'; DROP TABLE patient; -- \\ _ %",
    "nul\x00byte",
    "0000-00-00",
    "9999-12-31",
    "a " * 1000,
    "x" * 5000,
    "http:///evil.example",
    "ñ\u202e\ufeff",
)
HOSTILE = EACH + TOGETHER
# Arguments worth trying on a route besides those it is seen to read (see ``_reads``): a return
# address and an ajax look-up's field name, which some routes read only when present.
ALWAYS_TRIED = ("url", "name")
ROUTE_VALUES = {"export_type": "csv", "filename": "x.css"}
SKIPPED_ENDPOINTS = {"static", "admin.static", "auth.login", "auth.logout"}


@pytest.fixture
def admin_client(client, no_csrf):  # noqa: ANN001, ANN201
    AuthActions(client).as_role(RoleName.ADMIN, email="hostile-admin@test.example.com")
    return client


@pytest.fixture
def records() -> dict[str, Any]:
    doctor = make_doctor("Hostil", "Prueba", phones=["+525512340000"])
    patient = make_patient("Paciente", "Hostil", referring_doctor=doctor, clinic=doctor.clinic)
    # inline rows in the edit forms: a patient's phone and care team
    patient.phones.append(PatientPhone(number="+525512340001", kind="MOBILE", is_primary=True))
    db.session.add(CareTeamMember(patient=patient, doctor=doctor, role="REFERRING"))
    study = make_study(patient, ordering_doctor=doctor)
    db.session.commit()
    return {
        "clinic": doctor.clinic.id,
        "doctor": doctor.id,
        "patient": patient.id,
        "study": study.id,
    }


def _model_views(app: Flask) -> list[ModelView]:
    admin = app.extensions["admin"][0]
    return [v for v in admin._views if isinstance(v, ModelView)]


def _get_routes(app: Flask) -> Iterator[tuple[str, str]]:
    """(endpoint, url) for every GET route of the app, route variables filled in."""
    for rule in app.url_map.iter_rules():
        if rule.endpoint in SKIPPED_ENDPOINTS or "GET" not in (rule.methods or ()):
            continue
        values = {name: ROUTE_VALUES.get(name, "1") for name in rule.arguments}
        url = rule.build(values, append_unknown=False)[1]
        yield rule.endpoint, url


class _ReadArgs(ImmutableMultiDict):
    """Query arguments that remember which names the app looked up (or found by iterating)."""

    seen: set[str] = set()

    def __getitem__(self, key):  # noqa: ANN001, ANN204
        _ReadArgs.seen.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None, type=None):  # noqa: ANN001, ANN201, A002
        _ReadArgs.seen.add(key)
        return super().get(key, default=default, type=type)

    def getlist(self, key, type=None):  # noqa: ANN001, ANN201, A002
        _ReadArgs.seen.add(key)
        return super().getlist(key, type=type)

    def __contains__(self, key):  # noqa: ANN001, ANN204
        _ReadArgs.seen.add(key)
        return super().__contains__(key)


def _reads(client, app: Flask, url: str) -> set[str]:  # noqa: ANN001
    """The query arguments ``url`` reads: one request with a recording ``request.args``."""

    class Recording(app.request_class):
        parameter_storage_class = _ReadArgs

    _ReadArgs.seen = set()
    original = app.request_class
    app.request_class = Recording
    try:
        client.get(url)
    finally:
        app.request_class = original
    return set(_ReadArgs.seen)


def _args_for(client, app: Flask, endpoint: str, url: str) -> list[str]:  # noqa: ANN001
    """The arguments to try on a route: those it reads, its view's filters, ALWAYS_TRIED."""
    names = _reads(client, app, url) | set(ALWAYS_TRIED)
    prefix = endpoint.split(".", 1)[0]
    for view in _model_views(app):
        if view.endpoint != prefix:
            continue
        if view._filter_args:
            names |= {f"flt0_{key}" for key in view._filter_args}
        if endpoint.endswith("create_view"):  # a create form is pre-filled from the address
            names |= _form_field_names(view._create_form_class)
    return sorted(names)


def _form_field_names(form_class: type) -> set[str]:
    return {name for name in dir(form_class) if isinstance(getattr(form_class, name), UnboundField)}


def _problem(response) -> str | None:  # noqa: ANN001
    if response.status_code >= 500:
        return f"{response.status_code}"
    body = response.get_data(as_text=True) if response.mimetype == "text/html" else ""
    if "Traceback" in body or "[SQL:" in body:
        return "trace in page"
    return None


def test_every_get_route_survives_every_hostile_argument(app, admin_client, records, monkeypatch):
    monkeypatch.setitem(app.config, "PROPAGATE_EXCEPTIONS", False)
    failures: list[str] = []
    walked = 0
    for endpoint, url in _get_routes(app):
        names = _args_for(admin_client, app, endpoint, url)
        queries = [{name: value} for name in names for value in EACH]
        queries += [{name: value for name in names} for value in TOGETHER]
        ajax_field = _first_ajax_field(app, endpoint)
        for query in queries:
            if "query" in query and ajax_field:  # an ajax look-up needs the field it serves
                query["name"] = ajax_field
            target = f"{url}?{urlencode(query)}"
            try:
                response = admin_client.get(target)
            except Exception as exc:  # noqa: BLE001 - reported with the address below
                failures.append(f"{target[:120]!r}: raised {type(exc).__name__}")
                continue
            walked += 1
            if problem := _problem(response):
                failures.append(f"{target[:120]!r}: {problem}")
        # a record that exists, with the rest hostile
        if endpoint.endswith(("details_view", "edit_view", "history_view")):
            view_name = endpoint.split(".", 1)[0]
            if view_name in records:
                response = admin_client.get(f"{url}?id={records[view_name]}&page=-1&url=//x")
                if problem := _problem(response):
                    failures.append(f"{endpoint} with a real id: {problem}")
    assert walked > 1000, walked  # the walk did reach the routes
    assert not failures, "\n".join(failures[:60]) + f"\n({len(failures)} in all)"


def _first_ajax_field(app: Flask, endpoint: str) -> str | None:
    prefix = endpoint.split(".", 1)[0]
    for view in _model_views(app):
        if view.endpoint == prefix and view._form_ajax_refs:
            return next(iter(view._form_ajax_refs))
    return None


FIELD_RE = re.compile(r'<(input|select|textarea)\b[^>]*\bname="([^"]+)"[^>]*>', re.S)
VALUE_RE = re.compile(r'\bvalue="([^"]*)"')
TYPE_RE = re.compile(r'\btype="([^"]+)"')


def _form_fields(html: str) -> dict[str, str]:
    """The fields a browser would submit from the page's first form, with their values."""
    fields: dict[str, str] = {}
    for match in FIELD_RE.finditer(html):
        tag, name = match.group(1), match.group(2)
        if name in ("csrf_token",) or name.startswith("flt"):
            continue
        kind = TYPE_RE.search(match.group(0))
        if kind and kind.group(1) in ("checkbox", "radio", "submit"):
            continue
        value = VALUE_RE.search(match.group(0)) if tag == "input" else None
        fields.setdefault(name, value.group(1) if value else "")
    return fields


def test_every_form_field_of_every_model_view_survives_every_hostile_value(
    app, admin_client, records, monkeypatch
):
    monkeypatch.setitem(app.config, "PROPAGATE_EXCEPTIONS", False)
    failures: list[str] = []
    posted = 0
    for view in _model_views(app):
        urls = [f"{view.url}/new/"]
        if view.endpoint in records:
            urls.append(f"{view.url}/edit/?id={records[view.endpoint]}")
        for url in urls:
            page = admin_client.get(url)
            if page.status_code != 200:
                continue
            fields = _form_fields(page.get_data(as_text=True))
            forms = [
                ({**fields, field: value}, f"{field}={value!r}")
                for field in fields
                for value in EACH
            ]
            forms += [
                ({f: value for f in fields}, f"every field={value[:30]!r}") for value in TOGETHER
            ]
            for data, what in forms:
                try:
                    response = admin_client.post(url, data=data)
                except Exception as exc:  # noqa: BLE001 - reported below
                    failures.append(f"POST {url} {what}: raised {exc!r:.80}")
                    continue
                posted += 1
                if problem := _problem(response):
                    failures.append(f"POST {url} {what}: {problem}")
                db.session.rollback()
        # the record ids of delete, bulk actions and inline editing
        for value in HOSTILE:
            for endpoint, data in (
                ("delete_view", {"id": value}),
                ("action_view", {"action": "delete", "rowid": value}),
                ("ajax_update", {"list_form_pk": value, "name": "x"}),
            ):
                if f"{view.endpoint}.{endpoint}" not in app.view_functions:
                    continue
                target = {
                    "delete_view": f"{view.url}/delete/",
                    "action_view": f"{view.url}/action/",
                    "ajax_update": f"{view.url}/ajax/update/",
                }[endpoint]
                response = admin_client.post(target, data=data)
                posted += 1
                if problem := _problem(response):
                    failures.append(f"POST {target} {data!r:.60}: {problem}")
                db.session.rollback()
    assert posted > 500, posted
    assert not failures, "\n".join(failures[:60]) + f"\n({len(failures)} in all)"


POSTED_FIELDS = ("id", "entry_id", "rowid", "action", "lang", "next", "url", "csrf_token")


def test_every_post_only_route_survives_every_hostile_field(app, admin_client, monkeypatch):
    """The POST-only doors (restore, revert, language, ...): each field hostile in turn."""
    monkeypatch.setitem(app.config, "PROPAGATE_EXCEPTIONS", False)
    failures: list[str] = []
    routes = [
        rule
        for rule in app.url_map.iter_rules()
        if "POST" in (rule.methods or ())
        and "GET" not in (rule.methods or ())
        and rule.endpoint not in SKIPPED_ENDPOINTS
    ]
    assert routes
    for rule in routes:
        url = rule.build({n: ROUTE_VALUES.get(n, "1") for n in rule.arguments})[1]
        forms = [{field: value} for field in POSTED_FIELDS for value in EACH]
        forms += [{field: value for field in POSTED_FIELDS} for value in TOGETHER]
        for data in forms:
            response = admin_client.post(url, data=data)
            if problem := _problem(response):
                failures.append(f"POST {url} {str(data)[:60]}: {problem}")
            db.session.rollback()
    assert not failures, "\n".join(failures[:60]) + f"\n({len(failures)} in all)"
