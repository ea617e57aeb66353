"""The import service: reference files, malformed files, idempotency, modes, keys and audit."""

from __future__ import annotations

import csv
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from backoffice.extensions import db
from backoffice.models import AuditEntry, Doctor, ImportBatch, Patient, Specialty, Study
from backoffice.services.audit import acting_as
from backoffice.services.imports import run_import
from tests.factories import make_clinic, make_doctor, make_patient, make_study

DATA = Path(__file__).resolve().parent.parent / "backoffice" / "data"


@pytest.fixture
def write(tmp_path):  # noqa: ANN001, ANN201
    """Write a file (text or bytes) and return its path."""
    counter = iter(range(1000))

    def _write(content: str | bytes, name: str | None = None, encoding: str = "utf-8") -> Path:
        path = tmp_path / (name or f"file{next(counter)}.csv")
        data = content if isinstance(content, bytes) else content.encode(encoding)
        path.write_bytes(data)
        return path

    return _write


def count(model: type) -> int:
    db.session.expire_all()
    return db.session.scalar(select(func.count()).select_from(model))


def patient(mrn: str) -> Patient:
    db.session.expire_all()
    return db.session.scalars(select(Patient).where(Patient.mrn == mrn)).one()


# --------------------------------------------------------------------------- reference files


def test_reference_files_import_as_they_are_into_a_database_with_other_patients():
    others = [make_patient("Other", f"Person{i}", mrn=f"X-{i}") for i in range(5)]
    make_study(patient=others[0])
    db.session.commit()
    with acting_as("tester"):
        patients = run_import(DATA / "patients.csv", "patients", dry_run=False)
        studies = run_import(DATA / "studies.csv", "studies", dry_run=False)
    assert patients.outcome == "committed", patients.text_lines()
    assert patients.counts == {"created": 4, "updated": 0, "unchanged": 0, "rejected": 0}
    assert studies.outcome == "committed", studies.text_lines()
    assert studies.counts == {"created": 4, "updated": 0, "unchanged": 0, "rejected": 0}
    assert count(Patient) == 9 and count(Study) == 5

    jose = patient("1")
    assert (jose.first_name, jose.last_name, jose.birth_date, jose.email) == (
        "Jose",
        "Villalobos",
        date(1955, 4, 10),
        "pepe@ejemplo.com",
    )
    assert jose.id != 1  # the database id is not the record number
    assert sorted((s.body_part, s.description) for s in jose.studies) == [
        ("NECK", "NORMAL THYROID"),
        ("STOMACH", "NO FINDINGS"),
    ]
    assert [s.body_part for s in patient("2").studies] == ["CHEST"]
    assert [(s.study_type.value, s.urgency.value) for s in patient("3").studies] == [
        ("MAMMOGRAM", "MID")
    ]
    assert patient("4").studies == []
    assert patient("3").first_name == "Diana Laura" and patient("3").last_name == "Del Toro"


def test_re_uploading_the_same_files_changes_nothing():
    run_import(DATA / "patients.csv", "patients", dry_run=False)
    run_import(DATA / "studies.csv", "studies", dry_run=False)
    db.session.expire_all()
    before = [
        (p.id, p.version, p.updated_at)
        for p in db.session.scalars(select(Patient).order_by(Patient.id))
    ]
    again = run_import(DATA / "patients.csv", "patients", dry_run=False)
    studies = run_import(DATA / "studies.csv", "studies", dry_run=False)
    assert again.counts == {"created": 0, "updated": 0, "unchanged": 4, "rejected": 0}
    assert "4 unchanged" in again.summary()
    assert studies.counts == {"created": 0, "updated": 0, "unchanged": 4, "rejected": 0}
    db.session.expire_all()
    after = [
        (p.id, p.version, p.updated_at)
        for p in db.session.scalars(select(Patient).order_by(Patient.id))
    ]
    assert after == before
    assert count(Study) == 4


