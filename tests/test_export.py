"""CSV and XLSX exports: the list's rows in its order, streamed, spreadsheet-safe, audited."""

from __future__ import annotations

import csv
import io
import os
import re
import threading
import time
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from openpyxl import load_workbook
from sqlalchemy import (
    Boolean,
    Date,
    Integer,
    String,
    event,
    literal,
    literal_column,
    select,
    text,
    union_all,
)

from backoffice.extensions import db
from backoffice.models import AuditEntry, RoleName
from backoffice.services import export as export_service
from backoffice.services.export import (
    DANGEROUS_FIRST_CHARACTERS,
    neutralize,
    neutralized_sql,
)
from tests.factories import make_clinic, make_doctor, make_patient, make_study

TODAY = date.today().isoformat()


def read_csv(response) -> list[list[str]]:
    body = response.get_data()
    assert body.startswith(b"\xef\xbb\xbf"), "UTF-8 BOM first"
    return list(csv.reader(io.StringIO(body.decode("utf-8-sig"), newline="")))


def read_xlsx(response) -> list[list]:
    book = load_workbook(io.BytesIO(response.get_data()), read_only=True)
    rows = []
    for sheet in book.worksheets:
        rows.extend([list(r) for r in sheet.iter_rows(values_only=True)])
    width = max(len(r) for r in rows)
    # trailing empty cells are not stored: pad to the header's width
    return [r + [None] * (width - len(r)) for r in rows]


@pytest.fixture
def people():
    """Patients with accents, formula-like values and studies; doctors with E.164 phones."""
    clinic = make_clinic("Clínica Peña Núñez", city="Puebla", phone="+52 222 123 4567")
    other = make_clinic("Hospital del Norte", city="Monterrey")
    doctor = make_doctor(
        "María",
        "Núñez",
        clinic=clinic,
        email="maria.nunez@export.example.com",
        phones=["55 1234 5678", "+52 55 8765 4321"],
    )
    make_doctor("=Evil", "@Doctor", clinic=other, email="evil@export.example.com")
    patients = [
        make_patient(
            "José",
            "Peña",
            mrn="EXP-001",
            email="jose.pena@export.example.com",
            referring_doctor=doctor,
            clinic=clinic,
            birth_date=date(1955, 4, 10),
        ),
        make_patient("Ana", "Núñez", mrn="EXP-002", clinic=clinic),
        make_patient('=HYPERLINK("http://x")', "+SUM(A1)", mrn="-EXP-003", clinic=other),
        make_patient("@import", "Zapata", mrn="EXP-004"),
    ]
    make_study(
        patients[0],
        urgency="HIGH",
        study_type="XRAY",
        body_part="STOMACH",
        description='-5 cm, =1+1, "quoted", comma',
        study_date=date(2026, 1, 5),
        ordering_doctor=doctor,
        accession_number="ACC-1",
    )
    make_study(patients[0], urgency="LOW", body_part="NECK", study_date=date(2026, 2, 1))
    make_study(patients[1], urgency="MID", body_part="CHEST", study_date=date(2025, 12, 1))
    db.session.commit()
    return patients


# --------------------------------------------------------------------------- who may export


@pytest.mark.parametrize("role", [RoleName.ADMIN, RoleName.MANAGER])
def test_admins_and_managers_can_export(client, auth, people, role):
    auth.as_role(role)
    response = client.get("/admin/patient/export/csv/")
    assert response.status_code == 200
    rows = read_csv(response)
    assert rows[0] == [
        "id",
        "first_name",
        "last_name",
        "birth_date",
        "email",
        "referring_doctor",
        "clinic",
        # the chart's fields, in the bulk upload's optional columns
        "sex",
        "phones",
        "street",
        "city",
        "state",
        "postal_code",
        "country",
        "preferred_language",
        "emergency_contact_name",
        "emergency_contact_relation",
        "emergency_contact_phone",
        "allergies",
        "contrast_allergy",
        "active",
    ]
    assert len(rows) == 1 + len(people)


@pytest.mark.parametrize("role", [RoleName.OPERATOR, RoleName.SUPPORT])
@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_operators_and_support_cannot_export(client, auth, people, role, fmt):
    auth.as_role(role)
    for view in ("clinic", "doctor", "patient", "study"):
        response = client.get(f"/admin/{view}/export/{fmt}/")
        assert response.status_code == 403
        body = response.get_data()
        assert "Access denied" in body.decode()
        assert b"first_name" not in body and b"EXP-001" not in body
        assert "attachment" not in response.headers.get("Content-Disposition", "")
    exports = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "EXPORT")).all()
    assert exports == []


def test_export_buttons_only_for_exporters(client, auth, people):
    auth.as_role(RoleName.MANAGER)
    html = client.get("/admin/patient/").get_data(as_text=True)
    assert "/admin/patient/export/csv/" in html
    assert "/admin/patient/export/xlsx/" in html
    assert "Export CSV" in html and "Export XLSX" in html
    auth.logout()
    auth.as_role(RoleName.OPERATOR)
    html = client.get("/admin/patient/").get_data(as_text=True)
    assert "/export/" not in html


def test_unknown_format_is_404(client, auth, people):
    auth.as_role(RoleName.ADMIN)
    assert client.get("/admin/patient/export/json/").status_code == 404


# --------------------------------------------------------------------------- the file


