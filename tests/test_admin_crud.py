"""Create, edit, delete and browse records through the admin pages, with CSRF on, as a browser."""

from __future__ import annotations

import html as html_lib
import json
import re
from datetime import date, datetime, timedelta
from html.parser import HTMLParser

import pytest
from sqlalchemy import func, select

from backoffice.extensions import db
from backoffice.models import Clinic, Doctor, DoctorPhone, Patient, RoleName, Specialty, Study
from tests.factories import make_clinic, make_doctor, make_patient, make_study

# --- helpers: read pages the way a browser does -------------------------------------------


class _AdminFormReader(HTMLParser):
    """Collect what a browser would submit from the page's ``admin-form``."""

    def __init__(self) -> None:
        super().__init__()
        self.inside = False
        self.values: dict[str, str] = {}
        self._select: str | None = None
        self._multiple = False
        self._first_option: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "form" and "admin-form" in (a.get("class") or ""):
            self.inside = True
        if not self.inside:
            return
        name = a.get("name")
        if tag == "input" and name:
            kind = a.get("type", "text")
            if kind in ("checkbox", "radio"):
                if "checked" in a:
                    self.values[name] = a.get("value") or "on"
            elif kind not in ("submit", "button", "file", "reset"):
                self.values[name] = a.get("value") or ""
        elif tag == "select" and name:
            self._select, self._first_option = name, None
            self._multiple = "multiple" in a
        elif tag == "option" and self._select:
            if self._first_option is None:
                self._first_option = a.get("value") or ""
            if "selected" in a:
                value = a.get("value") or ""
                if self._multiple:  # several selected options: the form sends each
                    current = self.values.get(self._select)
                    self.values[self._select] = (
                        value
                        if current is None
                        else [*([current] if isinstance(current, str) else current), value]
                    )
                else:
                    self.values[self._select] = value
        elif tag == "textarea" and name:
            self._textarea = name
            self.values[name] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False
        elif tag == "select" and self._select:
            if not self._multiple:  # a browser sends nothing for a multiple select left empty
                self.values.setdefault(self._select, self._first_option or "")
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data: str) -> None:
        if self._textarea:
            self.values[self._textarea] += data


def form_values(page: str) -> dict[str, str]:
    reader = _AdminFormReader()
    reader.feed(page)
    assert "csrf_token" in reader.values, "the admin form carries no CSRF token"
    return reader.values


def open_form(client, url: str) -> dict[str, str]:  # noqa: ANN001
    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return form_values(response.get_data(as_text=True))


