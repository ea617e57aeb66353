"""The chart's patient fields through the form, the list (search, filters, inactive), the
look-ups and the audit trail; care-team rows checked row by row; the referring doctor in step."""

from __future__ import annotations

import re
from datetime import date, timedelta

import pytest
from sqlalchemy import select

from backoffice.extensions import db
from backoffice.models import (
    AuditEntry,
    CareTeamMember,
    CareTeamRole,
    CareTeamStatus,
    Patient,
    PatientPhone,
    RoleName,
)
from tests.factories import make_doctor, make_patient
from tests.test_admin_crud import column, field_block, filter_arg, flashes, open_form, text_of


@pytest.fixture
def admin(auth):  # noqa: ANN001, ANN201
    return auth.as_role(RoleName.ADMIN)


def new_patient(client, **fields) -> dict:  # noqa: ANN001, ANN003
    data = open_form(client, "/admin/patient/new/")
    data.update(
        {"mrn": "", "first_name": "Jose", "last_name": "Villalobos", "birth_date": "1955-04-10"}
    )
    data.update(fields)
    return data


def phone_rows(*rows: tuple[str, str]) -> dict:
    out = {}
    for i, (number, kind) in enumerate(rows):
        out |= {f"phones-{i}-id": "", f"phones-{i}-number": number, f"phones-{i}-kind": kind}
    return out


def team_rows(*rows: dict) -> dict:
    out = {}
    for i, row in enumerate(rows):
        out[f"care_team-{i}-id"] = ""
        for key, value in row.items():
            out[f"care_team-{i}-{key}"] = value
    return out


def only_patient() -> Patient:
    db.session.expire_all()
    return db.session.scalars(select(Patient)).one()


# --------------------------------------------------------------------------- the form


def test_every_field_is_saved_through_the_form_as_the_rules_store_it(client, admin):
    doctor = make_doctor("Ana", "Ruiz")
    db.session.commit()
    data = new_patient(
        client,
        sex="MALE",
        email="Pepe@Ejemplo.com",
        street=" Calle Durango 214 ",
        city="  Ciudad   de México ",
        state="CDMX",
        postal_code=" 06700 ",
        country="MX",
        preferred_language="es",
        emergency_contact_name=" María  Villalobos ",
        emergency_contact_relation="hija",
        emergency_contact_phone="(55) 3344-5566",
        allergies="Penicilina",
        contrast_allergy="y",
        active="y",
        **phone_rows(("+52 55 1987 6543", "MOBILE"), ("55 5264 1020", "HOME")),
        **team_rows({"doctor": str(doctor.id), "role": "REFERRING", "status": "ACTIVE"}),
    )
    data["phones-0-is_primary"] = "y"
    response = client.post("/admin/patient/new/", data=data)
    assert response.status_code == 302, flashes(response.get_data(as_text=True))
    p = only_patient()
    assert re.fullmatch(r"MRN-\d{6}", p.mrn)  # left empty: the next number of the sequence
    assert (p.sex.value, p.email, p.street, p.city, p.state, p.postal_code) == (
        "MALE",
        "pepe@ejemplo.com",
        "Calle Durango 214",
        "Ciudad de México",
        "CDMX",
        "06700",
    )
    assert (p.country, p.preferred_language) == ("MX", "es")
    assert (p.emergency_contact_name, p.emergency_contact_phone) == (
        "María Villalobos",
        "+525533445566",
    )
    assert (p.allergies, p.contrast_allergy, p.active) == ("Penicilina", True, True)
    assert [(ph.number, ph.kind.value, ph.is_primary) for ph in p.phones] == [
        ("+525519876543", "MOBILE", True),
        ("+525552641020", "HOME", False),
    ]
    assert p.referring_doctor_id == doctor.id
    assert [(m.role.value, m.status.value) for m in p.care_team] == [("REFERRING", "ACTIVE")]


