"""The audit trail: every door records who changed what, reads and logins; log, history, undo."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from backoffice.extensions import db
from backoffice.models import (
    AuditEntry,
    AuditHead,
    Clinic,
    Doctor,
    DoctorPhone,
    Patient,
    Role,
    RoleName,
    Specialty,
    Study,
    User,
)
from backoffice.services.audit import verify_chain
from tests.conftest import PASSWORD, AuthActions, csrf_token_from, form_token, make_user
from tests.factories import make_clinic, make_doctor, make_patient, make_study
from tests.test_admin_crud import column, filter_arg, flashes, open_form, text_of

ADMIN_EMAIL = "auditor@clinic.example.com"
ADDRESS = "203.0.113.7"
NEW_PASSWORD = "a fresh and long passphrase"

# --- helpers ---------------------------------------------------------------------------------


def last_id() -> int:
    return db.session.scalar(select(func.max(AuditEntry.id))) or 0


def entries_after(mark: int, **where: object) -> list[AuditEntry]:
    """Entries written after ``mark``, oldest first, optionally filtered by column values."""
    db.session.expire_all()
    query = select(AuditEntry).where(AuditEntry.id > mark)
    for name, value in where.items():
        query = query.where(getattr(AuditEntry, name) == value)
    return list(db.session.scalars(query.order_by(AuditEntry.id)))


def one(mark: int, **where: object) -> AuditEntry:
    found = entries_after(mark, **where)
    assert len(found) == 1, [(e.action, e.entity, e.entity_id, e.changes) for e in found]
    return found[0]


def assert_by(entry: AuditEntry, user: User, address: str = ADDRESS) -> None:
    """Who, when (UTC, just now), from where and in which request."""
    assert (entry.actor_id, entry.actor_label) == (user.id, user.email)
    assert entry.at.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - entry.at) < timedelta(minutes=1)
    assert entry.ip == address
    assert re.fullmatch(r"[0-9a-f]{32}", entry.request_id or "")


def new_of(entry: AuditEntry) -> dict:
    return {k: v[1] for k, v in (entry.changes or {}).items()}


def old_of(entry: AuditEntry) -> dict:
    return {k: v[0] for k, v in (entry.changes or {}).items()}


def everything_recorded() -> str:
    """Every entry's content, as one string (to prove what is never in it)."""
    db.session.expire_all()
    rows = db.session.scalars(select(AuditEntry)).all()
    return json.dumps([[e.actor_label, e.changes, e.details] for e in rows], ensure_ascii=False)


def count(model: type) -> int:
    db.session.expire_all()
    return db.session.scalar(select(func.count()).select_from(model))


def role_id(name: RoleName) -> str:
    return str(db.session.scalar(select(Role.id).where(Role.name == name)))


