"""Small builders for test records: each one flushes and returns a valid row with unique keys."""

from __future__ import annotations

import itertools
from datetime import date
from typing import Any

from backoffice.extensions import db
from backoffice.models import Clinic, Doctor, DoctorPhone, Patient, Study

_seq = itertools.count(1)


def _next() -> int:
    return next(_seq)


def make_clinic(name: str | None = None, **fields: Any) -> Clinic:
    clinic = Clinic(name=name or f"Test Clinic {_next()}", **fields)
    db.session.add(clinic)
    db.session.flush()
    return clinic


def make_doctor(
    first_name: str = "Ana",
    last_name: str | None = None,
    *,
    clinic: Clinic | None = None,
    phones: list[str] | tuple[str, ...] = (),
    **fields: Any,
) -> Doctor:
    n = _next()
    fields.setdefault("email", f"doctor{n}@test.example.com")
    specialties = fields.pop("specialties", None) or [fields.pop("specialty", "GENERAL_PRACTICE")]
    fields.pop("specialty", None)
    doctor = Doctor(
        first_name=first_name,
        last_name=last_name or f"Doctor{n}",
        clinic=clinic or make_clinic(),
        **fields,
    )
    doctor.specialties = specialties
    for i, number in enumerate(phones):
        doctor.phones.append(DoctorPhone(number=number, kind="MOBILE", is_primary=(i == 0)))
    db.session.add(doctor)
    db.session.flush()
    return doctor


def make_patient(
    first_name: str = "Jose",
    last_name: str | None = None,
    *,
    birth_date: date = date(1970, 1, 1),
    **fields: Any,
) -> Patient:
    patient = Patient(
        first_name=first_name,
        last_name=last_name or f"Patient{_next()}",
        birth_date=birth_date,
        **fields,
    )
    db.session.add(patient)
    db.session.flush()
    return patient


def make_study(patient: Patient | None = None, **fields: Any) -> Study:
    fields.setdefault("urgency", "LOW")
    fields.setdefault("study_type", "XRAY")
    fields.setdefault("body_part", "CHEST")
    study = Study(patient=patient or make_patient(), **fields)
    db.session.add(study)
    db.session.flush()
    return study
