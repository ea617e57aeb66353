"""Imaging studies ordered for a patient."""

from __future__ import annotations

from datetime import date, datetime
from typing import TYPE_CHECKING

from sqlalchemy import CheckConstraint, Date, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship, validates

from backoffice.extensions import db
from backoffice.i18n import _l
from backoffice.models.base import (
    LabeledEnum,
    TimestampMixin,
    UTCDateTime,
    VersionedMixin,
    enum_column,
    prefix_index,
    trigram_index,
    utcnow,
)
from backoffice.validation import blank_to_none, check_study_date, normalize_body_part

if TYPE_CHECKING:
    from backoffice.models.doctor import Doctor
    from backoffice.models.patient import Patient
    from backoffice.models.report import Report
    from backoffice.models.user import User


class Urgency(LabeledEnum):
    HIGH = "HIGH"
    MID = "MID"
    LOW = "LOW"

    @classmethod
    def labels(cls) -> dict:
        return {cls.HIGH: _l("High"), cls.MID: _l("Medium"), cls.LOW: _l("Low")}

    @property
    def rank(self) -> int:
        """0 for the most urgent; used to sort most urgent first."""
        return {"HIGH": 0, "MID": 1, "LOW": 2}[self.value]


class StudyType(LabeledEnum):
    XRAY = "XRAY"
    MAMMOGRAM = "MAMMOGRAM"
    CT = "CT"
    MRI = "MRI"
    ULTRASOUND = "ULTRASOUND"
    PET = "PET"
    OTHER = "OTHER"

    @classmethod
    def labels(cls) -> dict:
        return {
            cls.XRAY: _l("X-ray"),
            cls.MAMMOGRAM: _l("Mammogram"),
            cls.CT: _l("CT scan"),
            cls.MRI: _l("MRI"),
            cls.ULTRASOUND: _l("Ultrasound"),
            cls.PET: _l("PET scan"),
            cls.OTHER: _l("Other"),
        }


class StudyStatus(LabeledEnum):
    """Where a study is in its life (the moves between them: backoffice/services/workflow)."""

    ORDERED = "ORDERED"
    SCHEDULED = "SCHEDULED"
    ARRIVED = "ARRIVED"
    IN_PROGRESS = "IN_PROGRESS"
    PERFORMED = "PERFORMED"
    REPORTED = "REPORTED"
    CANCELLED = "CANCELLED"
    NO_SHOW = "NO_SHOW"

    @classmethod
    def labels(cls) -> dict:
        return {
            cls.ORDERED: _l("Ordered"),
            cls.SCHEDULED: _l("Scheduled"),
            cls.ARRIVED: _l("Checked in"),
            cls.IN_PROGRESS: _l("In progress"),
            cls.PERFORMED: _l("Performed"),
            cls.REPORTED: _l("Reported"),
            cls.CANCELLED: _l("Cancelled"),
            cls.NO_SHOW: _l("No-show"),
        }


# The study's own columns that a signed report describes: frozen while the study is REPORTED
# (the application refuses the change; a trigger of migration 0013 refuses it underneath).
CLINICAL_COLUMNS = (
    "patient_id",
    "urgency",
    "study_type",
    "body_part",
    "description",
    "study_date",
    "accession_number",
    "ordering_doctor_id",
    "reporting_doctor_id",
)


