"""Two people edit one record: the second save is refused with the first one's changes shown."""

from __future__ import annotations

import re
from collections.abc import Callable
from zoneinfo import ZoneInfo

import pytest
from babel.dates import format_datetime
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from backoffice.extensions import db
from backoffice.models import (
    AuditEntry,
    Clinic,
    Doctor,
    DoctorPhone,
    Patient,
    RoleName,
    Study,
    User,
)
from tests.conftest import AuthActions, make_user
from tests.factories import make_clinic, make_doctor, make_patient, make_study
from tests.test_admin_crud import flashes, form_values, open_form, text_of

ALICE = "alice@clinic.example.com"
BRUNO = "bruno@clinic.example.com"


def logged_in(app: Flask, email: str, role: RoleName) -> FlaskClient:
    client = app.test_client()
    make_user(email, role)
    response = AuthActions(client).login(email)
    assert response.status_code == 302
    return client


@pytest.fixture
def alice(app: Flask) -> FlaskClient:
    return logged_in(app, ALICE, RoleName.ADMIN)


@pytest.fixture
def bruno(app: Flask) -> FlaskClient:
    return logged_in(app, BRUNO, RoleName.OPERATOR)


def conflict_text(page: str) -> str:
    """The conflict message as the user reads it (inline markup dropped, spaces collapsed)."""
    match = re.search(r'<div class="edit-conflict">(.*?)</div>', page, re.S)
    assert match, f"no conflict message; messages: {flashes(page)}"
    inline = re.sub(r"</?(code|span|strong)\b[^>]*>", "", match.group(1))
    return text_of(inline)


def last_change_time(app: Flask, entity: str, entity_id: int) -> str:
    """The time of the latest change to a record, as the conflict message shows it."""
    db.session.expire_all()
    entry = db.session.scalars(
        select(AuditEntry)
        .where(AuditEntry.entity == entity, AuditEntry.entity_id == str(entity_id))
        .where(AuditEntry.action == "UPDATE")
        .order_by(AuditEntry.id.desc())
    ).first()
    assert entry is not None
    zone = ZoneInfo(app.config["BABEL_DEFAULT_TIMEZONE"])
    return " ".join(format_datetime(entry.at, locale="en", tzinfo=zone).split())


def play_conflict(
    app: Flask,
    alice: FlaskClient,
    bruno: FlaskClient,
    *,
    url: str,
    entity: str,
    record_id: int,
    alice_edits: Callable[[dict], None],
    bruno_edits: Callable[[dict], None],
    alice_listed: list[str],
    holds_alice: Callable[[], None],
    holds_bruno: Callable[[], None],
) -> None:
    """Both open the edit page; Alice saves; Bruno's save (and its re-send) is refused with
    Alice's changes shown and nothing of his written; after a reload his save goes through."""
    form_a = open_form(alice, url)
    form_b = open_form(bruno, url)
    assert form_a["opened_version"] == form_b["opened_version"]

    alice_edits(form_a)
    response = alice.post(url, data=form_a)
    assert response.status_code == 302, flashes(response.get_data(as_text=True))
    holds_alice()

    bruno_edits(form_b)
    response = bruno.post(url, data=form_b)
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    message = conflict_text(page)
    when = last_change_time(app, entity, record_id)
    assert f"This record was changed by {ALICE} at {when} since you opened it." in message
    for change in alice_listed:
        assert change in message, (change, message)
    assert "Nothing of yours was saved" in message
    assert "successfully saved" not in page
    holds_alice()

    # The re-rendered form still carries the version Bruno opened: sending it again is refused.
    again = form_values(page)
    assert again["opened_version"] == form_b["opened_version"]
    response = bruno.post(url, data=again)
    assert response.status_code == 200
    conflict_text(response.get_data(as_text=True))
    holds_alice()

    # After a reload Bruno sees Alice's values and his change is saved.
    fresh = open_form(bruno, url)
    assert int(fresh["opened_version"]) > int(form_b["opened_version"])
    bruno_edits(fresh)
    response = bruno.post(url, data=fresh)
    assert response.status_code == 302, flashes(response.get_data(as_text=True))
    holds_bruno()


