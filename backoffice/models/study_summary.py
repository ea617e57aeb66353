"""Each patient's most urgent rank and latest study date, kept by the database for the listing."""

from __future__ import annotations

from datetime import date

from sqlalchemy import Date, ForeignKey, Index, SmallInteger
from sqlalchemy.orm import Mapped, mapped_column

from backoffice.extensions import db


class PatientStudySummary(db.Model):
    """One row per patient who has at least one study, none for a patient without studies.

    Written only by triggers on ``study`` (migration 0008), whatever writes the studies: the
    ORM, the importer's set-based SQL, a restore or plain SQL. The application reads it to sort
    the patient–study listing by "highest urgency" and "most recent study" without an aggregate
    per patient. Not audited: it holds nothing that the studies' own entries do not.
    """

    __tablename__ = "patient_study_summary"

    patient_id: Mapped[int] = mapped_column(
        ForeignKey("patient.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    # The most urgent of the patient's studies as Urgency.rank has it (HIGH 0, MID 1, LOW 2).
    top_rank: Mapped[int] = mapped_column(SmallInteger, nullable=False)
    latest_date: Mapped[date] = mapped_column(Date, nullable=False)

    def __str__(self) -> str:
        return f"Patient #{self.patient_id}: rank {self.top_rank}, {self.latest_date.isoformat()}"

    def __repr__(self) -> str:
        return f"<PatientStudySummary {self.patient_id}>"


# The listing's two sorts read the page's patient ids from these in order (equal keys are then
# put in name order). "Highest urgency": most urgent first, then newest; "most recent study".
Index(
    "ix_patient_study_summary_urgency",
    PatientStudySummary.top_rank,
    PatientStudySummary.latest_date.desc(),
    PatientStudySummary.patient_id,
)
Index(
    "ix_patient_study_summary_recent",
    PatientStudySummary.latest_date.desc(),
    PatientStudySummary.patient_id,
)
