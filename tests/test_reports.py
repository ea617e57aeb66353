"""Reports: the reporting doctor writes a draft and signs it (the study becomes REPORTED); what is
signed is read-only through every door (forms, bulk actions, the importer, the audit log's
revert, plain SQL against the triggers); corrections are signed addenda; an admin's reopening
gives a new version and keeps the signed one; the printable page and the PDF show the record.
"""

from __future__ import annotations

import io
import re
from datetime import date

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from backoffice.extensions import db
from backoffice.models import (
    AuditEntry,
    Report,
    ReportAddendum,
    RoleName,
    Study,
    StudyStatus,
)
from backoffice.services.reports import ReportError, add_addendum, save_draft
from tests.conftest import AuthActions, csrf_token_from, make_user
from tests.factories import make_clinic, make_doctor, make_patient, make_study
from tests.test_admin_crud import flashes

S = StudyStatus
FINDINGS = "Small nodule in the right upper lobe, 4 mm, well defined."
IMPRESSION = "Benign-appearing nodule."


@pytest.fixture
def case():
    """A performed study of Jose Villalobos, to be reported by Dr. Núñez."""
    clinic = make_clinic("Clínica Roma Norte", address="Av. Álvaro Obregón 121", city="CDMX")
    reporter = make_doctor("María José", "Núñez", clinic=clinic, licence_number="CED-100203")
    orderer = make_doctor("Luis", "Hernández", clinic=clinic)
    patient = make_patient(
        "Jose", "Villalobos", mrn="1", birth_date=date(1955, 4, 10), clinic=clinic
    )
    study = make_study(
        patient=patient,
        status=S.PERFORMED,
        study_type="CT",
        body_part="CHEST",
        accession_number="ACC-77",
        ordering_doctor=orderer,
        reporting_doctor=reporter,
    )
    doctor_user = make_user("nunez@clinic.example.com", RoleName.DOCTOR, name="Dra. Núñez")
    doctor_user.doctor_id = reporter.id
    db.session.commit()
    return study, reporter, doctor_user


def as_user(app, email: str, *roles: RoleName, doctor_id: int | None = None) -> FlaskClient:
    """A client logged in as ``email`` (created with ``roles`` if it does not exist yet)."""
    from backoffice.models import User

    client = app.test_client()
    if db.session.scalar(select(User).where(User.email == email)) is None:
        user = make_user(email, *roles)
        user.doctor_id = doctor_id
        db.session.commit()
    assert AuthActions(client).login(email).status_code == 302
    return client


def said(response) -> str:
    """The flashed messages of a page, as one text."""
    return " ".join(flashes(response.get_data(as_text=True)))


def report_page(client, study_id: int, **args) -> str:
    response = client.get("/admin/study/report/", query_string={"id": study_id, **args})
    assert response.status_code == 200, response.status_code
    return response.get_data(as_text=True)


def submit_report(client, study_id: int, action: str, page: str | None = None, **text_fields):
    page = page or report_page(client, study_id)
    form = re.search(r'<form[^>]*id="report-form".*?</form>', page, re.S).group(0)
    data = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form))
    data |= {"findings": "", "impression": "", "recommendation": ""} | text_fields
    data["action"] = action
    return client.post("/admin/study/report/save/", data=data, follow_redirects=True)


def sign(app, study_id: int) -> FlaskClient:
    doctor = as_user(app, "nunez@clinic.example.com")
    done = submit_report(doctor, study_id, "sign", findings=FINDINGS, impression=IMPRESSION)
    assert "The report is signed" in said(done)
    return doctor


def test_the_reporting_doctor_drafts_then_signs(app, case):
    study, reporter, doctor_user = case
    doctor = as_user(app, "nunez@clinic.example.com")
    saved = submit_report(doctor, study.id, "save", findings="First look.")
    assert "Draft saved." in said(saved)
    page = report_page(doctor, study.id)
    assert "First look." in page
    # Signing asks for the findings and the impression.
    incomplete = submit_report(doctor, study.id, "sign", page, findings="First look.")
    assert "Write the Impression before signing." in said(incomplete)
    assert "First look." in incomplete.get_data(as_text=True)  # nothing typed is lost
    done = submit_report(
        doctor, study.id, "sign", findings=FINDINGS, impression=IMPRESSION, recommendation=""
    )
    assert "The report is signed; the study is reported." in said(done)
    db.session.expire_all()
    study = db.session.get(Study, study.id)
    assert study.status == S.REPORTED and study.reported_at is not None
    report = study.signed_report
    assert (report.findings, report.impression, report.recommendation) == (
        FINDINGS,
        IMPRESSION,
        None,
    )
    assert report.signed_by_id == doctor_user.id
    assert report.signed_as == "Dr. María José Núñez (CED-100203)"
    assert study.events[-1].transition == "report"
    # Every version is in the audit trail: the draft, its change, the signature.
    entries = db.session.scalars(
        select(AuditEntry)
        .where(AuditEntry.entity == "report", AuditEntry.entity_id == str(report.id))
        .order_by(AuditEntry.id)
    ).all()
    assert [e.action for e in entries] == ["CREATE", "UPDATE", "SIGN"]
    assert entries[0].changes["findings"] == [None, "First look."]
    assert entries[1].changes["findings"] == ["First look.", FINDINGS]
    assert entries[0].parent_entity == "study" and entries[0].parent_id == str(study.id)
    signed_page = report_page(doctor, study.id)
    assert 'id="report-form"' not in signed_page
    assert "Signed by Dr. María José Núñez (CED-100203)" in signed_page


