"""Writing a study's report: drafts, the signature that makes it the record, signed addenda.

Only the study's reporting doctor writes: a user of the doctor role linked to the Doctor record
the study is assigned to. A report is written once the study is PERFORMED; signing it moves the
study to REPORTED (through the workflow, like every move). What is signed is never changed:
corrections are addenda, each signed by its author when written. Everything is flushed in the
caller's transaction and audited (drafts as CREATE/UPDATE of the report, the signature as SIGN).
"""

from __future__ import annotations

from typing import Any

from flask_babel import format_datetime
from sqlalchemy.orm.exc import StaleDataError

from backoffice.auth.permissions import Perm, user_can
from backoffice.extensions import db
from backoffice.i18n import _
from backoffice.models import Doctor, Report, ReportAddendum, Study, StudyStatus, utcnow
from backoffice.services.workflow import StaleStudy, WorkflowError, make_move, stale_message
from backoffice.validation import blank_to_none

TEXT_MAX = 20_000
SECTIONS = ("findings", "impression", "recommendation")


class ReportError(WorkflowError):
    """The report cannot be written, signed or corrected now; the message says why."""


class StaleReport(ReportError):
    """The draft was saved by someone else since it was opened."""


def is_reporting_doctor(user: Any, study: Study) -> bool:
    """The user is the doctor this study is assigned to report (and holds the doctor role)."""
    return (
        user_can(user, Perm.REPORT)
        and getattr(user, "doctor_id", None) is not None
        and user.doctor_id == study.reporting_doctor_id
    )


def draft_of(study: Study) -> Report | None:
    """The report version being written (not signed yet), if any."""
    current = study.current_report
    return current if current is not None and not current.is_signed else None


def may_write(user: Any, study: Study) -> bool:
    """Whether ``user`` may write (and sign) the study's report now."""
    return is_reporting_doctor(user, study) and study.status == StudyStatus.PERFORMED


def may_add_addendum(user: Any, study: Study) -> bool:
    return (
        is_reporting_doctor(user, study)
        and study.status == StudyStatus.REPORTED
        and study.signed_report is not None
    )


def may_read_draft(user: Any, report: Report) -> bool:
    """A draft is the reporting doctor's work in progress: others see that it exists."""
    if report.is_signed:
        return True
    doctor_id = getattr(user, "doctor_id", None)
    return doctor_id is not None and doctor_id in (
        report.author_id,
        report.study.reporting_doctor_id,
    )


def signature(doctor: Doctor) -> str:
    """The signature as it is kept with what was signed: the name and the licence number."""
    name = str(doctor)
    return f"{name} ({doctor.licence_number})" if doctor.licence_number else name


def _why_not_writing(user: Any, study: Study) -> str | None:
    if not is_reporting_doctor(user, study):
        if study.reporting_doctor_id is None:
            return _("No doctor is assigned to report this study yet.")
        return _("Only the doctor assigned to report this study may write its report.")
    if study.status != StudyStatus.PERFORMED:
        return _(
            "The report is written once the study is performed; it is %(status)s.",
            status=study.status.label,
        )
    return None


def _clean(value: str | None, label: str) -> str | None:
    text = blank_to_none(value)
    if text is not None and len(text) > TEXT_MAX:
        raise ReportError(
            _("%(section)s is too long: at most %(n)d characters.", section=label, n=TEXT_MAX)
        )
    return text


def _section_labels() -> dict[str, str]:
    return {
        "findings": _("Findings"),
        "impression": _("Impression"),
        "recommendation": _("Recommendation"),
    }


