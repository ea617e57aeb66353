"""Doctors: several specialties, qualification, practising since, languages, biographies."""

from __future__ import annotations

import re
from datetime import date

import pytest
from sqlalchemy import select

from backoffice.extensions import db
from backoffice.models import AuditEntry, Doctor, RoleName, Specialty
from tests.factories import make_clinic, make_doctor
from tests.test_admin_crud import (
    column,
    detail,
    field_block,
    filter_arg,
    flashes,
    open_form,
    text_of,
)


@pytest.fixture
def admin(auth):  # noqa: ANN001, ANN201
    return auth.as_role(RoleName.ADMIN)


def test_a_doctor_with_two_specialties_languages_and_a_biography(client, admin):
    clinic = make_clinic("Clínica Perfil")
    db.session.commit()
    data = open_form(client, "/admin/doctor/new/")
    data.update(
        first_name="Ana",
        last_name="Martínez",
        email="ana.perfil@example.com",
        clinic=str(clinic.id),
        specialties=["RADIOLOGY", "ONCOLOGY"],
        qualification="MD, board-certified radiologist",
        practising_since="2006",
        languages=["es", "en"],
        bio_en="Radiologist.",
        bio_es="Radióloga.",
        active="y",
    )
    response = client.post("/admin/doctor/new/", data=data)
    assert response.status_code == 302, flashes(response.get_data(as_text=True))
    db.session.expire_all()
    doctor = db.session.scalars(select(Doctor)).one()
    assert doctor.specialties == [Specialty.RADIOLOGY, Specialty.ONCOLOGY]
    assert (doctor.qualification, doctor.practising_since, doctor.languages) == (
        "MD, board-certified radiologist",
        2006,
        "en,es",
    )
    page = client.get(f"/admin/doctor/details/?id={doctor.id}").get_data(as_text=True)
    assert text_of(detail(page, "Specialties")) == "Radiology, Oncology"
    years = date.today().year - 2006
    assert text_of(detail(page, "Practising since")) == f"2006 ({years} years of experience)"
    assert text_of(detail(page, "Languages spoken")) == "English, Spanish"
    list_page = client.get("/admin/doctor/").get_data(as_text=True)
    assert column(list_page, "specialties") == ["Radiology, Oncology"]


def test_specialties_change_without_losing_the_kept_one_and_are_audited(client, admin):
    doctor = make_doctor(specialties=["RADIOLOGY", "ONCOLOGY"])
    db.session.commit()
    version = doctor.version
    mark = db.session.scalar(select(AuditEntry.id).order_by(AuditEntry.id.desc()).limit(1))
    url = f"/admin/doctor/edit/?id={doctor.id}"
    data = open_form(client, url)
    assert sorted(data["specialties"]) == ["ONCOLOGY", "RADIOLOGY"]
    data["specialties"] = ["RADIOLOGY", "CARDIOLOGY"]
    assert client.post(url, data=data).status_code == 302
    db.session.expire_all()
    doctor = db.session.get(Doctor, doctor.id)
    assert doctor.specialties == [Specialty.RADIOLOGY, Specialty.CARDIOLOGY]
    assert doctor.version == version + 1  # a stale form of this doctor is refused
    entry = db.session.scalars(
        select(AuditEntry).where(AuditEntry.id > mark, AuditEntry.entity == "doctor")
    ).one()
    assert entry.changes == {
        "specialties": [["ONCOLOGY", "RADIOLOGY"], ["CARDIOLOGY", "RADIOLOGY"]]
    }


def test_a_doctor_needs_a_specialty_and_a_plausible_start_year(client, admin):
    doctor = make_doctor()
    db.session.commit()
    url = f"/admin/doctor/edit/?id={doctor.id}"
    data = open_form(client, url)
    data.pop("specialties")
    data["practising_since"] = str(date.today().year + 1)
    page = client.post(url, data=data).get_data(as_text=True)
    assert "This field is required." in text_of(field_block(page, "specialties"))
    assert "is not a plausible year to start practising" in text_of(
        field_block(page, "practising_since")
    )


@pytest.mark.parametrize(
    ("language", "shown", "note"),
    [
        ("es", "Radióloga con veinte años.", False),
        ("fr", "Radiologist for twenty years.", True),  # no French one: the English one, said so
        ("en", "Radiologist for twenty years.", False),
    ],
)
def test_the_biography_is_shown_in_the_readers_language(client, admin, language, shown, note):
    doctor = make_doctor(
        bio_en="Radiologist for twenty years.", bio_es="Radióloga con veinte años."
    )
    admin.locale = language
    db.session.commit()
    page = client.get(f"/admin/doctor/details/?id={doctor.id}").get_data(as_text=True)
    found = re.search(
        r'<div class="doctor-biography" lang="([a-z]+)">(.*?)</div>(<small[^>]*>(.*?)</small>)?',
        page,
        re.S,
    )
    assert (found.group(1), found.group(2)) == ("en" if note else language, shown)
    assert bool(found.group(3)) is note


def test_doctors_are_filtered_by_a_language_they_speak(client, admin):
    make_doctor("Ana", "Alba", languages="es,fr")
    make_doctor("Luis", "Bravo", languages="en")
    make_doctor("Eva", "Cano", languages="fr")
    db.session.commit()
    page = client.get("/admin/doctor/").get_data(as_text=True)
    arg = filter_arg(page, "Language spoken")
    filtered = client.get(f"/admin/doctor/?flt0_{arg}=fr").get_data(as_text=True)
    assert column(filtered, "last_name") == ["Alba", "Cano"]
    # a value that is not a language is a message, not a 500
    response = client.get(f"/admin/doctor/?flt0_{arg}=%25,x")
    assert response.status_code == 200