def test_csv_file_name_encoding_and_quoting(client, auth, people):
    auth.as_role(RoleName.MANAGER)
    response = client.get("/admin/study/export/csv/")
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == f'attachment; filename="studies-{TODAY}.csv"'
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_data()
    text = body.decode("utf-8-sig")
    # RFC 4180: CRLF after every record, quotes doubled inside a quoted field
    assert text.endswith("\r\n")
    assert "\n" not in text.replace("\r\n", "")
    assert '"\'-5 cm, =1+1, ""quoted"", comma"' in text
    rows = read_csv(response)
    header = rows[0]
    first = dict(zip(header, rows[1], strict=True))
    # newest study first (the list's default sort), ISO dates, codes as stored
    assert first["study_date"] == "2026-02-01"
    assert first["urgency_level"] == "LOW"
    assert first["type"] == "XRAY"
    stomach = next(dict(zip(header, r, strict=True)) for r in rows[1:] if "STOMACH" in r)
    assert stomach["urgency_level"] == "HIGH"
    assert stomach["patient_id"] == "EXP-001"
    assert stomach["ordering_doctor"] == "maria.nunez@export.example.com"
    assert stomach["accession_number"] == "ACC-1"


def test_spanish_accents_survive_utf8_sig(client, auth, people):
    auth.as_role(RoleName.MANAGER)
    response = client.get("/admin/patient/export/csv/")
    text = response.get_data().decode("utf-8-sig")
    assert not text.startswith("\ufeff")
    for word in ("José", "Peña", "Núñez", "Clínica Peña Núñez"):
        assert word in text
    rows = read_csv(response)
    jose = next(r for r in rows if r[0] == "EXP-001")
    assert jose[:7] == [
        "EXP-001",
        "José",
        "Peña",
        "1955-04-10",
        "jose.pena@export.example.com",
        "maria.nunez@export.example.com",
        "Clínica Peña Núñez",
    ]


def test_formula_cells_are_neutralised(client, auth, people):
    auth.as_role(RoleName.ADMIN)
    rows = read_csv(client.get("/admin/patient/export/csv/"))
    evil = next(r for r in rows if r[0].endswith("EXP-003"))
    assert evil[:3] == ["'-EXP-003", '\'=HYPERLINK("http://x")', "'+SUM(A1)"]
    at = next(r for r in rows if r[0] == "EXP-004")
    assert at[1] == "'@import"

    doctors = read_csv(client.get("/admin/doctor/export/csv/"))
    header = doctors[0]
    by_email = {r[header.index("email")]: dict(zip(header, r, strict=True)) for r in doctors[1:]}
    maria = by_email["maria.nunez@export.example.com"]
    # every number in one column, E.164, primary first; the cell starts with "+": prefixed
    assert maria["phones"] == "'+525512345678; +525587654321"
    assert maria["clinic"] == "Clínica Peña Núñez"
    assert maria["active"] == "True"
    evil = by_email["evil@export.example.com"]
    assert evil["first_name"] == "'=Evil" and evil["last_name"] == "'@Doctor"
    assert evil["phones"] == ""

    clinics = read_csv(client.get("/admin/clinic/export/csv/"))
    pena = next(r for r in clinics if r[0] == "Clínica Peña Núñez")
    assert pena[clinics[0].index("phone")] == "'+522221234567"


@pytest.mark.parametrize(
    "value",
    ["=1+1", "+52 55", "-3", "@SUM(A1)", "\tx", "\rx", "plain", "José", "", "'=already", "a=b"],
)
def test_sql_and_python_rules_agree(value):
    expected = neutralize(value)
    got = db.session.execute(select(neutralized_sql(literal(value)))).scalar_one()
    assert got == expected
    if value[:1] in DANGEROUS_FIRST_CHARACTERS and value:
        assert expected == "'" + value
    else:
        assert expected == value


# --------------------------------------------------------------------------- equals the list


MRN = re.compile(r"LST-\d{4}")


@pytest.fixture
def many_patients():
    clinic = make_clinic("Listing Clinic")
    for i in range(57):
        # repeated last names: the sort has ties that only the id breaks
        make_patient(
            f"Name{i % 7}",
            f"Family{i % 5}",
            mrn=f"LST-{i:04d}",
            clinic=clinic if i % 2 else None,
            birth_date=date(1950 + i % 40, 1 + i % 12, 1 + i % 28),
        )
    db.session.commit()


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?search=Family1",
        "?sort=3&desc=1",  # by birth date, newest first (many ties)
        "?flt0_0=Listing",  # clinic name contains "Listing"
        "?search=Name&sort=0",
    ],
)
def test_export_equals_the_list_all_pages(client, auth, many_patients, query):
    auth.as_role(RoleName.MANAGER)
    sep = "&" if query else "?"
    shown: list[str] = []
    page = 0
    while True:
        html = client.get(f"/admin/patient/{query}{sep}page_size=10&page={page}").get_data(
            as_text=True
        )
        found = MRN.findall(html)
        if not found:
            break
        shown.extend(dict.fromkeys(found))  # a row may show its MRN twice; keep order
        page += 1
    assert shown, "the list shows rows"
    rows = read_csv(client.get(f"/admin/patient/export/csv/{query}"))
    assert [r[0] for r in rows[1:]] == shown
    xlsx = read_xlsx(client.get(f"/admin/patient/export/xlsx/{query}"))
    assert [r[0] for r in xlsx[1:]] == shown