@pytest.fixture
def browser(app: Flask) -> FlaskClient:
    """A client whose requests come from ADDRESS."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = ADDRESS
    return client


@pytest.fixture
def admin(browser: FlaskClient) -> User:
    return AuthActions(browser).as_role(RoleName.ADMIN, email=ADMIN_EMAIL)


def post_form(client: FlaskClient, url: str, **changes: object):  # noqa: ANN201
    data = open_form(client, url)
    data.update(changes)
    response = client.post(url, data=data)
    assert response.status_code == 302, flashes(response.get_data(as_text=True))
    return response


def delete_record(client: FlaskClient, endpoint: str, record_id: int):  # noqa: ANN201
    token = form_token(client, f"/admin/{endpoint}/")
    return client.post(
        f"/admin/{endpoint}/delete/",
        data={"id": str(record_id), "url": f"/admin/{endpoint}/", "csrf_token": token},
        follow_redirects=True,
    )


def created_id(model: type, **where: object) -> int:
    db.session.expire_all()
    query = select(model.id)
    for name, value in where.items():
        query = query.where(getattr(model, name) == value)
    return db.session.scalars(query).one()


# --- admin forms: create, update, delete -----------------------------------------------------


def test_clinic_created_updated_and_deleted_through_the_forms(browser, admin):
    mark = last_id()
    post_form(browser, "/admin/clinic/new/", name="Clínica Sur", city="Mérida", phone="")
    clinic_id = created_id(Clinic, name="Clínica Sur")
    created = one(mark, entity="clinic")
    assert (created.action, created.entity_id) == ("CREATE", str(clinic_id))
    assert_by(created, admin)
    assert new_of(created) == {
        "name": "Clínica Sur",
        "city": "Mérida",
        "address": None,
        "phone": None,
        "import_batch_id": None,
    }
    assert set(old_of(created).values()) == {None}

    mark = last_id()
    post_form(browser, f"/admin/clinic/edit/?id={clinic_id}", city="Progreso")
    updated = one(mark, entity="clinic")
    assert updated.action == "UPDATE"
    assert updated.changes == {"city": ["Mérida", "Progreso"]}  # only what changed
    assert_by(updated, admin)

    mark = last_id()
    response = delete_record(browser, "clinic", clinic_id)
    assert "Deleted Clínica Sur." in response.get_data(as_text=True)
    deleted = one(mark, entity="clinic")
    assert deleted.action == "DELETE"
    assert old_of(deleted)["name"] == "Clínica Sur" and old_of(deleted)["city"] == "Progreso"
    assert set(new_of(deleted).values()) == {None}
    assert_by(deleted, admin)
    assert len({created.request_id, updated.request_id, deleted.request_id}) == 3


def test_patient_created_updated_and_deleted_through_the_forms(browser, admin):
    clinic = make_clinic("Clínica Norte")
    doctor = make_doctor("Rosa", "Vega", clinic=clinic)
    db.session.commit()
    mark = last_id()
    post_form(
        browser,
        "/admin/patient/new/",
        mrn="MRN-77",
        first_name="Lucía",
        last_name="Herrera",
        birth_date="1984-05-06",
        email="lucia@example.com",
        clinic=str(clinic.id),
        sex="FEMALE",
        city="Mérida",
        **{
            "phones-0-id": "",
            "phones-0-number": "55 1234 9999",
            "phones-0-kind": "MOBILE",
            "care_team-0-id": "",
            "care_team-0-doctor": str(doctor.id),
            "care_team-0-role": "REFERRING",
            "care_team-0-status": "ACTIVE",
        },
    )
    patient_id = created_id(Patient, mrn="MRN-77")
    created = one(mark, entity="patient")
    assert (created.action, created.entity_id) == ("CREATE", str(patient_id))
    assert new_of(created) | {"import_batch_id": None} == {
        "mrn": "MRN-77",
        "first_name": "Lucía",
        "last_name": "Herrera",
        "birth_date": "1984-05-06",
        "sex": "FEMALE",
        "email": "lucia@example.com",
        "referring_doctor_id": doctor.id,
        "clinic_id": clinic.id,
        "import_batch_id": None,
        "street": None,
        "city": "Mérida",
        "state": None,
        "postal_code": None,
        "country": "MX",
        "preferred_language": None,
        "emergency_contact_name": None,
        "emergency_contact_relation": None,
        "emergency_contact_phone": None,
        "allergies": None,
        "contrast_allergy": False,
        "active": True,
    }
    assert_by(created, admin)
    # the inline rows are entries of their own, attached to the patient
    children = entries_after(mark, parent_entity="patient")
    assert sorted((e.entity, e.action) for e in children) == [
        ("care_team_member", "CREATE"),
        ("patient_phone", "CREATE"),
    ]
    assert {e.parent_id for e in children} == {str(patient_id)}
    link = next(e for e in children if e.entity == "care_team_member")
    assert {k: new_of(link)[k] for k in ("doctor_id", "role", "status")} == {
        "doctor_id": doctor.id,
        "role": "REFERRING",
        "status": "ACTIVE",
    }

    mark = last_id()
    post_form(browser, f"/admin/patient/edit/?id={patient_id}", email="lucia@new.example.com")
    updated = one(mark, entity="patient", action="UPDATE")
    assert updated.changes == {"email": ["lucia@example.com", "lucia@new.example.com"]}
    assert_by(updated, admin)

    mark = last_id()
    delete_record(browser, "patient", patient_id)
    deleted = one(mark, entity="patient", action="DELETE")
    assert old_of(deleted)["email"] == "lucia@new.example.com"
    assert old_of(deleted)["birth_date"] == "1984-05-06"
    assert_by(deleted, admin)


def test_study_created_updated_and_deleted_through_the_forms(browser, admin):
    patient = make_patient("Iris", "Paz")
    db.session.commit()
    mark = last_id()
    post_form(
        browser,
        "/admin/study/new/",
        patient=str(patient.id),
        study_date="2026-03-01",
        urgency="MID",
        study_type="CT",
        body_part="neck",
        description="First look",
        accession_number="ACC-9",
    )
    study_id = created_id(Study, accession_number="ACC-9")
    created = one(mark, entity="study")
    assert created.action == "CREATE"
    assert {k: new_of(created)[k] for k in ("urgency", "study_type", "body_part")} == {
        "urgency": "MID",
        "study_type": "CT",
        "body_part": "NECK",
    }
    assert new_of(created)["patient_id"] == patient.id
    assert_by(created, admin)

    mark = last_id()
    post_form(browser, f"/admin/study/edit/?id={study_id}", urgency="HIGH", description="")
    updated = one(mark, entity="study", action="UPDATE")
    assert updated.changes == {"urgency": ["MID", "HIGH"], "description": ["First look", None]}

    mark = last_id()
    delete_record(browser, "study", study_id)
    deleted = one(mark, entity="study", action="DELETE")
    assert old_of(deleted)["urgency"] == "HIGH"
    assert_by(deleted, admin)


def test_doctor_with_phone_rows_added_edited_and_removed_in_one_save(browser, admin):
    clinic = make_clinic("Clínica Centro")
    db.session.commit()
    data = open_form(browser, "/admin/doctor/new/")
    data.update(
        first_name="Ana",
        last_name="Soto",
        email="ana.soto@example.com",
        specialties="RADIOLOGY",
        clinic=str(clinic.id),
    )
    for i, (number, kind) in enumerate([("55 1234 5678", "MOBILE"), ("55 1111 2222", "HOME")]):
        data |= {f"phones-{i}-id": "", f"phones-{i}-number": number, f"phones-{i}-kind": kind}
    mark = last_id()
    assert browser.post("/admin/doctor/new/", data=data).status_code == 302
    doctor_id = created_id(Doctor, email="ana.soto@example.com")
    doctor = one(mark, entity="doctor")
    assert doctor.action == "CREATE" and new_of(doctor)["specialties"] == ["RADIOLOGY"]
    phones = entries_after(mark, entity="doctor_phone")
    assert sorted((e.action, new_of(e)["number"], new_of(e)["kind"]) for e in phones) == [
        ("CREATE", "+525511112222", "HOME"),
        ("CREATE", "+525512345678", "MOBILE"),
    ]
    assert {(e.parent_entity, e.parent_id) for e in phones} == {("doctor", str(doctor_id))}
    assert {e.request_id for e in phones} == {doctor.request_id}

    # one save: a doctor field, one row edited, one removed, one added
    data = open_form(browser, f"/admin/doctor/edit/?id={doctor_id}")
    rows = {data[f"phones-{i}-number"]: i for i in range(2)}
    data["last_name"] = "Soto Ruiz"
    data[f"phones-{rows['+525512345678']}-number"] = "55 1234 0000"
    data[f"del-phones-{rows['+525511112222']}"] = "y"
    data |= {"phones-2-id": "", "phones-2-number": "33 9999 8888", "phones-2-kind": "OFFICE"}
    mark = last_id()
    assert browser.post(f"/admin/doctor/edit/?id={doctor_id}", data=data).status_code == 302
    saved = entries_after(mark)
    assert len({e.request_id for e in saved}) == 1
    for entry in saved:
        assert_by(entry, admin)
    by_action = {(e.entity, e.action): e for e in saved}
    assert set(by_action) == {
        ("doctor", "UPDATE"),
        ("doctor_phone", "UPDATE"),
        ("doctor_phone", "DELETE"),
        ("doctor_phone", "CREATE"),
    }
    assert by_action["doctor", "UPDATE"].changes == {"last_name": ["Soto", "Soto Ruiz"]}
    assert by_action["doctor_phone", "UPDATE"].changes == {
        "number": ["+525512345678", "+525512340000"]
    }
    assert old_of(by_action["doctor_phone", "DELETE"])["number"] == "+525511112222"
    assert new_of(by_action["doctor_phone", "CREATE"])["number"] == "+523399998888"
    assert all(e.parent_id == str(doctor_id) for e in saved if e.entity == "doctor_phone")

    mark = last_id()
    delete_record(browser, "doctor", doctor_id)
    gone = entries_after(mark)
    assert sorted((e.entity, e.action) for e in gone) == [
        ("doctor", "DELETE"),
        ("doctor_phone", "DELETE"),
        ("doctor_phone", "DELETE"),
    ]


def test_bulk_delete_action_records_each_row(browser, admin):
    first, second = make_clinic("Clínica Uno"), make_clinic("Clínica Dos")
    db.session.commit()
    page = browser.get("/admin/clinic/").get_data(as_text=True)
    token = csrf_token_from(page[page.index('id="action_form"') :])
    mark = last_id()
    response = browser.post(
        "/admin/clinic/action/",
        data={"action": "delete", "rowid": [str(first.id), str(second.id)], "csrf_token": token},
    )
    assert response.status_code == 302
    deleted = entries_after(mark, entity="clinic")
    assert sorted((e.action, old_of(e)["name"]) for e in deleted) == [
        ("DELETE", "Clínica Dos"),
        ("DELETE", "Clínica Uno"),
    ]
    assert len({e.request_id for e in deleted}) == 1
    for entry in deleted:
        assert_by(entry, admin)


def test_an_incoming_request_id_is_kept_and_a_malformed_one_replaced(browser, admin):
    clinic = make_clinic("Clínica Traza")
    db.session.commit()
    url = f"/admin/clinic/edit/?id={clinic.id}"
    data = open_form(browser, url) | {"city": "Uno"}
    mark = last_id()
    browser.post(url, data=data, headers={"X-Request-ID": "lb-2f9c1e7a-0042"})
    assert one(mark, entity="clinic").request_id == "lb-2f9c1e7a-0042"
    data = open_form(browser, url) | {"city": "Dos"}
    mark = last_id()
    browser.post(url, data=data, headers={"X-Request-ID": "x'; DROP"})
    assert re.fullmatch(r"[0-9a-f]{32}", one(mark, entity="clinic").request_id)


# --- users: passwords never, roles always ----------------------------------------------------


def test_users_created_edited_and_role_changes_recorded_without_any_hash(browser, admin):
    url = "/admin/user/new/"
    mark = last_id()
    response = browser.post(
        url,
        data={
            "email": "nora@clinic.example.com",
            "display_name": "Nora",
            "roles": [role_id(RoleName.OPERATOR)],
            "active": "y",
            "new_password": NEW_PASSWORD,
            "csrf_token": form_token(browser, url),
        },
    )
    assert response.status_code == 302, flashes(response.get_data(as_text=True))
    user = db.session.scalar(select(User).where(User.email == "nora@clinic.example.com"))
    created = one(mark, entity="user", action="CREATE")
    assert created.entity_id == str(user.id)
    assert new_of(created) == {
        "email": "nora@clinic.example.com",
        "display_name": "Nora",
        "active": True,
        "locale": None,
        "doctor_id": None,
        "roles": ["OPERATOR"],
    }
    assert_by(created, admin)

    url = f"/admin/user/edit/?id={user.id}"
    mark = last_id()
    response = browser.post(
        url,
        data={
            "email": user.email,
            "display_name": "Nora",
            "roles": [role_id(RoleName.OPERATOR), role_id(RoleName.MANAGER)],
            "active": "y",
            "new_password": "another long passphrase here",
            "csrf_token": form_token(browser, url),
        },
    )
    assert response.status_code == 302, flashes(response.get_data(as_text=True))
    updated = one(mark, entity="user", action="UPDATE")
    assert updated.changes == {
        "password": ["(hidden)", "(changed)"],
        "roles": [["OPERATOR"], ["MANAGER", "OPERATOR"]],
    }
    assert_by(updated, admin)

    db.session.expire_all()
    stored_hash = db.session.get(User, user.id).password_hash
    recorded = everything_recorded()
    assert stored_hash not in recorded
    assert "$argon2" not in recorded
    assert NEW_PASSWORD not in recorded and "another long passphrase here" not in recorded
    assert "session_token" not in recorded and "password_hash" not in recorded


# --- commands --------------------------------------------------------------------------------


def test_seed_command_records_its_rows_under_the_operator_name(app):
    mark = last_id()
    result = app.test_cli_runner().invoke(
        args=["seed", "--operator", "ops-maria", "--patients", "2", "--studies", "2"]
    )
    assert result.exit_code == 0, result.output
    created = entries_after(mark)
    assert {e.entity for e in created} >= {"clinic", "doctor", "doctor_phone", "patient", "study"}
    assert {(e.actor_label, e.actor_id, e.ip) for e in created} == {("ops-maria", None, None)}
    # The command opened the record scope, which is on record first, with its reason.
    assert {e.action for e in created} == {"CREATE", "SCOPE_LIFTED"}
    assert created[0].action == "SCOPE_LIFTED"
    assert created[0].details == {"reason": "flask seed: demo data"}
    assert len({e.request_id for e in created}) == 1  # one command, one id
    db.session.expire_all()
    for model, entity in ((Clinic, "clinic"), (Patient, "patient"), (Study, "study")):
        ids = {str(i) for i in db.session.scalars(select(model.id))}
        assert ids == {e.entity_id for e in created if e.entity == entity}


def test_users_commands_record_creates_and_updates_under_the_operator_name(app):
    make_user("keeper@clinic.example.com", RoleName.ADMIN)
    cli = app.test_cli_runner()
    env = {"BACKOFFICE_PASSWORD": NEW_PASSWORD}
    mark = last_id()
    result = cli.invoke(
        args=["users", "create", "cli@clinic.example.com", "--role", "support"]
        + ["--operator", "ops-juan"],
        env=env,
    )
    assert result.exit_code == 0, result.output
    user_id = str(created_id(User, email="cli@clinic.example.com"))
    created = one(mark, entity="user", action="CREATE")
    assert (created.entity_id, created.actor_label, created.actor_id) == (user_id, "ops-juan", None)
    assert new_of(created)["roles"] == ["SUPPORT"]
    # the security event names the operator as the actor and the new account as the entity
    event = one(mark, action="USER_CREATED")
    assert (event.entity, event.entity_id) == ("user", user_id)
    assert (event.actor_label, event.actor_id, event.details) == (
        "ops-juan",
        None,
        {"by": "command"},
    )

    mark = last_id()
    args = ["users", "set-password", "cli@clinic.example.com", "--operator", "ops-juan"]
    env = {"BACKOFFICE_PASSWORD": "yet another long passphrase"}
    assert cli.invoke(args=args, env=env).exit_code == 0
    changed = one(mark, entity="user", action="UPDATE")
    assert changed.changes == {"password": ["(hidden)", "(changed)"]}
    assert changed.actor_label == "ops-juan"
    event = one(mark, action="PASSWORD_CHANGED")
    assert (event.entity_id, event.actor_label, event.actor_id) == (user_id, "ops-juan", None)

    mark = last_id()
    args = ["users", "deactivate", "cli@clinic.example.com", "--operator", "ops-lola"]
    assert cli.invoke(args=args).exit_code == 0
    off = one(mark, entity="user", action="UPDATE")
    assert (off.changes, off.actor_label) == ({"active": [True, False]}, "ops-lola")
    assert "yet another long passphrase" not in everything_recorded()


def test_a_command_without_operator_names_the_environment_operator(app):
    mark = last_id()
    result = app.test_cli_runner().invoke(
        args=["seed", "--patients", "0", "--studies", "0"],
        env={"BACKOFFICE_OPERATOR": "night-shift"},
    )
    assert result.exit_code == 0, result.output
    assert {e.actor_label for e in entries_after(mark)} == {"night-shift"}


# --- reads -----------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["patient", "study"])
def test_opening_a_patient_or_study_page_records_a_view(browser, admin, endpoint):
    study = make_study(make_patient("Iris", "Paz"))
    db.session.commit()
    record_id = study.patient_id if endpoint == "patient" else study.id
    for page, url in (
        ("details", f"/admin/{endpoint}/details/?id={record_id}"),
        ("edit", f"/admin/{endpoint}/edit/?id={record_id}"),
    ):
        mark = last_id()
        assert browser.get(url).status_code == 200
        view = one(mark)
        assert (view.action, view.entity, view.entity_id) == ("VIEW", endpoint, str(record_id))
        assert view.details == {"page": page}
        assert view.changes is None
        assert_by(view, admin)


def test_opening_a_clinic_or_doctor_or_a_list_records_no_read(browser, admin):
    doctor = make_doctor()
    db.session.commit()
    mark = last_id()
    for url in (
        f"/admin/doctor/details/?id={doctor.id}",
        f"/admin/clinic/edit/?id={doctor.clinic_id}",
        "/admin/patient/",
    ):
        assert browser.get(url).status_code == 200
    assert entries_after(mark) == []


# --- security events -------------------------------------------------------------------------


def test_login_logout_and_failed_logins_are_recorded_without_what_was_typed(browser):
    user = make_user("rita@clinic.example.com", RoleName.OPERATOR)
    auth = AuthActions(browser)
    mark = last_id()
    auth.login("rita@clinic.example.com", "not her password at all")
    auth.login("nobody-here@clinic.example.com", "whatever was typed")
    auth.login("rita@clinic.example.com")
    auth.logout()
    events = [(e.action, e.entity_id, e.details) for e in entries_after(mark)]
    assert events == [
        ("LOGIN_FAILED", str(user.id), {"reason": "bad_password_or_inactive"}),
        ("LOGIN_FAILED", None, {"reason": "unknown_account"}),
        ("LOGIN", str(user.id), None),
        ("LOGOUT", str(user.id), None),
    ]
    for entry in entries_after(mark):
        assert entry.ip == ADDRESS
        assert entry.at.utcoffset() == timedelta(0)
        assert entry.request_id
    login, logout = entries_after(mark, action="LOGIN")[0], entries_after(mark, action="LOGOUT")[0]
    assert (login.actor_id, login.actor_label) == (user.id, user.email)
    assert logout.actor_id == user.id
    recorded = everything_recorded()
    for typed in ("not her password at all", "whatever was typed", PASSWORD, "nobody-here"):
        assert typed not in recorded


def test_a_lockout_and_a_refused_login_are_recorded(app, browser):
    user = make_user("locked@clinic.example.com", RoleName.SUPPORT)
    auth = AuthActions(browser)
    mark = last_id()
    for _ in range(app.config["LOGIN_MAX_FAILURES"]):
        auth.login(user.email, "wrong password typed")
    auth.login(user.email)  # the right password, but the account is locked now
    actions = [e.action for e in entries_after(mark, entity_id=str(user.id))]
    assert actions == ["LOGIN_FAILED"] * app.config["LOGIN_MAX_FAILURES"] + [
        "ACCOUNT_LOCKED",
        "LOGIN_REFUSED_LOCKED",
    ]
    assert browser.get("/admin/").status_code == 302  # still not logged in


def test_a_role_change_in_the_users_view_is_recorded(browser, admin):
    user = make_user("promoted@clinic.example.com", RoleName.SUPPORT)
    url = f"/admin/user/edit/?id={user.id}"
    mark = last_id()
    response = browser.post(
        url,
        data={
            "email": user.email,
            "display_name": user.display_name,
            "roles": [role_id(RoleName.ADMIN)],
            "active": "y",
            "new_password": "",
            "csrf_token": form_token(browser, url),
        },
    )
    assert response.status_code == 302
    change = one(mark, entity="user")
    assert (change.action, change.entity_id) == ("UPDATE", str(user.id))
    assert change.changes == {"roles": [["SUPPORT"], ["ADMIN"]]}
    assert_by(change, admin)


# --- same transaction ------------------------------------------------------------------------


def test_a_refused_delete_leaves_no_entry(browser, admin):
    clinic = make_clinic("Clínica Llena")
    make_doctor(clinic=clinic)
    db.session.commit()
    mark = last_id()
    page = delete_record(browser, "clinic", clinic.id).get_data(as_text=True)
    assert "cannot be deleted" in page
    assert entries_after(mark) == []
    assert db.session.get(Clinic, clinic.id) is not None


def test_a_save_that_fails_in_the_database_leaves_no_entry(browser, admin, monkeypatch):
    from flask_admin.contrib.sqla import validators as admin_validators

    make_patient("Pepe", "Uno", email="pepe@example.com")
    other = make_patient("Jose", "Dos", email="jose@example.com")
    db.session.commit()
    url = f"/admin/patient/edit/?id={other.id}"
    data = open_form(browser, url) | {"email": "pepe@example.com", "first_name": "Josefa"}
    # the form's own check has passed when a concurrent save takes the email
    monkeypatch.setattr(admin_validators.Unique, "__call__", lambda self, form, field: None)
    mark = last_id()
    response = browser.post(url, data=data)
    assert "must be unique" in " ".join(flashes(response.get_data(as_text=True)))
    assert entries_after(mark) == []
    db.session.expire_all()
    assert db.session.get(Patient, other.id).first_name == "Jose"


def test_a_rolled_back_change_leaves_no_entry_and_a_committed_one_always_has_one():
    head = db.session.get(AuditHead, 1)
    before = (head.last_hash, head.entries)
    mark = last_id()
    db.session.add(Clinic(name="Never Saved"))
    db.session.flush()
    assert [e.action for e in entries_after(mark)] == ["CREATE"]  # written with the change...
    db.session.rollback()
    assert entries_after(mark) == []  # ...and gone with it
    head = db.session.get(AuditHead, 1)
    assert (head.last_hash, head.entries) == before

    clinic = Clinic(name="Saved")
    db.session.add(clinic)
    db.session.commit()
    clinic.city = "Tula"
    db.session.commit()
    db.session.delete(clinic)
    db.session.commit()
    assert [(e.action, e.entity) for e in entries_after(mark)] == [
        ("CREATE", "clinic"),
        ("UPDATE", "clinic"),
        ("DELETE", "clinic"),
    ]
    assert verify_chain(db.session.connection()).ok


# --- the audit log view ----------------------------------------------------------------------


def list_rows(page: str) -> list[tuple[str, str, str, str]]:
    """(who, action, entity, record) of each row of the audit list."""
    return list(
        zip(
            column(page, "actor_label"),
            column(page, "action"),
            column(page, "entity"),
            column(page, "entity_id"),
            strict=True,
        )
    )


@pytest.fixture
def history_world(app: Flask, browser: FlaskClient, admin: User) -> dict:
    """Two people change two patients; Alice also reads one."""
    other = app.test_client()
    alice = AuthActions(other).as_role(RoleName.OPERATOR, email="alice@clinic.example.com")
    first = make_patient("Uno", "Primero", email="uno@example.com")
    second = make_patient("Dos", "Segundo", email="dos@example.com")
    db.session.commit()
    post_form(other, f"/admin/patient/edit/?id={first.id}", email="uno@new.example.com")
    post_form(browser, f"/admin/patient/edit/?id={second.id}", first_name="Doce")
    return {"alice": alice, "admin": admin, "first": first.id, "second": second.id, "other": other}


def test_audit_log_lists_entries_newest_first_with_their_changes(browser, history_world):
    page = browser.get("/admin/audit/").get_data(as_text=True)
    rows = list_rows(page)
    assert rows[0] == (ADMIN_EMAIL, "UPDATE", "patient", str(history_world["second"]))
    changes = column(page, "changes")
    assert changes[0] == "first_name : Dos → Doce"


def test_audit_log_filters_by_user_entity_record_action_and_date(app, browser, history_world):
    page = browser.get("/admin/audit/").get_data(as_text=True)
    first, alice = str(history_world["first"]), history_world["alice"]

    def shown(label: str, value: str) -> list[tuple[str, str, str, str]]:
        response = browser.get(
            "/admin/audit/", query_string={f"flt0_{filter_arg(page, label)}": value}
        )
        assert response.status_code == 200
        return list_rows(response.get_data(as_text=True))

    by_label = shown("User", "alice@")
    assert by_label and {r[0] for r in by_label} == {alice.email}
    assert ("alice@clinic.example.com", "UPDATE", "patient", first) in by_label
    assert set(shown("User id", str(alice.id))) == set(by_label)
    assert {(r[1], r[3]) for r in shown("Entity", "patient")} == {
        ("CREATE", first),
        ("CREATE", str(history_world["second"])),
        ("VIEW", first),
        ("UPDATE", first),
        ("VIEW", str(history_world["second"])),
        ("UPDATE", str(history_world["second"])),
    }
    assert {r[1] for r in shown("Record id", first)} >= {"CREATE", "VIEW", "UPDATE"}
    assert {r[3] for r in shown("Record id", first) if r[2] == "patient"} == {first}
    assert {(r[0], r[3]) for r in shown("Action", "UPDATE")} == {
        ("alice@clinic.example.com", first),
        (ADMIN_EMAIL, str(history_world["second"])),
    }
    assert {r[1] for r in shown("Action", "LOGIN")} == {"LOGIN"}

    # dates are typed in the time zone the list shows them in
    zone = ZoneInfo(app.config["BABEL_DEFAULT_TIMEZONE"])
    now = datetime.now(UTC).astimezone(zone).replace(tzinfo=None)
    fmt = "%Y-%m-%d %H:%M:%S"
    around_now = f"{(now - timedelta(minutes=5)):{fmt}} to {(now + timedelta(minutes=5)):{fmt}}"
    assert len(shown("When", around_now)) == len(list_rows(page))
    yesterday = now - timedelta(days=1)
    earlier = f"{(yesterday - timedelta(hours=1)):{fmt}} to {yesterday:{fmt}}"
    assert shown("When", earlier) == []


def test_audit_log_pages_offer_no_create_edit_or_delete(browser, history_world):
    entry_id = last_id()
    for url in ("/admin/audit/", f"/admin/audit/details/?id={entry_id}"):
        page = browser.get(url).get_data(as_text=True)
        assert "/admin/audit/new/" not in page
        assert "/admin/audit/edit/" not in page
        assert "/admin/audit/delete/" not in page
        assert "/admin/audit/action/" not in page
        assert 'name="rowid"' not in page
        assert "Delete" not in text_of(page.split("</nav>", 1)[-1])


def test_the_audit_log_is_for_admins_only(browser, history_world):
    other = history_world["other"]
    assert other.get("/admin/audit/").status_code == 403
    page = other.get("/admin/").get_data(as_text=True)
    assert "/admin/audit/" not in page
    assert "/admin/audit/" in browser.get("/admin/").get_data(as_text=True)


# --- history pages ---------------------------------------------------------------------------


def history_rows(page: str) -> list[tuple[str, str, str]]:
    """(who, action, changes) of each row of a history page, top to bottom."""
    body = page[page.index('class="table table-sm table-striped history-table"') :]
    rows = re.findall(r'<tr class="history-[a-z_]+">(.*?)</tr>', body, re.S)
    out = []
    for row in rows:
        cells = [text_of(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
        out.append((cells[1], cells[2], cells[4]))
    return out


@pytest.mark.parametrize("endpoint", ["clinic", "doctor", "patient", "study", "user"])
def test_every_details_page_links_to_its_history(browser, admin, endpoint):
    study = make_study(make_patient(), ordering_doctor=make_doctor())
    db.session.commit()
    ids = {
        "clinic": study.ordering_doctor.clinic_id,
        "doctor": study.ordering_doctor_id,
        "patient": study.patient_id,
        "study": study.id,
        "user": admin.id,
    }
    page = browser.get(f"/admin/{endpoint}/details/?id={ids[endpoint]}").get_data(as_text=True)
    link = re.search(r'<a [^>]*id="history-link"[^>]*href="([^"]+)"', page)
    assert link, "no History link"
    assert link.group(1).replace("&amp;", "&") == f"/admin/{endpoint}/history/?id={ids[endpoint]}"
    assert browser.get(link.group(1).replace("&amp;", "&")).status_code == 200


def test_history_lists_changes_newest_first_and_reads_only_for_admins(browser, history_world):
    other, first = history_world["other"], history_world["first"]
    post_form(browser, f"/admin/patient/edit/?id={first}", last_name="Primera")
    url = f"/admin/patient/history/?id={first}"

    admin_rows = history_rows(browser.get(url).get_data(as_text=True))
    assert [action for _who, action, _c in admin_rows] == [
        "UPDATE",
        "VIEW",
        "UPDATE",
        "VIEW",
        "CREATE",
    ]
    assert admin_rows[0] == (ADMIN_EMAIL, "UPDATE", "last_name : Primero → Primera")
    assert admin_rows[2] == (
        "alice@clinic.example.com",
        "UPDATE",
        "email : uno@example.com → uno@new.example.com",
    )

    page = other.get(url).get_data(as_text=True)
    assert "reads and exports are shown to administrators" in page
    assert [(who, action) for who, action, _c in history_rows(page)] == [
        (ADMIN_EMAIL, "UPDATE"),
        ("alice@clinic.example.com", "UPDATE"),
        ("—", "CREATE"),  # made by the test's setup, outside any login
    ]


def test_user_history_lists_the_users_changes_and_logins(browser, admin):
    user = make_user("hist@clinic.example.com", RoleName.SUPPORT)
    AuthActions(browser.application.test_client()).login(user.email)
    url = f"/admin/user/edit/?id={user.id}"
    browser.post(
        url,
        data={
            "email": user.email,
            "display_name": "Historia",
            "roles": [role_id(RoleName.SUPPORT)],
            "active": "y",
            "new_password": "",
            "csrf_token": form_token(browser, url),
        },
    )
    rows = history_rows(browser.get(f"/admin/user/history/?id={user.id}").get_data(True))
    assert [action for _w, action, _c in rows] == ["UPDATE", "LOGIN", "CREATE"]
    assert rows[0] == (ADMIN_EMAIL, "UPDATE", "display_name : hist → Historia")


def test_doctor_history_includes_its_phones(browser, admin):
    doctor = make_doctor(phones=["55 1234 5678"])
    db.session.commit()
    url = f"/admin/doctor/edit/?id={doctor.id}"
    post_form(browser, url, **{"phones-0-number": "55 8765 4321"})
    rows = history_rows(browser.get(f"/admin/doctor/history/?id={doctor.id}").get_data(True))
    assert rows[0] == (ADMIN_EMAIL, "UPDATE", "number : +525512345678 → +525587654321")
    assert {action for _w, action, _c in rows[1:]} == {"CREATE"}, rows


# --- restore and revert ----------------------------------------------------------------------


def undo(client: FlaskClient, kind: str, entry_id: int):  # noqa: ANN201
    """Press the Restore or Revert button on the entry's page (its form, its CSRF token)."""
    page = client.get(f"/admin/audit/details/?id={entry_id}").get_data(as_text=True)
    form = re.search(rf'<form method="post" action="/admin/audit/{kind}/".*?</form>', page, re.S)
    assert form, f"no {kind} button on the entry's page"
    token = csrf_token_from(form.group(0))
    return client.post(
        f"/admin/audit/{kind}/",
        data={"entry_id": str(entry_id), "csrf_token": token},
        follow_redirects=True,
    )