def test_patient_edited_by_two_people(app, alice, bruno):
    patient = make_patient("Lucía", "Herrera", email="lucia@old.example.com", mrn="MRN-1")
    db.session.commit()

    def alice_edits(form: dict) -> None:
        form["email"] = "lucia@new.example.com"
        form["last_name"] = "Herrera Gómez"

    def bruno_edits(form: dict) -> None:
        form["email"] = "lucia@bruno.example.com"
        form["first_name"] = "Lucy"

    def holds_alice() -> None:
        db.session.expire_all()
        p = db.session.get(Patient, patient.id)
        assert (p.first_name, p.last_name, p.email) == (
            "Lucía",
            "Herrera Gómez",
            "lucia@new.example.com",
        )

    def holds_bruno() -> None:
        db.session.expire_all()
        p = db.session.get(Patient, patient.id)
        # Bruno's reload kept Alice's last name; his own changes are on top of it.
        assert (p.first_name, p.last_name, p.email) == (
            "Lucy",
            "Herrera Gómez",
            "lucia@bruno.example.com",
        )

    play_conflict(
        app,
        alice,
        bruno,
        url=f"/admin/patient/edit/?id={patient.id}",
        entity="patient",
        record_id=patient.id,
        alice_edits=alice_edits,
        bruno_edits=bruno_edits,
        alice_listed=[
            "email: lucia@old.example.com → lucia@new.example.com",
            "last_name: Herrera → Herrera Gómez",
        ],
        holds_alice=holds_alice,
        holds_bruno=holds_bruno,
    )


def test_study_edited_by_two_people(app, alice, bruno):
    study = make_study(description="Initial", body_part="CHEST", urgency="LOW")
    db.session.commit()

    def alice_edits(form: dict) -> None:
        form["urgency"] = "HIGH"
        form["description"] = "Alice's reading"

    def bruno_edits(form: dict) -> None:
        form["description"] = "Bruno's reading"
        form["body_part"] = "NECK"

    def holds_alice() -> None:
        db.session.expire_all()
        s = db.session.get(Study, study.id)
        assert (str(s.urgency), s.description, s.body_part) == ("HIGH", "Alice's reading", "CHEST")

    def holds_bruno() -> None:
        db.session.expire_all()
        s = db.session.get(Study, study.id)
        assert (str(s.urgency), s.description, s.body_part) == ("HIGH", "Bruno's reading", "NECK")

    play_conflict(
        app,
        alice,
        bruno,
        url=f"/admin/study/edit/?id={study.id}",
        entity="study",
        record_id=study.id,
        alice_edits=alice_edits,
        bruno_edits=bruno_edits,
        alice_listed=["urgency: LOW → HIGH", "description: Initial → Alice's reading"],
        holds_alice=holds_alice,
        holds_bruno=holds_bruno,
    )


def test_clinic_edited_by_two_people(app, alice, bruno):
    clinic = make_clinic("Clínica Centro", city="Puebla", address="Calle 1")
    db.session.commit()

    def alice_edits(form: dict) -> None:
        form["city"] = "Cholula"

    def bruno_edits(form: dict) -> None:
        form["address"] = "Avenida 2"

    def holds_alice() -> None:
        db.session.expire_all()
        c = db.session.get(Clinic, clinic.id)
        assert (c.city, c.address) == ("Cholula", "Calle 1")

    def holds_bruno() -> None:
        db.session.expire_all()
        c = db.session.get(Clinic, clinic.id)
        assert (c.city, c.address) == ("Cholula", "Avenida 2")

    play_conflict(
        app,
        alice,
        bruno,
        url=f"/admin/clinic/edit/?id={clinic.id}",
        entity="clinic",
        record_id=clinic.id,
        alice_edits=alice_edits,
        bruno_edits=bruno_edits,
        alice_listed=["city: Puebla → Cholula"],
        holds_alice=holds_alice,
        holds_bruno=holds_bruno,
    )


def phones_of(doctor_id: int) -> list[tuple[str, str]]:
    db.session.expire_all()
    rows = db.session.execute(
        select(DoctorPhone.number, DoctorPhone.kind)
        .where(DoctorPhone.doctor_id == doctor_id)
        .order_by(DoctorPhone.number)
    )
    return [(n, str(k)) for n, k in rows]