def test_deep_pages_read_ids_first_and_keep_the_order(client, auth, many_patients, monkeypatch):
    from backoffice.admin_views import export as export_mixin

    auth.as_role(RoleName.MANAGER)
    pages = [
        MRN.findall(client.get(f"/admin/patient/?page_size=10&page={p}").get_data(as_text=True))
        for p in range(6)
    ]
    monkeypatch.setattr(export_mixin, "IDS_FIRST_FROM", 10)
    again = [
        MRN.findall(client.get(f"/admin/patient/?page_size=10&page={p}").get_data(as_text=True))
        for p in range(6)
    ]
    assert again == pages and sum(len(p) for p in pages) >= 57


def test_xlsx_has_the_same_rows_typed(client, auth, people):
    auth.as_role(RoleName.MANAGER)
    csv_rows = read_csv(client.get("/admin/patient/export/csv/"))
    response = client.get("/admin/patient/export/xlsx/")
    assert response.status_code == 200
    assert response.headers["Content-Disposition"] == (
        f'attachment; filename="patients-{TODAY}.xlsx"'
    )
    xlsx_rows = read_xlsx(response)
    assert xlsx_rows[0] == csv_rows[0]
    assert len(xlsx_rows) == len(csv_rows)
    for x_row, c_row in zip(xlsx_rows[1:], csv_rows[1:], strict=True):
        as_text = [
            "" if v is None else v.date().isoformat() if hasattr(v, "date") else str(v)
            for v in x_row
        ]
        # The CSV's quote prefix is a CSV matter: XLSX cells are typed text, never formulas.
        assert [neutralize(v) for v in as_text] == c_row
    jose = next(r for r in xlsx_rows if r[0] == "EXP-001")
    assert jose[1:3] == ["José", "Peña"]
    assert jose[3].date() == date(1955, 4, 10)
    evil = next(r for r in xlsx_rows if r[0] == "-EXP-003")
    assert evil[1] == '=HYPERLINK("http://x")'  # text, not a formula


def test_xlsx_formula_text_is_not_a_formula(client, auth, people):
    auth.as_role(RoleName.MANAGER)
    data = client.get("/admin/patient/export/xlsx/").get_data()
    book = load_workbook(io.BytesIO(data))
    sheet = book.worksheets[0]
    cells = [c for row in sheet.iter_rows() for c in row if c.value == '=HYPERLINK("http://x")']
    assert cells and all(c.data_type == "s" for c in cells)


# --------------------------------------------------------------------------- streaming


def test_streamed_export_is_complete_for_thousands_of_rows(client, auth, monkeypatch):
    monkeypatch.setattr(export_service, "BATCH_ROWS", 500)
    clinic = make_clinic("Bulk Clinic")
    from backoffice.models import Patient

    db.session.add_all(
        Patient(
            first_name=f"Bulk{i}",
            last_name="Ñandú",
            mrn=f"BULK-{i:05d}",
            birth_date=date(1980, 1, 1),
            clinic=clinic,
        )
        for i in range(3200)
    )
    db.session.commit()
    auth.as_role(RoleName.MANAGER)
    response = client.get("/admin/patient/export/csv/?search=BULK-", buffered=False)
    chunks = list(response.response)
    assert len(chunks) > 3, "sent in several chunks"
    body = b"".join(chunks)
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"), newline="")))
    assert len(rows) == 1 + 3200
    assert [r[0] for r in rows[1:]] == [f"BULK-{i:05d}" for i in sorted(range(3200), key=str)]
    assert "FAILED" not in body.decode("utf-8-sig")
    response.close()
    entry = db.session.scalars(
        select(AuditEntry).where(AuditEntry.action == "EXPORT").order_by(AuditEntry.id.desc())
    ).first()
    assert entry.details["rows"] == 3200


def test_first_bytes_leave_before_the_query_runs(client, auth, people, app, monkeypatch):
    auth.as_role(RoleName.MANAGER)
    statements: list[str] = []

    def count(conn, cursor, statement, *args):  # noqa: ANN001, ANN002
        statements.append(statement)

    real_copy_sql = export_service.copy_sql

    def copied(statement, dialect, cursor):  # noqa: ANN001, ANN202 - the COPY's SQL, as sent
        sql = real_copy_sql(statement, dialect, cursor)
        statements.append(sql.decode())
        return sql

    monkeypatch.setattr(export_service, "copy_sql", copied)
    engine = db.engine.engine
    response = client.get("/admin/patient/export/csv/", buffered=False)
    iterator = iter(response.response)
    event.listen(engine, "before_cursor_execute", count)
    try:
        first = next(iterator)
        assert first.startswith(b"\xef\xbb\xbfid,first_name,")
        assert not [s for s in statements if "FROM patient" in s]
        rest = b"".join(iterator)
    finally:
        event.remove(engine, "before_cursor_execute", count)
        response.close()
    assert b"EXP-001" in rest
    assert [s for s in statements if "FROM patient" in s]
    # PostgreSQL's rows came from a COPY (it fires no SQLAlchemy event); elsewhere from a SELECT
    copies = [s for s in statements if s.startswith("COPY (")]
    assert len(copies) == (1 if export_service.uses_copy(db.engine) else 0)