def test_restore_a_deleted_doctor_with_its_phones(browser, admin):
    doctor = make_doctor(
        "Eva",
        "Luna",
        phones=["55 1234 5678", "55 8765 4321"],
        licence_number="CED-1",
        specialty="CARDIOLOGY",
    )
    db.session.commit()
    doctor_id, clinic_id = doctor.id, doctor.clinic_id
    mark = last_id()
    delete_record(browser, "doctor", doctor_id)
    assert count(Doctor) == 0 and count(DoctorPhone) == 0
    deleted = one(mark, entity="doctor", action="DELETE")

    mark = last_id()
    response = undo(browser, "restore", deleted.id)
    assert "Restored: Dr. Eva Luna." in flashes(response.get_data(as_text=True))[0]
    db.session.expire_all()
    back = db.session.get(Doctor, doctor_id)
    assert (back.first_name, back.last_name, back.licence_number, back.specialties) == (
        "Eva",
        "Luna",
        "CED-1",
        [Specialty.CARDIOLOGY],
    )
    assert back.clinic_id == clinic_id
    assert sorted((p.number, p.is_primary) for p in back.phones) == [
        ("+525512345678", True),
        ("+525587654321", False),
    ]
    restored = entries_after(mark)
    assert sorted((e.entity, e.action) for e in restored) == [
        ("doctor", "RESTORE"),
        ("doctor_phone", "RESTORE"),
        ("doctor_phone", "RESTORE"),
    ]
    for entry in restored:
        assert_by(entry, admin)
        assert entry.details["restored_from_entry"] == deleted.id

    response = undo(browser, "restore", deleted.id)  # twice: nothing to restore
    assert "nothing to restore" in " ".join(flashes(response.get_data(as_text=True)))


