"""Care-team links: their own list and filters, a doctor's patients, the checks on their own
form, deletion rules, and their export."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import select

from backoffice.extensions import db
from backoffice.models import CareTeamMember, CareTeamRole, CareTeamStatus, Doctor, RoleName
from tests.factories import make_doctor, make_patient
from tests.test_admin_crud import column, field_block, filter_arg, flashes, open_form, text_of
from tests.test_export import read_csv


@pytest.fixture
def team():  # noqa: ANN201
    ana, luis = make_doctor("Ana", "Ruiz"), make_doctor("Luis", "Paz")
    jose = make_patient("Jose", "Villalobos", mrn="1", referring_doctor=ana)
    maria = make_patient("María", "Núñez", mrn="2", referring_doctor=luis)
    jose.care_team.append(
        CareTeamMember(
            doctor=luis,
            role=CareTeamRole.SPECIALIST,
            status=CareTeamStatus.COMPLETED,
            since=date(2025, 1, 10),
            until=date(2025, 3, 1),
            reason="Segunda opinión",
        )
    )
    db.session.commit()
    return {"ana": ana, "luis": luis, "jose": jose, "maria": maria}


def test_the_list_shows_names_and_labels_and_filters_by_doctor_role_and_status(client, auth, team):
    auth.as_role(RoleName.MANAGER)
    page = client.get("/admin/care-team/").get_data(as_text=True)
    assert sorted(column(page, "patient")) == [
        "Jose Villalobos (MRN 1)",
        "Jose Villalobos (MRN 1)",
        "María Núñez (MRN 2)",
    ]
    assert sorted(column(page, "role")) == ["Referring doctor", "Referring doctor", "Specialist"]
    luis = team["luis"]
    by_doctor = client.get(
        f"/admin/care-team/?flt0_{filter_arg(page, 'Doctor')}={luis.id}"
    ).get_data(as_text=True)
    assert sorted(column(by_doctor, "patient")) == [
        "Jose Villalobos (MRN 1)",
        "María Núñez (MRN 2)",
    ]
    completed = client.get(
        f"/admin/care-team/?flt0_{filter_arg(page, 'Status')}=COMPLETED"
    ).get_data(as_text=True)
    assert column(completed, "reason") == ["Segunda opinión"]
    specialists = client.get(
        f"/admin/care-team/?flt0_{filter_arg(page, 'Role')}=SPECIALIST"
    ).get_data(as_text=True)
    assert column(specialists, "doctor") == ["Dr. Luis Paz"]
    searched = client.get("/admin/care-team/", query_string={"search": "Núñez"}).get_data(True)
    assert column(searched, "patient") == ["María Núñez (MRN 2)"]


def test_a_doctors_page_lists_their_patients_and_links_to_all_of_them(client, auth, team):
    auth.as_role(RoleName.SUPPORT)
    luis = team["luis"]
    page = client.get(f"/admin/doctor/details/?id={luis.id}").get_data(as_text=True)
    patients = page[page.index('class="list-unstyled mb-0 doctor-patients"') :]
    text = text_of(page)
    assert "2 patient links, 1 active." in text
    assert "María Núñez (MRN 2) Referring doctor · Active" in text_of(patients)
    assert "Jose Villalobos (MRN 1) Specialist · Completed · since Jan 10, 2025" in text_of(
        patients
    )
    link = page[page.index("See them all") - 200 : page.index("See them all")]
    url = link[link.rindex('href="') + 6 : link.rindex('"')].replace("&amp;", "&")
    listed = client.get(url).get_data(as_text=True)
    assert sorted(column(listed, "patient")) == ["Jose Villalobos (MRN 1)", "María Núñez (MRN 2)"]


def test_a_link_made_on_its_own_form_is_checked_with_the_patients_others(client, auth, team):
    auth.as_role(RoleName.SUPPORT)  # editing a patient's team is editing the patient
    data = open_form(client, "/admin/care-team/new/")
    data.update(
        patient=str(team["jose"].id), doctor=str(team["luis"].id), role="REFERRING", status="ACTIVE"
    )
    page = client.post("/admin/care-team/new/", data=data).get_data(as_text=True)
    assert (
        "The link with Dr. Ana Ruiz already names the active referring doctor, and a patient has "
        "one: mark one of them inactive." in text_of(field_block(page, "role"))
    )
    data.update(role="REPORTING", since="2026-02-01", until="2026-01-01", status="INACTIVE")
    page = client.post("/admin/care-team/new/", data=data).get_data(as_text=True)
    assert "The end date 2026-01-01 is before the start date 2026-02-01." in text_of(
        field_block(page, "until")
    )
    data.update(until="", status="ACTIVE")
    response = client.post("/admin/care-team/new/", data=data)
    assert response.status_code == 302, flashes(response.get_data(as_text=True))
    db.session.expire_all()
    roles = {
        (m.doctor_id, m.role.value, m.status.value)
        for m in db.session.scalars(
            select(CareTeamMember).where(CareTeamMember.patient_id == team["jose"].id)
        )
    }
    assert (team["luis"].id, "REPORTING", "ACTIVE") in roles


def test_editing_the_referring_link_on_its_own_form_moves_the_referring_doctor(client, auth, team):
    auth.as_role(RoleName.OPERATOR)
    jose = team["jose"]
    link = db.session.scalars(
        select(CareTeamMember).where(
            CareTeamMember.patient_id == jose.id, CareTeamMember.role == "REFERRING"
        )
    ).one()
    url = f"/admin/care-team/edit/?id={link.id}"
    data = open_form(client, url)
    data["doctor"] = str(team["luis"].id)
    assert client.post(url, data=data).status_code == 302
    db.session.expire_all()
    assert db.session.get(type(jose), jose.id).referring_doctor_id == team["luis"].id


def test_a_doctor_on_a_care_team_cannot_be_deleted(client, auth, team):
    only_on_team = make_doctor("Eva", "Luna")
    patient = make_patient()
    patient.care_team.append(
        CareTeamMember(doctor=only_on_team, role=CareTeamRole.PRIMARY, status="INACTIVE")
    )
    db.session.commit()
    auth.as_role(RoleName.ADMIN)
    page = client.get("/admin/doctor/").get_data(as_text=True)
    from tests.conftest import csrf_token_from

    response = client.post(
        "/admin/doctor/delete/",
        data={"id": str(only_on_team.id), "csrf_token": csrf_token_from(page)},
        follow_redirects=True,
    )
    assert "1 patient's care team" in text_of(response.get_data(as_text=True))
    assert db.session.get(Doctor, only_on_team.id) is not None


def test_the_export_names_patients_and_doctors_by_their_keys(client, auth, team):
    auth.as_role(RoleName.MANAGER)
    rows = read_csv(client.get("/admin/care-team/export/csv/"))
    assert rows[0] == [
        "patient_id",
        "doctor",
        "role",
        "status",
        "since",
        "until",
        "reason",
        "notes",
    ]
    specialist = next(r for r in rows[1:] if r[2] == "SPECIALIST")
    assert specialist[:7] == [
        "1",
        team["luis"].email,
        "SPECIALIST",
        "COMPLETED",
        "2025-01-10",
        "2025-03-01",
        "Segunda opinión",
    ]


def test_a_deleted_patient_comes_back_with_phones_and_care_team(client, auth, team):
    from backoffice.models import AuditEntry, Patient, PatientPhone
    from tests.conftest import csrf_token_from
    from tests.test_audit import undo

    maria = team["maria"]
    maria.phones.append(PatientPhone(number="55 2468 1357", kind="MOBILE", is_primary=True))
    db.session.commit()
    maria_id = maria.id
    auth.as_role(RoleName.ADMIN)
    page = client.get("/admin/patient/").get_data(as_text=True)
    response = client.post(
        "/admin/patient/delete/",
        data={"id": str(maria_id), "csrf_token": csrf_token_from(page)},
        follow_redirects=True,
    )
    assert "Deleted María Núñez (MRN 2)." in text_of(response.get_data(as_text=True))
    db.session.expire_all()
    assert db.session.get(Patient, maria_id) is None
    assert db.session.scalars(select(PatientPhone)).all() == []
    deleted = db.session.scalars(
        select(AuditEntry).where(AuditEntry.entity == "patient", AuditEntry.action == "DELETE")
    ).one()
    children = db.session.scalars(
        select(AuditEntry).where(
            AuditEntry.parent_id == str(maria_id), AuditEntry.action == "DELETE"
        )
    ).all()
    assert sorted(e.entity for e in children) == ["care_team_member", "patient_phone"]

    undo(client, "restore", deleted.id)
    db.session.expire_all()
    back = db.session.get(Patient, maria_id)
    assert (back.mrn, back.referring_doctor_id) == ("2", team["luis"].id)
    assert [p.number for p in back.phones] == ["+525524681357"]
    assert [(m.doctor_id, m.role.value, m.status.value) for m in back.care_team] == [
        (team["luis"].id, "REFERRING", "ACTIVE")
    ]


def test_a_stale_edit_of_a_link_is_refused_with_the_other_change_shown(client, auth, team):
    auth.as_role(RoleName.OPERATOR)
    link = db.session.scalars(
        select(CareTeamMember).where(CareTeamMember.role == "SPECIALIST")
    ).one()
    url = f"/admin/care-team/edit/?id={link.id}"
    first, second = open_form(client, url), open_form(client, url)
    first["reason"] = "Cambio primero"
    assert client.post(url, data=first).status_code == 302
    second["notes"] = "Cambio tardío"
    page = client.post(url, data=second).get_data(as_text=True)
    assert "This record was changed by" in page
    assert "Segunda opinión" in text_of(page) and "Cambio primero" in text_of(page)
    db.session.expire_all()
    again = db.session.get(CareTeamMember, link.id)
    assert (again.reason, again.notes) == ("Cambio primero", None)