def test_a_new_patient_form_starts_with_unknown_sex_active_and_the_home_country(client, admin):
    data = open_form(client, "/admin/patient/new/")
    assert data["sex"] == "UNKNOWN"
    assert data["active"] == "y"
    assert data["country"] == "MX"
    page = client.get("/admin/patient/new/").get_data(as_text=True)
    assert "Leave it empty to give the next number of the sequence (such as MRN-000042)." in page


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("emergency_contact_phone", "call me", "'call me' is not a phone number"),
        ("country", "ZZ", "Choose one of the listed values."),
        ("preferred_language", "klingon", "Choose one of the listed values."),
        ("sex", "ROBOT", "Invalid value"),
    ],
)
def test_a_bad_value_is_shown_next_to_its_field_and_nothing_is_saved(
    client, admin, field, value, error
):
    page = client.post("/admin/patient/new/", data=new_patient(client, **{field: value}))
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert error in text_of(field_block(html, field))
    assert db.session.scalars(select(Patient)).all() == []


def test_phone_rows_are_checked_one_by_one(client, admin):
    data = new_patient(
        client, **phone_rows(("55 1234 5678", "MOBILE"), ("12ab", "HOME"), ("5512345678", "FAX"))
    )
    html = client.post("/admin/patient/new/", data=data).get_data(as_text=True)
    assert "'12ab' is not a phone number: it contains letters." in text_of(
        field_block(html, "phones-1-number")
    )
    assert "This number is already listed" not in text_of(field_block(html, "phones-0-number"))
    assert db.session.scalars(select(PatientPhone)).all() == []
    data = new_patient(client, **phone_rows(("55 1234 5678", "MOBILE"), ("5512345678", "FAX")))
    html = client.post("/admin/patient/new/", data=data).get_data(as_text=True)
    assert "This number is already listed for this patient." in text_of(
        field_block(html, "phones-1-number")
    )


def test_an_mrn_cannot_be_emptied_or_taken_twice(client, admin):
    make_patient("Otra", "Persona", mrn="X-1")
    patient = make_patient("Jose", "Villalobos", mrn="X-2")
    db.session.commit()
    url = f"/admin/patient/edit/?id={patient.id}"
    data = open_form(client, url)
    data["mrn"] = "  "
    html = client.post(url, data=data).get_data(as_text=True)
    assert "it cannot be removed" in text_of(field_block(html, "mrn"))
    data["mrn"] = "X-1"
    html = client.post(url, data=data).get_data(as_text=True)
    assert "MRN X-1 already belongs to Otra Persona." in text_of(field_block(html, "mrn"))
    db.session.expire_all()
    assert db.session.get(Patient, patient.id).mrn == "X-2"


# --------------------------------------------------------------------------- care-team rows


def test_care_team_rows_are_checked_and_each_problem_is_on_its_row(client, admin):
    ana, luis = make_doctor("Ana", "Ruiz"), make_doctor("Luis", "Paz")
    db.session.commit()
    yesterday = (date.today() - timedelta(days=1)).isoformat()
    data = new_patient(
        client,
        **team_rows(
            {"doctor": str(ana.id), "role": "REFERRING", "status": "ACTIVE"},
            {"doctor": str(luis.id), "role": "REFERRING", "status": "ACTIVE"},
            {"doctor": str(ana.id), "role": "REFERRING", "status": "ACTIVE"},
            {"doctor": str(luis.id), "role": "SPECIALIST", "status": "ACTIVE", "until": yesterday},
            {
                "doctor": str(luis.id),
                "role": "PRIMARY",
                "status": "COMPLETED",
                "since": "2025-05-01",
                "until": "2025-04-01",
            },
        ),
    )
    html = client.post("/admin/patient/new/", data=data).get_data(as_text=True)
    assert "Row 1 already names the active referring doctor" in text_of(
        field_block(html, "care_team-1-role")
    )
    assert "Row 1 already gives this doctor this role, active." in text_of(
        field_block(html, "care_team-2-doctor")
    )
    assert f"This link ended on {yesterday}" in text_of(field_block(html, "care_team-3-status"))
    assert "The end date 2025-04-01 is before the start date 2025-05-01." in text_of(
        field_block(html, "care_team-4-until")
    )
    assert "already" not in text_of(field_block(html, "care_team-0-doctor"))
    assert db.session.scalars(select(CareTeamMember)).all() == []


