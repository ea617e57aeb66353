"""A patient's chart: the record, their studies, care team and history, in a fixed number of
statements whatever their size.

Study statuses and reports are another branch's work (i13-workflow). Until they land, the
chart shows a status only if ``Study`` has a ``status`` attribute, and counts every study as
open. The two hooks to wire when they do are ``study_status`` and ``open_study_clause`` (and
``STUDY_EAGER`` for a report relationship, so that reading it costs no statement per study).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, select, true
from sqlalchemy.orm import joinedload, selectinload

from backoffice.extensions import db
from backoffice.models import AuditEntry, CareTeamMember, Patient, Study, Urgency

# Statuses after which a study needs nothing more (i13-workflow's names); a study whose status
# is one of these is not "open".
CLOSED_STATUSES = ("REPORTED", "CANCELLED", "NO_SHOW")
# Studies listed on the chart (newest first); the studies list has the rest.
STUDIES_SHOWN = 50
HISTORY_SHOWN = 8


def study_status(study: Study) -> Any:
    """The study's status (a labelled code) once studies have one; None until then.

    WIRE (i13-workflow): ``Study.status`` is read here; nothing else on the chart needs to
    change for the status column to show it.
    """
    return getattr(study, "status", None)


def open_study_clause() -> Any:
    """SQL for "the study is still open". WIRE (i13-workflow): with ``Study.status``, a study is
    open until it is reported, cancelled or a no-show; until then every study is open."""
    status = getattr(Study, "status", None)
    if status is None:
        return true()
    return status.notin_(CLOSED_STATUSES)


def study_is_open(study: Study) -> bool:
    status = study_status(study)
    return status is None or getattr(status, "value", status) not in CLOSED_STATUSES


def _study_options() -> list[Any]:
    options: list[Any] = [joinedload(Study.ordering_doctor)]
    # WIRE (i13-workflow): a report relationship, loaded with the studies (one statement).
    report = getattr(Study, "report", None)
    if report is not None and hasattr(report, "property"):
        options.append(selectinload(report))
    return options


@dataclass
class Chart:
    """What the chart page shows."""

    patient: Patient
    studies: list[Study]
    studies_total: int
    open_high: int
    care_team: list[CareTeamMember]
    history: list[AuditEntry]

    @property
    def more_studies(self) -> int:
        return max(0, self.studies_total - len(self.studies))


def load_chart(patient_id: int) -> Chart | None:
    """The chart of one patient: six statements, whatever the number of studies, phones,
    links or entries (a test counts them)."""
    patient = db.session.scalars(
        select(Patient)
        .where(Patient.id == patient_id)
        .options(
            joinedload(Patient.clinic),
            joinedload(Patient.referring_doctor),
            selectinload(Patient.phones),
            selectinload(Patient.care_team).joinedload(CareTeamMember.doctor),
        )
        .execution_options(populate_existing=True)
    ).first()
    if patient is None:
        return None
    studies = list(
        db.session.scalars(
            select(Study)
            .where(Study.patient_id == patient.id)
            .options(*_study_options())
            .order_by(Study.study_date.desc(), Study.id.desc())
            .limit(STUDIES_SHOWN)
        ).unique()
    )
    total, open_high = db.session.execute(
        select(
            func.count(),
            func.count().filter(and_(Study.urgency == Urgency.HIGH, open_study_clause())),
        ).where(Study.patient_id == patient.id)
    ).one()
    from backoffice.services.audit import history

    entries = history("patient", patient.id, include_reads=False, limit=HISTORY_SHOWN)
    return Chart(
        patient=patient,
        studies=studies,
        studies_total=int(total),
        open_high=int(open_high),
        care_team=list(patient.care_team),
        history=entries,
    )