def test_a_failure_mid_way_ends_the_file_with_an_error_line(client, auth, people, monkeypatch):
    real_chunks = export_service.csv_chunks
    copied: list[bool] = []

    def failing_chunks(bind, statement, batch_rows=None):  # noqa: ANN001
        copied.append(export_service.uses_copy(bind))
        for i, chunk in enumerate(real_chunks(bind, statement, 1)):
            if i == 2:
                raise RuntimeError("connection lost (with a value: José)")
            yield chunk

    real_batches = export_service.iter_batches

    def failing_batches(bind, statement, batch_rows=None):  # noqa: ANN001
        for i, batch in enumerate(real_batches(bind, statement, 1)):
            if i == 2:
                raise RuntimeError("connection lost (with a value: José)")
            yield batch

    monkeypatch.setattr(export_service, "csv_chunks", failing_chunks)
    monkeypatch.setattr(export_service, "iter_batches", failing_batches)
    auth.as_role(RoleName.MANAGER)
    body = client.get("/admin/patient/export/csv/").get_data()
    # the path this engine really takes: PostgreSQL's COPY, or the csv module elsewhere
    assert copied == [db.engine.dialect.name == "postgresql"]
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"), newline="")))
    assert len(rows) == 1 + 2 + 1
    assert rows[-1][0].startswith("EXPORT FAILED after 2 rows")
    assert body.endswith(b"\r\n") and b"\n" not in body.replace(b"\r\n", b"")
    assert "José" not in rows[-1][0]  # the error's message is logged as its type only
    entry = db.session.scalars(
        select(AuditEntry).where(AuditEntry.action == "EXPORT").order_by(AuditEntry.id.desc())
    ).first()
    assert entry.details["rows"] == 2 and entry.details["complete"] is False

    xlsx = read_xlsx(client.get("/admin/patient/export/xlsx/"))
    assert xlsx[-1][0].startswith("EXPORT FAILED after 2 rows")


def test_a_download_closed_mid_way_is_audited_as_incomplete(client, auth, people, monkeypatch):
    monkeypatch.setattr(export_service, "BATCH_ROWS", 1)
    auth.as_role(RoleName.MANAGER)
    response = client.get("/admin/patient/export/csv/", buffered=False)
    chunks = iter(response.response)
    assert next(chunks).startswith(b"\xef\xbb\xbfid,")
    assert next(chunks).count(b"\r\n") == 1
    response.close()  # the client went away after one row
    entry = db.session.scalars(
        select(AuditEntry).where(AuditEntry.action == "EXPORT").order_by(AuditEntry.id.desc())
    ).first()
    assert entry.entity == "patient"
    assert entry.details["rows"] == 1 and entry.details["complete"] is False
    # the connection is usable afterwards (the COPY, where there was one, is over)
    assert len(read_csv(client.get("/admin/patient/export/csv/"))) == 1 + len(people)


# --------------------------------------------------------------------------- the audit


def test_every_export_is_in_the_audit_log(client, auth, people):
    user = auth.as_role(RoleName.MANAGER)
    client.get("/admin/study/export/csv/?search=STOMACH").get_data()
    client.get("/admin/patient/export/xlsx/?flt0_0=Peña").get_data()
    entries = db.session.scalars(
        select(AuditEntry).where(AuditEntry.action == "EXPORT").order_by(AuditEntry.id)
    ).all()
    assert [(e.entity, e.actor_id) for e in entries] == [("study", user.id), ("patient", user.id)]
    studies, patients = entries
    assert studies.details["format"] == "csv"
    assert studies.details["search"] == "STOMACH"
    assert studies.details["rows"] == 1
    assert patients.details["format"] == "xlsx"
    assert patients.details["rows"] == 2
    assert patients.details["filters"] == [
        {"filter": "Clinic", "operation": "contains", "value": "Peña"}
    ]


# --------------------------------------------------------------------------- round trip


def test_exported_patients_and_studies_upload_again_unchanged(client, auth, people, tmp_path):
    """Export patients and studies, upload the files again: every row is "unchanged"."""
    from backoffice.services.imports import run_import

    auth.as_role(RoleName.ADMIN)
    for view, kind in (("patient", "patients"), ("study", "studies")):
        path = tmp_path / f"{kind}.csv"
        path.write_bytes(client.get(f"/admin/{view}/export/csv/").get_data())
        report = run_import(path, kind, dry_run=True)
        assert report.problems == [], (kind, report.problems)
        assert (report.created, report.updated, report.rejected) == (0, 0, 0), kind
        assert report.unchanged == report.rows_total > 0, kind


def test_users_export_has_no_secret_and_iso_times(client, auth):
    admin = auth.as_role(RoleName.ADMIN)
    response = client.get("/admin/user/export/csv/")
    rows = read_csv(response)
    assert rows[0] == ["email", "display_name", "active", "last_login_at", "created_at"]
    mine = next(r for r in rows if r[0] == admin.email)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", mine[4])
    body = response.get_data(as_text=True)
    assert "argon2" not in body and "password" not in body
    assert read_xlsx(client.get("/admin/user/export/xlsx/"))[0] == rows[0]


# --------------------------------------------------------------------------- read-ahead


def test_prefetched_batches_arrive_complete_and_in_order():
    source = [[i, i + 1] for i in range(0, 200, 2)]
    assert list(export_service.prefetched(lambda: iter(source), depth=2)) == source