def test_restore_refused_when_a_new_record_took_the_unique_name(browser, admin):
    clinic_id = make_clinic("Clínica Bosque").id
    make_clinic("Clínica Posterior")  # the deleted one is not the newest (see the test below)
    db.session.commit()
    mark = last_id()
    delete_record(browser, "clinic", clinic_id)
    deleted = one(mark, entity="clinic", action="DELETE")
    post_form(browser, "/admin/clinic/new/", name="Clínica Bosque", city="Toluca")

    mark = last_id()
    response = undo(browser, "restore", deleted.id)
    assert "It cannot be restored: another record already has the same name." in " ".join(
        flashes(response.get_data(as_text=True))
    )
    assert entries_after(mark) == []
    db.session.expire_all()
    assert db.session.get(Clinic, clinic_id) is None
    assert db.session.scalars(select(Clinic.city).where(Clinic.name == "Clínica Bosque")).all() == [
        "Toluca"
    ]


def test_restore_refused_when_what_it_belonged_to_is_gone(browser, admin):
    doctor = make_doctor("Eva", "Luna", clinic=make_clinic("Clínica Cerrada"))
    make_clinic("Clínica Abierta")  # the deleted clinic is not the newest id
    db.session.commit()
    doctor_id, clinic_id = doctor.id, doctor.clinic_id
    mark = last_id()
    delete_record(browser, "doctor", doctor_id)
    delete_record(browser, "clinic", clinic_id)
    deleted = one(mark, entity="doctor", action="DELETE")
    mark = last_id()
    response = undo(browser, "restore", deleted.id)
    assert (
        f"It cannot be restored: clinic #{clinic_id}, which it belongs to, no longer exists. "
        "Restore that first." in " ".join(flashes(response.get_data(as_text=True)))
    )
    assert entries_after(mark) == []
    assert count(Doctor) == 0


