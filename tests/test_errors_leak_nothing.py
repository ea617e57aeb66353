"""Errors show words, never a traceback, SQL or patient value; logs hold no patient value."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date

import pytest
from flask import request
from flask.testing import FlaskClient
from sqlalchemy import create_engine, insert, select, text

from backoffice.admin_views.patient import PatientView
from backoffice.extensions import db
from backoffice.models import Patient, RoleName
from tests.conftest import PASSWORD, AuthActions, form_token
from tests.factories import make_patient

# Values that stand for patient data: none may reach a page they do not belong on, nor a log.
SECRET_LAST_NAME = "Zamudiotl"
SECRET_FIRST_NAME = "Xochiquetzal"
SECRET_MRN = "MRN-4711-PRIV"
SECRET_EMAIL = "xochi.private@paciente.example.com"
RIVAL_NAME = "Rivalinda"
SQL = re.compile(
    r"\b(SELECT|INSERT|UPDATE|DELETE)\b.*\b(FROM|INTO|SET|WHERE)\b|\[SQL:|\[parameters", re.S
)
TRACEBACK = re.compile(r"Traceback|File \"|line \d+, in ")


def logged(caplog) -> str:  # noqa: ANN001
    return "\n".join(r.getMessage() for r in caplog.records) + "\n" + caplog.text


def flashes(response) -> list[str]:  # noqa: ANN001
    found = re.findall(
        r'<div class="alert[^"]*"[^>]*>(.*?)</div>', response.get_data(as_text=True), re.S
    )
    return [re.sub(r"<[^>]+>|&times;", "", m).strip() for m in found]


@pytest.fixture
def admin(client: FlaskClient) -> FlaskClient:
    AuthActions(client).as_role(RoleName.ADMIN, email="errors-admin@test.example.com")
    return client


@pytest.fixture
def patient() -> Patient:
    row = make_patient(
        SECRET_FIRST_NAME,
        SECRET_LAST_NAME,
        birth_date=date(1961, 3, 14),
        mrn=SECRET_MRN,
        email=SECRET_EMAIL,
    )
    db.session.commit()
    return row


@pytest.fixture
def unexpected_errors_are_500s(app, monkeypatch):  # noqa: ANN001, ANN201
    """Tests run with TESTING on, where Flask re-raises instead of answering 500."""
    monkeypatch.setitem(app.config, "PROPAGATE_EXCEPTIONS", False)


def _query_that_fails_with_a_patient_value(patient_id: int) -> None:
    """What a bug deep in a view looks like: a failing query whose error quotes its parameters."""
    last_name = db.session.get(Patient, patient_id).last_name
    db.session.execute(
        text("SELECT no_such_column FROM patient WHERE last_name = :name"), {"name": last_name}
    )


def test_a_500_page_shows_no_traceback_sql_or_patient_value(
    admin, patient, monkeypatch, caplog, unexpected_errors_are_500s
):
    def broken_get_one(self, id):  # noqa: ANN001, ANN202, A002
        _query_that_fails_with_a_patient_value(int(id))

    monkeypatch.setattr(PatientView, "get_one", broken_get_one)
    caplog.set_level(logging.INFO)
    response = admin.get(f"/admin/patient/details/?id={patient.id}")

    assert response.status_code == 500
    page = response.get_data(as_text=True)
    assert "Something went wrong" in page and "Nothing was saved" in page
    assert not TRACEBACK.search(page)
    assert not SQL.search(page)
    assert "no_such_column" not in page and "Error" not in page
    for value in (SECRET_LAST_NAME, SECRET_FIRST_NAME, SECRET_MRN, SECRET_EMAIL):
        assert value not in page

    log = logged(caplog)
    assert re.search(r"Unhandled (OperationalError|ProgrammingError) on GET /admin/patient/", log)
    for value in (SECRET_LAST_NAME, SECRET_FIRST_NAME, SECRET_MRN, SECRET_EMAIL):
        assert value not in log
    assert "[parameters" not in log
    assert admin.get("/admin/").status_code == 200  # the session survived the error


def test_a_500_log_leaves_out_the_search_terms_of_the_address(
    admin, patient, monkeypatch, caplog, unexpected_errors_are_500s
):
    def broken_get_list(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        raise RuntimeError("list failed")

    monkeypatch.setattr(PatientView, "get_list", broken_get_list)
    caplog.set_level(logging.INFO)
    response = admin.get(f"/admin/patient/?search={SECRET_LAST_NAME}")
    assert response.status_code == 500
    assert "Something went wrong" in response.get_data(as_text=True)
    log = logged(caplog)
    assert "Unhandled RuntimeError on GET /admin/patient/" in log
    assert SECRET_LAST_NAME not in log


def test_an_unexpected_error_during_a_save_is_a_message_and_a_clean_log(
    admin, patient, monkeypatch, caplog
):
    def broken_on_model_change(self, form, model, is_created):  # noqa: ANN001, ANN202
        raise ValueError(f"cannot store {model.first_name} {model.last_name} {model.mrn}")

    monkeypatch.setattr(PatientView, "on_model_change", broken_on_model_change)
    caplog.set_level(logging.INFO)
    url = f"/admin/patient/edit/?id={patient.id}"
    data = {
        "mrn": SECRET_MRN,
        "first_name": SECRET_FIRST_NAME,
        "last_name": "Changedname",
        "birth_date": "1961-03-14",
        "email": SECRET_EMAIL,
        "csrf_token": form_token(admin, url),
    }
    response = admin.post(url, data=data)
    assert response.status_code == 200
    assert flashes(response) == ["The change could not be saved because of an unexpected error."]
    assert not SQL.search(response.get_data(as_text=True))
    assert not TRACEBACK.search(response.get_data(as_text=True))
    db.session.expire_all()
    assert db.session.get(Patient, patient.id).last_name == SECRET_LAST_NAME

    log = logged(caplog)
    assert "unexpected ValueError in patient" in log
    for value in (SECRET_LAST_NAME, SECRET_FIRST_NAME, SECRET_MRN, SECRET_EMAIL, "Changedname"):
        assert value not in log


@pytest.fixture
def lose_the_race(monkeypatch):  # noqa: ANN001, ANN201
    """The form passes its checks, then another user saves a patient holding the same MRN and
    email before this save reaches the database: only the database can see the conflict."""
    original = PatientView.validate_form

    def validate_then_someone_else_saves(self, form):  # noqa: ANN001, ANN202
        valid = original(self, form)
        if valid and request.method == "POST":
            db.session.connection().execute(
                insert(Patient.__table__).values(
                    first_name=RIVAL_NAME,
                    last_name=RIVAL_NAME,
                    birth_date=date(1990, 1, 1),
                    mrn=form.mrn.data,
                    email=form.email.data,
                )
            )
        return valid

    monkeypatch.setattr(PatientView, "validate_form", validate_then_someone_else_saves)


@pytest.mark.parametrize("mode", ["create", "edit"])
def test_an_integrity_error_names_the_field_and_leaks_nothing(admin, caplog, lose_the_race, mode):
    existing = make_patient("Ana", "Existente", mrn="MRN-OLD-1")
    db.session.commit()
    url = "/admin/patient/new/" if mode == "create" else f"/admin/patient/edit/?id={existing.id}"
    caplog.set_level(logging.INFO)
    data = {
        "mrn": SECRET_MRN,
        "first_name": SECRET_FIRST_NAME,
        "last_name": SECRET_LAST_NAME,
        "birth_date": "1961-03-14",
        "email": "",
        "csrf_token": form_token(admin, url),
    }
    response = admin.post(url, data=data)

    assert response.status_code == 200
    messages = flashes(response)
    assert len(messages) == 1
    message = messages[0]
    assert "conflicts with another record" in message
    assert "mrn" in message.lower()
    for value in (SECRET_MRN, SECRET_FIRST_NAME, SECRET_LAST_NAME, RIVAL_NAME):
        assert value not in message
    page = response.get_data(as_text=True)
    assert not SQL.search(page) and not TRACEBACK.search(page)
    assert "IntegrityError" not in page and "UNIQUE" not in page and "duplicate key" not in page
    assert RIVAL_NAME not in page  # the other patient's record is not disclosed

    db.session.expire_all()
    names = db.session.scalars(select(Patient.last_name).order_by(Patient.id)).all()
    assert names == ["Existente"]
    assert db.session.get(Patient, existing.id).mrn == "MRN-OLD-1"

    log = logged(caplog)
    assert "integrity error in patient" in log
    for value in (SECRET_MRN, SECRET_FIRST_NAME, SECRET_LAST_NAME, RIVAL_NAME, "MRN-OLD-1"):
        assert value not in log


# --- /healthz ------------------------------------------------------------------------------------


def test_healthz_answers_without_login_and_says_only_ok(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert json.loads(response.get_data(as_text=True)) == {"status": "ok"}
    assert "no-store" in response.headers["Cache-Control"]
    assert "Set-Cookie" not in response.headers  # no session is started for a probe


@contextmanager
def database_unreachable() -> Iterator[None]:
    """Point the app at a server that refuses connections, as when the database goes down.

    Not monkeypatch: pytest-flask's own fixtures hold it, and its undo would run after the
    per-test transaction fixture has already put the real engine back.
    """
    unreachable = create_engine(
        "postgresql+psycopg2://nobody:not-a-password@127.0.0.1:1/none",
        connect_args={"connect_timeout": 2},
    )
    engines = db.engines
    bound = engines[None]
    engines[None] = unreachable
    try:
        yield
    finally:
        engines[None] = bound
        unreachable.dispose()


def test_healthz_says_503_when_the_database_is_unreachable(client):
    with database_unreachable():
        response = client.get("/healthz")
    assert response.status_code == 503
    body = response.get_data(as_text=True)
    assert json.loads(body) == {"status": "unavailable"}
    for detail in ("127.0.0.1", "nobody", "not-a-password", "psycopg2", "Operational"):
        assert detail not in body


UNAVAILABLE = "Temporarily unavailable"


def _is_the_503_page(response) -> bool:  # noqa: ANN001
    page = response.get_data(as_text=True)
    return (
        response.status_code == 503
        and UNAVAILABLE in page
        and "Nothing was changed" in page
        and not TRACEBACK.search(page)
        and not SQL.search(page)
        and "127.0.0.1" not in page
        and "Operational" not in page
        and response.headers["Cache-Control"] == "no-store"
        and "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        and response.headers.get("Retry-After") == "30"
    )


def test_a_database_outage_is_the_503_page_for_every_request(
    client, caplog, unexpected_errors_are_500s
):
    """Signed in or not, any page, the login page and a login: the app's own 503 page, with its
    headers; never the login page (the user is not logged out), never a 500."""
    AuthActions(client).as_role(RoleName.OPERATOR, email="outage@test.example.com")
    token = form_token(client, "/admin/patient/new/")
    caplog.set_level(logging.INFO)
    anonymous = client.application.test_client()
    with database_unreachable():
        responses = {
            "list": client.get(f"/admin/patient/?search={SECRET_LAST_NAME}"),
            "dashboard": client.get("/admin/"),
            "listing": client.get("/admin/patient-studies/"),
            "a save": client.post(
                "/admin/patient/new/",
                data={
                    "first_name": SECRET_FIRST_NAME,
                    "last_name": SECRET_LAST_NAME,
                    "birth_date": "1961-03-14",
                    "csrf_token": token,
                },
            ),
            "login page": anonymous.get("/login"),
            "a login": anonymous.post(
                "/login",
                data={
                    "email": "outage@test.example.com",
                    "password": PASSWORD,
                    "csrf_token": "irrelevant",
                },
            ),
        }
        static = client.get("/static/css/backoffice.css")
    for name, response in responses.items():
        assert _is_the_503_page(response), (name, response.status_code)
    assert static.status_code == 200  # static files need no database
    # Once it is back, the same session goes on: nobody was logged out.
    assert client.get("/admin/patient/").status_code == 200
    log = logged(caplog)
    assert "database unavailable (OperationalError)" in log
    assert "Unhandled" not in log and "Traceback" not in log
    for value in (
        SECRET_LAST_NAME,
        SECRET_FIRST_NAME,
        "outage@test.example.com",
        PASSWORD,
        "not-a-password",
        "Connection refused",
        "could not connect",
    ):
        assert value not in log, value


def test_the_user_loader_answers_503_when_the_database_fails_under_it(client, monkeypatch, caplog):
    """The database fails between the request's check and the user's loading: still the 503
    page, not the login page."""
    AuthActions(client).as_role(RoleName.SUPPORT, email="loader@test.example.com")
    from sqlalchemy.exc import OperationalError

    real_get = db.session.get

    def failing_get(model, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        from backoffice.models import User

        if model is User:
            raise OperationalError("SELECT user", {"email": SECRET_EMAIL}, Exception("gone"))
        return real_get(model, *args, **kwargs)

    caplog.set_level(logging.INFO)
    monkeypatch.setattr(db.session, "get", failing_get)
    response = client.get("/admin/patient/")
    monkeypatch.undo()
    assert _is_the_503_page(response)
    assert SECRET_EMAIL not in logged(caplog)
    assert client.get("/admin/patient/").status_code == 200


def test_a_failed_teardown_never_reaches_the_server(client, monkeypatch, caplog):
    """Closing the session fails (its connection died during the request): the response is
    the page the view made, and the log says only what kind of error it was."""
    from sqlalchemy.exc import OperationalError

    AuthActions(client).as_role(RoleName.SUPPORT, email="teardown@test.example.com")
    calls = {"n": 0}
    real_remove = db.session.remove

    def failing_remove() -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OperationalError("ROLLBACK", {}, Exception(f"lost {SECRET_LAST_NAME}"))
        real_remove()

    caplog.set_level(logging.INFO)
    monkeypatch.setattr(db.session, "remove", failing_remove)
    response = client.get("/admin/patient/")
    monkeypatch.undo()
    assert response.status_code == 200
    assert calls["n"] >= 1
    log = logged(caplog)
    assert "closing the database session failed (OperationalError)" in log
    assert SECRET_LAST_NAME not in log


def test_the_database_lost_during_a_save_is_the_503_page_not_a_form_error(client, monkeypatch):
    """Flask-Admin hands a failed save to the view's error handler: a lost database is not an
    'unexpected error' beside a form that cannot render, but the 503 page."""
    from sqlalchemy.exc import OperationalError

    AuthActions(client).as_role(RoleName.OPERATOR, email="lost-save@test.example.com")

    def lost(self, form, model, is_created):  # noqa: ANN001, ANN202
        raise OperationalError(
            "INSERT",
            {"last_name": SECRET_LAST_NAME},
            Exception("gone"),
            connection_invalidated=True,
        )

    url = "/admin/patient/new/"
    data = {
        "first_name": SECRET_FIRST_NAME,
        "last_name": SECRET_LAST_NAME,
        "birth_date": "1961-03-14",
        "csrf_token": form_token(client, url),
    }
    monkeypatch.setattr(PatientView, "on_model_change", lost)
    response = client.post(url, data=data)
    monkeypatch.undo()
    assert _is_the_503_page(response)
    assert SECRET_LAST_NAME not in response.get_data(as_text=True)
    assert db.session.scalar(select(Patient).where(Patient.last_name == SECRET_LAST_NAME)) is None