def test_only_the_assigned_doctor_writes(app, case):
    study, reporter, _ = case
    other = make_doctor("Otro", "Doctor")
    study.ordering_doctor_id = other.id  # the other doctor sees the study: they ordered it
    db.session.commit()
    client = as_user(app, "otro@clinic.example.com", RoleName.DOCTOR, doctor_id=other.id)
    page = report_page(client, study.id)
    assert 'id="report-form"' not in page
    token = csrf_token_from(page)
    response = client.post(
        "/admin/study/report/save/",
        data={
            "id": str(study.id),
            "study_version": str(study.version),
            "findings": "Mine",
            "action": "save",
            "csrf_token": token,
        },
    )
    assert "Only the doctor assigned to report this study" in said(response)
    assert db.session.scalar(select(Report).where(Report.study_id == study.id)) is None
    # An operator holds no REPORT permission at all.
    operator = as_user(app, "op@clinic.example.com", RoleName.OPERATOR)
    assert operator.post("/admin/study/report/save/", data={"id": str(study.id)}).status_code in (
        400,
        403,
    )


def test_a_draft_is_the_doctors_own_until_signed(app, case):
    study, reporter, doctor_user = case
    save_draft(study, doctor_user, findings="Private thought", impression=None, recommendation=None)
    db.session.commit()
    operator = as_user(app, "op@clinic.example.com", RoleName.OPERATOR)
    page = report_page(operator, study.id)
    assert "Private thought" not in page
    details = operator.get(f"/admin/study/details/?id={study.id}").get_data(as_text=True)
    assert "A draft is being written by Dr. María José Núñez" in details
    assert operator.get(f"/admin/study/report/print/?id={study.id}&version=1").status_code == 404


def test_a_stale_draft_is_refused_and_keeps_the_text(app, case):
    study, reporter, doctor_user = case
    doctor = as_user(app, "nunez@clinic.example.com")
    submit_report(doctor, study.id, "save", findings="v1")
    first_tab = report_page(doctor, study.id)
    second_tab = report_page(doctor, study.id)
    submit_report(doctor, study.id, "save", second_tab, findings="from the second tab")
    stale = submit_report(doctor, study.id, "save", first_tab, findings="from the first tab")
    html = stale.get_data(as_text=True)
    assert "since you opened it: nothing of yours was saved" in " ".join(flashes(html))
    assert "from the first tab" in html
    db.session.expire_all()
    assert db.session.get(Study, study.id).current_report.findings == "from the second tab"


# --------------------------------------------------------------------------- read-only doors


def test_a_signed_report_refuses_the_report_form(app, case):
    study, _reporter, _ = case
    doctor = sign(app, study.id)
    db.session.expire_all()
    study = db.session.get(Study, study.id)
    report = study.signed_report
    token = csrf_token_from(report_page(doctor, study.id))
    response = doctor.post(
        "/admin/study/report/save/",
        data={
            "id": str(study.id),
            "study_version": str(study.version),
            "report_version": str(report.version),
            "findings": "Changed",
            "impression": "Changed",
            "action": "sign",
            "csrf_token": token,
        },
        follow_redirects=True,
    )
    assert "it is Reported" in said(response)
    db.session.expire_all()
    assert db.session.get(Report, report.id).findings == FINDINGS