def text_of(fragment: str) -> str:
    return " ".join(html_lib.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def column(page: str, name: str) -> list[str]:
    """The text of one column of a list page, top to bottom."""
    cells = re.findall(rf'<td class="col-{name}\b[^"]*">(.*?)</td>', page, re.S)
    return [text_of(c) for c in cells]


_DETAIL_LABEL = r"<td>\s*<b>\s*{}\s*</b>\s*</td>"


def detail(page: str, label: str) -> str:
    """The HTML of the value shown next to ``label`` on a details page (up to the next label)."""
    match = re.search(_DETAIL_LABEL.format(re.escape(label)), page)
    assert match, f"no {label!r} row on the details page"
    rest = page[match.end() :]
    following = re.search(_DETAIL_LABEL.format(r"[^<]+"), rest)
    return rest[: following.start()] if following else rest[: rest.index("</table>")]


def field_block(page: str, name: str) -> str:
    """The HTML of one form field, its label and the errors shown under it."""
    start = page.rindex('<div class="form-group', 0, page.index(f'id="{name}"'))
    end = page.find('<div class="form-group', page.index(f'id="{name}"'))
    return page[start:end] if end != -1 else page[start:]


def phone_row(page: str, index: int) -> str:
    """The HTML of one inline phone row, up to the next row."""
    start = page.index(f'id="phones-{index}"')
    rest = page[page.index(">", start) :]
    ends = [
        rest.find(marker)
        for marker in ('class="inline-field card', "inline-field-template", "data-inline-add")
        if rest.find(marker) != -1
    ]
    return rest[: min(ends)] if ends else rest


def flashes(page: str) -> list[str]:
    return [text_of(m) for m in re.findall(r'<div class="alert[^"]*">(.*?)</div>', page, re.S)]


def filter_arg(page: str, label: str) -> str:
    """The URL argument of a list filter, as the filter menu's JavaScript builds it."""
    raw = re.search(r'<div id="filter-groups-data"[^>]*>(.*?)</div>', page, re.S).group(1)
    groups = json.loads(html_lib.unescape(raw))
    return groups[label][0]["arg"]


def count(model: type) -> int:
    db.session.expire_all()
    return db.session.scalar(select(func.count()).select_from(model))


def phones_of(doctor_id: int) -> list[tuple[str, str, bool]]:
    db.session.expire_all()
    rows = db.session.execute(
        select(DoctorPhone.number, DoctorPhone.kind, DoctorPhone.is_primary)
        .where(DoctorPhone.doctor_id == doctor_id)
        .order_by(DoctorPhone.number)
    )
    return [(n, str(k), p) for n, k, p in rows]


NO_SQL = re.compile(r"IntegrityError|UNIQUE constraint|duplicate key|INSERT INTO|UPDATE \w+ SET")


@pytest.fixture
def admin(auth):  # noqa: ANN001, ANN201
    return auth.as_role(RoleName.ADMIN)


@pytest.fixture
def clinic() -> Clinic:
    clinic = make_clinic(name="Clínica Roma Norte", city="Ciudad de México")
    db.session.commit()
    return clinic


def new_doctor_form(client, clinic: Clinic, phones: list[tuple[str, str, bool]]) -> dict:  # noqa: ANN001
    data = open_form(client, "/admin/doctor/new/")
    data.update(
        first_name="Ana",
        last_name="Martínez",
        email="Ana.Martinez@Clinica.Example.com",
        specialties="RADIOLOGY",
        licence_number="CED-100201",
        clinic=str(clinic.id),
    )
    # what the "Add Phone" button adds: a row with an empty id
    for i, (number, kind, primary) in enumerate(phones):
        data[f"phones-{i}-id"] = ""
        data[f"phones-{i}-number"] = number
        data[f"phones-{i}-kind"] = kind
        if primary:
            data[f"phones-{i}-is_primary"] = "y"
    return data


THREE_PHONES = [
    ("+52 55 1234 5678", "MOBILE", True),
    ("(55) 5208-1001", "OFFICE", False),
    ("33 1122 3344", "HOME", False),
]


# --- doctors with inline phones -----------------------------------------------------------


def test_new_doctor_form_offers_inline_phone_rows(client, admin):
    page = client.get("/admin/doctor/new/").get_data(as_text=True)
    assert 'data-inline-add="phones"' in page
    # the template a new row is built from has the three phone fields
    template = html_lib.unescape(page.split("inline-field-template", 1)[1])
    for field in ('name="number"', 'name="kind"', 'name="is_primary"'):
        assert field in template


def test_doctor_saved_with_three_phones_then_one_edited_and_one_removed(client, admin, clinic):
    data = new_doctor_form(client, clinic, THREE_PHONES)
    response = client.post("/admin/doctor/new/", data=data)
    assert response.status_code == 302, flashes(response.get_data(as_text=True))

    db.session.expire_all()
    doctor = db.session.scalars(select(Doctor)).one()
    assert (doctor.first_name, doctor.last_name) == ("Ana", "Martínez")
    assert doctor.email == "ana.martinez@clinica.example.com"
    assert doctor.specialties == [Specialty.RADIOLOGY]
    assert doctor.clinic_id == clinic.id
    assert phones_of(doctor.id) == [
        ("+523311223344", "HOME", False),
        ("+525512345678", "MOBILE", True),
        ("+525552081001", "OFFICE", False),
    ]
    original_ids = {p.number: p.id for p in db.session.scalars(select(DoctorPhone)).all()}

    # the edit form shows the stored rows; change the office number, remove the home one
    data = open_form(client, f"/admin/doctor/edit/?id={doctor.id}")
    rows = {data[f"phones-{i}-number"]: i for i in range(3)}
    assert set(rows) == {"+525512345678", "+525552081001", "+523311223344"}
    office, home = rows["+525552081001"], rows["+523311223344"]
    data[f"phones-{office}-number"] = "55 5208 1999"
    data[f"phones-{office}-kind"] = "FAX"
    data[f"del-phones-{home}"] = "y"
    response = client.post(f"/admin/doctor/edit/?id={doctor.id}", data=data)
    assert response.status_code == 302, flashes(response.get_data(as_text=True))

    assert phones_of(doctor.id) == [
        ("+525512345678", "MOBILE", True),
        ("+525552081999", "FAX", False),
    ]
    # the edited row kept its identity, the removed one is gone from the table
    db.session.expire_all()
    kept = {p.number: p.id for p in db.session.scalars(select(DoctorPhone)).all()}
    assert kept["+525552081999"] == original_ids["+525552081001"]
    assert kept["+525512345678"] == original_ids["+525512345678"]
    assert count(DoctorPhone) == 2


def test_invalid_phone_shows_its_error_beside_the_row_and_nothing_is_saved(client, admin, clinic):
    phones = [THREE_PHONES[0], ("12ab", "FAX", False), THREE_PHONES[2]]
    response = client.post("/admin/doctor/new/", data=new_doctor_form(client, clinic, phones))
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    message = "&#39;12ab&#39; is not a phone number: it contains letters."
    assert message in phone_row(page, 1)
    assert message not in phone_row(page, 0)
    assert message not in phone_row(page, 2)
    assert 'value="12ab"' in phone_row(page, 1)  # what was typed is kept for correction
    assert "is-invalid" in phone_row(page, 1)
    assert count(Doctor) == 0
    assert count(DoctorPhone) == 0


def test_invalid_phone_on_edit_keeps_the_stored_phones(client, admin, clinic):
    doctor = make_doctor(clinic=clinic, phones=["55 1234 5678", "55 8765 4321"])
    db.session.commit()
    data = open_form(client, f"/admin/doctor/edit/?id={doctor.id}")
    data["phones-0-number"] = "123"
    data["del-phones-1"] = "y"
    data["last_name"] = "Renamed"
    response = client.post(f"/admin/doctor/edit/?id={doctor.id}", data=data)
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "it has the wrong number of digits" in phone_row(page, 0)
    assert phones_of(doctor.id) == [
        ("+525512345678", "MOBILE", True),
        ("+525587654321", "MOBILE", False),
    ]
    db.session.expire_all()
    assert db.session.get(Doctor, doctor.id).last_name != "Renamed"


def test_same_number_twice_in_one_form_is_an_error_on_the_repeated_row(client, admin, clinic):
    phones = [("+52 55 1234 5678", "MOBILE", True), ("(55) 1234-5678", "OFFICE", False)]
    response = client.post("/admin/doctor/new/", data=new_doctor_form(client, clinic, phones))
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "This number is already listed for this doctor." in phone_row(page, 1)
    assert "This number is already listed" not in phone_row(page, 0)
    assert count(Doctor) == 0


def test_phone_removed_and_added_back_in_one_save(client, admin, clinic):
    """Change a phone's kind by deleting its row and adding the number again."""
    doctor = make_doctor(clinic=clinic, phones=["55 1234 5678", "55 1111 2222"])
    db.session.commit()
    data = open_form(client, f"/admin/doctor/edit/?id={doctor.id}")
    assert data["phones-0-number"] == "+525512345678"
    data["del-phones-0"] = "y"
    data.update({"phones-2-id": "", "phones-2-number": "55 1234 5678", "phones-2-kind": "OFFICE"})
    response = client.post(f"/admin/doctor/edit/?id={doctor.id}", data=data)
    assert response.status_code == 302, flashes(response.get_data(as_text=True))
    assert phones_of(doctor.id) == [
        ("+525511112222", "MOBILE", False),
        ("+525512345678", "OFFICE", False),
    ]


def test_phone_moved_from_a_removed_row_to_an_edited_row(client, admin, clinic):
    doctor = make_doctor(clinic=clinic, phones=["55 1234 5678", "55 1111 2222"])
    db.session.commit()
    data = open_form(client, f"/admin/doctor/edit/?id={doctor.id}")
    data["del-phones-0"] = "y"
    data["phones-1-number"] = "+52 55 1234 5678"
    response = client.post(f"/admin/doctor/edit/?id={doctor.id}", data=data)
    assert response.status_code == 302, flashes(response.get_data(as_text=True))
    assert phones_of(doctor.id) == [("+525512345678", "MOBILE", False)]


def test_phone_row_left_empty_is_refused_beside_the_row(client, admin, clinic):
    phones = [THREE_PHONES[0], ("   ", "MOBILE", False)]
    response = client.post("/admin/doctor/new/", data=new_doctor_form(client, clinic, phones))
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "This field is required." in phone_row(page, 1)
    assert count(Doctor) == 0


def test_invalid_doctor_email_is_shown_next_to_the_field(client, admin, clinic):
    data = new_doctor_form(client, clinic, [THREE_PHONES[0]])
    data["email"] = "not-an-email"
    response = client.post("/admin/doctor/new/", data=data)
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "&#39;not-an-email&#39; is not a valid email address." in field_block(page, "email")
    assert count(Doctor) == 0


BLANK_OR_TAKEN = [
    # (form, fields typed, field that shows the error, error)
    ("clinic", {"name": "   "}, "name", "This field is required."),
    ("clinic", {"name": "  Clínica   Roma  Norte "}, "name", "Already exists."),
    ("doctor", {"first_name": "  "}, "first_name", "This field is required."),
    ("doctor", {"email": "   "}, "email", "This field is required."),
    ("doctor", {"email": "TAKEN@clinica.example.com"}, "email", "Already exists."),
    ("doctor", {"licence_number": " CED-1 "}, "licence_number", "Already exists."),
    ("doctor", {"clinic": ""}, "clinic", "This field is required."),
    ("patient", {"last_name": "   "}, "last_name", "This field is required."),
    # the MRN names the patient who holds it (every role may open them)
    ("patient", {"mrn": " 1 "}, "mrn", "MRN 1 already belongs to Jose"),
    ("patient", {"email": " Taken@Ejemplo.com"}, "email", "Already exists."),
    (
        "patient",
        {"birth_date": "1899-12-31"},
        "birth_date",
        "Birth date 1899-12-31 is before 1900.",
    ),
    ("study", {"body_part": "   "}, "body_part", "This field is required."),
    ("study", {"body_part": "left knee!"}, "body_part", "is not a body part code"),
    ("study", {"patient": ""}, "patient", "This field is required."),
    ("study", {"accession_number": " ACC-1 "}, "accession_number", "Already exists."),
]


@pytest.mark.parametrize(
    ("endpoint", "typed", "field", "error"),
    BLANK_OR_TAKEN,
    ids=[
        f"{e}-{f}-{'taken' if 'exists' in m or 'belongs' in m else 'invalid'}"
        for e, _t, f, m in BLANK_OR_TAKEN
    ],
)
def test_blank_invalid_or_taken_values_are_reported_next_to_the_field(
    client, admin, clinic, endpoint, typed, field, error
):
    """Values are checked as they would be stored: spaces do not make a value new or present."""
    make_doctor(clinic=clinic, email="taken@clinica.example.com", licence_number="CED-1")
    patient = make_patient(mrn="1", email="taken@ejemplo.com")
    make_study(patient, accession_number="ACC-1")
    db.session.commit()
    before = {model: count(model) for model in (Clinic, Doctor, Patient, Study)}
    valid = {
        "clinic": {"name": "Hospital del Valle"},
        "doctor": {
            "first_name": "Luis",
            "last_name": "Hernández",
            "email": "luis@hospital.example.com",
            "clinic": str(clinic.id),
        },
        "patient": {"first_name": "Jessica", "last_name": "Ramirez", "birth_date": "1971-07-01"},
        "study": {
            "patient": str(patient.id),
            "urgency": "LOW",
            "study_type": "XRAY",
            "body_part": "CHEST",
        },
    }[endpoint]
    data = open_form(client, f"/admin/{endpoint}/new/")
    data.update(valid)
    data.update(typed)
    response = client.post(f"/admin/{endpoint}/new/", data=data)
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert error in text_of(field_block(page, field))
    assert not NO_SQL.search(page)
    assert {model: count(model) for model in (Clinic, Doctor, Patient, Study)} == before


# --- patients -----------------------------------------------------------------------------


def patient_form(client, **fields: str) -> dict:  # noqa: ANN001
    data = open_form(client, "/admin/patient/new/")
    data.update(
        {
            "mrn": "",
            "first_name": "Jose",
            "last_name": "Villalobos",
            "birth_date": "1955-04-10",
            "email": "",
            **fields,
        }
    )
    return data


def test_patient_created_through_the_form(client, admin, clinic):
    doctor = make_doctor("Luis", "Hernández", clinic=clinic)
    db.session.commit()
    data = patient_form(
        client,
        mrn="1",
        email="  Pepe@Ejemplo.com ",
        clinic=str(clinic.id),
    )
    # the referring doctor is the active REFERRING row of the care team
    data.update(
        {
            "care_team-0-id": "",
            "care_team-0-doctor": str(doctor.id),
            "care_team-0-role": "REFERRING",
            "care_team-0-status": "ACTIVE",
        }
    )
    response = client.post("/admin/patient/new/", data=data)
    assert response.status_code == 302, flashes(response.get_data(as_text=True))
    db.session.expire_all()
    patient = db.session.scalars(select(Patient)).one()
    assert (patient.mrn, patient.first_name, patient.last_name) == ("1", "Jose", "Villalobos")
    assert patient.birth_date == date(1955, 4, 10)
    assert patient.email == "pepe@ejemplo.com"
    assert patient.referring_doctor_id == doctor.id
    assert patient.clinic_id == clinic.id


def test_two_patients_with_one_email_is_a_form_error(client, admin):
    make_patient("Jessica", "Ramirez", email="pepe@ejemplo.com")
    db.session.commit()
    data = patient_form(client, email="PEPE@ejemplo.com")
    response = client.post("/admin/patient/new/", data=data)
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Already exists." in field_block(page, "email")
    assert not NO_SQL.search(page)
    # the form is shown again with what was typed, and only the first patient exists
    assert form_values(page)["last_name"] == "Villalobos"
    assert count(Patient) == 1


def test_patient_edited_without_touching_its_unique_fields(client, admin):
    """The record's own email and MRN are not "already taken" when it is saved again."""
    patient = make_patient("Jose", "Villalobos", mrn="1", email="pepe@ejemplo.com")
    db.session.commit()
    data = open_form(client, f"/admin/patient/edit/?id={patient.id}")
    data["first_name"] = "José"
    response = client.post(f"/admin/patient/edit/?id={patient.id}", data=data)
    assert response.status_code == 302, flashes(response.get_data(as_text=True))
    db.session.expire_all()
    stored = db.session.get(Patient, patient.id)
    assert (stored.first_name, stored.mrn, stored.email) == ("José", "1", "pepe@ejemplo.com")


@pytest.mark.parametrize("mode", ["create", "edit"])
def test_email_taken_between_validation_and_save_is_a_message_not_a_500(
    client, admin, monkeypatch, mode
):
    """Another user saves the same email while this form is being checked (a race)."""
    from flask_admin.contrib.sqla import validators as admin_validators

    make_patient("Jessica", "Ramirez", email="pepe@ejemplo.com")
    other = make_patient("Jose", "Villalobos", email="jose@ejemplo.com")
    db.session.commit()
    url = "/admin/patient/new/" if mode == "create" else f"/admin/patient/edit/?id={other.id}"
    data = patient_form(client) if mode == "create" else open_form(client, url)
    data["email"] = "pepe@ejemplo.com"
    # the form's own uniqueness check has already passed when the other save lands
    monkeypatch.setattr(admin_validators.Unique, "__call__", lambda self, form, field: None)
    response = client.post(url, data=data)
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "must be unique" in " ".join(flashes(page))
    assert not NO_SQL.search(page)
    db.session.expire_all()
    assert db.session.scalars(select(Patient.email).order_by(Patient.email)).all() == [
        "jose@ejemplo.com",
        "pepe@ejemplo.com",
    ]


def test_patient_birth_date_in_the_future_is_shown_next_to_the_field(client, admin):
    tomorrow = (date.today() + timedelta(days=1)).isoformat()
    response = client.post("/admin/patient/new/", data=patient_form(client, birth_date=tomorrow))
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert f"Birth date {tomorrow} is in the future." in field_block(page, "birth_date")
    assert count(Patient) == 0


def test_patient_edited_through_the_form(client, admin):
    patient = make_patient("Jessica", "Ramirez", email="jessica@ejemplo.com")
    db.session.commit()
    data = open_form(client, f"/admin/patient/edit/?id={patient.id}")
    assert data["email"] == "jessica@ejemplo.com"
    data["last_name"] = "Ramírez Soto"
    data["email"] = ""
    response = client.post(f"/admin/patient/edit/?id={patient.id}", data=data)
    assert response.status_code == 302, flashes(response.get_data(as_text=True))
    db.session.expire_all()
    stored = db.session.get(Patient, patient.id)
    assert stored.last_name == "Ramírez Soto"
    assert stored.email is None


# --- studies ------------------------------------------------------------------------------


def test_study_created_through_the_form_with_normalised_codes(client, admin):
    patient = make_patient("Diana Laura", "Del Toro", mrn="3")
    db.session.commit()
    data = open_form(client, "/admin/study/new/")
    data.update(
        patient=str(patient.id),
        study_date="2026-01-15",
        urgency="MID",
        study_type="MAMMOGRAM",
        body_part="  breasts ",
        description="HIGH DENSITY ON LEFT SIDE",
    )
    response = client.post("/admin/study/new/", data=data)
    assert response.status_code == 302, flashes(response.get_data(as_text=True))
    db.session.expire_all()
    study = db.session.scalars(select(Study)).one()
    assert study.patient_id == patient.id
    assert (str(study.urgency), str(study.study_type)) == ("MID", "MAMMOGRAM")
    assert study.body_part == "BREASTS"
    assert study.study_date == date(2026, 1, 15)


def test_study_with_an_unknown_urgency_is_refused(client, admin):
    patient = make_patient()
    db.session.commit()
    data = open_form(client, "/admin/study/new/")
    data.update(patient=str(patient.id), urgency="URGENT", study_type="CT", body_part="HEAD")
    response = client.post("/admin/study/new/", data=data)
    assert response.status_code == 200
    assert "Not a valid choice" in response.get_data(as_text=True)
    assert count(Study) == 0


# --- deletes ------------------------------------------------------------------------------


def delete_through_list(client, endpoint: str, record_id: int):  # noqa: ANN001, ANN201
    """Press the trash button of a row on the list page."""
    page = client.get(f"/admin/{endpoint}/").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    return client.post(
        f"/admin/{endpoint}/delete/",
        data={"id": str(record_id), "url": f"/admin/{endpoint}/", "csrf_token": token},
        follow_redirects=True,
    )


def test_deleting_a_clinic_with_doctors_is_refused_with_a_clear_message(client, admin, clinic):
    make_doctor(clinic=clinic)
    make_doctor(clinic=clinic)
    db.session.commit()
    response = delete_through_list(client, "clinic", clinic.id)
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert (
        "Clinic &#39;Clínica Roma Norte&#39; cannot be deleted: 2 doctors still belong to it. "
        "Move or delete them first." in page
    )
    assert "successfully deleted" not in page
    assert count(Clinic) == 1
    assert count(Doctor) == 2


def test_deleting_a_patient_with_studies_is_refused(client, admin):
    patient = make_patient()
    make_study(patient)
    db.session.commit()
    response = delete_through_list(client, "patient", patient.id)
    page = response.get_data(as_text=True)
    assert "This patient cannot be deleted: 1 study still belong to them." in page or (
        "This patient cannot be deleted: 1 study" in page
    )
    assert count(Patient) == 1
    assert count(Study) == 1


def test_deleting_a_doctor_removes_the_doctor_and_the_phones(client, admin, clinic):
    doctor = make_doctor(clinic=clinic, phones=["55 1234 5678", "55 8765 4321"])
    db.session.commit()
    response = delete_through_list(client, "doctor", doctor.id)
    assert f"Deleted Dr. {doctor.full_name}." in " ".join(flashes(response.get_data(as_text=True)))
    assert count(Doctor) == 0
    assert count(DoctorPhone) == 0
    assert count(Clinic) == 1


def test_deleting_an_empty_clinic_works(client, admin, clinic):
    response = delete_through_list(client, "clinic", clinic.id)
    assert "Deleted Clínica Roma Norte." in " ".join(flashes(response.get_data(as_text=True)))
    assert count(Clinic) == 0


def test_clinic_created_and_edited_through_the_form(client, admin):
    data = open_form(client, "/admin/clinic/new/")
    data.update(name=" Hospital  del Valle ", city="CDMX", phone="55 5424 7200", address="")
    response = client.post("/admin/clinic/new/", data=data)
    assert response.status_code == 302, flashes(response.get_data(as_text=True))
    db.session.expire_all()
    clinic = db.session.scalars(select(Clinic)).one()
    assert (clinic.name, clinic.phone, clinic.address) == (
        "Hospital del Valle",
        "+525554247200",
        None,
    )
    data = open_form(client, f"/admin/clinic/edit/?id={clinic.id}")
    data["phone"] = "call us"
    response = client.post(f"/admin/clinic/edit/?id={clinic.id}", data=data)
    assert response.status_code == 200
    assert "&#39;call us&#39; is not a phone number: it contains letters." in (
        response.get_data(as_text=True)
    )
    db.session.expire_all()
    assert db.session.get(Clinic, clinic.id).phone == "+525554247200"


# --- details pages ------------------------------------------------------------------------


def test_clinic_details_list_its_doctors(client, admin, clinic):
    make_doctor("Luis", "Hernández", clinic=clinic)
    ana = make_doctor("Ana", "Martínez", clinic=clinic)
    make_doctor("Otro", "Lugar")  # another clinic
    db.session.commit()
    page = client.get(f"/admin/clinic/details/?id={clinic.id}").get_data(as_text=True)
    doctors = detail(page, "Doctors")
    assert text_of(doctors) == "Dr. Luis Hernández Dr. Ana Martínez"
    assert f'href="/admin/doctor/details/?id={ana.id}"' in doctors


def test_doctor_details_show_phones_and_clinic(client, admin, clinic):
    doctor = make_doctor("Ana", "Martínez", clinic=clinic)
    doctor.phones.append(DoctorPhone(number="55 5208 1001", kind="OFFICE"))
    doctor.phones.append(DoctorPhone(number="55 1234 5678", kind="MOBILE", is_primary=True))
    db.session.commit()
    page = client.get(f"/admin/doctor/details/?id={doctor.id}").get_data(as_text=True)
    assert text_of(detail(page, "Phones")) == "+525512345678 (Mobile) ★ +525552081001 (Office)"
    clinic_cell = detail(page, "Clinic")
    assert text_of(clinic_cell) == "Clínica Roma Norte"
    assert f'href="/admin/clinic/details/?id={clinic.id}"' in clinic_cell


def test_patient_chart_shows_studies_newest_first_and_the_referring_doctor(client, admin):
    doctor = make_doctor("Luis", "Hernández")
    patient = make_patient("Jose", "Villalobos", mrn="1", referring_doctor=doctor)
    make_study(patient, body_part="STOMACH", study_date=date(2025, 1, 10), urgency="HIGH")
    make_study(patient, body_part="NECK", study_date=date(2026, 2, 1), urgency="LOW")
    make_study(patient, body_part="CHEST", study_date=date(2025, 6, 30), urgency="MID")
    make_study(make_patient(), body_part="KNEE")  # someone else's
    db.session.commit()
    page = client.get(f"/admin/patient/details/?id={patient.id}").get_data(as_text=True)
    studies = page[page.index('id="chart-studies"') : page.index('id="chart-care-team"')]
    dates = re.findall(r'<td class="text-nowrap">([^<]+)</td>', studies)
    assert dates == ["Feb 1, 2026", "Jun 30, 2025", "Jan 10, 2025"]
    assert "KNEE" not in studies
    assert "urgency-high" in studies
    clinic_card = page[page.index('id="chart-clinic"') : page.index('id="chart-studies"')]
    assert "Dr. Luis Hernández" in text_of(clinic_card)
    assert f'href="/admin/doctor/details/?id={doctor.id}"' in clinic_card


def test_patient_without_studies_says_so(client, admin):
    patient = make_patient()
    db.session.commit()
    page = client.get(f"/admin/patient/details/?id={patient.id}").get_data(as_text=True)
    studies = page[page.index('id="chart-studies"') : page.index('id="chart-care-team"')]
    assert "No studies yet." in text_of(studies)


# --- lists: sort, search, filters, page size ----------------------------------------------


def test_doctor_list_is_sorted_by_last_then_first_name(client, admin, clinic):
    for first, last in [("Zoe", "Alba"), ("Ana", "Núñez"), ("Ana", "Alba"), ("Luis", "Cruz")]:
        make_doctor(first, last, clinic=clinic)
    db.session.commit()
    page = client.get("/admin/doctor/").get_data(as_text=True)
    names = list(zip(column(page, "last_name"), column(page, "first_name"), strict=True))
    assert names == [("Alba", "Ana"), ("Alba", "Zoe"), ("Cruz", "Luis"), ("Núñez", "Ana")]


def test_study_list_is_newest_first_and_pages_do_not_overlap(client, admin):
    patient = make_patient()
    day = date(2026, 1, 1)
    for i in range(15):
        make_study(patient, study_date=day - timedelta(days=i % 4), description=f"S{i:02d}")
    db.session.commit()
    first = client.get("/admin/study/?page_size=10").get_data(as_text=True)
    second = client.get("/admin/study/?page_size=10&page=1").get_data(as_text=True)
    # dates are shown in the user's locale (English here: "Jan 1, 2026")
    shown = column(first, "study_date") + column(second, "study_date")
    dates = [datetime.strptime(d, "%b %d, %Y").date().isoformat() for d in shown]
    assert dates == sorted(dates, reverse=True)
    descriptions = column(first, "description") + column(second, "description")
    assert len(column(first, "description")) == 10
    assert sorted(descriptions) == [f"S{i:02d}" for i in range(15)]
    # same date: the newer record first, so the order never depends on the database
    same_day = [d for d, when in zip(descriptions, dates, strict=True) if when == "2026-01-01"]
    assert same_day == ["S12", "S08", "S04", "S00"]


def test_patient_search_by_name_email_and_mrn(client, admin):
    make_patient("Jose", "Villalobos", mrn="1", email="pepe@ejemplo.com")
    make_patient("Jessica", "Ramirez", mrn="2", email="jessica@ejemplo.com")
    make_patient("Diana Laura", "Del Toro", mrn="3", email="diana@correo.example.com")
    db.session.commit()

    def found(term: str) -> list[str]:
        page = client.get("/admin/patient/", query_string={"search": term})
        return column(page.get_data(as_text=True), "last_name")

    # names anywhere in the value, whatever the case
    assert found("vill") == ["Villalobos"]
    assert found("LOBOS") == ["Villalobos"]
    assert found("Jessica") == ["Ramirez"]
    assert found("Toro Diana") == ["Del Toro"]  # every word, each in some column
    # the MRN and the email from their start (a b-tree index serves it)
    assert found("3") == ["Del Toro"]
    assert found("PEPE@") == ["Villalobos"]
    assert found("diana@correo") == ["Del Toro"]
    assert found("correo.example") == []
    assert found("ejemplo.com") == []
    # the whole value with "=", and LIKE's wildcards are only characters
    assert found("=jessica@ejemplo.com") == ["Ramirez"]
    assert found("=jessica@") == []
    assert found("%") == [] and found("_") == []
    assert found("nobody") == []


def test_patient_search_by_mrn_prefix_and_the_study_form_look_up(client, admin):
    make_patient("Jose", "Villalobos", mrn="MRN-0042", email="pepe@ejemplo.com")
    make_patient("Ana", "Molina", mrn="MRN-1042", email="ana@ejemplo.com")
    db.session.commit()
    page = client.get("/admin/patient/", query_string={"search": "mrn-00"})
    assert column(page.get_data(as_text=True), "last_name") == ["Villalobos"]
    page = client.get("/admin/patient/", query_string={"search": "042"})
    assert column(page.get_data(as_text=True), "last_name") == []
    # The study form's patient box searches the same way, every word in some column.

    def looked_up(term: str) -> list[str]:
        response = client.get(
            "/admin/study/ajax/lookup/", query_string={"name": "patient", "query": term}
        )
        assert response.status_code == 200
        return [text for _id, text in response.get_json()]

    assert looked_up("jose villa") == ["Jose Villalobos (MRN MRN-0042)"]
    assert looked_up("MRN-1") == ["Ana Molina (MRN MRN-1042)"]
    assert looked_up("ana@") == ["Ana Molina (MRN MRN-1042)"]
    assert looked_up("1042") == []
    assert looked_up("lina") == ["Ana Molina (MRN MRN-1042)"]


def test_study_search_by_its_own_columns_and_by_its_patient(client, admin):
    jose = make_patient("Jose", "Villalobos", mrn="MRN-0042")
    ana = make_patient("Ana", "Molina", mrn="MRN-1042")
    make_study(jose, body_part="STOMACH", description="NO FINDINGS", accession_number="ACC-100")
    make_study(jose, body_part="NECK", description="Small nodule", accession_number="ACC-200")
    make_study(ana, body_part="KNEE", description="NORMAL", accession_number="XYZ-ACC-300")
    db.session.commit()

    def found(term: str, **args: str) -> list[str]:
        page = client.get("/admin/study/", query_string={"search": term, **args})
        return sorted(column(page.get_data(as_text=True), "body_part"))

    assert found("stom") == ["STOMACH"]  # body part anywhere
    assert found("NODULE") == ["NECK"]  # description anywhere, whatever the case
    assert found("acc-") == ["NECK", "STOMACH"]  # accession number from its start only
    assert found("ACC-300") == []
    assert found("lobos") == ["NECK", "STOMACH"]  # the patient's last name
    assert found("mrn-1") == ["KNEE"]  # the patient's MRN from its start
    assert found("villalobos neck") == ["NECK"]  # every word, each on either side
    assert found("molina stomach") == []
    # sorted by patient (the list joins the patient table): the same studies
    assert found("lobos", sort="5") == ["NECK", "STOMACH"]
    # the export holds the same rows
    rows = client.get("/admin/study/export/csv/?search=lobos").get_data(as_text=True)
    assert rows.count("\r\n") == 1 + 2 and "KNEE" not in rows


def test_doctor_search_by_name_email_and_phone_number(client, admin, clinic):
    make_doctor("Ana", "Martínez", clinic=clinic, phones=["55 1234 5678", "55 1234 0000"])
    make_doctor(
        "Luis",
        "Hernández",
        clinic=clinic,
        email="luis@hospital.example.com",
        phones=["33 1122 3344"],
    )
    db.session.commit()

    def found(term: str) -> list[str]:
        page = client.get("/admin/doctor/", query_string={"search": term})
        return column(page.get_data(as_text=True), "last_name")

    assert found("martí") == ["Martínez"]
    assert found("hospital.example") == ["Hernández"]
    assert found("3311223344") == ["Hernández"]
    assert found("+5255") == ["Martínez"]  # two matching phones, still one row


@pytest.mark.parametrize(
    "written", ["(55) 1234-0003", "55 1234 0003", "+525512340003", "1234-0003"]
)
def test_doctor_search_finds_a_phone_however_it_is_written(client, admin, clinic, written):
    for i in range(5):
        make_doctor(f"First{i}", "Same", clinic=clinic, phones=[f"55 1234 {i:04d}"])
    db.session.commit()
    page = client.get("/admin/doctor/", query_string={"search": written}).get_data(as_text=True)
    assert column(page, "first_name") == ["First3"]


def test_doctor_search_by_phone_keeps_counts_and_pages_right(client, admin, clinic):
    """Doctors with several matching phones appear once and pages stay full."""
    for i in range(12):
        make_doctor(
            f"First{i:02d}", "Same", clinic=clinic, phones=[f"55 1234 {i:04d}", f"55 8765 {i:04d}"]
        )
    db.session.commit()
    first = client.get("/admin/doctor/?page_size=10&search=%2B5255").get_data(as_text=True)
    second = client.get("/admin/doctor/?page_size=10&search=%2B5255&page=1").get_data(as_text=True)
    assert column(first, "first_name") == [f"First{i:02d}" for i in range(10)]
    assert column(second, "first_name") == ["First10", "First11"]
    # two pages in the pager, not the four that 24 matching phones would make
    assert re.search(r"[?&;]page=1\b", first)
    assert not re.search(r"[?&;]page=2\b", first)


def test_study_filter_by_urgency(client, admin):
    patient = make_patient()
    make_study(patient, urgency="HIGH", description="first high")
    make_study(patient, urgency="LOW", description="a low one")
    make_study(patient, urgency="HIGH", description="second high")
    db.session.commit()
    page = client.get("/admin/study/").get_data(as_text=True)
    arg = filter_arg(page, "Urgency")
    filtered = client.get(f"/admin/study/?flt0_{arg}=HIGH").get_data(as_text=True)
    assert sorted(column(filtered, "description")) == ["first high", "second high"]
    assert column(filtered, "urgency") == ["High", "High"]


def test_doctor_filter_by_specialty(client, admin, clinic):
    make_doctor("Ana", "Martínez", clinic=clinic, specialty="RADIOLOGY")
    make_doctor("Sofía", "Ramírez", clinic=clinic, specialty="CARDIOLOGY")
    make_doctor("Jorge", "Treviño", clinic=clinic, specialties=["ONCOLOGY", "RADIOLOGY"])
    db.session.commit()
    page = client.get("/admin/doctor/").get_data(as_text=True)
    arg = filter_arg(page, "Specialty")
    filtered = client.get(f"/admin/doctor/?flt0_{arg}=RADIOLOGY").get_data(as_text=True)
    assert column(filtered, "last_name") == ["Martínez", "Treviño"]
    assert column(filtered, "specialties") == ["Radiology", "Radiology, Oncology"]
    # a doctor with two specialties is found by either, once
    filtered = client.get(f"/admin/doctor/?flt0_{arg}=ONCOLOGY").get_data(as_text=True)
    assert column(filtered, "last_name") == ["Treviño"]


def test_page_size_choice(client, admin, clinic):
    for i in range(12):
        make_doctor(f"First{i:02d}", "Same", clinic=clinic)
    db.session.commit()
    page = client.get("/admin/doctor/").get_data(as_text=True)
    for size in (10, 25, 50, 100):
        assert f'href="/admin/doctor/?page_size={size}"' in page
    assert len(column(page, "last_name")) == 12
    small = client.get("/admin/doctor/?page_size=10").get_data(as_text=True)
    assert column(small, "first_name") == [f"First{i:02d}" for i in range(10)]
    rest = client.get("/admin/doctor/?page_size=10&page=1").get_data(as_text=True)
    assert column(rest, "first_name") == ["First10", "First11"]


# --- relation look-ups --------------------------------------------------------------------


def test_ajax_lookup_finds_patients_as_you_type(client, admin):
    pepe = make_patient("Jose", "Villalobos", mrn="1")
    make_patient("Jessica", "Ramirez", mrn="2")
    db.session.commit()
    response = client.get("/admin/study/ajax/lookup/?name=patient&query=Vill")
    assert response.status_code == 200
    assert response.is_json
    assert response.get_json() == [[pepe.id, "Jose Villalobos (MRN 1)"]]
    nobody = client.get("/admin/study/ajax/lookup/?name=patient&query=zzz")
    assert nobody.get_json() == []


def test_ajax_lookup_for_a_doctor_clinic(client, admin, clinic):
    make_clinic(name="Hospital del Valle", city="Ciudad de México")
    db.session.commit()
    response = client.get("/admin/doctor/ajax/lookup/?name=clinic&query=roma")
    assert response.get_json() == [[clinic.id, "Clínica Roma Norte"]]
    both = client.get("/admin/doctor/ajax/lookup/?name=clinic&query=Ciudad")
    assert [name for _id, name in both.get_json()] == ["Clínica Roma Norte", "Hospital del Valle"]
