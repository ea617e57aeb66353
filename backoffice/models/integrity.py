"""Deletion rules: clinical data is never removed by a cascade nobody asked for."""

from __future__ import annotations

from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from backoffice.i18n import _, ngettext


class DeletionRefused(Exception):
    """Raised when a record cannot be deleted because other records still depend on it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _count(session: Session, column, value: int) -> int:  # noqa: ANN001
    return session.execute(select(func.count()).where(column == value)).scalar_one()


def deletion_blockers(session: Session, obj: object) -> str | None:
    """Say what prevents ``obj`` from being deleted, or None if nothing does."""
    from backoffice.models.care_team import CareTeamMember
    from backoffice.models.clinic import Clinic
    from backoffice.models.doctor import Doctor
    from backoffice.models.patient import Patient
    from backoffice.models.report import Report
    from backoffice.models.study import Study
    from backoffice.models.user import User

    with session.no_autoflush:
        if isinstance(obj, Clinic):
            doctors = _count(session, Doctor.clinic_id, obj.id)
            patients = _count(session, Patient.clinic_id, obj.id)
            parts = []
            if doctors:
                parts.append(ngettext("%(num)d doctor", "%(num)d doctors", doctors))
            if patients:
                parts.append(ngettext("%(num)d patient", "%(num)d patients", patients))
            if parts:
                return _(
                    "Clinic '%(name)s' cannot be deleted: %(what)s still belong to it. "
                    "Move or delete them first.",
                    name=obj.name,
                    what=_(" and ").join(parts),
                )
        elif isinstance(obj, Patient):
            studies = _count(session, Study.patient_id, obj.id)
            if studies:
                return _(
                    "This patient cannot be deleted: %(what)s still belong to them. "
                    "Delete the studies first.",
                    what=ngettext("%(num)d study", "%(num)d studies", studies),
                )
        elif isinstance(obj, Study):
            reports = _count(session, Report.study_id, obj.id)
            if reports:
                return _(
                    "This study cannot be deleted: it has a report, which is part of the "
                    "patient's medical record."
                )
        elif isinstance(obj, Doctor):
            referred = _count(session, Patient.referring_doctor_id, obj.id)
            ordered = _count(session, Study.ordering_doctor_id, obj.id)
            reporting = _count(session, Study.reporting_doctor_id, obj.id)
            written = _count(session, Report.author_id, obj.id)
            users = _count(session, User.doctor_id, obj.id)
            teams = _count(session, CareTeamMember.doctor_id, obj.id)
            parts = []
            if referred:
                parts.append(
                    ngettext("%(num)d referred patient", "%(num)d referred patients", referred)
                )
            if ordered:
                parts.append(ngettext("%(num)d ordered study", "%(num)d ordered studies", ordered))
            if reporting:
                parts.append(
                    ngettext("%(num)d study to report", "%(num)d studies to report", reporting)
                )
            if written:
                parts.append(ngettext("%(num)d report", "%(num)d reports", written))
            if users:
                parts.append(ngettext("%(num)d user login", "%(num)d user logins", users))
            if teams and not referred:
                parts.append(
                    ngettext("%(num)d patient's care team", "%(num)d patients' care teams", teams)
                )
            if parts:
                return _(
                    "Doctor %(name)s cannot be deleted: %(what)s still point to them. "
                    "Mark the doctor inactive instead.",
                    name=obj.full_name,
                    what=_(" and ").join(parts),
                )
    return None


def _refuse_blocked_deletes(session: Session, flush_context, instances) -> None:  # noqa: ANN001
    for obj in list(session.deleted):
        message = deletion_blockers(session, obj)
        if message:
            raise DeletionRefused(message)


def register_integrity_guards(session_cls: type[Session] | object = Session) -> None:
    """Check every ORM delete, whichever door it comes through (form, bulk action, command)."""
    if not event.contains(session_cls, "before_flush", _refuse_blocked_deletes):
        event.listen(session_cls, "before_flush", _refuse_blocked_deletes)
