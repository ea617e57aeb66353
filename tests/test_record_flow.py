"""After any save the user is back on the record, told which record was saved, in every view."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import select

from backoffice.extensions import db
from backoffice.models import CareTeamMember, Clinic, Doctor, Patient, RoleName, Study, User
from tests.factories import make_clinic, make_doctor, make_patient, make_study
from tests.test_admin_crud import flashes, open_form

GENERIC = ("successfully", "Failed to create record", "Failed to save record")


def messages(client, response) -> str:  # noqa: ANN001
    """The messages of the page a response leads to (following its redirect)."""
    if response.status_code == 302:
        response = client.get(response.headers["Location"])
    return " ".join(flashes(response.get_data(as_text=True)))


@pytest.fixture
def world():  # noqa: ANN201
    clinic = make_clinic("Clínica Flujo", city="Puebla")
    doctor = make_doctor("Ana", "Ruiz", clinic=clinic, email="ana.ruiz@flujo.example.com")
    patient = make_patient("Jose", "Villalobos", mrn="1")
    db.session.commit()
    return {"clinic": clinic, "doctor": doctor, "patient": patient}


CREATES = {
    "clinic": (Clinic, {"name": "Clínica Nueva", "city": "León"}, "Saved Clínica Nueva."),
    "doctor": (
        Doctor,
        {
            "first_name": "Luis",
            "last_name": "Peña",
            "email": "luis.pena@flujo.example.com",
            "specialties": "CARDIOLOGY",
            "active": "y",
        },
        "Saved Dr. Luis Peña.",
    ),
    "patient": (
        Patient,
        {
            "mrn": "2",
            "first_name": "Jessica",
            "last_name": "Ramirez",
            "birth_date": "1971-07-01",
            "active": "y",
        },
        "Saved Jessica Ramirez (MRN 2).",
    ),
    "study": (
        Study,
        {
            "study_date": "2026-03-01",
            "urgency": "HIGH",
            "study_type": "XRAY",
            "body_part": "chest",
        },
        "Saved X-ray chest · Mar 1, 2026 · Jose Villalobos (MRN 1).",
    ),
    "care-team": (
        CareTeamMember,
        {"role": "PRIMARY", "status": "ACTIVE"},
        "Saved Dr. Ana Ruiz · Primary care doctor · Jose Villalobos.",
    ),
    "user": (
        User,
        {
            "email": "nuevo@flujo.example.com",
            "display_name": "Nuevo Usuario",
            "active": "y",
            "new_password": "a long enough passphrase",
        },
        "Saved Nuevo Usuario (nuevo@flujo.example.com).",
    ),
}


@pytest.mark.parametrize("view", sorted(CREATES))
def test_a_create_lands_on_the_new_record_named(client, auth, world, view):
    auth.as_role(RoleName.ADMIN)
    model, fields, expected = CREATES[view]
    data = open_form(client, f"/admin/{view}/new/")
    data.update(fields)
    if view == "doctor":
        data["clinic"] = str(world["clinic"].id)
    if view in ("study", "care-team"):
        data["patient"] = str(world["patient"].id)
    if view == "care-team":
        data["doctor"] = str(world["doctor"].id)
    response = client.post(f"/admin/{view}/new/", data=data)
    assert response.status_code == 302, flashes(response.get_data(as_text=True))
    db.session.expire_all()
    record = db.session.scalars(select(model).order_by(model.id.desc())).first()
    assert response.headers["Location"] == f"/admin/{view}/details/?id={record.id}"
    text = messages(client, response)
    assert expected in text
    assert not any(g in text for g in GENERIC)


def test_an_edit_opened_from_the_list_lands_on_the_record_not_the_list(client, auth, world):
    auth.as_role(RoleName.SUPPORT)
    patient = world["patient"]
    url = f"/admin/patient/edit/?id={patient.id}&url=/admin/patient/"
    data = open_form(client, url)
    data["email"] = "jose@flujo.example.com"
    response = client.post(url, data=data)
    assert response.headers["Location"] == f"/admin/patient/details/?id={patient.id}"
    assert "Saved Jose Villalobos (MRN 1)." in messages(client, response)


@pytest.mark.parametrize(
    "back",
    [
        "https://evil.example.com/admin/patient/details/?id=1",
        "//evil.example.com/details/",
        "/login",
    ],
)
def test_only_a_record_page_of_this_site_is_a_way_back(client, auth, world, back):
    auth.as_role(RoleName.ADMIN)
    clinic = world["clinic"]
    url = f"/admin/clinic/edit/?id={clinic.id}&url={back}"
    data = open_form(client, url)
    data["city"] = "Cholula"
    response = client.post(url, data=data)
    assert response.headers["Location"] == f"/admin/clinic/details/?id={clinic.id}"


def test_save_and_continue_and_save_and_add_another_name_the_record(client, auth, world):
    auth.as_role(RoleName.ADMIN)
    data = open_form(client, "/admin/clinic/new/")
    data.update(name="Clínica Otra", _continue_editing="Save and Continue Editing")
    response = client.post("/admin/clinic/new/", data=data)
    assert "/admin/clinic/edit/" in response.headers["Location"]
    assert "Saved Clínica Otra." in messages(client, response)
    data = open_form(client, "/admin/clinic/new/")
    data.update(name="Clínica Tercera", _add_another="Save and Add Another")
    response = client.post("/admin/clinic/new/", data=data)
    assert "/admin/clinic/new/" in response.headers["Location"]
    assert "Saved Clínica Tercera." in messages(client, response)


def test_a_refused_save_says_what_to_do_instead_of_failed(client, auth, world):
    auth.as_role(RoleName.ADMIN)
    data = open_form(client, "/admin/patient/new/")
    data.update(first_name="", last_name="Sin Nombre", birth_date="1980-01-01")
    page = client.post("/admin/patient/new/", data=data).get_data(as_text=True)
    text = " ".join(flashes(page))
    assert "Nothing was saved: correct the fields marked below and save again." in text
    assert "Failed" not in text


def test_a_deletion_names_what_was_deleted(client, auth, world):
    auth.as_role(RoleName.ADMIN)
    study = make_study(world["patient"], study_date=date(2026, 2, 3), body_part="KNEE")
    db.session.commit()
    page = client.get("/admin/study/").get_data(as_text=True)
    from tests.conftest import csrf_token_from

    response = client.post(
        "/admin/study/delete/",
        data={"id": str(study.id), "url": "/admin/study/", "csrf_token": csrf_token_from(page)},
    )
    text = messages(client, response)
    assert "Deleted X-ray knee · Feb 3, 2026 · Jose Villalobos (MRN 1)." in text
    assert "successfully" not in text


def test_the_message_is_in_the_readers_language(client, auth, world):
    user = auth.as_role(RoleName.ADMIN)
    user.locale = "es"
    db.session.commit()
    clinic = world["clinic"]
    url = f"/admin/clinic/edit/?id={clinic.id}"
    data = open_form(client, url)
    data["city"] = "Atlixco"
    assert "Se guardó Clínica Flujo." in messages(client, client.post(url, data=data))
