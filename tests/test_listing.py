"""The patient–study listing: what it shows, its filters and sorts, its SQL budget, its export."""

from __future__ import annotations

import csv
import io
import re
from datetime import date

import pytest
from sqlalchemy import event, select

from backoffice.extensions import db
from backoffice.models import AuditEntry, Patient, RoleName, Study
from backoffice.services.listing import ListCount, ListingQuery, age_on
from tests.factories import make_clinic, make_doctor, make_patient, make_study

URL = "/admin/patient-studies/"
CARD = re.compile(r'<section class="card mb-3 listing-patient" id="patient-(\d+)"')
STUDY_ROW = re.compile(r'data-study-id="(\d+)"')


def patient_ids(html: str) -> list[int]:
    return [int(i) for i in CARD.findall(html)]


def study_ids(html: str) -> list[int]:
    return [int(i) for i in STUDY_ROW.findall(html)]


def read_csv(response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.status_code
    text = response.get_data().decode("utf-8-sig")
    return list(csv.DictReader(io.StringIO(text, newline="")))


class World:
    """Two clinics, two doctors, patients with and without studies of every urgency."""

    def __init__(self) -> None:
        self.north = make_clinic("Clínica Norte")
        self.south = make_clinic("Clínica Sur")
        self.ana = make_doctor("Ana", "Ruiz", clinic=self.north, email="ana@listing.example.com")
        self.luis = make_doctor("Luis", "Soto", clinic=self.south, email="luis@listing.example.com")
        self.jose = make_patient(
            "José",
            "Peña",
            mrn="L-1",
            email="jose@listing.example.com",
            birth_date=date(1955, 4, 10),
            clinic=self.north,
            referring_doctor=self.ana,
        )
        self.maria = make_patient(
            "María", "Núñez", mrn="L-2", clinic=self.south, referring_doctor=self.luis
        )
        self.carla = make_patient("Carla", "Zamora", mrn="L-3", clinic=self.north)
        self.bruno = make_patient("Bruno", "Alba", mrn="L-4")  # no studies
        s = {}
        s["jose_low_new"] = make_study(
            self.jose, urgency="LOW", body_part="NECK", study_date=date(2026, 3, 1)
        )
        s["jose_high_old"] = make_study(
            self.jose,
            urgency="HIGH",
            body_part="STOMACH",
            study_date=date(2025, 1, 1),
            ordering_doctor=self.luis,
            description="NO FINDINGS",
        )
        s["jose_high_new"] = make_study(
            self.jose,
            urgency="HIGH",
            study_type="CT",
            body_part="HEAD",
            study_date=date(2026, 1, 1),
        )
        s["jose_mid"] = make_study(
            self.jose, urgency="MID", body_part="CHEST", study_date=date(2026, 4, 1)
        )
        s["maria_mid"] = make_study(
            self.maria,
            urgency="MID",
            study_type="MAMMOGRAM",
            body_part="BREASTS",
            study_date=date(2026, 5, 1),
        )
        s["carla_low"] = make_study(
            self.carla, urgency="LOW", body_part="CHEST", study_date=date(2024, 6, 1)
        )
        self.studies = s
        db.session.commit()


@pytest.fixture
def world() -> World:
    return World()


def test_each_patient_with_details_and_studies(client, auth, world):
    auth.as_role(RoleName.SUPPORT)
    response = client.get(URL)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    # by patient name: Alba, Núñez, Peña, Zamora
    assert patient_ids(html) == [world.bruno.id, world.maria.id, world.jose.id, world.carla.id]
    assert "Peña, José" in html and "L-1" in html and "jose@listing.example.com" in html
    assert f'{age_on(date(1955, 4, 10))} <span class="text-muted">(1955-04-10)</span>' in html
    assert "Dr. Ana Ruiz" in html and "Clínica Norte" in html
    assert f'href="/admin/patient/details/?id={world.jose.id}"' in html
    # most urgent first, newest first within an urgency
    s = world.studies
    jose_html = html.split(f'id="patient-{world.jose.id}"')[1].split("</section>")[0]
    assert study_ids(jose_html) == [
        s["jose_high_new"].id,
        s["jose_high_old"].id,
        s["jose_mid"].id,
        s["jose_low_new"].id,
    ]
    assert '<span class="badge badge-danger urgency-high">High</span>' in jose_html
    assert "Dr. Luis Soto" in jose_html and "NO FINDINGS" in jose_html
    assert "No studies" in html.split(f'id="patient-{world.bruno.id}"')[1].split("</section>")[0]
    # support may edit: each study links to its edit page
    assert re.search(rf'href="/admin/study/edit/\?url=[^"]*&amp;id={s["jose_mid"].id}"', html)
    # no inline script or event handler in what the listing adds (the CSP forbids them)
    body = html.split('id="patient-studies"')[1]
    assert not re.search(r"\son[a-z]+=", body)
    assert "<script>" not in body


def test_menu_entry_and_edit_links_follow_the_role(client, auth, world):
    auth.as_role(RoleName.MANAGER)
    html = client.get(URL).get_data(as_text=True)
    assert 'href="/admin/patient-studies/"' in client.get("/admin/").get_data(as_text=True)
    assert "/admin/study/edit/" not in html  # managers do not edit
    assert "Export CSV" in html and "Export XLSX" in html
    auth.logout()
    auth.as_role(RoleName.OPERATOR)
    html = client.get(URL).get_data(as_text=True)
    assert "/admin/study/edit/" in html
    assert "Export CSV" not in html and "/export/" not in html


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ("urgency=HIGH", ["jose"]),
        ("urgency=MID", ["maria", "jose"]),
        ("type=MAMMOGRAM", ["maria"]),
        ("body_part=chest", ["jose", "carla"]),
        ("date_from=2026-04-15", ["maria"]),
        ("date_to=2024-12-31", ["carla"]),
        ("date_from=2025-06-01&date_to=2026-01-31", ["jose"]),
        ("only_high=1", ["jose"]),
        ("without_studies=1", ["bruno"]),
        ("search=peña", ["jose"]),
        ("search=jose@listing", ["jose"]),  # an email from its start
        ("search=listing.example", []),  # ... not from its middle
        ("search=L-3", ["carla"]),
        ("search=ma+z", ["maria"]),
        ("search=car+zam", ["carla"]),  # every word must match
        ("search=100%25", []),  # a % is a character, not a wildcard
    ],
)
def test_filters_and_search(client, auth, world, args, expected):
    auth.as_role(RoleName.SUPPORT)
    html = client.get(f"{URL}?{args}").get_data(as_text=True)
    assert patient_ids(html) == [getattr(world, name).id for name in expected]


