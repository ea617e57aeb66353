"""CSRF protection on every state-changing request: no token, no change; a real token works."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from backoffice.extensions import db
from backoffice.models import Clinic, Doctor, DoctorPhone, Patient, Role, RoleName, User
from tests.conftest import AuthActions, csrf_token_from, form_token, make_user
from tests.factories import make_clinic, make_patient

FORGED = "IjBhZDVmNjE3ZTg5MTAxMjM0NTY3ODkwYWJjZGVmMDEyMzQ1Njc4OSI.aGVsbG8.c2lnbmF0dXJl"


def bad_request(response) -> bool:  # noqa: ANN001
    """The 400 page the user sees when a form arrives without a valid token."""
    return response.status_code == 400 and "Bad request" in response.get_data(as_text=True)


def refused_then_accepted(
    client: FlaskClient,
    url: str,
    data: dict[str, str],
    token: str,
    unchanged: Callable[[], None],
) -> object:
    """POST without a token and with a forged one (both 400, nothing written), then with the
    real token; returns the last response for the caller to check what it did."""
    for label, extra in (("missing", {}), ("forged", {"csrf_token": FORGED})):
        response = client.post(url, data={**data, **extra})
        assert bad_request(response), (label, response.status_code)
        db.session.expire_all()
        unchanged()
    return client.post(url, data={**data, "csrf_token": token})


@pytest.fixture
def admin_client(csrf_app: Flask, client: FlaskClient) -> FlaskClient:
    AuthActions(client).as_role(RoleName.ADMIN, email="csrf-admin@test.example.com")
    return client


def _model_view(app: Flask, endpoint: str):  # noqa: ANN202
    for admin in app.extensions["admin"]:
        for view in admin._views:
            if view.endpoint == endpoint:
                return view
    raise AssertionError(f"no admin view {endpoint}")


@pytest.fixture
def editable_clinic_names(csrf_app: Flask) -> Iterator[None]:
    """No view ships list-inline editing yet; switch it on for clinic names so that the ajax
    update endpoint has something to save, and switch it off again afterwards."""
    view = _model_view(csrf_app, "clinic")
    view.column_editable_list = ("name",)
    view._refresh_forms_cache()
    try:
        yield
    finally:
        view.column_editable_list = None
        view._refresh_forms_cache()


def test_login_needs_a_token(csrf_app, client):
    user = make_user("csrf-login@test.example.com", RoleName.OPERATOR)
    token = form_token(client, "/login")
    data = {"email": user.email, "password": "correct horse battery staple"}

    def unchanged() -> None:
        row = db.session.get(User, user.id)
        assert row.last_login_at is None
        assert row.failed_login_count == 0
        assert client.get("/admin/").headers["Location"].startswith("/login")

    response = refused_then_accepted(client, "/login", data, token, unchanged)
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/"
    db.session.expire_all()
    assert db.session.get(User, user.id).last_login_at is not None
    assert "csrf-login" in client.get("/admin/").get_data(as_text=True)


def test_logout_needs_a_token(csrf_app, client):
    user = AuthActions(client).as_role(RoleName.SUPPORT, email="csrf-logout@test.example.com")
    session_token = user.session_token
    token = form_token(client, "/admin/")

    def unchanged() -> None:
        assert db.session.get(User, user.id).session_token == session_token
        page = client.get("/admin/")
        assert page.status_code == 200
        assert 'id="logout-form"' in page.get_data(as_text=True)

    response = refused_then_accepted(client, "/logout", {}, token, unchanged)
    assert response.headers["Location"] == "/login"
    db.session.expire_all()
    assert db.session.get(User, user.id).session_token != session_token
    assert client.get("/admin/").headers["Location"].startswith("/login")


def test_admin_create_needs_a_token(admin_client):
    token = form_token(admin_client, "/admin/clinic/new/")
    data = {"name": "Clinica Token", "city": "Oaxaca"}

    def unchanged() -> None:
        assert db.session.scalar(select(Clinic).where(Clinic.name == "Clinica Token")) is None

    response = refused_then_accepted(admin_client, "/admin/clinic/new/", data, token, unchanged)
    assert response.status_code == 302
    clinic = db.session.scalar(select(Clinic).where(Clinic.name == "Clinica Token"))
    assert clinic is not None and clinic.city == "Oaxaca"


def test_admin_edit_needs_a_token(admin_client):
    clinic = make_clinic("Clinica Antes", city="Merida")
    db.session.commit()
    url = f"/admin/clinic/edit/?id={clinic.id}"
    token = form_token(admin_client, url)
    data = {"name": "Clinica Despues", "city": "Merida"}

    def unchanged() -> None:
        assert db.session.get(Clinic, clinic.id).name == "Clinica Antes"

    response = refused_then_accepted(admin_client, url, data, token, unchanged)
    assert response.status_code == 302
    db.session.expire_all()
    assert db.session.get(Clinic, clinic.id).name == "Clinica Despues"


def test_admin_delete_needs_a_token(admin_client):
    clinic = make_clinic("Clinica Borrar")
    db.session.commit()
    clinic_id = clinic.id
    # the token of the delete button on the list page, as a browser would send it
    token = form_token(admin_client, "/admin/clinic/")

    def unchanged() -> None:
        assert db.session.get(Clinic, clinic_id) is not None

    response = refused_then_accepted(
        admin_client, "/admin/clinic/delete/", {"id": str(clinic_id)}, token, unchanged
    )
    assert response.status_code == 302
    db.session.expire_all()
    assert db.session.get(Clinic, clinic_id) is None


def test_bulk_action_needs_a_token(admin_client):
    first, second = make_clinic("Clinica Uno"), make_clinic("Clinica Dos")
    db.session.commit()
    ids = [first.id, second.id]
    page = admin_client.get("/admin/clinic/").get_data(as_text=True)
    assert 'id="action_form"' in page
    token = csrf_token_from(page[page.index('id="action_form"') :])
    data = {"action": "delete", "rowid": [str(i) for i in ids]}

    def unchanged() -> None:
        assert len(db.session.scalars(select(Clinic.id).where(Clinic.id.in_(ids))).all()) == 2

    response = refused_then_accepted(admin_client, "/admin/clinic/action/", data, token, unchanged)
    assert response.status_code == 302
    db.session.expire_all()
    assert db.session.scalars(select(Clinic.id).where(Clinic.id.in_(ids))).all() == []


def test_ajax_update_needs_a_token(admin_client, editable_clinic_names):
    clinic = make_clinic("Clinica Lista")
    db.session.commit()
    token = form_token(admin_client, "/admin/clinic/")
    data = {"list_form_pk": str(clinic.id), "name": "Clinica Editada"}

    def unchanged() -> None:
        assert db.session.get(Clinic, clinic.id).name == "Clinica Lista"

    response = refused_then_accepted(
        admin_client, "/admin/clinic/ajax/update/", data, token, unchanged
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert "saved" in response.get_data(as_text=True).lower()
    db.session.expire_all()
    assert db.session.get(Clinic, clinic.id).name == "Clinica Editada"


def test_doctor_form_with_phone_rows_needs_a_token(admin_client):
    clinic = make_clinic("Clinica Telefonos")
    db.session.commit()
    page = admin_client.get("/admin/doctor/new/").get_data(as_text=True)
    assert "inline-field-template" in page  # the form offers phone rows
    token = csrf_token_from(page)
    data = {
        "first_name": "Lucia",
        "last_name": "Fono",
        "email": "lucia.fono@test.example.com",
        "specialties": "CARDIOLOGY",
        "clinic": str(clinic.id),
        "active": "y",
        "phones-0-number": "+52 55 1234 5678",
        "phones-0-kind": "OFFICE",
        "phones-0-is_primary": "y",
        "phones-1-number": "55 8765 4321",
        "phones-1-kind": "MOBILE",
    }

    def unchanged() -> None:
        assert db.session.scalar(select(Doctor).where(Doctor.last_name == "Fono")) is None
        assert db.session.scalars(select(DoctorPhone)).all() == []

    response = refused_then_accepted(admin_client, "/admin/doctor/new/", data, token, unchanged)
    assert response.status_code == 302, response.get_data(as_text=True)[:3000]
    doctor = db.session.scalar(select(Doctor).where(Doctor.last_name == "Fono"))
    assert doctor is not None
    assert sorted(p.number for p in doctor.phones) == ["+525512345678", "+525587654321"]


def test_users_view_create_needs_a_token(admin_client):
    token = form_token(admin_client, "/admin/user/new/")
    operator = db.session.scalar(select(Role).where(Role.name == RoleName.OPERATOR))
    data = {
        "email": "csrf-new@test.example.com",
        "display_name": "New Operator",
        "roles": str(operator.id),
        "active": "y",
        "new_password": "a long enough passphrase",
    }

    def unchanged() -> None:
        assert db.session.scalar(select(User).where(User.email == data["email"])) is None

    response = refused_then_accepted(admin_client, "/admin/user/new/", data, token, unchanged)
    assert response.status_code == 302, response.get_data(as_text=True)[:3000]
    user = db.session.scalar(select(User).where(User.email == data["email"]))
    assert user is not None
    assert user.role_names == {RoleName.OPERATOR}
    assert user.check_password("a long enough passphrase")


@pytest.mark.parametrize(
    "path", ["/admin/patient/delete/?id={id}", "/admin/patient/action/?action=delete&rowid={id}"]
)
def test_delete_by_get_is_refused(admin_client, path):
    patient = make_patient("Gabriel", "Getdelete")
    db.session.commit()
    response = admin_client.get(path.format(id=patient.id))
    assert response.status_code == 405
    assert "Method not allowed" in response.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(Patient, patient.id) is not None


def test_a_studys_moves_need_a_token(admin_client):
    """The study's buttons and the second step of a bulk move."""
    from backoffice.models import Study, StudyStatus
    from tests.factories import make_study

    study = make_study(status=StudyStatus.SCHEDULED)
    db.session.commit()
    token = form_token(admin_client, f"/admin/study/details/?id={study.id}")

    def unchanged() -> None:
        assert db.session.get(Study, study.id).status == StudyStatus.SCHEDULED

    move = {"id": str(study.id), "transition": "check_in", "version": str(study.version)}
    response = refused_then_accepted(
        admin_client, "/admin/study/transition/", move, token, unchanged
    )
    assert response.status_code == 302
    db.session.expire_all()
    assert db.session.get(Study, study.id).status == StudyStatus.ARRIVED

    bulk = {
        "transition": "cancel",
        "rowid": str(study.id),
        "row_versions": f"{study.id}:{db.session.get(Study, study.id).version}",
        "reason": "Machine down",
    }

    def still_arrived() -> None:
        assert db.session.get(Study, study.id).status == StudyStatus.ARRIVED

    response = refused_then_accepted(admin_client, "/admin/study/bulk/", bulk, token, still_arrived)
    assert "1 of 1 studies done." in response.get_data(as_text=True)


