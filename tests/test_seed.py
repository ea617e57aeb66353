"""The demo data: the reference patients and studies are loaded, and seeding twice adds nothing."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from backoffice.extensions import db
from backoffice.models import (
    Clinic,
    Doctor,
    DoctorPhone,
    Patient,
    Study,
    StudyType,
    Urgency,
    User,
)
from backoffice.services.seed import DEMO_USERS, seed_demo

MODELS = (Clinic, Doctor, DoctorPhone, Patient, Study, User)

REFERENCE_PATIENTS = [
    ("1", "Jose", "Villalobos", "1955-04-10", "pepe@ejemplo.com"),
    ("2", "Jessica", "Ramirez", "1971-07-01", "jessica@ejemplo.com"),
    ("3", "Diana Laura", "Del Toro", "1988-08-29", "diana@ejemplo.com"),
    ("4", "Jorge Alberto", "Trevino", "1990-05-05", "jorge@ejemplo.com"),
]
REFERENCE_STUDIES = [
    ("1", Urgency.HIGH, "STOMACH", "NO FINDINGS", StudyType.XRAY),
    ("1", Urgency.HIGH, "NECK", "NORMAL THYROID", StudyType.XRAY),
    ("2", Urgency.LOW, "CHEST", "UNUSUAL RATIO", StudyType.XRAY),
    ("3", Urgency.MID, "BREASTS", "HIGH DENSITY ON LEFT SIDE", StudyType.MAMMOGRAM),
]


@pytest.fixture
def runner(app):  # noqa: ANN001, ANN201
    """Flask's CLI runner: commands run as ``flask --app run ...`` would run them."""
    return app.test_cli_runner()


def counts() -> dict[str, int]:
    db.session.expire_all()
    return {m.__name__: db.session.scalar(select(func.count()).select_from(m)) for m in MODELS}


def test_seed_service_is_idempotent():
    first = seed_demo(patients=20, studies=50)
    db.session.commit()
    after_first = counts()
    assert first.created == {
        "clinics": 4,
        "doctors": 6,
        "phones": 10,
        "patients": 24,
        "studies": 54,
        "reports": first.created["reports"],
    }
    assert first.created["reports"] > 0
    assert {k: after_first[k] for k in ("Clinic", "Doctor", "DoctorPhone", "Patient", "Study")} == {
        "Clinic": 4,
        "Doctor": 6,
        "DoctorPhone": 10,
        "Patient": 24,
        "Study": 54,
    }

    second = seed_demo(patients=20, studies=50)
    db.session.commit()
    assert second.total() == 0
    assert counts() == after_first


def test_seed_command_twice_adds_nothing_the_second_time(runner):
    before = counts()
    first = runner.invoke(args=["seed", "--patients", "15", "--studies", "30"])
    assert first.exit_code == 0, first.output
    assert re.fullmatch(
        r"Seeded: 4 clinics, 6 doctors, 19 patients, 10 phones, \d+ reports, 34 studies\.\n",
        first.output,
    )
    after_first = counts()
    assert after_first["Patient"] == before["Patient"] + 19
    assert after_first["Study"] == before["Study"] + 34

    second = runner.invoke(args=["seed", "--patients", "15", "--studies", "30"])
    assert second.exit_code == 0, second.output
    assert second.output == "Demo data already present: nothing to add.\n"
    assert counts() == after_first


def test_reference_patients_and_studies_are_loaded():
    seed_demo(patients=0, studies=0)
    db.session.commit()
    db.session.expire_all()
    patients = db.session.scalars(select(Patient).order_by(Patient.mrn)).all()
    assert [
        (p.mrn, p.first_name, p.last_name, p.birth_date.isoformat(), p.email) for p in patients
    ] == REFERENCE_PATIENTS
    assert all(p.referring_doctor is not None and p.clinic is not None for p in patients)

    studies = db.session.scalars(select(Study).order_by(Study.accession_number)).all()
    assert [
        (s.patient.mrn, s.urgency, s.body_part, s.description, s.study_type) for s in studies
    ] == REFERENCE_STUDIES
    assert [s.accession_number for s in studies] == ["REF-0001", "REF-0002", "REF-0003", "REF-0004"]


def test_jose_villalobos_has_two_studies():
    seed_demo(patients=10, studies=20)
    db.session.commit()
    db.session.expire_all()
    jose = db.session.scalars(
        select(Patient).where(Patient.first_name == "Jose", Patient.last_name == "Villalobos")
    ).one()
    assert jose.mrn == "1"
    assert sorted(s.body_part for s in jose.studies) == ["NECK", "STOMACH"]
    assert {(s.urgency, s.study_type) for s in jose.studies} == {(Urgency.HIGH, StudyType.XRAY)}
    jorge = db.session.scalars(select(Patient).where(Patient.mrn == "4")).one()
    assert jorge.studies == []


def test_seeded_doctors_have_normalised_phones_and_one_primary_each():
    seed_demo(patients=0, studies=0)
    db.session.commit()
    db.session.expire_all()
    doctors = db.session.scalars(select(Doctor)).all()
    assert len(doctors) == 6
    for doctor in doctors:
        assert doctor.phones, doctor
        assert sum(p.is_primary for p in doctor.phones) == 1
        assert doctor.phones[0].is_primary  # listed first
        for phone in doctor.phones:
            assert re.fullmatch(r"\+52\d{10}", phone.number), phone.number
    ana = db.session.scalars(select(Doctor).where(Doctor.email.startswith("ana."))).one()
    assert [p.number for p in ana.phones] == ["+525512345678", "+525552081001"]


def test_generated_data_follows_the_model_rules():
    seed_demo(patients=30, studies=80)
    db.session.commit()
    db.session.expire_all()
    for study in db.session.scalars(select(Study)):
        assert study.body_part == study.body_part.strip().upper()
        assert study.patient is not None
    births = db.session.scalars(select(Patient.birth_date)).all()
    assert min(births).year >= 1900
    generated = db.session.scalars(
        select(Patient.mrn).where(Patient.mrn.like("DEMO-%")).order_by(Patient.mrn)
    ).all()
    assert generated == [f"DEMO-{i:05d}" for i in range(1, 31)]


def test_demo_users_can_log_in_and_are_created_once(app, runner, auth):
    first = runner.invoke(args=["seed", "--patients", "0", "--studies", "0", "--demo-users"])
    assert first.exit_code == 0, first.output
    for email, _name, role in DEMO_USERS:
        assert f"{role.value.lower()}" in first.output
        assert email in first.output
    second = runner.invoke(args=["seed", "--patients", "0", "--studies", "0", "--demo-users"])
    assert second.exit_code == 0, second.output
    assert "Demo data already present: nothing to add." in second.output
    db.session.expire_all()
    users = db.session.scalars(select(User).order_by(User.email)).all()
    assert sorted((u.email, sorted(r.name.value for r in u.roles)) for u in users) == sorted(
        (email, [role.value]) for email, _name, role in DEMO_USERS
    )
    response = auth.login("admin@backoffice.example.com", password=app.config["DEMO_PASSWORD"])
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/"


@pytest.fixture
def production_env(app):  # noqa: ANN001, ANN201
    previous = app.config["ENV_NAME"]
    app.config["ENV_NAME"] = "production"
    yield app
    app.config["ENV_NAME"] = previous


def test_demo_users_are_never_created_in_production(production_env, runner):
    result = runner.invoke(args=["seed", "--patients", "0", "--studies", "0", "--demo-users"])
    assert result.exit_code != 0
    assert "Demo users are never created in production." in result.output
    assert counts()["User"] == 0
    assert counts()["Patient"] == 0  # refused before anything was loaded