def test_search_totals(client, auth, world):
    auth.as_role(RoleName.SUPPORT)
    html = client.get(f"{URL}?search=jose@").get_data(as_text=True)
    assert "Patients 1–1 of 1" in html
    _many(12, 0, "tot")
    html = client.get(f"{URL}?search=tot&page_size=10&page=1").get_data(as_text=True)
    assert "Patients 11–12 of 12" in html
    html = client.get(f"{URL}?search=tot&page_size=10&page=5").get_data(as_text=True)
    assert "No patient matches" in html
    html = client.get("/admin/patient/?search=tot&page_size=10&page=1").get_data(as_text=True)
    assert "List (12)" in html


def test_clinic_and_doctor_filters(client, auth, world):
    auth.as_role(RoleName.SUPPORT)
    html = client.get(f"{URL}?clinic={world.north.id}").get_data(as_text=True)
    assert patient_ids(html) == [world.jose.id, world.carla.id]
    html = client.get(f"{URL}?doctor={world.luis.id}").get_data(as_text=True)
    assert patient_ids(html) == [world.maria.id]


def test_study_filters_narrow_the_studies_shown(client, auth, world):
    auth.as_role(RoleName.SUPPORT)
    html = client.get(f"{URL}?urgency=HIGH").get_data(as_text=True)
    s = world.studies
    assert study_ids(html) == [s["jose_high_new"].id, s["jose_high_old"].id]
    # "only patients with a HIGH study" keeps all their studies
    html = client.get(f"{URL}?only_high=1").get_data(as_text=True)
    assert len(study_ids(html)) == 4


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("name", ["bruno", "maria", "jose", "carla"]),
        ("recent", ["maria", "jose", "carla", "bruno"]),
        ("urgency", ["jose", "maria", "carla", "bruno"]),
    ],
)
def test_sorts(client, auth, world, sort, expected):
    auth.as_role(RoleName.SUPPORT)
    html = client.get(f"{URL}?sort={sort}").get_data(as_text=True)
    assert patient_ids(html) == [getattr(world, name).id for name in expected]