def test_writing_and_correcting_a_report_need_a_token(csrf_app, client):
    from backoffice.models import Report, ReportAddendum, StudyStatus
    from tests.factories import make_doctor, make_study

    doctor = make_doctor("Rita", "Report")
    study = make_study(status=StudyStatus.PERFORMED, reporting_doctor=doctor)
    user = make_user("rita@test.example.com", RoleName.DOCTOR)
    user.doctor_id = doctor.id
    db.session.commit()
    AuthActions(client).login("rita@test.example.com")
    token = form_token(client, f"/admin/study/report/?id={study.id}")

    def no_report() -> None:
        assert db.session.scalar(select(Report).where(Report.study_id == study.id)) is None

    fields = {
        "id": str(study.id),
        "study_version": str(study.version),
        "findings": "F",
        "impression": "I",
        "action": "sign",
    }
    response = refused_then_accepted(client, "/admin/study/report/save/", fields, token, no_report)
    assert response.status_code == 302

    def no_addendum() -> None:
        assert db.session.scalar(select(ReportAddendum)) is None

    addendum = {"id": str(study.id), "text": "Correction"}
    refused_then_accepted(client, "/admin/study/report/addendum/", addendum, token, no_addendum)
    db.session.expire_all()
    assert db.session.scalar(select(ReportAddendum)).text == "Correction"
