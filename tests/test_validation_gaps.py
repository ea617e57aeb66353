"""What forms used to accept silently: a related record that does not exist, a study dated
9999-12-31, the published demo password in production, a clinic name that differs from
another only in case or accents."""

from __future__ import annotations

import importlib.util
import re
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from backoffice.extensions import db
from backoffice.models import Clinic, Doctor, Patient, RoleName, Study, User
from backoffice.validation import RuleError, check_study_date, clinic_name_key
from config import DEFAULT_DEMO_PASSWORD
from tests.conftest import AuthActions, form_token
from tests.factories import make_clinic, make_patient, make_study
from tests.test_admin_crud import open_form

ERRORS_RE = re.compile(r'class="[^"]*(?:help-block|invalid-feedback)[^"]*"[^>]*>(.*?)</', re.S)


def field_errors(response) -> list[str]:  # noqa: ANN001
    html = response.get_data(as_text=True)
    return [re.sub(r"<[^>]+>", "", m).strip() for m in ERRORS_RE.findall(html)]


@pytest.fixture
def admin(client, csrf_app):  # noqa: ANN001, ANN201
    AuthActions(client).as_role(RoleName.ADMIN, email="gaps-admin@test.example.com")
    return client


# --------------------------------------------------------------------------- related records


def test_a_doctor_with_a_clinic_that_does_not_exist_is_refused(admin):
    url = "/admin/doctor/new/"
    for clinic in ("999999", "abc", "123456789012345678901"):
        response = admin.post(
            url,
            data={
                "first_name": "Nadie",
                "last_name": "Clinicaperdida",
                "email": "nadie@clinica.example.com",
                "specialty": "RADIOLOGY",
                "clinic": clinic,
                "csrf_token": form_token(admin, url),
            },
        )
        assert response.status_code == 200, clinic
        assert any("is not a record that can be chosen here" in e for e in field_errors(response))
        assert db.session.scalar(select(Doctor).where(Doctor.last_name == "Clinicaperdida")) is None


@pytest.mark.parametrize(
    "form, typed, field",
    [
        ("patient", {"first_name": "Nadia", "last_name": "Sinclinica"}, "clinic"),
        ("study", {"urgency": "LOW", "study_type": "XRAY", "body_part": "CHEST"}, "patient"),
        (
            "study",
            {"urgency": "LOW", "study_type": "XRAY", "body_part": "CHEST"},
            "ordering_doctor",
        ),
    ],
)
def test_a_related_record_that_does_not_exist_is_refused_beside_its_field(
    admin, form, typed, field
):
    patient = make_patient("Nadia", "Existente")
    db.session.commit()
    url = f"/admin/{form}/new/"
    data = open_form(admin, url)
    data.update({"birth_date": "1980-01-01", "patient": str(patient.id), **typed})
    data[field] = "424242"
    before = {m: db.session.scalar(select(func.count()).select_from(m)) for m in (Patient, Study)}
    response = admin.post(url, data=data)
    assert response.status_code == 200
    assert any("“424242” is not a record" in e for e in field_errors(response)), field
    after = {m: db.session.scalar(select(func.count()).select_from(m)) for m in (Patient, Study)}
    assert after == before


def test_an_existing_related_record_is_still_saved(admin):
    clinic = make_clinic("Clínica Existente")
    db.session.commit()
    url = "/admin/patient/new/"
    data = open_form(admin, url)
    data.update(
        {
            "first_name": "Nadia",
            "last_name": "Conclinica",
            "birth_date": "1980-01-01",
            "clinic": str(clinic.id),
        }
    )
    response = admin.post(url, data=data)
    assert response.status_code == 302
    saved = db.session.scalar(select(Patient).where(Patient.last_name == "Conclinica"))
    assert saved.clinic_id == clinic.id


# --------------------------------------------------------------------------- study dates


def test_study_dates_are_bounded_as_birth_dates_are():
    today = date(2026, 6, 1)
    assert check_study_date(date(1900, 1, 1), today) == date(1900, 1, 1)
    assert check_study_date(today + timedelta(days=366), today) == today + timedelta(days=366)
    with pytest.raises(RuleError, match="before 1900"):
        check_study_date(date(1899, 12, 31), today)
    with pytest.raises(RuleError, match="more than a year ahead"):
        check_study_date(date(9999, 12, 31), today)
    with pytest.raises(RuleError, match="more than a year ahead"):
        Study(study_date=date(9999, 12, 31))  # the model holds the rule for every door


@pytest.mark.parametrize(
    "typed, message",
    [("9999-12-31", "more than a year ahead"), ("1899-12-31", "before 1900")],
)
def test_the_study_form_refuses_an_out_of_bounds_date_beside_the_field(admin, typed, message):
    study = make_study()
    db.session.commit()
    url = f"/admin/study/edit/?id={study.id}"
    page = admin.get(url).get_data(as_text=True)
    version = re.search(r'name="opened_version"[^>]*value="(\d+)"', page).group(1)
    response = admin.post(
        url,
        data={
            "patient": str(study.patient_id),
            "study_date": typed,
            "urgency": "LOW",
            "study_type": "XRAY",
            "body_part": "CHEST",
            "opened_version": version,
            "csrf_token": form_token(admin, url),
        },
    )
    assert response.status_code == 200
    assert any(message in e for e in field_errors(response))
    db.session.expire_all()
    assert db.session.get(Study, study.id).study_date == date.today()


# --------------------------------------------------------------------------- demo password


