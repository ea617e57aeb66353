"""Model rules: normalised values, bounded dates, unique keys, guarded deletes, readable names."""

from __future__ import annotations

import re
from datetime import date, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from backoffice.extensions import db
from backoffice.models import (
    Clinic,
    DeletionRefused,
    Doctor,
    DoctorPhone,
    Patient,
    PhoneKind,
    Role,
    RoleName,
    Specialty,
    Study,
    StudyType,
    Urgency,
    User,
)
from backoffice.validation import RuleError
from tests.factories import make_clinic, make_doctor, make_patient, make_study


def count(model: type) -> int:
    return db.session.scalar(select(func.count()).select_from(model))


def stored(model: type, column, id_: int):  # noqa: ANN001, ANN201
    """Read one column straight from the database, bypassing the identity map."""
    db.session.expire_all()
    return db.session.execute(select(column).where(model.id == id_)).scalar_one()


# --- phones -------------------------------------------------------------------------------


@pytest.mark.parametrize("written", ["+52 55 1234 5678", "55 1234 5678", "(55) 1234-5678"])
def test_phone_numbers_are_stored_in_e164(written):
    doctor = make_doctor(phones=[written])
    db.session.commit()
    assert stored(DoctorPhone, DoctorPhone.number, doctor.phones[0].id) == "+525512345678"


def test_phone_region_for_numbers_without_country_code_comes_from_config(app):
    app.config["PHONE_DEFAULT_REGION"] = "US"
    try:
        phone = DoctorPhone(number="(202) 555-0123")
    finally:
        app.config["PHONE_DEFAULT_REGION"] = "MX"
    assert phone.number == "+12025550123"


@pytest.mark.parametrize(
    ("written", "reason"),
    [
        ("12ab", "it contains letters"),
        ("123", "it has the wrong number of digits"),
        ("++--", "it could not be read as one"),
        ("+1 999 555 0123", "is not a valid phone number for its country"),
    ],
)
def test_invalid_phone_is_rejected_with_the_reason(written, reason):
    with pytest.raises(RuleError) as info:
        DoctorPhone(number=written)
    assert str(info.value).startswith(f"'{written}' is not")
    assert reason in str(info.value)


def test_letters_in_a_phone_are_rejected_before_anything_is_saved():
    doctor = make_doctor(phones=["55 1234 5678"])
    with pytest.raises(RuleError, match=r"'12ab' is not a phone number: it contains letters\."):
        doctor.phones.append(DoctorPhone(number="12ab"))
    db.session.commit()
    assert db.session.scalars(select(DoctorPhone.number)).all() == ["+525512345678"]


def test_same_number_twice_on_one_doctor_is_refused():
    doctor = make_doctor(phones=["+52 55 1234 5678"])
    db.session.commit()
    doctor_id = doctor.id
    # written differently, the same number once normalised
    doctor.phones.append(DoctorPhone(number="(55) 1234-5678", kind="OFFICE"))
    with pytest.raises(IntegrityError):
        db.session.flush()
    db.session.rollback()
    numbers = db.session.scalars(
        select(DoctorPhone.number).where(DoctorPhone.doctor_id == doctor_id)
    ).all()
    assert numbers == ["+525512345678"]


def test_same_number_on_two_doctors_is_allowed():
    make_doctor(phones=["55 1234 5678"])
    make_doctor(phones=["55 1234 5678"])
    db.session.commit()
    numbers = db.session.scalars(select(DoctorPhone.number)).all()
    assert numbers == ["+525512345678", "+525512345678"]


def test_phones_are_deleted_with_their_doctor():
    keep = make_doctor(phones=["55 1111 2222"])
    gone = make_doctor(phones=["55 1234 5678", "55 8765 4321", "33 1122 3344"])
    db.session.commit()
    gone_id = gone.id
    db.session.delete(gone)
    db.session.commit()
    assert db.session.get(Doctor, gone_id) is None
    assert db.session.scalars(select(DoctorPhone.doctor_id)).all() == [keep.id]