def test_bad_values_are_ignored_not_errors(client, auth, world):
    auth.as_role(RoleName.SUPPORT)
    response = client.get(f"{URL}?urgency=URGENT&date_from=yesterday&page_size=7&sort=x&clinic=a")
    assert response.status_code == 200
    assert len(patient_ids(response.get_data(as_text=True))) == 4
    q = ListingQuery.from_args({"urgency": "high", "page_size": "7", "date_to": "2026-13-01"})
    assert q.urgency == "HIGH" and q.page_size == 25 and q.date_to is None
    assert set(q.ignored) == {"page_size", "date_to"}


def _many(patients: int, studies_each: int, prefix: str) -> None:
    doctor = make_doctor("Page", "Doctor", email=f"{prefix}@listing.example.com")
    for i in range(patients):
        patient = Patient(
            first_name=f"{prefix}{i:03d}",
            last_name=f"{prefix}Family",
            birth_date=date(1970, 1, 1),
            referring_doctor=doctor,
            clinic=doctor.clinic,
        )
        db.session.add(patient)
        for j in range(studies_each):
            db.session.add(
                Study(
                    patient=patient,
                    urgency=("HIGH", "MID", "LOW")[j % 3],
                    study_type="XRAY",
                    body_part="CHEST",
                    study_date=date(2026, 1, 1 + j),
                    ordering_doctor=doctor,
                )
            )
    db.session.commit()


def test_pages_and_page_size(client, auth):
    _many(23, 1, "pg")
    auth.as_role(RoleName.SUPPORT)
    seen = []
    for page in range(3):
        html = client.get(f"{URL}?page_size=10&page={page}").get_data(as_text=True)
        seen.extend(patient_ids(html))
    assert len(seen) == len(set(seen)) == 23
    html = client.get(f"{URL}?page_size=10&page=2").get_data(as_text=True)
    assert "Patients 21–23 of 23" in html
    assert 'rel="prev" href="/admin/patient-studies/?page=1&amp;page_size=10"' in html


def _statements(client, url: str) -> int:
    seen: list[str] = []

    def count(conn, cursor, statement, *args):  # noqa: ANN001, ANN002
        seen.append(statement)

    engine = db.engine.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        response = client.get(url)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert response.status_code == 200
    return len(seen)


@pytest.mark.parametrize("studies_each", [1, 10])
def test_sql_statements_do_not_grow_with_the_page(client, auth, studies_each):
    _many(60, studies_each, f"sql{studies_each}x")
    auth.as_role(RoleName.SUPPORT)
    counts = {
        size: _statements(client, f"{URL}?page_size={size}&search=sql{studies_each}x")
        for size in (10, 50)
    }
    assert counts[10] == counts[50], counts
    # and not with the number of studies either (same page, one study vs ten per patient)
    if studies_each == 10:
        _many(60, 1, "sqlone")
        one = _statements(client, f"{URL}?page_size=50&search=sqlone")
        assert one == counts[50]


def test_sql_statements_same_for_one_or_ten_studies(client, auth):
    _many(30, 1, "one")
    _many(30, 10, "ten")
    auth.as_role(RoleName.SUPPORT)
    one = _statements(client, f"{URL}?page_size=25&search=one")
    ten = _statements(client, f"{URL}?page_size=25&search=ten")
    assert one == ten


# --------------------------------------------------------------------------- export


