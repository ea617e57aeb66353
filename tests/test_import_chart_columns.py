"""The bulk upload's optional chart columns (patients) and profile columns (doctors), their
checks, the care team the referring doctor column keeps, and exports that upload again."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import select

from backoffice.extensions import db
from backoffice.models import (
    AuditEntry,
    CareTeamMember,
    Doctor,
    Patient,
    PatientPhone,
    RoleName,
    Specialty,
)
from backoffice.services.imports import run_import
from tests.factories import make_clinic, make_doctor, make_patient

DATA = Path(__file__).resolve().parent.parent / "backoffice" / "data"
CHART_HEADER = (
    "id,first_name,last_name,birth_date,email,sex,phones,street,city,state,postal_code,country,"
    "preferred_language,emergency_contact_name,emergency_contact_relation,"
    "emergency_contact_phone,allergies,contrast_allergy,active\n"
)


@pytest.fixture
def write(tmp_path):  # noqa: ANN001, ANN201
    counter = iter(range(1000))

    def _write(content: str) -> Path:
        path = tmp_path / f"upload-{next(counter)}.csv"
        path.write_text(content, encoding="utf-8")
        return path

    return _write


def patient(mrn: str) -> Patient:
    db.session.expire_all()
    return db.session.scalars(select(Patient).where(Patient.mrn == mrn)).one()


def test_the_reference_files_still_import_exactly_as_they_are():
    for name, kind, rows in (("patients.csv", "patients", 4), ("studies.csv", "studies", 4)):
        report = run_import(DATA / name, kind, dry_run=False)
        assert report.outcome == "committed", report.text_lines()
        assert (report.created, report.rejected) == (rows, 0), name
        again = run_import(DATA / name, kind, dry_run=True)
        assert (again.unchanged, again.created, again.updated) == (rows, 0, 0), name
    jose = patient("1")
    # the chart's fields the file does not have take their defaults
    assert (jose.sex.value, jose.active, jose.contrast_allergy, jose.phones) == (
        "UNKNOWN",
        True,
        False,
        [],
    )
    assert sorted(s.body_part for s in jose.studies) == ["NECK", "STOMACH"]


def test_every_chart_column_is_stored_as_the_forms_store_it(write):
    path = write(
        CHART_HEADER
        + 'C-1,Jose,Villalobos,1955-04-10,pepe@ejemplo.com,male,"MOBILE:55 1987 6543; home:'
        '(55) 5264-1020",Calle Durango 214, Ciudad  de México ,CDMX, 06700 ,México,Spanish,'
        "María Villalobos,hija,55 3344 5566,Penicilina,sí,yes\n"
        "C-2,Ana,Sola,1980-01-01,,,,,,,,,,,,,,,no\n"
    )
    preview = run_import(path, "patients")
    assert preview.problems == [] and preview.created == 2
    report = run_import(path, "patients", dry_run=False)
    assert report.outcome == "committed", report.text_lines()
    jose = patient("C-1")
    assert (jose.sex.value, jose.city, jose.postal_code, jose.country) == (
        "MALE",
        "Ciudad de México",
        "06700",
        "MX",
    )
    assert (jose.preferred_language, jose.emergency_contact_phone, jose.contrast_allergy) == (
        "es",
        "+525533445566",
        True,
    )
    assert [(p.number, p.kind.value, p.is_primary) for p in jose.phones] == [
        ("+525519876543", "MOBILE", True),
        ("+525552641020", "HOME", False),
    ]
    ana = patient("C-2")
    assert (ana.sex.value, ana.active, ana.contrast_allergy) == ("UNKNOWN", False, False)
    # the same file again changes nothing
    again = run_import(path, "patients", dry_run=False)
    assert (again.unchanged, again.updated, again.created) == (2, 0, 0), again.text_lines()


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        (
            "sex",
            "ROBOT",
            "sex 'ROBOT' is not one of the allowed codes: FEMALE, MALE, OTHER, UNKNOWN",
        ),
        ("country", "Narnia", "country 'Narnia' is not a country"),
        ("preferred_language", "xx-klingon", "preferred_language 'xx-klingon' is not a language"),
        ("emergency_contact_phone", "call me", "'call me' is not a phone number"),
        ("contrast_allergy", "maybe", "'maybe' is not yes or no"),
        ("phones", "pager:55 1234 5678", "the kind 'pager'"),
    ],
)
def test_a_bad_cell_is_reported_with_line_column_and_value(write, column, value, message):
    path = write(f"id,first_name,last_name,birth_date,{column}\nB-1,Ana,Mala,1980-01-01,{value}\n")
    report = run_import(path, "patients", dry_run=False)
    assert report.outcome == "rejected"
    [problem] = report.problems
    assert (problem["line"], problem["column"], problem["value"]) == (2, column, value)
    assert message in problem["message"]
    assert db.session.scalars(select(Patient)).all() == []


def test_phones_are_added_to_the_patients_own_and_audited(write):
    jose = make_patient("Jose", "Villalobos", mrn="P-1")
    jose.phones.append(PatientPhone(number="55 1111 2222", kind="HOME", is_primary=True))
    db.session.commit()
    path = write(
        "id,first_name,last_name,birth_date,phones\n"
        'P-1,Jose,Villalobos,1970-01-01,"55 1111 2222;MOBILE:55 3333 4444"\n'
    )
    report = run_import(path, "patients", dry_run=False)
    assert (report.outcome, report.updated) == ("committed", 1), report.text_lines()
    jose = patient("P-1")
    assert [(p.number, p.is_primary) for p in jose.phones] == [
        ("+525511112222", True),
        ("+525533334444", False),
    ]
    entry = db.session.scalars(
        select(AuditEntry).where(AuditEntry.entity == "patient", AuditEntry.action == "UPDATE")
    ).one()
    assert entry.changes == {"phones": [["+525511112222"], ["+525511112222", "+525533334444"]]}


def test_the_referring_doctor_column_keeps_the_care_team(write):
    ana = make_doctor("Ana", "Ruiz", email="ana@ref.example.com")
    luis = make_doctor("Luis", "Paz", email="luis@ref.example.com")
    db.session.commit()
    head = "id,first_name,last_name,birth_date,referring_doctor\n"
    first = run_import(
        write(head + "R-1,Jose,V,1970-01-01,ana@ref.example.com\n"), "patients", dry_run=False
    )
    assert first.outcome == "committed", first.text_lines()
    jose = patient("R-1")
    assert jose.referring_doctor_id == ana.id
    [link] = jose.care_team
    assert (link.doctor_id, link.role.value, link.status.value, link.import_batch_id) == (
        ana.id,
        "REFERRING",
        "ACTIVE",
        first.batch_id,
    )
    second = run_import(
        write(head + "R-1,Jose,V,1970-01-01,luis@ref.example.com\n"), "patients", dry_run=False
    )
    assert (second.outcome, second.updated) == ("committed", 1), second.text_lines()
    jose = patient("R-1")
    links = {(m.doctor_id, m.status.value, m.until) for m in jose.care_team}
    assert links == {(ana.id, "INACTIVE", date.today()), (luis.id, "ACTIVE", None)}
    ended = db.session.scalars(
        select(AuditEntry).where(AuditEntry.entity == "care_team_member")
    ).one()
    assert (ended.parent_entity, ended.parent_id, ended.batch_id) == (
        "patient",
        str(jose.id),
        second.batch_id,
    )
    assert ended.changes == {
        "status": ["ACTIVE", "INACTIVE"],
        "until": [None, date.today().isoformat()],
    }
    third = run_import(write(head + "R-1,Jose,V,1970-01-01,\n"), "patients", dry_run=False)
    assert third.outcome == "committed"
    jose = patient("R-1")
    assert jose.referring_doctor_id is None
    assert {m.status.value for m in jose.care_team} == {"INACTIVE"}


def test_doctors_specialties_are_a_list_that_replaces_and_the_profile_columns(write):
    make_clinic("Clínica Perfil")
    db.session.commit()
    head = (
        "email,first_name,last_name,clinic,specialty,qualification,practising_since,languages,"
        "bio_en,bio_es\n"
    )
    path = write(
        head + "ana@prof.example.com,Ana,Ruiz,Clínica Perfil,Radiology; oncology,MD,2006,"
        "Spanish;en,Radiologist.,Radióloga.\n"
        "luis@prof.example.com,Luis,Paz,Clínica Perfil,,,,,,\n"
    )
    report = run_import(path, "doctors", dry_run=False)
    assert report.outcome == "committed", report.text_lines()
    db.session.expire_all()
    ana = db.session.scalars(select(Doctor).where(Doctor.email == "ana@prof.example.com")).one()
    luis = db.session.scalars(select(Doctor).where(Doctor.email == "luis@prof.example.com")).one()
    assert ana.specialties == [Specialty.RADIOLOGY, Specialty.ONCOLOGY]
    assert (ana.qualification, ana.practising_since, ana.languages) == ("MD", 2006, "en,es")
    assert (ana.bio_en, ana.bio_es, ana.bio_fr) == ("Radiologist.", "Radióloga.", None)
    assert luis.specialties == [Specialty.GENERAL_PRACTICE]  # as before: a new doctor has one
    again = run_import(path, "doctors", dry_run=True)
    assert (again.unchanged, again.updated) == (2, 0), again.text_lines()
    changed = write(
        head + "ana@prof.example.com,Ana,Ruiz,Clínica Perfil,CARDIOLOGY,MD,2006,"
        "es;en,Radiologist.,Radióloga.\n"
    )
    report = run_import(changed, "doctors", dry_run=False)
    assert (report.outcome, report.updated) == ("committed", 1), report.text_lines()
    db.session.expire_all()
    assert db.session.get(Doctor, ana.id).specialties == [Specialty.CARDIOLOGY]
    entry = db.session.scalars(
        select(AuditEntry).where(AuditEntry.entity == "doctor", AuditEntry.action == "UPDATE")
    ).one()
    assert entry.changes == {"specialties": [["ONCOLOGY", "RADIOLOGY"], ["CARDIOLOGY"]]}
    bad = write(head + "ana@prof.example.com,Ana,Ruiz,Clínica Perfil,SURGEON,,1850,,,\n")
    report = run_import(bad, "doctors", dry_run=True)
    assert {p["column"] for p in report.problems} == {"specialty", "practising_since"}


def test_exports_with_every_new_field_upload_again_unchanged(client, auth, tmp_path):
    clinic = make_clinic("Clínica Ida y Vuelta")
    doctor = make_doctor(
        "Ana",
        "Ruiz",
        clinic=clinic,
        specialties=["RADIOLOGY", "OTHER"],
        qualification="MD",
        practising_since=2001,
        languages="en,es",
        bio_en="Line one.\nLine two, with a comma.",
        phones=["55 1234 5678"],
    )
    jose = make_patient(
        "Jose",
        "Villalobos",
        mrn="RT-1",
        sex="MALE",
        street="Calle 5, número 3",
        city="Puebla",
        postal_code="72000",
        country="MX",
        preferred_language="es",
        emergency_contact_name="María",
        emergency_contact_phone="55 3344 5566",
        allergies='"Látex", =penicilina',
        contrast_allergy=True,
        clinic=clinic,
        referring_doctor=doctor,
    )
    jose.phones.append(PatientPhone(number="55 1987 6543", kind="MOBILE", is_primary=True))
    make_patient("Inactiva", "Baja", mrn="RT-2", active=False)
    db.session.commit()
    auth.as_role(RoleName.ADMIN)
    from tests.test_admin_crud import filter_arg

    status = filter_arg(client.get("/admin/patient/").get_data(as_text=True), "Status")
    for view, kind, query in (
        ("doctor", "doctors", ""),
        ("patient", "patients", f"?flt0_{status}=all"),  # active and inactive
    ):
        path = tmp_path / f"{kind}.csv"
        response = client.get(f"/admin/{view}/export/csv/{query}")
        path.write_bytes(response.get_data())
        report = run_import(path, kind, dry_run=True)
        assert report.problems == [], (kind, report.problems)
        assert (report.created, report.updated, report.rejected) == (0, 0, 0), kind
        assert report.unchanged == report.rows_total, kind
    assert report.rows_total == 2  # the inactive patient was exported and found again
    links = db.session.scalars(select(CareTeamMember)).all()
    assert len(links) == 1