def test_a_reported_study_refuses_its_edit_form(app, case):
    study, _reporter, _ = case
    sign(app, study.id)
    admin = as_user(app, "admin@clinic.example.com", RoleName.ADMIN)
    page = admin.get(f"/admin/study/edit/?id={study.id}", follow_redirects=True)
    assert "This study is reported" in said(page)
    response = admin.post(
        f"/admin/study/edit/?id={study.id}",
        data={
            "patient": str(study.patient_id),
            "study_date": "2026-01-01",
            "urgency": "HIGH",
            "study_type": "MRI",
            "body_part": "HEAD",
            "csrf_token": csrf_token_from(page.get_data(as_text=True)),
        },
    )
    assert response.status_code == 302
    db.session.expire_all()
    assert (
        db.session.get(Study, study.id).study_type,
        db.session.get(Study, study.id).body_part,
    ) == (
        "CT",
        "CHEST",
    )


def test_a_reported_study_refuses_bulk_moves_and_bulk_delete(app, case):
    study, _reporter, _ = case
    sign(app, study.id)
    admin = as_user(app, "admin@clinic.example.com", RoleName.ADMIN)
    page = admin.get("/admin/study/").get_data(as_text=True)
    versions = re.search(r'name="row_versions" value="([^"]*)"', page).group(1)
    token = csrf_token_from(page)
    moved = admin.post(
        "/admin/study/action/",
        data={
            "action": "check_in",
            "rowid": str(study.id),
            "row_versions": versions,
            "csrf_token": token,
        },
    )
    assert "0 of 1 studies done." in moved.get_data(as_text=True)
    deleted = admin.post(
        "/admin/study/action/",
        data={"action": "delete", "rowid": str(study.id), "csrf_token": token},
        follow_redirects=True,
    )
    assert "it has a report" in said(deleted)
    db.session.expire_all()
    assert db.session.get(Study, study.id).status == S.REPORTED


def test_a_reported_study_refuses_the_importer(app, case):
    from backoffice.services.imports import run_import

    study, _reporter, _ = case
    sign(app, study.id)
    csv = (
        "patient_id,urgency_level,type,body_part,accession_number,status\n"
        "1,HIGH,MRI,HEAD,ACC-77,REPORTED\n"
    )
    path = app.instance_path + "/reported-change.csv"
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(csv)
    report = run_import(path, "studies", dry_run=False)
    assert report.outcome == "rejected"
    assert "this study is reported" in report.problems[0]["message"]
    db.session.expire_all()
    assert db.session.get(Study, study.id).study_type == "CT"


def test_the_audit_logs_revert_cannot_change_a_signed_report(app, case):
    study, _reporter, _ = case
    sign(app, study.id)
    report = db.session.get(Study, study.id).signed_report
    update = db.session.scalar(
        select(AuditEntry).where(
            AuditEntry.entity == "report",
            AuditEntry.entity_id == str(report.id),
            AuditEntry.action == "UPDATE",
        )
    )
    from backoffice.services.restore import RestoreError, revert_update

    if update is not None:
        with pytest.raises(RestoreError, match="signed report cannot be changed"):
            revert_update(update.id)
    study_update = db.session.scalar(
        select(AuditEntry).where(
            AuditEntry.entity == "study",
            AuditEntry.entity_id == str(study.id),
            AuditEntry.action == "TRANSITION",
        )
    )
    with pytest.raises(RestoreError, match="This entry cannot be used for that"):
        revert_update(study_update.id)


RAW = {
    "update the report": "UPDATE report SET findings = 'forged' WHERE id = :report",
    "delete the report": "DELETE FROM report WHERE id = :report",
    "change the study": "UPDATE study SET body_part = 'HEAD' WHERE id = :study",
    "move it to another patient": "UPDATE study SET patient_id = :other WHERE id = :study",
    "delete the study": "DELETE FROM study WHERE id = :study",
    "update an addendum": "UPDATE report_addendum SET text = 'forged' WHERE id = :addendum",
    "delete an addendum": "DELETE FROM report_addendum WHERE id = :addendum",
}


@pytest.mark.parametrize("what", list(RAW))
def test_plain_sql_cannot_change_what_is_signed(app, case, what):
    """The triggers of migration 0013b, under every door of the application."""
    study, reporter, doctor_user = case
    sign(app, study.id)
    db.session.expire_all()
    study = db.session.get(Study, study.id)
    addendum = add_addendum(study, doctor_user, "Compared with the prior study: unchanged.")
    other = make_patient("Otra", "Paciente")
    db.session.commit()
    params = {
        "report": study.signed_report.id,
        "study": study.id,
        "addendum": addendum.id,
        "other": other.id,
    }
    connection = db.session.connection()
    with pytest.raises(IntegrityError) as refused, connection.begin_nested():
        connection.execute(text(RAW[what]), params)
    assert re.search(r"report_signed|report_addendum|study_reported", str(refused.value.orig))
    db.session.expire_all()
    assert db.session.get(Report, params["report"]).findings == FINDINGS
    assert db.session.get(ReportAddendum, addendum.id).text.startswith("Compared")
    assert db.session.get(Study, study.id).body_part == "CHEST"