def test_revert_one_update(browser, admin):
    patient = make_patient("Lucía", "Herrera", email="lucia@old.example.com")
    db.session.commit()
    post_form(browser, f"/admin/patient/edit/?id={patient.id}", email="lucia@new.example.com")
    update = entries_after(0, entity="patient", action="UPDATE")[-1]

    mark = last_id()
    response = undo(browser, "revert", update.id)
    assert f"Reverted: Lucía Herrera (MRN {patient.mrn})." in " ".join(
        flashes(response.get_data(as_text=True))
    )
    db.session.expire_all()
    assert db.session.get(Patient, patient.id).email == "lucia@old.example.com"
    revert = one(mark, entity="patient")
    assert revert.action == "REVERT"
    assert revert.changes == {"email": ["lucia@new.example.com", "lucia@old.example.com"]}
    assert revert.details["reverts_entry"] == update.id
    assert_by(revert, admin)


def test_revert_refused_when_the_field_changed_again(browser, admin):
    patient = make_patient("Lucía", "Herrera", email="lucia@old.example.com")
    db.session.commit()
    url = f"/admin/patient/edit/?id={patient.id}"
    post_form(browser, url, email="lucia@new.example.com")
    update = entries_after(0, entity="patient", action="UPDATE")[-1]
    post_form(browser, url, email="lucia@newer.example.com")
    mark = last_id()
    response = undo(browser, "revert", update.id)
    assert "It cannot be reverted: email changed again since this entry." in " ".join(
        flashes(response.get_data(as_text=True))
    )
    assert entries_after(mark, action="REVERT") == []
    db.session.expire_all()
    assert db.session.get(Patient, patient.id).email == "lucia@newer.example.com"


