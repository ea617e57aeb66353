"""The studies upload and the workflow: rows without a status are PERFORMED (``performed_at`` from
their date); an optional ``status`` column sets a new study's status where the workflow allows
it, moves an existing one only by the steps a file can make, and an export (which carries the
status) uploaded again changes nothing.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from backoffice.extensions import db
from backoffice.models import AuditEntry, RoleName, Study, StudyEvent, StudyStatus
from backoffice.services.audit import acting_as
from backoffice.services.imports import run_import
from tests.factories import make_patient, make_study

S = StudyStatus


@pytest.fixture
def write(tmp_path):  # noqa: ANN001, ANN201
    counter = iter(range(1000))

    def _write(content: str) -> Path:
        path = tmp_path / f"studies{next(counter)}.csv"
        path.write_text(content, encoding="utf-8")
        return path

    return _write


def studies_of(mrn: str) -> list[Study]:
    db.session.expire_all()
    return list(
        db.session.scalars(
            select(Study).join(Study.patient).where(Study.patient.has(mrn=mrn)).order_by(Study.id)
        )
    )


def noon(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(hour=12, tzinfo=UTC)


def test_rows_without_a_status_are_performed_on_their_day(write):
    make_patient(mrn="IS-1")
    db.session.commit()
    path = write(
        "patient_id,urgency_level,type,body_part,study_date\n"
        "IS-1,HIGH,XRAY,CHEST,2026-01-15\n"
        "IS-1,LOW,CT,HEAD,2025-12-31\n"
    )
    with acting_as("tester"):
        report = run_import(path, "studies", dry_run=False)
    assert report.outcome == "committed", report.text_lines()
    studies = studies_of("IS-1")
    assert [(s.status, s.performed_at) for s in studies] == [
        (S.PERFORMED, noon("2026-01-15")),
        (S.PERFORMED, noon("2025-12-31")),
    ]
    assert all(s.ordered_at is None for s in studies)


def test_new_studies_in_the_statuses_a_file_can_say(write):
    make_patient(mrn="IS-2")
    db.session.commit()
    path = write(
        "patient_id,urgency_level,type,body_part,study_date,status\n"
        "IS-2,HIGH,XRAY,CHEST,2026-05-01,ordered\n"
        "IS-2,LOW,CT,HEAD,2026-05-02,SCHEDULED\n"
        "IS-2,LOW,MRI,KNEE,2026-05-03,\n"
        "IS-2,MID,PET,WHOLE_BODY,2026-05-04,NO_SHOW\n"
    )
    with acting_as("tester"):
        report = run_import(path, "studies", dry_run=False)
    assert report.outcome == "committed", report.text_lines()
    got = [(s.body_part, s.status) for s in studies_of("IS-2")]
    assert got == [
        ("CHEST", S.ORDERED),
        ("HEAD", S.SCHEDULED),
        ("KNEE", S.PERFORMED),
        ("WHOLE_BODY", S.NO_SHOW),
    ]
    ordered, scheduled, performed, no_show = studies_of("IS-2")
    assert ordered.ordered_at == noon("2026-05-01") and ordered.performed_at is None
    assert scheduled.scheduled_for == noon("2026-05-02")
    assert performed.performed_at == noon("2026-05-03")
    assert no_show.no_show_at == noon("2026-05-04")


def test_a_new_study_cannot_be_uploaded_cancelled_or_reported(write):
    make_patient(mrn="IS-3")
    db.session.commit()
    path = write(
        "patient_id,urgency_level,type,body_part,status\n"
        "IS-3,HIGH,XRAY,CHEST,CANCELLED\n"
        "IS-3,LOW,CT,HEAD,REPORTED\n"
        "IS-3,LOW,CT,KNEE,DONE\n"
    )
    report = run_import(path, "studies", dry_run=True)
    problems = {(p["line"], p["column"], p["value"]): p["message"] for p in report.problems}
    assert "a new study cannot be uploaded as Cancelled" in problems[(2, "status", "CANCELLED")]
    assert "a new study cannot be uploaded as Reported" in problems[(3, "status", "REPORTED")]
    assert "DONE" in problems[(4, "status", "DONE")]
    assert report.rejected == 3


def test_an_upload_moves_an_existing_study_by_the_steps_a_file_can_make(write, auth):
    operator = auth.as_role(RoleName.OPERATOR)
    patient = make_patient(mrn="IS-4")
    waiting = make_study(patient=patient, status=S.SCHEDULED, accession_number="IS-A")
    done = make_study(patient=patient, status=S.PERFORMED, accession_number="IS-B")
    db.session.commit()
    path = write(
        "patient_id,urgency_level,type,body_part,accession_number,status\n"
        "IS-4,LOW,XRAY,CHEST,IS-A,ARRIVED\n"
        "IS-4,LOW,XRAY,CHEST,IS-B,ORDERED\n"
    )
    with acting_as(operator.email, operator.id):
        preview = run_import(path, "studies", dry_run=True)
        assert preview.updated == 1 and preview.rejected == 1
        assert preview.problems[0]["line"] == 3
        assert preview.problems[0]["message"] == (
            "status ORDERED: the study is Performed, and an upload cannot move it from there. "
            "Moves are made on the study's page."
        )
        report = run_import(path, "studies", dry_run=False, skip_invalid=True)
    assert report.outcome == "committed", report.text_lines()
    db.session.expire_all()
    waiting = db.session.get(Study, waiting.id)
    assert waiting.status == S.ARRIVED and waiting.arrived_at is not None
    assert db.session.get(Study, done.id).status == S.PERFORMED
    event = db.session.scalar(select(StudyEvent).where(StudyEvent.study_id == waiting.id))
    assert (event.transition, event.from_status, event.to_status) == (
        "check_in",
        S.SCHEDULED,
        S.ARRIVED,
    )
    assert (event.user_id, event.actor_label) == (operator.id, operator.email)
    entry = db.session.scalars(
        select(AuditEntry).where(
            AuditEntry.entity == "study", AuditEntry.entity_id == str(waiting.id)
        )
    ).all()[-1]
    assert entry.changes["status"] == ["SCHEDULED", "ARRIVED"]


def test_a_move_the_file_cannot_make_names_the_ones_it_can(write):
    patient = make_patient(mrn="IS-5")
    make_study(patient=patient, status=S.SCHEDULED, accession_number="IS-C")
    db.session.commit()
    path = write(
        "patient_id,urgency_level,type,body_part,accession_number,status\n"
        "IS-5,LOW,XRAY,CHEST,IS-C,PERFORMED\n"
    )
    report = run_import(path, "studies", dry_run=True)
    assert report.problems[0]["message"] == (
        "status PERFORMED: the study is Scheduled; an upload can only move it to Checked in, "
        "No-show. Other moves are made on the study's page."
    )


def test_an_exported_file_with_every_status_uploads_again_unchanged(client, auth, tmp_path):
    auth.as_role(RoleName.ADMIN)
    patient = make_patient(mrn="IS-6")
    for i, status in enumerate(StudyStatus):
        make_study(
            patient=patient,
            status=status,
            accession_number=f"IS-R{i}",
            body_part=f"PART_{i}",
            study_date=date(2026, 1, 1 + i),
            cancel_reason="Duplicate" if status == S.CANCELLED else None,
        )
    db.session.commit()
    exported = client.get("/admin/study/export/csv/").get_data()
    header = exported.decode("utf-8-sig").splitlines()[0].split(",")
    assert "status" in header
    path = tmp_path / "studies.csv"
    path.write_bytes(exported)
    report = run_import(path, "studies", dry_run=False)
    assert report.problems == []
    assert (report.created, report.updated, report.rejected) == (0, 0, 0)
    assert report.unchanged == report.rows_total == len(StudyStatus)