def test_phones_not_loaded_are_deleted_by_the_database_cascade():
    doctor = make_doctor(phones=["55 1234 5678", "55 8765 4321"])
    db.session.commit()
    doctor_id = doctor.id
    db.session.expire_all()  # phones not loaded: the ON DELETE CASCADE does the work
    db.session.delete(db.session.get(Doctor, doctor_id))
    db.session.commit()
    assert count(DoctorPhone) == 0
    assert count(Doctor) == 0


def test_phone_kind_defaults_to_mobile_and_primary_to_false():
    doctor = make_doctor()
    doctor.phones.append(DoctorPhone(number="55 1234 5678"))
    db.session.commit()
    db.session.expire_all()
    phone = db.session.scalars(select(DoctorPhone)).one()
    assert phone.kind is PhoneKind.MOBILE
    assert phone.is_primary is False


def test_primary_phone_is_listed_first():
    doctor = make_doctor()
    doctor.phones.append(DoctorPhone(number="55 1111 1111", kind="OFFICE"))
    doctor.phones.append(DoctorPhone(number="55 2222 2222", kind="MOBILE", is_primary=True))
    db.session.commit()
    doctor_id = doctor.id
    db.session.expire_all()
    numbers = [p.number for p in db.session.get(Doctor, doctor_id).phones]
    assert numbers == ["+525522222222", "+525511111111"]


def test_clinic_phone_is_normalised_too():
    clinic = make_clinic(phone="(55) 5208-1000")
    db.session.commit()
    assert stored(Clinic, Clinic.phone, clinic.id) == "+525552081000"
    with pytest.raises(RuleError, match="contains letters"):
        clinic.phone = "call me"


# --- birth dates --------------------------------------------------------------------------


def test_birth_date_today_and_in_1900_are_accepted():
    today = make_patient(birth_date=date.today())
    old = make_patient(birth_date=date(1900, 1, 1))
    db.session.commit()
    assert stored(Patient, Patient.birth_date, today.id) == date.today()
    assert stored(Patient, Patient.birth_date, old.id) == date(1900, 1, 1)


def test_birth_date_in_the_future_is_refused():
    tomorrow = date.today() + timedelta(days=1)
    with pytest.raises(RuleError) as info:
        Patient(first_name="A", last_name="B", birth_date=tomorrow)
    assert str(info.value) == f"Birth date {tomorrow.isoformat()} is in the future."


def test_birth_date_before_1900_is_refused():
    with pytest.raises(RuleError) as info:
        Patient(first_name="A", last_name="B", birth_date=date(1899, 12, 31))
    assert str(info.value) == "Birth date 1899-12-31 is before 1900."


def test_changing_a_birth_date_to_the_future_is_refused_and_the_old_one_kept():
    patient = make_patient(birth_date=date(1980, 5, 5))
    db.session.commit()
    with pytest.raises(RuleError):
        patient.birth_date = date.today() + timedelta(days=30)
    db.session.commit()
    assert stored(Patient, Patient.birth_date, patient.id) == date(1980, 5, 5)


def test_age_counts_whole_years():
    patient = Patient(first_name="A", last_name="B", birth_date=date(1955, 4, 10))
    assert patient.age(on=date(2026, 4, 9)) == 70
    assert patient.age(on=date(2026, 4, 10)) == 71


# --- emails -------------------------------------------------------------------------------


def test_emails_are_lower_cased_and_trimmed():
    patient = make_patient(email="  Pepe.Villalobos@Ejemplo.COM ")
    doctor = make_doctor(email="Ana.Martinez@Clinica.Example.com")
    db.session.commit()
    assert stored(Patient, Patient.email, patient.id) == "pepe.villalobos@ejemplo.com"
    assert stored(Doctor, Doctor.email, doctor.id) == "ana.martinez@clinica.example.com"


@pytest.mark.parametrize("bad", ["not-an-email", "pepe@", "@ejemplo.com", "a b@ejemplo.com"])
def test_invalid_emails_are_refused_with_a_message(bad):
    with pytest.raises(RuleError) as info:
        Patient(first_name="A", last_name="B", birth_date=date(1970, 1, 1), email=bad)
    assert str(info.value) == f"'{bad.strip()}' is not a valid email address."
    with pytest.raises(RuleError):
        Doctor(first_name="A", last_name="B", email=bad)