# --- tamper evidence -------------------------------------------------------------------------


@pytest.fixture
def some_entries() -> list[int]:
    """A few committed entries: a clinic created, renamed, deleted; a patient created."""
    clinic = make_clinic("Clínica Cadena")
    db.session.commit()
    clinic.city = "Tepic"
    db.session.commit()
    db.session.delete(clinic)
    make_patient("Ana", "Cadena")
    db.session.commit()
    return list(db.session.scalars(select(AuditEntry.id).order_by(AuditEntry.id)))


def is_postgres() -> bool:
    return db.session.get_bind().dialect.name == "postgresql"


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET action = 'VIEW' WHERE id = :id",
        "UPDATE audit_log SET changes = NULL",
        "DELETE FROM audit_log WHERE id = :id",
        "DELETE FROM audit_log",
    ],
)
def test_the_database_refuses_to_change_or_remove_an_entry(some_entries, statement):
    kind = statement.split()[0]
    with pytest.raises(DBAPIError, match=f"audit_log is append-only: {kind} refused"):
        with db.session.begin_nested():
            db.session.execute(text(statement), {"id": some_entries[1]})
    db.session.expire_all()
    assert [e.id for e in entries_after(0)] == some_entries
    assert verify_chain(db.session.connection()).ok


def test_the_database_refuses_to_truncate_the_log_on_postgresql(some_entries):
    if not is_postgres():
        pytest.skip("TRUNCATE is PostgreSQL's (SQLite has DELETE only, refused above)")
    with pytest.raises(DBAPIError, match="audit_log is append-only: TRUNCATE refused"):
        with db.session.begin_nested():
            db.session.execute(text("TRUNCATE audit_log"))
    assert [e.id for e in entries_after(0)] == some_entries