def test_a_changed_row_updates_its_record_with_old_and_new_values_in_the_audit(write):
    with acting_as("first"):
        first = run_import(DATA / "patients.csv", "patients", dry_run=False)
    text = (DATA / "patients.csv").read_text().replace("jessica@ejemplo.com", "jess@ejemplo.com")
    with acting_as("second"):
        second = run_import(write(text), "patients", dry_run=False)
    assert second.counts == {"created": 0, "updated": 1, "unchanged": 3, "rejected": 0}
    jessica = patient("2")
    assert jessica.email == "jess@ejemplo.com" and jessica.version == 2
    # Created rows point to their batch instead of one entry each.
    assert jessica.import_batch_id == first.batch_id
    assert count(Patient) == 4
    entries = db.session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
    updates = [e for e in entries if e.action == "UPDATE"]
    assert len(updates) == 1
    assert updates[0].entity == "patient" and updates[0].entity_id == str(jessica.id)
    assert updates[0].changes == {"email": ["jessica@ejemplo.com", "jess@ejemplo.com"]}
    assert updates[0].batch_id == second.batch_id and updates[0].actor_label == "second"
    assert not [e for e in entries if e.action == "CREATE" and e.entity == "patient"]
    imports = [e for e in entries if e.action == "IMPORT"]
    assert [e.entity_id for e in imports] == [str(first.batch_id), str(second.batch_id)]
    assert imports[1].details["sha256"] == second.sha256
    assert imports[1].details["file_name"] == second.file_name
    assert (imports[1].details["updated"], imports[1].details["unchanged"]) == (1, 3)
    batch = db.session.get(ImportBatch, second.batch_id)
    assert (batch.status, batch.rows_updated, batch.rows_unchanged, batch.actor_label) == (
        "committed",
        1,
        3,
        "second",
    )
    assert batch.file_sha256 == second.sha256 and len(batch.file_sha256) == 64


def test_a_preview_writes_nothing():
    before = count(ImportBatch), count(AuditEntry)
    report = run_import(DATA / "patients.csv", "patients")
    assert report.outcome == "previewed" and report.created == 4
    assert count(Patient) == 0
    assert (count(ImportBatch), count(AuditEntry)) == before
    assert [r["values"]["last_name"] for r in report.sample] == [
        "Villalobos",
        "Ramirez",
        "Del Toro",
        "Trevino",
    ]
    assert {r["action"] for r in report.sample} == {"create"}


# --------------------------------------------------------------------------- real-life files


def test_bom_semicolons_crlf_quotes_blank_lines_and_header_case(write):
    content = (
        "\ufeff First Name ;LAST_NAME; Birth_Date ;Email;ID\r\n"
        "\r\n"
        '"Ana; María";"Núñez, ""la"" Grande";1970-01-02;ANA@Example.COM;A1\r\n'
        '"Luis\r\nAlberto";Peña;1980-03-04;;A2\r\n'
        "  \r\n"
    )
    report = run_import(write(content), "patients", dry_run=False)
    assert report.outcome == "committed", report.text_lines()
    assert (report.delimiter, report.created) == (";", 2)
    ana, luis = patient("A1"), patient("A2")
    assert (ana.first_name, ana.last_name, ana.email) == (
        "Ana; María",
        'Núñez, "la" Grande',
        "ana@example.com",
    )
    assert luis.first_name == "Luis\r\nAlberto" and luis.email is None


def test_windows_1252_files_are_read(write):
    content = "first_name,last_name,birth_date,id\nJosé,Muñoz,1960-05-06,W1\n"
    report = run_import(write(content, encoding="cp1252"), "patients", dry_run=False)
    assert report.encoding == "cp1252"
    assert patient("W1").last_name == "Muñoz" and patient("W1").first_name == "José"


def test_codes_are_case_insensitive_and_unknown_ones_list_the_allowed(write):
    run_import(DATA / "patients.csv", "patients", dry_run=False)
    content = (
        "urgency_level,body_part,description,type,patient_id\n"
        "high,chest,ok,xray,1\n"
        "URGENT,chest,ok,XRAY,1\n"
    )
    report = run_import(write(content), "studies")
    assert report.created == 1 and report.rejected == 1
    assert report.problems[0]["line"] == 3
    assert report.problems[0]["message"] == (
        "urgency_level 'URGENT' is not one of the allowed codes: HIGH, MID, LOW."
    )
    assert report.sample[0]["values"]["urgency_level"] == "HIGH"