def test_prefetched_raises_the_helpers_error_here():
    def failing():
        yield [1]
        raise RuntimeError("lost")

    batches = export_service.prefetched(failing)
    assert next(batches) == [1]
    with pytest.raises(RuntimeError, match="lost"):
        next(batches)


def test_closing_the_download_stops_the_helper():
    import threading

    closed = threading.Event()

    def endless():
        try:
            while True:
                yield [0] * 10
        finally:
            closed.set()

    batches = export_service.prefetched(endless, depth=1)
    next(batches)
    batches.close()
    assert closed.wait(5), "the helper closed its source"


def test_iter_batches_from_an_engine_of_its_own(app):
    """A real engine (not the test's connection): on PostgreSQL the read-ahead thread runs."""
    from sqlalchemy import create_engine, text

    engine = create_engine(db.engine.engine.url)
    statement = text(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 12345)"
        " SELECT i FROM n"
    )
    try:
        rows = [
            r[0] for batch in export_service.iter_batches(engine, statement, 1000) for r in batch
        ]
    finally:
        engine.dispose()
    assert rows == list(range(1, 12346))


def test_xlsx_goes_on_to_a_new_sheet_past_excels_row_limit(client, auth, people, monkeypatch):
    monkeypatch.setattr(export_service, "XLSX_MAX_DATA_ROWS", 3)
    auth.as_role(RoleName.MANAGER)
    book = load_workbook(io.BytesIO(client.get("/admin/patient/export/xlsx/").get_data()))
    assert [sheet.title for sheet in book.worksheets] == ["patients", "patients 2"]
    sheets = [[list(r) for r in s.iter_rows(values_only=True)] for s in book.worksheets]
    assert all(rows[0][0] == "id" for rows in sheets)
    assert [len(rows) - 1 for rows in sheets] == [3, 1]
    ids = [row[0] for rows in sheets for row in rows[1:]]
    assert sorted(ids) == sorted(p.mrn for p in people)


# --------------------------------------------------------------------------- PostgreSQL's COPY

on_postgresql = pytest.mark.skipif(
    "postgresql" not in os.environ.get("TEST_DATABASE_URL", ""),
    reason="COPY is PostgreSQL's (TEST_DATABASE_URL)",
)

MX = timezone(timedelta(hours=-6))
# position, text, date, timestamp (written in UTC), whole number, boolean
AWKWARD = [
    (1, "plain", date(2026, 1, 5), datetime(2026, 11, 24, 3, 34, 34, tzinfo=UTC), 7, True),
    (2, 'comma, "quoted"', date(1955, 4, 10), None, -5, False),
    (3, "line\nbreak", None, datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC), None, None),
    (4, "carriage\rreturn", date(2000, 2, 29), datetime(2026, 3, 1, 1, 30, tzinfo=MX), 0, True),
    (5, "both\r\nends\n", None, None, None, False),
    (6, '"\n"', None, None, None, None),
    (7, 'a""b', None, None, None, None),
    (8, "=1+1", None, None, None, None),
    (9, "-3", None, None, None, None),
    (10, "\tindented", None, None, None, None),
    (11, "+52 55 1234 5678", None, None, None, None),
    (12, "@SUM(A1)", None, None, None, None),
    (13, "\rcarriage first", None, None, None, None),
    (14, "", date(1999, 12, 31), None, None, True),
    (15, None, None, None, None, None),
    (16, "José Peña Núñez, ñandú", None, None, None, False),
    (17, "\\.", None, None, None, None),
    (18, "\\N", None, None, None, None),
    (19, " spaced ", None, None, None, None),
    (20, "'=already", None, None, None, None),
    (21, "a=b,\n-c", None, None, None, None),
]


def _awkward_request(copy: bool) -> tuple[export_service.ExportRequest, object]:
    """An export of AWKWARD (a UNION ALL of literal rows) and its SELECT for one CSV path."""
    from backoffice.models.base import UTCDateTime
    from backoffice.services.audit import Actor

    types = (Integer(), String(), Date(), UTCDateTime(), Integer(), Boolean())
    names = ("pos", "text", "day", "at", "amount", "flag")
    rows = union_all(
        *(
            select(*(literal(v, t).label(n) for v, t, n in zip(row, types, names, strict=True)))
            for row in AWKWARD
        )
    ).subquery("awkward")
    kinds = (export_service.NUMBER, export_service.TEXT, export_service.DATE)
    kinds += (export_service.DATETIME, export_service.NUMBER, export_service.BOOLEAN)
    columns = [
        export_service.ExportColumn(name, rows.c[name], kind)
        for name, kind in zip(names, kinds, strict=True)
    ]
    request = export_service.ExportRequest(
        entity="awkward",
        file_stem="awkward",
        columns=columns,
        select_for=lambda exprs: select(*exprs).order_by(rows.c.pos),
        bind=db.engine,
        actor=Actor(label="test"),
    )
    dialect = db.engine.dialect.name
    return request, request.select_for([c.for_csv(dialect, copy) for c in columns])