def test_production_refuses_the_demo_password_for_any_user(app, admin, monkeypatch):
    from backoffice.services.users import UserError, validate_new_password

    assert validate_new_password(DEFAULT_DEMO_PASSWORD) == DEFAULT_DEMO_PASSWORD  # development
    monkeypatch.setitem(app.config, "ENV_NAME", "production")
    monkeypatch.setitem(app.config, "DEMO_PASSWORD", "our-own-demo-phrase")
    for password in (DEFAULT_DEMO_PASSWORD, DEFAULT_DEMO_PASSWORD.upper(), "our-own-demo-phrase"):
        with pytest.raises(UserError, match="demo password"):
            validate_new_password(password)

    url = "/admin/user/new/"
    response = admin.post(
        url,
        data={
            "email": "newcomer@clinic.example.com",
            "display_name": "Newcomer",
            "roles": [],
            "active": "y",
            "new_password": DEFAULT_DEMO_PASSWORD,
            "csrf_token": form_token(admin, url),
        },
    )
    assert response.status_code == 200
    assert any("demo password" in e for e in field_errors(response))
    assert (
        db.session.scalar(select(User).where(User.email == "newcomer@clinic.example.com")) is None
    )


# --------------------------------------------------------------------------- clinic names


def test_the_name_key_folds_case_accents_and_spaces():
    assert clinic_name_key("  Clínica   ROMA Norte ") == "clinica roma norte"
    assert clinic_name_key("Cœur Médical") == clinic_name_key("COEUR MEDICAL")
    assert clinic_name_key("Peña") == clinic_name_key("PENA")


@pytest.mark.parametrize("typed", ["clinica roma", "CLÍNICA ROMA", "Clinica  Roma", "CLINICA ROMA"])
def test_the_clinic_form_names_the_clinic_that_already_has_the_name(admin, typed):
    make_clinic("Clínica Roma")
    db.session.commit()
    url = "/admin/clinic/new/"
    response = admin.post(url, data={"name": typed, "csrf_token": form_token(admin, url)})
    assert response.status_code == 200
    errors = field_errors(response)
    assert errors == [
        "The clinic “Clínica Roma” already has this name (names are compared without regard "
        "to case or accents)."
    ]
    assert db.session.scalar(select(func.count()).select_from(Clinic)) == 1


def test_a_clinic_may_change_the_case_of_its_own_name_but_not_take_another(admin):
    roma = make_clinic("Clínica Roma")
    make_clinic("Clínica Condesa")
    db.session.commit()
    url = f"/admin/clinic/edit/?id={roma.id}"

    def save(name: str):  # noqa: ANN202
        page = admin.get(url).get_data(as_text=True)
        version = re.search(r'name="opened_version"[^>]*value="(\d+)"', page).group(1)
        token = form_token(admin, url)
        return admin.post(url, data={"name": name, "opened_version": version, "csrf_token": token})

    refused = save("clinica condesa")
    assert refused.status_code == 200
    assert "“Clínica Condesa” already has this name" in field_errors(refused)[0]
    assert save("CLÍNICA ROMA").status_code == 302
    db.session.expire_all()
    assert db.session.get(Clinic, roma.id).name == "CLÍNICA ROMA"


def test_the_database_holds_the_rule_whatever_the_door():
    """The ORM and plain SQL alike: the key is kept by a trigger and unique."""
    make_clinic("Clínica Roma")
    db.session.commit()
    with pytest.raises(IntegrityError):
        with db.session.begin_nested():
            db.session.add(Clinic(name="CLINICA ROMA"))
            db.session.flush()
    with pytest.raises(IntegrityError):
        with db.session.begin_nested():
            db.session.execute(
                text(
                    "INSERT INTO clinic (name, version, created_at, updated_at) "
                    "VALUES ('clinica  roma', 1, :now, :now)"
                ),
                {"now": "2026-01-01 00:00:00"},
            )
    db.session.execute(
        text(
            "INSERT INTO clinic (name, version, created_at, updated_at) "
            "VALUES ('Clínica Álamos', 1, :now, :now)"
        ),
        {"now": "2026-01-01 00:00:00"},
    )
    key = db.session.scalar(select(Clinic.name_key).where(Clinic.name == "Clínica Álamos"))
    assert key == "clinica alamos"
    db.session.execute(
        text("UPDATE clinic SET name = 'Clínica Los Álamos' WHERE name_key = :k"),
        {"k": "clinica alamos"},
    )
    assert db.session.scalar(select(func.count()).where(Clinic.name_key == "clinica los alamos"))


def _migration():  # noqa: ANN202
    path = Path(__file__).resolve().parent.parent / "migrations" / "versions" / "0012_hardening.py"
    spec = importlib.util.spec_from_file_location("migration_0012", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_migration_keeps_existing_duplicates_under_new_names():
    """Clinics made before the key existed, with names that fold to one: none is lost, the
    oldest keeps its name, the others get a suffix, and then the key can be unique."""
    conn = db.session.connection()
    conn.execute(text("DROP INDEX uq_clinic_name_key"))
    clinics = [make_clinic(n) for n in ("Clínica Roma", "clinica roma", "CLINICA ROMA (2)")]
    make_clinic("CLÍNICA ROMA")
    ids = [c.id for c in clinics]
    db.session.flush()
    _migration()._rename_duplicates(conn)
    conn.execute(text("UPDATE clinic SET name_key = bo_name_key(name)"))
    conn.execute(text("CREATE UNIQUE INDEX uq_clinic_name_key ON clinic (name_key)"))
    db.session.expire_all()
    names = [db.session.get(Clinic, i).name for i in ids]
    assert names[0] == "Clínica Roma"
    assert names[1] == "clinica roma (3)"  # "(2)" was taken, whatever its case
    assert names[2] == "CLINICA ROMA (2)"
    everyone = db.session.scalars(select(Clinic.name).order_by(Clinic.id)).all()
    assert len(everyone) == 4 and "CLÍNICA ROMA (4)" in everyone