def test_formula_cells_are_stored_as_the_text_they_are(write):
    content = (
        "first_name,last_name,birth_date,id\n"
        "'=HYPERLINK(\"x\"),'+Plus,1970-01-01,F1\n"
        "=1+2,@SUM(A1),1970-01-01,F2\n"
        "'Connor,'-dash,1970-01-01,F3\n"
    )
    report = run_import(write(content), "patients", dry_run=False)
    assert report.outcome == "committed", report.text_lines()
    assert (patient("F1").first_name, patient("F1").last_name) == ('=HYPERLINK("x")', "+Plus")
    assert (patient("F2").first_name, patient("F2").last_name) == ("=1+2", "@SUM(A1)")
    assert (patient("F3").first_name, patient("F3").last_name) == ("'Connor", "-dash")


def test_unknown_columns_are_named_and_ignored(write):
    content = "first_name,last_name,birth_date,id,shoe_size,Notes\nA,B,1970-01-01,U1,42,x\n"
    report = run_import(write(content), "patients", dry_run=False)
    assert report.unknown_columns == ["shoe_size", "Notes"]
    assert "Columns not used (ignored): shoe_size, Notes." in report.text_lines()
    assert patient("U1").first_name == "A"


# --------------------------------------------------------------------------- refused and rejected