def _awkward_expected() -> bytes:
    """What the csv module writes for AWKWARD, from the Python values alone."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(["pos", "text", "day", "at", "amount", "flag"])
    for pos, text_value, day, at, amount, flag in AWKWARD:
        writer.writerow(
            [
                pos,
                neutralize(text_value),
                day.isoformat() if day else None,
                at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if at else None,
                amount,
                flag,
            ]
        )
    return "\ufeff".encode() + buffer.getvalue().encode("utf-8")


def _audited_rows() -> int:
    entry = db.session.scalars(
        select(AuditEntry).where(AuditEntry.action == "EXPORT").order_by(AuditEntry.id.desc())
    ).first()
    return entry.details["rows"]


def test_copy_and_the_csv_module_write_the_same_bytes(monkeypatch):
    """Awkward values through both paths: PostgreSQL's COPY where there is one, the csv
    module on the same rows, and the csv module on the SQL shaped for COPY (NULLIF, words for
    booleans): the same bytes as the csv module writes from the Python values."""
    expected = _awkward_expected()
    assert b'"line\r\nbreak"' not in expected and b'"line\nbreak"' in expected

    with monkeypatch.context() as m:
        m.setattr(export_service, "uses_copy", lambda bind: False)
        for copy in (False, True):
            request, statement = _awkward_request(copy)
            assert b"".join(export_service.stream_csv(request, statement)) == expected
            assert _audited_rows() == len(AWKWARD)

    if export_service.uses_copy(db.engine):
        request, statement = _awkward_request(True)
        copied = b"".join(export_service.stream_csv(request, statement))
        assert copied == expected
        assert _audited_rows() == len(AWKWARD)


@pytest.mark.parametrize("batch_rows", [1, 2, 5, 1000])
def test_copy_chunks_hold_whole_rows(batch_rows):
    if not export_service.uses_copy(db.engine):
        pytest.skip("COPY is PostgreSQL's (TEST_DATABASE_URL)")
    _, statement = _awkward_request(True)
    chunks = list(export_service.csv_chunks(db.engine, statement, batch_rows))
    assert sum(rows for _, rows in chunks) == len(AWKWARD)
    assert all(rows <= batch_rows for _, rows in chunks)
    body = b"".join(data for data, _ in chunks)
    assert _awkward_expected() == b"\xef\xbb\xbfpos,text,day,at,amount,flag\r\n" + body
    for data, rows in chunks:
        # each chunk parses on its own into its rows: a row is never cut between chunks
        assert len(list(csv.reader(io.StringIO(data.decode(), newline="")))) == rows


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([b"a,b\n", b"c,d\n"], b"a,b\r\nc,d\r\n"),
        ([b'"x\ny",1\n'], b'"x\ny",1\r\n'),
        ([b'"x\r\ny",1\n', b'"",""""\n'], b'"x\r\ny",1\r\n"",""""\r\n'),
        ([b'"a ""q""\n b",\n', b"\xc3\xb1,\n"], b'"a ""q""\n b",\r\n\xc3\xb1,\r\n'),
        ([b'"\n",x\n', b'"\n\n"\n'], b'"\n",x\r\n"\n\n"\r\n'),
        ([b'a,"b,c"\n'], b'a,"b,c"\r\n'),
        ([b"\n"], b"\r\n"),
    ],
)
def test_copy_rows_end_with_crlf_outside_quotes_only(rows, expected):
    assert export_service.crlf_rows(rows) == expected


def _filter_arg(page: str, label: str) -> str:
    """The URL argument of a list filter, as the filter menu's JavaScript builds it."""
    import html as html_lib
    import json

    raw = re.search(r'<div id="filter-groups-data"[^>]*>(.*?)</div>', page, re.S).group(1)
    return json.loads(html_lib.unescape(raw))[label][0]["arg"]


@pytest.fixture
def awkward_people(people):
    """The ``people`` plus rows whose stored values a form would not let through."""
    from sqlalchemy import update

    from backoffice.models import Doctor, Patient, Study

    odd = make_patient("Tab", "Quote", mrn="ODD-1", birth_date=date(1959, 12, 31))
    study = make_study(odd, urgency="HIGH", body_part="CHEST", study_date=date(2025, 6, 1))
    doctor = make_doctor("Off", "Duty", email="off.duty@export.example.com")
    db.session.flush()
    # Core UPDATEs: past the models' validators, as an import or an old row could hold them
    db.session.execute(
        update(Patient)
        .where(Patient.id == odd.id)
        .values(first_name="\tTab,\r\nbed", last_name='"Quoted" Peña 5%', email="")
    )
    db.session.execute(
        update(Study)
        .where(Study.id == study.id)
        .values(description='line one\nline "two"\r\n=three', accession_number="")
    )
    db.session.execute(update(Doctor).where(Doctor.id == doctor.id).values(active=False))
    db.session.commit()
    return people