class Study(TimestampMixin, VersionedMixin, db.Model):
    """One imaging study of one patient."""

    __tablename__ = "study"
    __table_args__ = (
        Index("ix_study_patient_date", "patient_id", "study_date"),
        Index("ix_study_urgency_date", "urgency", "study_date"),
        Index("ix_study_type_date", "study_type", "study_date"),
        # The dashboard's charts read a date range and count by urgency, type and patient: with
        # every column they need in the index, they never touch the table (index-only scans).
        # The id second: the studies list (newest first: date, then id) reads a deep page's ids
        # from this index alone (30 ms instead of 460 ms for page 10,000 of three million).
        Index("ix_study_date_cover", "study_date", "id", "urgency", "study_type", "patient_id"),
        # Substring search on the body part and the description, served by trigram indexes
        # on PostgreSQL only (the accession number's prefix index is declared after the class).
        trigram_index("study", "body_part"),
        trigram_index("study", "description"),
        # The workflow: a status filter, and the worklists a later change builds on (expected
        # arrivals by scheduled time; overdue studies by urgency and order time; a doctor's
        # studies to report) read these instead of the whole table. The doctor scope reads the
        # reporting doctor's index (and the ordering doctor's, below).
        Index("ix_study_status_scheduled", "status", "scheduled_for"),
        Index("ix_study_status_urgency_ordered", "status", "urgency", "ordered_at"),
        Index("ix_study_reporting_status", "reporting_doctor_id", "status"),
        Index("ix_study_reported_at", "reported_at"),
        CheckConstraint("status <> 'CANCELLED' OR cancel_reason IS NOT NULL", name="cancel_reason"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(
        # served by ix_study_patient_date (patient_id is its leading column)
        ForeignKey("patient.id", ondelete="RESTRICT"),
        nullable=False,
    )
    urgency: Mapped[Urgency] = mapped_column(enum_column(Urgency), nullable=False)
    body_part: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    description: Mapped[str | None] = mapped_column(Text)
    study_type: Mapped[StudyType] = mapped_column(enum_column(StudyType), nullable=False)
    ordering_doctor_id: Mapped[int | None] = mapped_column(
        ForeignKey("doctor.id", ondelete="RESTRICT"), index=True
    )
    # Date ranges are served by ix_study_date_cover (study_date is its leading column).
    study_date: Mapped[date] = mapped_column(Date, nullable=False, default=date.today)
    accession_number: Mapped[str | None] = mapped_column(String(64), unique=True)
    # The import batch that created the row (its history points there instead of one entry each).
    import_batch_id: Mapped[int | None] = mapped_column(
        ForeignKey("import_batch.id", ondelete="SET NULL"), index=True
    )

    # The workflow (backoffice/services/workflow): the status and when each step happened; who
    # did each step is in ``events``. Rows that arrive without a status (the migration of older
    # rows, an upload without the column, plain SQL) are PERFORMED; a study ordered through
    # the back office starts ORDERED.
    status: Mapped[StudyStatus] = mapped_column(
        enum_column(StudyStatus),
        nullable=False,
        default=StudyStatus.ORDERED,
        server_default=StudyStatus.PERFORMED.value,
    )
    ordered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=utcnow)
    scheduled_for: Mapped[datetime | None] = mapped_column(UTCDateTime())
    arrived_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    performed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    reported_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancel_reason: Mapped[str | None] = mapped_column(String(500))
    no_show_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The doctor who reports the study (served by ix_study_reporting_status).
    reporting_doctor_id: Mapped[int | None] = mapped_column(
        ForeignKey("doctor.id", ondelete="RESTRICT")
    )

    patient: Mapped[Patient] = relationship(back_populates="studies")
    ordering_doctor: Mapped[Doctor | None] = relationship(foreign_keys=[ordering_doctor_id])
    reporting_doctor: Mapped[Doctor | None] = relationship(foreign_keys=[reporting_doctor_id])
    events: Mapped[list[StudyEvent]] = relationship(
        back_populates="study",
        order_by="(StudyEvent.at, StudyEvent.id)",
        passive_deletes=True,
    )
    reports: Mapped[list[Report]] = relationship(
        back_populates="study", order_by="Report.number", passive_deletes="all"
    )

    @validates("urgency")
    def _validate_urgency(self, key: str, value: object) -> Urgency | None:
        return None if value is None else Urgency.parse(value)

    @validates("study_type")
    def _validate_type(self, key: str, value: object) -> StudyType | None:
        return None if value is None else StudyType.parse(value)

    @validates("body_part")
    def _validate_body_part(self, key: str, value: str | None) -> str | None:
        return normalize_body_part(value)

    @validates("study_date")
    def _validate_study_date(self, key: str, value: date | None) -> date | None:
        return check_study_date(value)

    @validates("description", "accession_number", "cancel_reason")
    def _validate_text(self, key: str, value: str | None) -> str | None:
        return blank_to_none(value)

    @validates("status")
    def _validate_status(self, key: str, value: object) -> StudyStatus | None:
        return None if value is None else StudyStatus.parse(value)

    @property
    def current_report(self) -> Report | None:
        """The latest version of the study's report (a reopened study gets a new one)."""
        return self.reports[-1] if self.reports else None

    @property
    def signed_report(self) -> Report | None:
        """The latest signed version, if any."""
        signed = [r for r in self.reports if r.signed_at is not None]
        return signed[-1] if signed else None

    def __str__(self) -> str:
        kind = self.study_type.label if self.study_type else "?"
        when = self.study_date.isoformat() if self.study_date else ""
        return f"{kind} {self.body_part or ''} {when}".strip()

    def __repr__(self) -> str:
        return f"<Study {self.id}>"


class StudyEvent(db.Model):
    """One step of a study's life: which move, from and to which status, when, by whom, why.

    Written by the workflow service in the transaction of the move (the study's own row holds
    the time of each step; this says who took it). The audit trail records the same move as a
    TRANSITION entry of the study.
    """

    __tablename__ = "study_event"
    __table_args__ = (Index("ix_study_event_study_at", "study_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(
        ForeignKey("study.id", ondelete="CASCADE"), nullable=False
    )
    transition: Mapped[str] = mapped_column(String(16), nullable=False)
    from_status: Mapped[StudyStatus | None] = mapped_column(
        enum_column(StudyStatus, name="study_event_from")
    )
    to_status: Mapped[StudyStatus] = mapped_column(
        enum_column(StudyStatus, name="study_event_to"), nullable=False
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("user_account.id", ondelete="SET NULL"), index=True
    )
    actor_label: Mapped[str | None] = mapped_column(String(254))
    reason: Mapped[str | None] = mapped_column(String(500))
    scheduled_for: Mapped[datetime | None] = mapped_column(UTCDateTime())

    study: Mapped[Study] = relationship(back_populates="events")
    user: Mapped[User | None] = relationship()

    def __str__(self) -> str:
        return f"{self.transition} {self.from_status or '-'} -> {self.to_status}"

    def __repr__(self) -> str:
        return f"<StudyEvent {self.id} {self.transition}>"


# ``lower(accession_number) LIKE 'term%'``: searched from its start, as the MRN (see patient.py).
prefix_index(Study.__table__, "accession_number", "ix_study_accession_prefix")