GOOD_HEADER = "first_name,last_name,birth_date,email,id\n"
REFUSED = {
    "empty": (b"", "The file is empty."),
    "only blanks": (b"  \r\n\r\n", "The file is empty."),
    "header without rows": (GOOD_HEADER.encode() + b"\n\n", "a header line but no rows"),
    "not text": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00", "not a text (CSV) file"),
    "a workbook": (b"PK\x03\x04\x14\x00\x06\x00", "spreadsheet workbook, not a CSV file"),
    "missing columns": (
        b"first_name,email\nAna,a@b.com\n",
        "Required columns are missing: last_name, birth_date.",
    ),
    "neither id nor email": (
        b"first_name,last_name,birth_date\nAna,B,1970-01-01\n",
        "at least one of these columns: id, email",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_files_say_why_and_write_nothing(write, case):
    content, message = REFUSED[case]
    with acting_as("tester"):
        report = run_import(write(content), "patients", dry_run=False)
    assert report.outcome == "refused"
    assert message in report.message
    assert count(Patient) == 0
    batch = db.session.scalars(select(ImportBatch)).one()  # the attempt is on record
    assert batch.status == "refused" and batch.rows_created == 0


def test_too_many_rows_is_refused(app, write):
    app.config["IMPORT_MAX_ROWS"] = 2
    try:
        content = GOOD_HEADER + "".join(f"A,B,1970-01-01,,R{i}\n" for i in range(3))
        report = run_import(write(content), "patients", dry_run=False)
    finally:
        app.config["IMPORT_MAX_ROWS"] = 1_000_000
    assert report.outcome == "refused"
    assert "more than 2 rows" in report.message
    assert count(Patient) == 0


def test_a_file_over_the_size_limit_is_refused(app, write):
    previous = app.config["MAX_CONTENT_LENGTH"]
    app.config["MAX_CONTENT_LENGTH"] = 100
    try:
        content = GOOD_HEADER + "".join(f"A,B,1970-01-01,,R{i}\n" for i in range(20))
        report = run_import(write(content), "patients", dry_run=False)
    finally:
        app.config["MAX_CONTENT_LENGTH"] = previous
    assert report.outcome == "refused" and "the limit is" in report.message
    assert count(Patient) == 0


REJECTED_ROWS = {
    "impossible date": (
        "A,B,1955-13-10,,M1",
        "birth_date",
        "birth_date '1955-13-10' is not a date; expected YYYY-MM-DD.",
    ),
    "other date format": (
        "A,B,10/04/1955,,M1",
        "birth_date",
        "birth_date '10/04/1955' is not a date; expected YYYY-MM-DD.",
    ),
    "future birth date": (
        f"A,B,{(date.today() + timedelta(days=3)).isoformat()},,M1",
        "birth_date",
        "is in the future",
    ),
    "before 1900": ("A,B,1899-12-31,,M1", "birth_date", "is before 1900"),
    "bad email": ("A,B,1970-01-01,not-an-email,M1", "email", "email 'not-an-email' is not a valid"),
    "empty required value": (",B,1970-01-01,,M1", "first_name", "first_name is empty"),
    "no key": ("A,B,1970-01-01,,", None, "needs an id (record number) or an email"),
    "too many values": ("A,B,1970-01-01,,M1,extra", None, "has 6 values but the header has 5"),
    "too long": ("A" * 101 + ",B,1970-01-01,,M1", "first_name", "at most 100"),
}


@pytest.mark.parametrize("case", sorted(REJECTED_ROWS))
def test_rejected_rows_are_explained_and_all_or_nothing_writes_nothing(write, case):
    row, column, message = REJECTED_ROWS[case]
    content = GOOD_HEADER + "Good,Row,1970-01-01,good@example.com,G1\n" + row + "\n"
    report = run_import(write(content), "patients", dry_run=False)
    assert report.outcome == "rejected"
    assert report.rejected == 1 and report.created == 1
    problem = report.problems[0]
    assert problem["line"] == 3 and problem["column"] == column
    assert message in problem["message"]
    assert "Nothing was imported" in report.message
    assert count(Patient) == 0


def test_skip_invalid_imports_the_valid_rows_and_lists_the_others(write, tmp_path):
    content = (
        GOOD_HEADER
        + "Good,Row,1970-01-01,good@example.com,G1\n"
        + "Bad,Date,1955-13-10,,G2\n"
        + "=Also,Good,1971-01-01,,G3\n"
    )
    rejected = tmp_path / "rejected.csv"
    report = run_import(
        write(content), "patients", dry_run=False, skip_invalid=True, rejected_path=rejected
    )
    assert report.outcome == "committed"
    assert report.counts == {"created": 2, "updated": 0, "unchanged": 0, "rejected": 1}
    assert "1 rejected rows were skipped" in report.message
    assert sorted(db.session.scalars(select(Patient.mrn))) == ["G1", "G3"]
    rows = list(csv.reader(rejected.open(encoding="utf-8-sig")))
    assert rows == [
        ["first_name", "last_name", "birth_date", "email", "id", "error"],
        [
            "Bad",
            "Date",
            "1955-13-10",
            "",
            "G2",
            "birth_date '1955-13-10' is not a date; expected YYYY-MM-DD.",
        ],
    ]


def test_two_rows_with_the_same_key_are_a_conflict(write):
    content = GOOD_HEADER + "A,B,1970-01-01,,D1\nC,D,1971-01-01,,D1\nE,F,1972-01-01,,D2\n"
    report = run_import(write(content), "patients", dry_run=False, skip_invalid=True)
    assert report.counts == {"created": 1, "updated": 0, "unchanged": 0, "rejected": 2}
    assert [p["line"] for p in report.problems] == [2, 3]
    assert "id 'D1' is on 2 lines of this file (first on line 2)" in report.problems[1]["message"]
    assert sorted(db.session.scalars(select(Patient.mrn))) == ["D2"]


def test_skip_invalid_keeps_exactly_the_rows_the_preview_accepted(write):
    make_clinic("Known Clinic")
    existing = make_patient("Old", "Email", email="old@example.com")  # MRN from the sequence
    db.session.commit()
    head = "first_name,last_name,birth_date,email,id,clinic\n"
    rows = [
        "A,Dup,1970-01-01,same@example.com,E1,",  # same email as the next row: both refused
        "B,Dup,1970-01-01,same@example.com,E2,",
        "C,Clinic,1970-01-01,,E3,Nowhere",  # unknown clinic
        "D,Good,1970-01-01,d@example.com,E4,Known Clinic",
        "E,Found,1970-01-01,old@example.com,,",  # the existing patient, found by email
    ]
    path = write(head + "\n".join(rows) + "\n")
    preview = run_import(path, "patients")
    report = run_import(path, "patients", dry_run=False, skip_invalid=True, expected=preview.counts)
    assert report.outcome == "committed", report.text_lines()
    assert (
        report.counts
        == preview.counts
        == {
            "created": 1,
            "updated": 1,
            "unchanged": 0,
            "rejected": 3,
        }
    )
    assert [p["line"] for p in report.problems] == [p["line"] for p in preview.problems]
    db.session.expire_all()
    mrn = existing.mrn
    assert mrn.startswith("MRN-")
    assert sorted(db.session.scalars(select(Patient.mrn))) == sorted(["E4", mrn])
    found = db.session.get(Patient, existing.id)
    assert (found.mrn, found.first_name, found.last_name) == (mrn, "E", "Found")  # kept its MRN
    assert patient("E4").clinic.name == "Known Clinic"
    assert patient("E4").import_batch_id == report.batch_id


def test_a_commit_whose_counts_changed_since_the_preview_writes_nothing(write):
    path = write(GOOD_HEADER + "A,B,1970-01-01,,N1\nC,D,1971-01-01,,N2\n")
    preview = run_import(path, "patients")
    make_patient("Already", "There", mrn="N2")
    db.session.commit()
    report = run_import(path, "patients", dry_run=False, expected=preview.counts)
    assert report.outcome == "changed"
    assert "The data changed since your preview" in report.message
    assert sorted(db.session.scalars(select(Patient.mrn))) == ["N2"]
    assert db.session.get(ImportBatch, report.batch_id).status == "changed"


def test_patients_by_email_only(write):
    content = "first_name,last_name,birth_date,email\nA,B,1970-01-01,a@example.com\n"
    first = run_import(write(content), "patients", dry_run=False)
    second = run_import(write(content.replace(",B,", ",Bee,")), "patients", dry_run=False)
    assert (first.created, second.updated) == (1, 1)
    assert db.session.scalars(select(Patient.last_name)).one() == "Bee"


def test_patients_are_found_by_email_when_the_row_has_no_record_number(write):
    make_patient("Ana", "Email", email="ana@example.com")
    db.session.commit()
    content = "first_name,last_name,birth_date,email\nAna,Emailed,1970-01-01,ANA@example.com\n"
    report = run_import(write(content), "patients", dry_run=False)
    assert report.counts["updated"] == 1 and count(Patient) == 1
    assert db.session.scalars(select(Patient.last_name)).one() == "Emailed"


def test_an_email_of_another_patient_is_refused(write):
    make_patient("Ana", "Taken", email="taken@example.com", mrn="T0")
    db.session.commit()
    content = GOOD_HEADER + "Ana,New,1970-01-01,taken@example.com,T1\n"
    report = run_import(write(content), "patients", dry_run=False)
    assert report.outcome == "rejected"
    assert "already belongs to another patient (record number T0)" in report.problems[0]["message"]


def test_a_study_whose_patient_does_not_exist_names_the_missing_key(write):
    content = "urgency_level,body_part,type,patient_id\nHIGH,CHEST,XRAY,99\n"
    report = run_import(write(content), "studies", dry_run=False)
    assert report.outcome == "rejected"
    assert report.problems[0]["message"] == "patient_id '99': no patient has this record number."
    assert count(Study) == 0


def test_studies_with_accession_numbers_update_by_number(write):
    run_import(DATA / "patients.csv", "patients", dry_run=False)
    head = "urgency_level,body_part,type,patient_id,study_date,accession_number\n"
    first = run_import(
        write(head + "LOW,CHEST,XRAY,1,2026-01-02,ACC-1\n"), "studies", dry_run=False
    )
    second = run_import(
        write(head + "HIGH,CHEST,XRAY,1,2026-01-02,ACC-1\n"), "studies", dry_run=False
    )
    assert first.created == 1 and second.counts["updated"] == 1
    study = db.session.scalars(select(Study)).one()
    assert study.urgency.value == "HIGH" and study.accession_number == "ACC-1"


def test_doctors_by_email_clinics_by_name_phones_merged_without_duplicates(write):
    clinic = make_clinic("Clínica Roma Norte")
    db.session.commit()
    head = "email,first_name,last_name,clinic,specialty,phones\n"
    first = run_import(
        write(
            head + "ana@clinic.example.com,Ana,Martínez,Clínica Roma Norte,radiology,"
            '"mobile:55 1234 5678;OFFICE:(55) 5208-1001;55 1234 5678"\n'
        ),
        "doctors",
        dry_run=False,
    )
    assert first.outcome == "committed", first.text_lines()
    doctor = db.session.scalars(select(Doctor)).one()
    assert doctor.clinic_id == clinic.id and doctor.specialties == [Specialty.RADIOLOGY]
    assert [(p.number, p.kind.value, p.is_primary) for p in doctor.phones] == [
        ("+525512345678", "MOBILE", True),
        ("+525552081001", "OFFICE", False),
    ]
    again = run_import(
        write(
            head + "ana@clinic.example.com,Ana,Martínez,Clínica Roma Norte,RADIOLOGY,"
            "55 5208 1001;FAX:55 5424 7299\n"
        ),
        "doctors",
        dry_run=False,
    )
    assert again.counts == {"created": 0, "updated": 1, "unchanged": 0, "rejected": 0}
    db.session.expire_all()
    assert sorted(p.number for p in doctor.phones) == [
        "+525512345678",
        "+525552081001",
        "+525554247299",
    ]
    entry = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "UPDATE")).one()
    assert entry.changes == {
        "phones": [
            ["+525512345678", "+525552081001"],
            ["+525512345678", "+525552081001", "+525554247299"],
        ]
    }
    same = run_import(
        write(head + "ana@clinic.example.com,Ana,Martínez,Clínica Roma Norte,,55 1234 5678\n"),
        "doctors",
        dry_run=False,
    )
    assert same.counts["unchanged"] == 1
    missing = run_import(
        write(head + "bo@clinic.example.com,Bo,B,Nowhere Clinic,,\n"), "doctors", dry_run=False
    )
    assert missing.outcome == "rejected"
    assert "clinic 'Nowhere Clinic' does not exist" in missing.problems[0]["message"]