@on_postgresql
@pytest.mark.parametrize(
    ("view", "query"),
    [
        ("patient", ""),
        ("patient", "?search=Peña"),
        ("patient", "?search=5%25"),
        ("patient", "?flt0_{Birth date}=1950-01-01+to+1960-01-01"),
        ("study", ""),
        ("study", "?flt0_{Urgency}=HIGH"),
        ("study", "?flt0_{Study date}=2025-01-01+to+2026-01-31&search=line"),
        ("doctor", ""),
        ("doctor", "?flt0_{Active}=0"),
        ("clinic", "?search=Peña"),
        ("user", ""),
        ("patient-studies", ""),
        ("patient-studies", "?urgency=HIGH&date_from=2025-01-01&search=pe"),
        ("patient-studies", "?sort=urgency&type=XRAY"),
    ],
)
def test_exports_by_copy_equal_the_csv_modules(
    client, auth, awkward_people, monkeypatch, view, query
):
    """Each export through COPY and through the csv module, with the list's searches and
    filters (dates, enums, booleans, ILIKE with %, IN lists): the same bytes."""
    auth.as_role(RoleName.ADMIN)
    for label in re.findall(r"\{([^}]+)\}", query):
        page = client.get(f"/admin/{view}/").get_data(as_text=True)
        query = query.replace(f"{{{label}}}", _filter_arg(page, label))
    url = f"/admin/{view}/export/csv/{query}"

    real_copy_sql = export_service.copy_sql
    copies: list[bytes] = []

    def spy(statement, dialect, cursor):  # noqa: ANN001, ANN202
        copies.append(real_copy_sql(statement, dialect, cursor))
        return copies[-1]

    monkeypatch.setattr(export_service, "copy_sql", spy)
    copied = client.get(url).get_data()
    assert len(copies) == 1
    rows_copied = _audited_rows()
    with monkeypatch.context() as m:
        m.setattr(export_service, "uses_copy", lambda bind: False)
        written = client.get(url).get_data()
    assert len(copies) == 1, "the second export went through the csv module"
    assert copied == written
    assert b"EXPORT FAILED" not in copied
    rows = read_csv_bytes(copied)
    assert len(rows) - 1 == rows_copied == _audited_rows()
    assert rows_copied > 0, "the export has rows"


def read_csv_bytes(body: bytes) -> list[list[str]]:
    assert body.startswith(b"\xef\xbb\xbf"), "UTF-8 BOM first"
    return list(csv.reader(io.StringIO(body.decode("utf-8-sig"), newline="")))


def test_awkward_rows_export_as_stored(client, auth, awkward_people):
    auth.as_role(RoleName.ADMIN)
    patients = read_csv_bytes(client.get("/admin/patient/export/csv/?search=ODD-1").get_data())
    assert patients[1][:5] == ["ODD-1", "'\tTab,\r\nbed", '"Quoted" Peña 5%', "1959-12-31", ""]
    studies = read_csv_bytes(client.get("/admin/study/export/csv/?search=line").get_data())
    header = studies[0]
    study = dict(zip(header, studies[1], strict=True))
    assert study["description"] == 'line one\nline "two"\r\n=three'
    assert study["accession_number"] == ""
    doctors = read_csv_bytes(client.get("/admin/doctor/export/csv/").get_data())
    off = next(r for r in doctors if "off.duty@export.example.com" in r)
    assert off[doctors[0].index("active")] == "False"


@on_postgresql
def test_copy_sql_quotes_every_value_through_the_driver(app):
    from sqlalchemy import or_

    from backoffice.models import Patient, Study, Urgency

    make_patient("O'Brien", "Peña; DROP TABLE patient; --", mrn="Q-1", birth_date=date(1960, 1, 2))
    p = make_patient("100%", "Núñez", mrn="Q-2", birth_date=date(1961, 3, 4))
    make_study(p, urgency="MID", body_part="NECK", study_date=date(2026, 2, 1))
    db.session.commit()
    statement = (
        select(Patient.mrn, Patient.first_name, Patient.last_name)
        .outerjoin(Study, Study.patient_id == Patient.id)
        .where(
            or_(
                Patient.first_name.ilike("%'%"),
                Patient.first_name.ilike("%\\%%"),
                Study.urgency.in_([Urgency.HIGH, Urgency.MID]),
            ),
            Patient.birth_date.between(date(1960, 1, 1), date(1961, 12, 31)),
            Patient.mrn.in_(["Q-1", "Q-2", "Q-3"]),
        )
        .order_by(Patient.mrn)
    )
    conn = db.engine
    cursor = conn.connection.cursor()
    sql = export_service.copy_sql(statement, conn.dialect, cursor).decode()
    assert sql.startswith("COPY (SELECT ") and sql.endswith(
        "TO STDOUT WITH (FORMAT csv, ENCODING 'UTF8')"
    )
    assert "'MID'" in sql and "Urgency" not in sql  # the enum's bind processor ran
    assert "'O''Brien'" not in sql  # values are bound, not part of the statement's text...
    assert "%(" not in sql and "'%''%'" in sql  # ...and quoted by psycopg2 in the COPY
    chunks = list(export_service.csv_chunks(conn, statement, 10))
    body = b"".join(data for data, _ in chunks).decode()
    assert body == "Q-1,O'Brien,Peña; DROP TABLE patient; --\r\nQ-2,100%,Núñez\r\n"
    assert [tuple(r) for r in db.session.execute(statement)] == [
        ("Q-1", "O'Brien", "Peña; DROP TABLE patient; --"),
        ("Q-2", "100%", "Núñez"),
    ]