def lift_append_only() -> None:
    """What an intruder with the database owner's rights does first. Inside the test's
    transaction, so the rollback puts the triggers back (DDL is transactional on both)."""
    if is_postgres():
        db.session.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
    else:
        db.session.execute(text("DROP TRIGGER audit_log_no_update"))
        db.session.execute(text("DROP TRIGGER audit_log_no_delete"))


def verify(app: Flask):  # noqa: ANN201
    return app.test_cli_runner().invoke(args=["audit", "verify"])


def test_an_intact_chain_verifies(app, some_entries):
    result = verify(app)
    assert result.exit_code == 0, result.output
    assert f"Audit trail intact: {len(some_entries)} entries verified." in result.output


@pytest.mark.parametrize(
    "change",
    [
        'changes = \'{"city": ["Tepic", "Nayarit"]}\'',
        "actor_label = 'someone-else'",
        "at = at",  # the same value written back: not a change, the chain still holds
    ],
)
def test_verify_names_an_altered_entry(app, some_entries, change):
    altered = some_entries[1]
    lift_append_only()
    statement = text(f"UPDATE audit_log SET {change} WHERE id = :id")  # noqa: S608
    db.session.execute(statement, {"id": altered})
    result = verify(app)
    if change == "at = at":
        assert result.exit_code == 0, result.output
        return
    assert result.exit_code == 1
    assert (
        f"Audit trail BROKEN at entry #{altered}: its content does not match its hash "
        "(it was altered). 1 entries before it are intact." in result.output
    )