def test_the_referring_doctor_follows_the_care_team_and_back(client, admin):
    ana, luis = make_doctor("Ana", "Ruiz"), make_doctor("Luis", "Paz")
    patient = make_patient(referring_doctor=ana)  # code sets the column: a link appears
    db.session.commit()
    assert [(m.doctor_id, m.role, m.status) for m in patient.care_team] == [
        (ana.id, CareTeamRole.REFERRING, CareTeamStatus.ACTIVE)
    ]
    patient.referring_doctor = luis  # a new referring doctor: the old link ends today
    db.session.commit()
    links = sorted(patient.care_team, key=lambda m: m.id)
    assert [(m.doctor_id, m.status.value, m.until) for m in links] == [
        (ana.id, "INACTIVE", date.today()),
        (luis.id, "ACTIVE", None),
    ]
    # the form edits the team: marking the referring link inactive clears the doctor
    url = f"/admin/patient/edit/?id={patient.id}"
    data = open_form(client, url)
    index = next(i for i in range(2) if data[f"care_team-{i}-doctor"] == str(luis.id))
    data[f"care_team-{index}-status"] = "COMPLETED"
    assert client.post(url, data=data).status_code == 302
    db.session.expire_all()
    assert db.session.get(Patient, patient.id).referring_doctor_id is None
    # and an active REFERRING row makes its doctor the referring doctor again
    data = open_form(client, url)
    data[f"care_team-{1 - index}-status"] = "ACTIVE"
    data[f"care_team-{1 - index}-until"] = ""
    assert client.post(url, data=data).status_code == 302
    db.session.expire_all()
    assert db.session.get(Patient, patient.id).referring_doctor_id == ana.id


# --------------------------------------------------------------------------- the list


def test_inactive_patients_are_hidden_until_the_status_filter_shows_them(client, admin):
    make_patient("Activa", "Alba", mrn="A-1")
    gone = make_patient("Inactivo", "Brito", mrn="A-2", active=False)
    db.session.commit()
    page = client.get("/admin/patient/").get_data(as_text=True)
    assert column(page, "last_name") == ["Alba"]
    assert "Inactive patients are hidden." in page
    assert "List (1)" in text_of(page)
    arg = filter_arg(page, "Status")
    shown = client.get(f"/admin/patient/?flt0_{arg}=all").get_data(as_text=True)
    assert column(shown, "last_name") == ["Alba", "Brito"]
    assert "Inactive patients are hidden." not in shown
    only = client.get(f"/admin/patient/?flt0_{arg}=inactive").get_data(as_text=True)
    assert column(only, "last_name") == ["Brito"]
    # never deleted: the chart still opens, the export follows the list
    assert client.get(f"/admin/patient/details/?id={gone.id}").status_code == 200
    export = client.get("/admin/patient/export/csv/").get_data(as_text=True)
    assert "A-1" in export and "A-2" not in export
    export = client.get(f"/admin/patient/export/csv/?flt0_{arg}=all").get_data(as_text=True)
    assert "A-2" in export


def test_an_inactive_patient_is_not_offered_for_a_new_study(client, admin):
    make_patient("Vigente", "Mora", mrn="L-1")
    make_patient("Baja", "Mora", mrn="L-2", active=False)
    db.session.commit()
    response = client.get("/admin/study/ajax/lookup/?name=patient&query=Mora")
    assert [label for _id, label in response.get_json()] == ["Vigente Mora (MRN L-1)"]


def test_search_finds_a_patient_by_phone_digits(client, admin):
    jose = make_patient("Jose", "Villalobos", mrn="S-1")
    jose.phones.append(PatientPhone(number="55 1987 6543", kind="MOBILE"))
    jose.phones.append(PatientPhone(number="55 1987 0000", kind="HOME"))
    other = make_patient("Ana", "Otra", mrn="S-2")
    other.phones.append(PatientPhone(number="33 1234 5678", kind="MOBILE"))
    db.session.commit()
    for term in ("55 1987 6543", "(55) 1987-6543", "+525519876543", "1987", "6543"):
        page = client.get("/admin/patient/", query_string={"search": term}).get_data(True)
        assert column(page, "last_name") == ["Villalobos"], term
        assert "List (1)" in text_of(page), term  # two matching phones count the patient once
    # two digits are too few to mean a phone; the MRN still matches from its start
    page = client.get("/admin/patient/", query_string={"search": "19"}).get_data(True)
    assert column(page, "last_name") == []