@on_postgresql
def test_copy_failing_mid_way_ends_the_file_and_keeps_the_transaction(app):
    """A COPY that fails on the server after some rows (on the test's own connection): those
    rows, then the error line; the connection's transaction goes on (the audit is written)."""
    from backoffice.services.audit import Actor

    quotient = literal_column("1 / (i - 3)").label("q")
    statement = select(quotient).select_from(text("generate_series(1, 10) AS i"))
    request = export_service.ExportRequest(
        entity="failing",
        file_stem="failing",
        columns=[export_service.ExportColumn("q", quotient, export_service.NUMBER)],
        select_for=lambda exprs: statement,
        bind=db.engine,
        actor=Actor(label="test"),
    )
    body = b"".join(export_service.stream_csv(request, statement)).decode("utf-8-sig")
    lines = list(csv.reader(io.StringIO(body, newline="")))
    assert lines[:3] == [["q"], ["0"], ["-1"]]  # 1 / (i - 3) in integers: i = 1, 2, then 1 / 0
    assert len(lines) == 4 and lines[3][0].startswith("EXPORT FAILED after 2 rows")
    entry = db.session.scalars(select(AuditEntry).where(AuditEntry.entity == "failing")).one()
    assert entry.details["rows"] == 2 and entry.details["complete"] is False


@on_postgresql
def test_copy_from_an_engine_of_its_own(app):
    """A real engine (not the test's connection): the COPY runs in the read-ahead thread."""
    from sqlalchemy import create_engine

    engine = create_engine(db.engine.engine.url)
    statement = text(
        "SELECT i, CASE WHEN i % 1000 = 0 THEN 'x' || chr(10) || '\"y\"' ELSE 'r' || i END"
        " FROM generate_series(1, 12345) AS i ORDER BY i"
    )
    try:
        chunks = list(export_service.csv_chunks(engine, statement, 1000))
        with engine.connect() as conn:
            written = list(export_service.written_chunks(conn, statement, 1000))
        assert engine.pool.checkedout() == 0
    finally:
        engine.dispose()
    assert [rows for _, rows in chunks] == [1000] * 12 + [345]
    assert b"".join(d for d, _ in chunks) == b"".join(d for d, _ in written)
    assert b'1000,"x\n""y"""\r\n1001,r1001\r\n' in b"".join(d for d, _ in chunks)


@on_postgresql
def test_copy_failing_in_the_helper_thread_reaches_the_download(app):
    """A real engine: the server's error is raised where the chunks are read, after every row
    sent before it; the helper's connection does not go back to the pool."""
    import psycopg2.errors
    from sqlalchemy import create_engine

    engine = create_engine(db.engine.engine.url)
    invalidated: list[object] = []
    event.listen(engine, "invalidate", lambda *args: invalidated.append(args))
    statement = text("SELECT i, 1 / (i - 2500) FROM generate_series(1, 3000) AS i")
    received: list[int] = []
    try:
        with pytest.raises(psycopg2.errors.DivisionByZero):
            for _, rows in export_service.csv_chunks(engine, statement, 1000):
                received.append(rows)
        assert engine.pool.checkedout() == 0 and len(invalidated) == 1
    finally:
        engine.dispose()
    assert received == [1000, 1000, 499]  # every row before the error


@on_postgresql
def test_closing_a_copy_download_drops_its_connection_and_stops_the_server(app):
    from sqlalchemy import create_engine

    engine = create_engine(db.engine.engine.url)
    invalidated: list[object] = []
    event.listen(engine, "invalidate", lambda *args: invalidated.append(args))
    marker = "copy_stop_marker_4711"
    # two billion rows, streamed (a single generate_series would be materialised first)
    statement = text(
        "SELECT i * 40000 + j, 'copy_stop_marker_4711'"
        " FROM generate_series(0, 49999) AS a(i), generate_series(1, 40000) AS b(j)"
    )
    try:
        chunks = export_service.csv_chunks(engine, statement, 1000)
        data, rows = next(chunks)
        assert rows == 1000 and data.startswith(b"1,copy_stop_marker_4711\r\n")
        chunks.close()  # the client went away
        assert len(invalidated) == 1, "the connection left in copy mode is not pooled again"
        assert engine.pool.checkedout() == 0
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
        running = 1
        for _ in range(100):
            # the statistics are read once per transaction unless the snapshot is cleared
            db.session.execute(text("SELECT pg_stat_clear_snapshot()"))
            running = db.session.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE query LIKE :marker AND pid <> pg_backend_pid()"
                ),
                {"marker": f"COPY (%{marker}%"},
            ).scalar()
            if not running:
                break
            time.sleep(0.05)
        assert running == 0, "the server stopped the COPY"
    finally:
        engine.dispose()


def test_a_closed_download_stops_the_producer_at_its_next_hand_over():
    """The read-ahead thread's side of a client going away (a fake COPY: no database)."""
    stopped = threading.Event()
    cleaned = threading.Event()
    handed: list[int] = []

    def produce(hand_over):  # noqa: ANN001, ANN202
        try:
            for i in range(1_000_000):
                hand_over((b"%d\r\n" % i, 1))
                handed.append(i)
        except export_service.ExportAbandoned:
            stopped.set()
            raise
        finally:
            cleaned.set()  # where the COPY's connection is invalidated

    chunks = export_service.read_ahead(produce, depth=2)
    assert next(chunks) == (b"0\r\n", 1)
    chunks.close()
    assert stopped.wait(5) and cleaned.wait(5)
    assert len(handed) < 10, "it stopped there, not at the end"


def test_a_producers_error_reaches_the_download():
    def produce(hand_over):  # noqa: ANN001, ANN202
        hand_over((b"a\r\n", 1))
        raise RuntimeError("server closed the connection")

    chunks = export_service.read_ahead(produce)
    assert next(chunks) == (b"a\r\n", 1)
    with pytest.raises(RuntimeError, match="server closed"):
        next(chunks)