def test_patient_email_is_unique_whatever_the_case():
    make_patient(email="pepe@ejemplo.com")
    db.session.commit()
    make_patient_args = {"first_name": "Other", "last_name": "Person", "email": "PEPE@ejemplo.com"}
    db.session.add(Patient(birth_date=date(1980, 1, 1), **make_patient_args))
    with pytest.raises(IntegrityError):
        db.session.flush()
    db.session.rollback()
    assert db.session.scalars(select(Patient.email)).all() == ["pepe@ejemplo.com"]


def test_patients_without_email_do_not_clash():
    first = make_patient(email=None)
    second = make_patient(email="   ")  # blank becomes NULL, not an empty string
    db.session.commit()
    assert stored(Patient, Patient.email, first.id) is None
    assert stored(Patient, Patient.email, second.id) is None
    assert count(Patient) == 2


def test_doctor_email_is_unique():
    make_doctor(email="ana@clinica.example.com")
    db.session.commit()
    with pytest.raises(IntegrityError):
        make_doctor(email="ANA@clinica.example.com")
    db.session.rollback()
    assert count(Doctor) == 1


def test_doctor_email_is_required():
    db.session.add(Doctor(first_name="A", last_name="B", email="", clinic=make_clinic()))
    with pytest.raises(IntegrityError):
        db.session.flush()
    db.session.rollback()
    assert count(Doctor) == 0


# --- other unique keys --------------------------------------------------------------------


def test_mrn_is_unique_and_given_from_the_sequence_when_left_empty():
    make_patient(mrn="1")
    second = make_patient(mrn=None)
    third = make_patient(mrn="")
    db.session.commit()
    # the next numbers, in the order added (PostgreSQL's sequence does not roll back with the
    # suite's per-test transactions: its numbers go on from test to test)
    numbers = [int(re.fullmatch(r"MRN-(\d{6})", p.mrn).group(1)) for p in (second, third)]
    assert numbers[1] == numbers[0] + 1
    with pytest.raises(IntegrityError):
        make_patient(mrn=" 1 ")
    db.session.rollback()
    assert sorted(db.session.scalars(select(Patient.mrn)).all()) == ["1", second.mrn, third.mrn]


def test_a_deleted_patients_mrn_is_never_given_again():
    gone = make_patient()
    db.session.commit()
    number = gone.mrn
    db.session.delete(gone)
    db.session.commit()
    assert make_patient().mrn > number
    # and a number someone typed in the sequence's format is skipped, not taken twice
    typed = make_patient(mrn="MRN-000003")
    db.session.commit()
    assert make_patient().mrn not in (typed.mrn, number)


def test_licence_number_is_unique_when_given():
    make_doctor(licence_number="CED-1")
    make_doctor(licence_number=None)
    make_doctor(licence_number="  ")
    db.session.commit()
    with pytest.raises(IntegrityError):
        make_doctor(licence_number="CED-1")
    db.session.rollback()
    assert count(Doctor) == 3


def test_clinic_name_is_required_unique_and_tidied():
    clinic = make_clinic(name="  Clínica   Roma  Norte ")
    db.session.commit()
    assert stored(Clinic, Clinic.name, clinic.id) == "Clínica Roma Norte"
    with pytest.raises(IntegrityError):
        make_clinic(name="Clínica Roma Norte")
    db.session.rollback()
    db.session.add(Clinic(name="   "))
    with pytest.raises(IntegrityError):
        db.session.flush()
    db.session.rollback()
    assert db.session.scalars(select(Clinic.name)).all() == ["Clínica Roma Norte"]


def test_doctor_needs_a_clinic():
    db.session.add(Doctor(first_name="A", last_name="B", email="a@b.example.com"))
    with pytest.raises(IntegrityError):
        db.session.flush()
    db.session.rollback()
    assert count(Doctor) == 0