def save_draft(
    study: Study,
    user: Any,
    *,
    findings: str | None,
    impression: str | None,
    recommendation: str | None,
    expected_version: int | None = None,
) -> Report:
    """Create or update the draft of the study's report (flushed).

    ``expected_version``: the draft's version the doctor opened (None for a new draft); a
    draft saved since by another session is refused (``StaleReport``), nothing overwritten.
    """
    why = _why_not_writing(user, study)
    if why:
        raise ReportError(why)
    labels = _section_labels()
    values = {
        "findings": _clean(findings, labels["findings"]),
        "impression": _clean(impression, labels["impression"]),
        "recommendation": _clean(recommendation, labels["recommendation"]),
    }
    report = draft_of(study)
    if report is None:
        if expected_version is not None:
            raise StaleReport(_stale_report_message(study))
        number = (study.current_report.number + 1) if study.current_report else 1
        report = Report(study=study, number=number, author_id=user.doctor_id, **values)
        db.session.add(report)
    else:
        if expected_version is not None and report.version != expected_version:
            raise StaleReport(_stale_report_message(study))
        for key, value in values.items():
            setattr(report, key, value)
        report.author_id = user.doctor_id
    try:
        db.session.flush()
    except StaleDataError:
        raise StaleReport(_stale_report_message(study)) from None
    return report


def _stale_report_message(study: Study) -> str:
    from backoffice.models import AuditEntry

    last = db.session.scalars(
        db.select(AuditEntry)
        .where(AuditEntry.entity == "report", AuditEntry.parent_id == str(study.id))
        .order_by(AuditEntry.id.desc())
        .limit(1)
    ).first()
    if last is not None:
        return _(
            "The report was saved by %(name)s at %(time)s since you opened it: nothing of "
            "yours was saved. Reload the report and make your change again.",
            name=last.actor_label or _("another user"),
            time=format_datetime(last.at, "short"),
        )
    return _(
        "The report was saved by someone else since you opened it: nothing of yours was saved. "
        "Reload the report and make your change again."
    )


def sign_report(
    study: Study,
    user: Any,
    *,
    findings: str | None,
    impression: str | None,
    recommendation: str | None,
    expected_version: int | None = None,
    expected_study_version: int | None = None,
) -> Report:
    """Save the draft as given, sign it, and move the study to REPORTED (flushed).

    Findings and impression are required; the recommendation may stay empty.
    """
    from backoffice.services.audit import audit_as

    if expected_study_version is not None and study.version != expected_study_version:
        raise StaleStudy(stale_message(study, expected_study_version))
    report = save_draft(
        study,
        user,
        findings=findings,
        impression=impression,
        recommendation=recommendation,
        expected_version=expected_version,
    )
    labels = _section_labels()
    missing = [labels[k] for k in ("findings", "impression") if not getattr(report, k)]
    if missing:
        raise ReportError(
            _("Write the %(sections)s before signing.", sections=_(" and ").join(missing))
        )
    doctor = db.session.get(Doctor, user.doctor_id)
    with audit_as("SIGN", {"report": report.number}):
        report.signed_at = utcnow()
        report.signed_by_id = user.id
        report.signed_as = signature(doctor)
        try:
            db.session.flush()
        except StaleDataError:
            raise StaleReport(_stale_report_message(study)) from None
    make_move(study, "report", user=user, via_report=True)
    return report


def add_addendum(study: Study, user: Any, text: str | None) -> ReportAddendum:
    """Add a signed correction to the study's signed report (flushed)."""
    if not is_reporting_doctor(user, study):
        raise ReportError(_("Only the doctor assigned to report this study may add an addendum."))
    report = study.signed_report
    if study.status != StudyStatus.REPORTED or report is None:
        raise ReportError(_("An addendum is added to a signed report."))
    body = blank_to_none(text)
    if body is None:
        raise ReportError(_("Write the addendum before signing it."))
    if len(body) > TEXT_MAX:
        raise ReportError(_("The addendum is too long: at most %(n)d characters.", n=TEXT_MAX))
    doctor = db.session.get(Doctor, user.doctor_id)
    addendum = ReportAddendum(
        report=report,
        text=body,
        author_id=doctor.id,
        signed_at=utcnow(),
        signed_by_id=user.id,
        signed_as=signature(doctor),
    )
    db.session.add(addendum)
    db.session.flush()
    return addendum