def test_plain_sql_may_still_change_a_draft_and_the_status_of_a_reported_study(app, case):
    """What the triggers leave alone: drafts, and the workflow's own columns (a reopening)."""
    study, reporter, doctor_user = case
    draft = save_draft(study, doctor_user, findings="draft", impression=None, recommendation=None)
    db.session.commit()
    connection = db.session.connection()
    connection.execute(
        text("UPDATE report SET findings = 'draft 2' WHERE id = :r"), {"r": draft.id}
    )
    sign(app, study.id)
    connection = db.session.connection()
    connection.execute(text("UPDATE study SET status = 'PERFORMED' WHERE id = :s"), {"s": study.id})
    db.session.expire_all()
    assert db.session.get(Study, study.id).status == S.PERFORMED


def test_an_addendum_needs_a_signed_report_even_in_plain_sql(app, case):
    study, reporter, doctor_user = case
    draft = save_draft(study, doctor_user, findings="draft", impression=None, recommendation=None)
    db.session.commit()
    connection = db.session.connection()
    with pytest.raises(IntegrityError, match="report_addendum"), connection.begin_nested():
        connection.execute(
            text(
                "INSERT INTO report_addendum (report_id, text, author_id, signed_at, signed_as) "
                "VALUES (:r, 'x', :a, CURRENT_TIMESTAMP, 'x')"
            ),
            {"r": draft.id, "a": reporter.id},
        )


@pytest.mark.postgres_only
def test_postgresql_refuses_to_truncate_reports(app, case):
    if db.session.connection().dialect.name != "postgresql":
        pytest.skip("TRUNCATE is PostgreSQL's (SQLite has DELETE only, refused above)")
    study, _reporter, _ = case
    sign(app, study.id)
    connection = db.session.connection()
    for table in ("report", "report_addendum"):
        with pytest.raises(IntegrityError), connection.begin_nested():
            connection.execute(text(f"TRUNCATE {table} CASCADE"))


# --------------------------------------------------------------------------- addenda


def test_addenda_are_signed_corrections_each_with_its_time_and_author(app, case):
    study, reporter, doctor_user = case
    doctor = sign(app, study.id)
    page = report_page(doctor, study.id)
    token = csrf_token_from(page)
    doctor.post(
        "/admin/study/report/addendum/",
        data={"id": str(study.id), "text": "Correction: the nodule is 5 mm.", "csrf_token": token},
    )
    later = as_user(app, "nunez@clinic.example.com")
    response = later.post(
        "/admin/study/report/addendum/",
        data={
            "id": str(study.id),
            "text": "Second reading agrees.",
            "csrf_token": csrf_token_from(report_page(later, study.id)),
        },
        follow_redirects=True,
    )
    assert "The addendum is signed" in said(response)
    db.session.expire_all()
    addenda = db.session.get(Study, study.id).signed_report.addenda
    assert [(a.text, a.signed_as, a.signed_by_id) for a in addenda] == [
        ("Correction: the nodule is 5 mm.", "Dr. María José Núñez (CED-100203)", doctor_user.id),
        ("Second reading agrees.", "Dr. María José Núñez (CED-100203)", doctor_user.id),
    ]
    assert addenda[0].signed_at < addenda[1].signed_at
    assert db.session.get(Study, study.id).signed_report.findings == FINDINGS  # unchanged
    entries = db.session.scalars(
        select(AuditEntry).where(AuditEntry.entity == "report_addendum").order_by(AuditEntry.id)
    ).all()
    assert [(e.action, e.parent_id) for e in entries] == [("CREATE", str(study.id))] * 2
    page = report_page(later, study.id)
    assert page.index("Addendum 1") < page.index("Addendum 2")
    # Neither can be changed: an addendum has no form, and the database refuses it.
    assert 'name="addendum_id"' not in page


def test_an_addendum_needs_text_a_signed_report_and_the_reporting_doctor(case):
    study, reporter, doctor_user = case
    with pytest.raises(ReportError, match="added to a signed report"):
        add_addendum(study, doctor_user, "Too early")
    operator = make_user("op2@clinic.example.com", RoleName.OPERATOR)
    with pytest.raises(ReportError, match="Only the doctor assigned"):
        add_addendum(study, operator, "Not mine")


# --------------------------------------------------------------------------- reopening