def row_of(form: dict, number: str) -> int:
    return next(i for i in range(10) if form.get(f"phones-{i}-number") == number)


@pytest.fixture
def doctor() -> Doctor:
    doctor = make_doctor("Ana", "Soto", phones=["55 1234 5678", "55 1111 2222", "55 3333 4444"])
    db.session.commit()
    return doctor


def test_doctor_with_phones_edited_by_two_people(app, alice, bruno, doctor):
    def alice_edits(form: dict) -> None:
        form["last_name"] = "Soto Ruiz"
        form[f"phones-{row_of(form, '+525511112222')}-number"] = "55 1111 9999"
        form[f"del-phones-{row_of(form, '+525533334444')}"] = "y"

    def bruno_edits(form: dict) -> None:
        form["first_name"] = "Anabel"
        if "+525511112222" in form.values():  # the stale form still shows the old number
            form[f"phones-{row_of(form, '+525511112222')}-number"] = "55 2222 0000"
        else:
            form[f"phones-{row_of(form, '+525511119999')}-kind"] = "OFFICE"

    def holds_alice() -> None:
        db.session.expire_all()
        d = db.session.get(Doctor, doctor.id)
        assert (d.first_name, d.last_name) == ("Ana", "Soto Ruiz")
        assert phones_of(doctor.id) == [("+525511119999", "MOBILE"), ("+525512345678", "MOBILE")]

    def holds_bruno() -> None:
        db.session.expire_all()
        d = db.session.get(Doctor, doctor.id)
        assert (d.first_name, d.last_name) == ("Anabel", "Soto Ruiz")
        assert phones_of(doctor.id) == [("+525511119999", "OFFICE"), ("+525512345678", "MOBILE")]

    play_conflict(
        app,
        alice,
        bruno,
        url=f"/admin/doctor/edit/?id={doctor.id}",
        entity="doctor",
        record_id=doctor.id,
        alice_edits=alice_edits,
        bruno_edits=bruno_edits,
        alice_listed=[
            "last_name: Soto → Soto Ruiz",
            "number: +525511112222 → +525511119999",
            "number: +525533334444 → ∅",
        ],
        holds_alice=holds_alice,
        holds_bruno=holds_bruno,
    )


def test_a_change_to_the_phones_alone_also_stops_a_stale_save(app, alice, bruno, doctor):
    """Alice touches only the phones; Bruno's stale form would put the old rows back."""
    url = f"/admin/doctor/edit/?id={doctor.id}"
    form_a, form_b = open_form(alice, url), open_form(bruno, url)
    form_a[f"del-phones-{row_of(form_a, '+525533334444')}"] = "y"
    form_a[f"phones-{row_of(form_a, '+525511112222')}-kind"] = "FAX"
    response = alice.post(url, data=form_a)
    assert response.status_code == 302, flashes(response.get_data(as_text=True))
    expected = [("+525511112222", "FAX"), ("+525512345678", "MOBILE")]
    assert phones_of(doctor.id) == expected

    form_b["first_name"] = "Anabel"
    response = bruno.post(url, data=form_b)
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    message = conflict_text(page)
    assert f"changed by {ALICE}" in message
    assert "kind: MOBILE → FAX" in message
    assert "number: +525533334444 → ∅" in message
    assert phones_of(doctor.id) == expected  # the removed phone did not come back
    db.session.expire_all()
    assert db.session.get(Doctor, doctor.id).first_name == "Ana"


def test_a_save_without_a_conflict_goes_through_first_time(alice, doctor):
    url = f"/admin/doctor/edit/?id={doctor.id}"
    form = open_form(alice, url)
    form[f"del-phones-{row_of(form, '+525533334444')}"] = "y"
    form["first_name"] = "Anabel"
    response = alice.post(url, data=form)
    assert response.status_code == 302, flashes(response.get_data(as_text=True))
    assert "since you opened it" not in text_of(alice.get(url).get_data(as_text=True))
    db.session.expire_all()
    assert db.session.get(Doctor, doctor.id).first_name == "Anabel"
    assert [n for n, _k in phones_of(doctor.id)] == ["+525511112222", "+525512345678"]