def test_study_needs_a_patient():
    db.session.add(Study(urgency="HIGH", study_type="CT", body_part="HEAD"))
    with pytest.raises(IntegrityError):
        db.session.flush()
    db.session.rollback()
    assert count(Study) == 0


# --- body part and codes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "code"),
    [("stomach", "STOMACH"), ("  Neck ", "NECK"), ("CHEST", "CHEST"), ("left  knee", "LEFT_KNEE")],
)
def test_body_part_is_upper_case_and_trimmed(written, code):
    study = make_study(body_part=written)
    db.session.commit()
    assert stored(Study, Study.body_part, study.id) == code


def test_body_part_with_punctuation_is_refused():
    with pytest.raises(RuleError) as info:
        Study(body_part="chest!")
    assert "'chest!' is not a body part code" in str(info.value)


def test_enum_codes_are_case_insensitive():
    study = make_study(urgency="high", study_type="Mammogram", body_part="breasts")
    doctor = make_doctor(specialties=["radiology", "Oncology"])
    doctor.phones.append(DoctorPhone(number="55 1234 5678", kind="office"))
    db.session.commit()
    assert stored(Study, Study.urgency, study.id) is Urgency.HIGH
    assert stored(Study, Study.study_type, study.id) is StudyType.MAMMOGRAM
    db.session.expire_all()
    assert db.session.get(Doctor, doctor.id).specialties == [
        Specialty.RADIOLOGY,
        Specialty.ONCOLOGY,
    ]
    assert db.session.scalars(select(DoctorPhone.kind)).one() is PhoneKind.OFFICE
    # codes are stored as their upper-case names
    raw = db.session.execute(select(Study.__table__.c.urgency, Study.__table__.c.study_type)).one()
    assert tuple(str(v) for v in raw) == ("HIGH", "MAMMOGRAM")


def test_unknown_enum_code_is_refused_with_the_allowed_codes():
    with pytest.raises(RuleError) as info:
        Study(urgency="urgent")
    assert str(info.value) == "'urgent' is not one of the allowed codes: HIGH, MID, LOW."
    with pytest.raises(RuleError, match="RADIOLOGY, GENERAL_PRACTICE"):
        Doctor(specialties=["surgeon"])
    with pytest.raises(RuleError, match="MOBILE, OFFICE, HOME, FAX"):
        DoctorPhone(kind="pager")


def test_study_date_defaults_to_today():
    study = make_study()
    db.session.commit()
    assert stored(Study, Study.study_date, study.id) == date.today()


def test_doctor_specialty_defaults_to_general_practice_and_active():
    doctor = make_doctor()
    db.session.commit()
    db.session.expire_all()
    assert db.session.get(Doctor, doctor.id).specialties == [Specialty.GENERAL_PRACTICE]
    assert stored(Doctor, Doctor.active, doctor.id) is True


# --- timestamps and versions --------------------------------------------------------------


def test_timestamps_are_set_and_updated_and_the_version_bumped():
    clinic = make_clinic(name="Timed")
    db.session.commit()
    created, updated = clinic.created_at, clinic.updated_at
    assert created.tzinfo is not None
    assert clinic.version == 1
    clinic.city = "Puebla"
    db.session.commit()
    db.session.expire_all()
    clinic = db.session.get(Clinic, clinic.id)
    assert clinic.created_at == created
    assert clinic.updated_at >= updated
    assert clinic.version == 2


# --- guarded deletes ----------------------------------------------------------------------


def test_clinic_with_doctors_cannot_be_deleted():
    clinic = make_clinic(name="Hospital del Valle")
    make_doctor(clinic=clinic, phones=["55 1234 5678"])
    make_doctor(clinic=clinic)
    db.session.commit()
    clinic_id = clinic.id
    db.session.delete(clinic)
    with pytest.raises(DeletionRefused) as info:
        db.session.flush()
    assert info.value.message == (
        "Clinic 'Hospital del Valle' cannot be deleted: 2 doctors still belong to it. "
        "Move or delete them first."
    )
    db.session.rollback()
    assert db.session.get(Clinic, clinic_id) is not None
    assert count(Doctor) == 2
    assert count(DoctorPhone) == 1