@pytest.mark.parametrize(
    ("label", "value", "expected"),
    [("Sex", "FEMALE", ["Alba"]), ("City", "puebla", ["Alba", "Cruz"])],
)
def test_filters_by_sex_and_city(client, admin, label, value, expected):
    make_patient("Ana", "Alba", sex="FEMALE", city="Puebla")
    make_patient("Luis", "Cruz", sex="MALE", city="Puebla")
    make_patient("Eva", "Duarte", sex="OTHER", city="León")
    db.session.commit()
    page = client.get("/admin/patient/").get_data(as_text=True)
    arg = filter_arg(page, label)
    filtered = client.get(f"/admin/patient/?flt0_{arg}={value}").get_data(as_text=True)
    assert column(filtered, "last_name") == expected


# --------------------------------------------------------------------------- audit trail


def test_changes_to_the_new_fields_phones_and_team_are_in_the_audit_trail(client, admin):
    doctor = make_doctor("Ana", "Ruiz")
    patient = make_patient("Jose", "Villalobos")
    patient.phones.append(PatientPhone(number="55 1987 6543", kind="MOBILE", is_primary=True))
    db.session.commit()
    version = patient.version
    mark = db.session.scalar(select(AuditEntry.id).order_by(AuditEntry.id.desc()).limit(1))
    url = f"/admin/patient/edit/?id={patient.id}"
    data = open_form(client, url)
    data.update(
        sex="MALE",
        city="Puebla",
        contrast_allergy="y",
        **{"phones-0-number": "55 1987 0000"},
        **{
            "care_team-0-id": "",
            "care_team-0-doctor": str(doctor.id),
            "care_team-0-role": "SPECIALIST",
            "care_team-0-status": "ACTIVE",
        },
    )
    assert client.post(url, data=data).status_code == 302
    db.session.expire_all()
    entries = db.session.scalars(
        select(AuditEntry).where(AuditEntry.id > mark, AuditEntry.action != "VIEW")
    ).all()
    by_entity = {(e.entity, e.action): e for e in entries}
    assert by_entity[("patient", "UPDATE")].changes == {
        "sex": ["UNKNOWN", "MALE"],
        "city": [None, "Puebla"],
        "contrast_allergy": [False, True],
    }
    phone = by_entity[("patient_phone", "UPDATE")]
    assert phone.changes == {"number": ["+525519876543", "+525519870000"]}
    assert (phone.parent_entity, phone.parent_id) == ("patient", str(patient.id))
    link = by_entity[("care_team_member", "CREATE")]
    assert link.parent_id == str(patient.id) and link.changes["role"] == [None, "SPECIALIST"]
    # one save, one new version of the patient: a form opened before it is stale
    assert db.session.get(Patient, patient.id).version == version + 1
    assert {e.details["version"] for e in entries} == {version + 1}


def test_a_change_to_the_phones_alone_makes_an_older_form_stale(client, admin):
    patient = make_patient()
    patient.phones.append(PatientPhone(number="55 1987 6543", kind="MOBILE"))
    db.session.commit()
    url = f"/admin/patient/edit/?id={patient.id}"
    stale = open_form(client, url)
    fresh = open_form(client, url)
    fresh["phones-0-number"] = "55 1111 2222"
    assert client.post(url, data=fresh).status_code == 302
    stale["email"] = "late@example.com"
    page = client.post(url, data=stale).get_data(as_text=True)
    assert "This record was changed by" in page
    assert re.search(r"number.*\+525519876543.*\+525511112222", text_of(page))
    db.session.expire_all()
    assert db.session.get(Patient, patient.id).email is None