def test_a_form_shown_again_after_a_failed_save_still_checks_the_version(
    app, alice, bruno, monkeypatch
):
    """Bruno's save fails in the database (an email taken meanwhile); Alice then saves; Bruno
    corrects his form and sends it again: it still carries the version he opened."""
    from flask_admin.contrib.sqla import validators as admin_validators

    make_patient("Pepe", "Uno", email="pepe@example.com")
    patient = make_patient("Jose", "Dos", email="jose@example.com")
    db.session.commit()
    url = f"/admin/patient/edit/?id={patient.id}"
    form_b = open_form(bruno, url)
    opened = form_b["opened_version"]
    with monkeypatch.context() as patch:
        patch.setattr(admin_validators.Unique, "__call__", lambda self, form, field: None)
        response = bruno.post(url, data=form_b | {"email": "pepe@example.com"})
    page = response.get_data(as_text=True)
    assert "must be unique" in " ".join(flashes(page))
    shown_again = form_values(page)
    assert shown_again["opened_version"] == opened

    form_a = open_form(alice, url)
    alice.post(url, data=form_a | {"first_name": "Josefina"})
    response = bruno.post(url, data=shown_again | {"email": "jose@bruno.example.com"})
    assert response.status_code == 200
    assert "first_name: Jose → Josefina" in conflict_text(response.get_data(as_text=True))
    db.session.expire_all()
    saved = db.session.get(Patient, patient.id)
    assert (saved.first_name, saved.email) == ("Josefina", "jose@example.com")


def test_a_refused_stale_save_removes_no_phone(alice, bruno, doctor):
    url = f"/admin/doctor/edit/?id={doctor.id}"
    form_a, form_b = open_form(alice, url), open_form(bruno, url)
    alice.post(url, data=form_a | {"first_name": "Anabel"})
    form_b[f"del-phones-{row_of(form_b, '+525512345678')}"] = "y"
    response = bruno.post(url, data=form_b)
    conflict_text(response.get_data(as_text=True))
    assert [n for n, _k in phones_of(doctor.id)] == [
        "+525511112222",
        "+525512345678",
        "+525533334444",
    ]


# --- list inline edits ---------------------------------------------------------------------


def _views(app: Flask) -> list:
    return [v for admin in app.extensions["admin"] for v in admin._views if hasattr(v, "model")]


def test_no_view_offers_list_inline_editing(app):
    editable = {v.endpoint: v.column_editable_list for v in _views(app) if v.column_editable_list}
    assert editable == {}


def test_ajax_update_cannot_change_any_field_of_any_record(app, alice):
    """List inline edits are off, so a record cannot be overwritten through them without the
    version check: the endpoint refuses every field of every view and nothing changes."""
    clinic = make_clinic("Clínica Lista", city="León")
    patient = make_patient("Iris", "Paz", email="iris@example.com")
    make_study(patient, description="Before")
    make_doctor("Eva", "Luna", clinic=clinic, phones=["55 1234 5678"])
    db.session.commit()
    values = {"name": "Changed", "city": "Changed", "first_name": "Changed"}
    values |= {"last_name": "Changed", "email": "changed@example.com", "description": "After"}
    values |= {"body_part": "NECK", "display_name": "Changed", "action": "DELETE"}

    def snapshot() -> list:
        db.session.expire_all()
        return [
            [
                {k: v for k, v in vars(row).items() if not k.startswith("_")}
                for row in db.session.scalars(select(model).order_by(model.id))
            ]
            for model in (Clinic, Doctor, DoctorPhone, Patient, Study, User, AuditEntry)
        ]

    before = snapshot()
    token = open_form(alice, f"/admin/clinic/edit/?id={clinic.id}")["csrf_token"]
    for view in _views(app):
        with app.test_request_context():
            names = {f.name for f in view._edit_form_class()} | set(values)
        pk = db.session.scalar(select(view.model.id).limit(1)) or 1
        for name in sorted(names - {"csrf_token", "opened_version"}):
            response = alice.post(
                f"/admin/{view.endpoint}/ajax/update/",
                data={
                    "list_form_pk": str(pk),
                    name: values.get(name, "Changed"),
                    "csrf_token": token,
                },
            )
            assert response.status_code in (403, 404), (view.endpoint, name)
    assert snapshot() == before