def test_listing_export_one_row_per_study(client, auth, world):
    user = auth.as_role(RoleName.MANAGER)
    response = client.get(f"{URL}export/csv/")
    assert response.headers["Content-Disposition"].startswith(
        'attachment; filename="patient-studies-'
    )
    rows = read_csv(response)
    # patients in page order, studies in page order; Bruno (no studies) has one empty row
    assert [(r["mrn"], r["body_part"]) for r in rows] == [
        ("L-4", ""),
        ("L-2", "BREASTS"),
        ("L-1", "HEAD"),
        ("L-1", "STOMACH"),
        ("L-1", "CHEST"),
        ("L-1", "NECK"),
        ("L-3", "CHEST"),
    ]
    jose = rows[2]
    assert jose["first_name"] == "José" and jose["last_name"] == "Peña"
    assert jose["birth_date"] == "1955-04-10"
    assert jose["age"] == str(age_on(date(1955, 4, 10)))
    assert jose["referring_doctor"] == "Ana Ruiz"
    assert jose["clinic"] == "Clínica Norte"
    assert (jose["urgency"], jose["type"], jose["study_date"]) == ("HIGH", "CT", "2026-01-01")
    bruno = rows[0]
    assert bruno["urgency"] == bruno["study_date"] == bruno["type"] == ""
    entry = db.session.scalars(
        select(AuditEntry).where(AuditEntry.action == "EXPORT_END").order_by(AuditEntry.id.desc())
    ).first()
    assert entry.entity == "patient_studies" and entry.actor_id == user.id
    assert entry.details["rows"] == 7 and entry.details["format"] == "csv"


def test_listing_export_follows_filters_and_sort(client, auth, world):
    auth.as_role(RoleName.ADMIN)
    args = f"urgency=HIGH&clinic={world.north.id}&sort=recent&search=pe"
    rows = read_csv(client.get(f"{URL}export/csv/?{args}&page=3&page_size=10"))
    assert [(r["mrn"], r["body_part"]) for r in rows] == [("L-1", "HEAD"), ("L-1", "STOMACH")]
    entry = db.session.scalars(
        select(AuditEntry).where(AuditEntry.action == "EXPORT").order_by(AuditEntry.id.desc())
    ).first()
    assert entry.details["filters"] == {"urgency": "HIGH", "clinic_id": world.north.id}
    assert entry.details["search"] == "pe" and entry.details["sort"] == "recent"


@pytest.mark.parametrize("sort", ["name", "recent", "urgency"])
def test_listing_export_equals_the_pages(client, auth, sort):
    _many(27, 2, "eq")
    make_patient("Sin", "Estudios", mrn="EQ-NONE")
    db.session.commit()
    auth.as_role(RoleName.MANAGER)
    shown: list[int] = []
    for page in range(3):
        html = client.get(f"{URL}?sort={sort}&page_size=10&page={page}").get_data(as_text=True)
        shown.extend(patient_ids(html))
    rows = read_csv(client.get(f"{URL}export/csv/?sort={sort}"))
    names = {p.id: p.first_name for p in db.session.scalars(select(Patient))}
    exported = list(dict.fromkeys(r["first_name"] for r in rows))
    assert exported == [names[i] for i in shown]
    xlsx = client.get(f"{URL}export/xlsx/?sort={sort}")
    from openpyxl import load_workbook

    sheet = load_workbook(io.BytesIO(xlsx.get_data()), read_only=True).worksheets[0]
    xlsx_names = [r[1] for r in sheet.iter_rows(min_row=2, values_only=True)]
    assert xlsx_names == [r["first_name"] for r in rows]


@pytest.mark.parametrize("role", [RoleName.OPERATOR, RoleName.SUPPORT])
def test_listing_export_refused_to_others(client, auth, world, role):
    auth.as_role(role)
    for fmt in ("csv", "xlsx"):
        response = client.get(f"{URL}export/{fmt}/")
        assert response.status_code == 403
        assert b"L-1" not in response.get_data()
    assert not db.session.scalars(select(AuditEntry).where(AuditEntry.action == "EXPORT")).all()


def test_list_count_labels():
    assert str(ListCount(1234)) == "1,234"
    assert str(ListCount(1_000_000, estimated=True)) == "≈1,000,000"
    assert str(ListCount(10_000, capped=True)) == "10,000+"