def test_an_admin_reopens_with_a_reason_and_the_signed_version_stays(app, case):
    study, reporter, doctor_user = case
    sign(app, study.id)
    admin = as_user(app, "admin@clinic.example.com", RoleName.ADMIN)
    page = admin.get(f"/admin/study/details/?id={study.id}").get_data(as_text=True)
    assert 'name="transition" value="reopen"' in page
    fields = {
        "id": str(study.id),
        "transition": "reopen",
        "version": re.search(r'name="version" value="(\d+)"', page).group(1),
        "csrf_token": csrf_token_from(page),
    }
    no_reason = admin.post("/admin/study/transition/", data=fields, follow_redirects=True)
    assert "needs a reason" in said(no_reason)
    admin.post("/admin/study/transition/", data=fields | {"reason": "Wrong side reported"})
    db.session.expire_all()
    assert db.session.get(Study, study.id).status == S.PERFORMED
    assert db.session.get(Study, study.id).reported_at is None
    doctor = as_user(app, "nunez@clinic.example.com")
    page = report_page(doctor, study.id)
    assert "this is version 2 of its report" in page
    submit_report(
        doctor, study.id, "sign", page, findings="Left lung nodule.", impression="Benign."
    )
    db.session.expire_all()
    study = db.session.get(Study, study.id)
    assert study.status == S.REPORTED
    assert [(r.number, r.findings, r.is_signed) for r in study.reports] == [
        (1, FINDINGS, True),
        (2, "Left lung nodule.", True),
    ]
    assert study.events[-2].transition == "reopen"
    assert study.events[-2].reason == "Wrong side reported"
    old = doctor.get(f"/admin/study/report/print/?id={study.id}&version=1").get_data(as_text=True)
    assert "version 2 of its report replaces this one" in old


# --------------------------------------------------------------------------- printed forms


def test_the_printable_page_and_the_pdf(app, case):
    from pypdf import PdfReader

    study, _reporter, _ = case
    doctor = sign(app, study.id)
    printed = doctor.get(f"/admin/study/report/print/?id={study.id}")
    assert printed.status_code == 200
    html = printed.get_data(as_text=True)
    for expected in (
        "Clínica Roma Norte",
        "Av. Álvaro Obregón 121",
        "Jose Villalobos",
        "Apr 10, 1955",
        FINDINGS,
        "Dr. María José Núñez (CED-100203)",
        "size: A4",
    ):
        assert expected in html or expected in doctor.get("/static/css/report_print.css").get_data(
            as_text=True
        ), expected
    # The margin boxes: "Page N of M", in the reader's language, written as CSS strings.
    assert '@bottom-right { content: "Page " counter(page) " of " counter(pages); }' in html

    pdf = doctor.get(f"/admin/study/report/pdf/?id={study.id}")
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    assert pdf.headers["Content-Disposition"] == 'inline; filename="report-ACC-77-v1.pdf"'
    reader = PdfReader(io.BytesIO(pdf.data))
    words = " ".join(" ".join(page.extract_text().split()) for page in reader.pages)
    for expected in ("Clínica Roma Norte", "Jose Villalobos", "MRN", "Núñez", "Page 1 of 1"):
        assert expected in words, expected
    assert "Small nodule in the right upper lobe" in words


def test_a_long_report_runs_over_pages_with_their_numbers(app, case):
    from pypdf import PdfReader

    study, _reporter, doctor_user = case
    long_text = "\n".join(f"Line {i}: the finding goes on and on." for i in range(220))
    doctor = as_user(app, "nunez@clinic.example.com")
    submit_report(doctor, study.id, "sign", findings=long_text, impression="See findings.")
    reader = PdfReader(io.BytesIO(doctor.get(f"/admin/study/report/pdf/?id={study.id}").data))
    pages = len(reader.pages)
    assert pages >= 3
    last = " ".join(reader.pages[-1].extract_text().split())
    assert f"Page {pages} of {pages}" in last
    assert "Clínica Roma Norte" in " ".join(reader.pages[1].extract_text().split())


def test_the_pdf_in_spanish(app, case):
    from pypdf import PdfReader

    study, _reporter, _ = case
    doctor = sign(app, study.id)
    doctor.post(
        "/language",
        data={"lang": "es", "csrf_token": csrf_token_from(report_page(doctor, study.id))},
    )
    reader = PdfReader(io.BytesIO(doctor.get(f"/admin/study/report/pdf/?id={study.id}").data))
    words = " ".join(reader.pages[0].extract_text().split())
    assert "Página 1 de 1" in words
    assert "Hallazgos" in words