def test_clinic_with_patients_cannot_be_deleted():
    clinic = make_clinic(name="Roma")
    make_doctor(clinic=clinic)
    make_patient(clinic=clinic)
    db.session.commit()
    db.session.delete(clinic)
    with pytest.raises(DeletionRefused, match="1 doctor and 1 patient still belong to it"):
        db.session.commit()
    db.session.rollback()
    assert count(Clinic) == 1
    assert count(Patient) == 1


def test_patient_with_studies_cannot_be_deleted():
    patient = make_patient()
    make_study(patient)
    make_study(patient, body_part="NECK")
    db.session.commit()
    patient_id = patient.id
    db.session.delete(patient)
    with pytest.raises(DeletionRefused) as info:
        db.session.commit()
    assert info.value.message == (
        "This patient cannot be deleted: 2 studies still belong to them. Delete the studies first."
    )
    db.session.rollback()
    assert db.session.get(Patient, patient_id) is not None
    assert count(Study) == 2


def test_doctor_who_referred_patients_or_ordered_studies_cannot_be_deleted():
    doctor = make_doctor("Luis", "Hernández")
    patient = make_patient(referring_doctor=doctor)
    make_study(patient, ordering_doctor=doctor)
    db.session.commit()
    db.session.delete(doctor)
    with pytest.raises(DeletionRefused) as info:
        db.session.flush()
    assert "Doctor Luis Hernández cannot be deleted" in info.value.message
    assert "1 referred patient and 1 ordered study" in info.value.message
    db.session.rollback()
    assert count(Doctor) == 1


def test_records_without_dependants_can_be_deleted():
    clinic = make_clinic()
    patient = make_patient()
    study = make_study(patient)
    db.session.commit()
    db.session.delete(study)
    db.session.commit()
    db.session.delete(patient)
    db.session.delete(clinic)
    db.session.commit()
    assert (count(Clinic), count(Patient), count(Study)) == (0, 0, 0)


def test_a_refused_delete_leaves_other_pending_changes_unsaved():
    clinic = make_clinic(name="Blocked")
    make_doctor(clinic=clinic)
    db.session.commit()
    db.session.add(Clinic(name="Added in the same flush"))
    db.session.delete(clinic)
    with pytest.raises(DeletionRefused):
        db.session.commit()
    db.session.rollback()
    assert db.session.scalars(select(Clinic.name)).all() == ["Blocked"]


# --- readable names -----------------------------------------------------------------------


def test_every_model_reads_well_as_text():
    clinic = make_clinic(name="Clínica Roma Norte")
    doctor = make_doctor("María José", "Núñez", clinic=clinic)
    phone = DoctorPhone(number="55 1234 5678", kind="OFFICE", is_primary=True)
    doctor.phones.append(phone)
    patient = make_patient("Jose", "Villalobos", mrn="1")
    numbered = make_patient("Diana Laura", "Del Toro")
    study = make_study(
        patient, urgency="HIGH", study_type="XRAY", body_part="stomach", study_date=date(2026, 3, 1)
    )
    role = db.session.scalars(select(Role).where(Role.name == RoleName.OPERATOR)).one()
    user = User(email="Op@Example.com", display_name="Operator One")
    assert str(clinic) == "Clínica Roma Norte"
    assert str(doctor) == "Dr. María José Núñez"
    assert str(phone) == "+525512345678 (Office)"
    assert str(patient) == "Jose Villalobos (MRN 1)"
    assert str(numbered) == f"Diana Laura Del Toro (MRN {numbered.mrn})"
    assert str(study) == "X-ray STOMACH 2026-03-01"  # the type's label, not its code
    assert str(role) == "Operator"
    assert str(user) == "Operator One <op@example.com>"
    assert str(Urgency.MID) == "MID"
    assert Urgency.MID.label == "Medium"
    assert Specialty.GENERAL_PRACTICE.label == "General practice"