def test_clinics_by_name(write):
    head = "name,city,phone\n"
    first = run_import(
        write(head + "Clínica Sur,Puebla,+52 55 5208 1000\n"), "clinics", dry_run=False
    )
    second = run_import(
        write(head + "Clínica Sur,Puebla,+52 55 5208 1000\n"), "clinics", dry_run=False
    )
    third = run_import(write(head + "Clínica Sur,Cholula,\n"), "clinics", dry_run=False)
    assert (first.created, second.unchanged, third.updated) == (1, 1, 1)


def test_a_record_edited_after_the_preview_is_reported_not_overwritten(write):
    run_import(DATA / "patients.csv", "patients", dry_run=False)
    changed = (DATA / "patients.csv").read_text().replace("Jessica", "Jessie")
    path = write(changed)
    preview = run_import(path, "patients")
    assert preview.counts["updated"] == 1
    with acting_as("colleague"):
        jessica = patient("2")
        jessica.first_name = "Jess"
        db.session.commit()
    report = run_import(
        path, "patients", dry_run=False, since=_parse(preview.started_at), expected=preview.counts
    )
    assert report.outcome == "changed"
    assert "changed since your preview" in report.message
    assert "changed by colleague" in report.problems[0]["message"]
    assert patient("2").first_name == "Jess"


def _parse(iso: str):  # noqa: ANN202
    from datetime import datetime

    return datetime.fromisoformat(iso)


def test_import_entries_keep_the_audit_chain_valid(write):
    make_doctor(phones=["55 1111 2222"])
    db.session.commit()
    run_import(DATA / "patients.csv", "patients", dry_run=False)
    text = (DATA / "patients.csv").read_text().replace("1955-04-10", "1955-04-11")
    run_import(write(text), "patients", dry_run=False)
    from backoffice.services.audit import verify_chain

    assert verify_chain(db.session.connection()).ok