def test_verify_names_the_entry_after_a_removed_one(app, some_entries):
    lift_append_only()
    db.session.execute(text("DELETE FROM audit_log WHERE id = :id"), {"id": some_entries[1]})
    result = verify(app)
    assert result.exit_code == 1
    assert (
        f"Audit trail BROKEN at entry #{some_entries[2]}: does not follow the entry before it "
        "(an entry was removed or inserted)." in result.output
    )


def test_verify_says_the_chain_ends_early_when_the_last_entry_is_removed(app, some_entries):
    lift_append_only()
    db.session.execute(text("DELETE FROM audit_log WHERE id = :id"), {"id": some_entries[-1]})
    result = verify(app)
    assert result.exit_code == 1
    assert (
        "Audit trail BROKEN at the end of the chain: the chain ends before its recorded head "
        "(entries were removed from the end)." in result.output
    )


def test_birth_dates_and_enums_are_recorded_as_plain_values():
    """What an entry holds reads the same on both databases (ISO dates, enum codes)."""
    mark = last_id()
    make_study(make_patient(birth_date=date(1990, 2, 3)), urgency="HIGH")
    db.session.commit()
    assert new_of(one(mark, entity="patient"))["birth_date"] == "1990-02-03"
    assert new_of(one(mark, entity="study"))["urgency"] == "HIGH"


def test_a_deleted_records_id_is_never_given_to_a_new_record(browser, admin):
    """Otherwise its history and the new record's would mix, and a restore would be refused as
    "exists again". PostgreSQL's sequences never go back; SQLite reuses the highest rowid of a
    table declared without AUTOINCREMENT."""
    clinic_id = make_clinic("Clínica Efímera").id
    db.session.commit()
    delete_record(browser, "clinic", clinic_id)
    post_form(browser, "/admin/clinic/new/", name="Clínica Nueva")
    new_id = created_id(Clinic, name="Clínica Nueva")
    assert new_id != clinic_id
