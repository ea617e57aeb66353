"""A patient's care team: the doctors who look after them, each in a role, for a period."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from sqlalchemy import Date, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship, validates

from backoffice.extensions import db
from backoffice.i18n import _l
from backoffice.models.base import LabeledEnum, TimestampMixin, VersionedMixin, enum_column
from backoffice.validation import blank_to_none

if TYPE_CHECKING:
    from backoffice.models.doctor import Doctor
    from backoffice.models.patient import Patient


class CareTeamRole(LabeledEnum):
    REFERRING = "REFERRING"
    PRIMARY = "PRIMARY"
    SPECIALIST = "SPECIALIST"
    REPORTING = "REPORTING"

    @classmethod
    def labels(cls) -> dict:
        return {
            cls.REFERRING: _l("Referring doctor"),
            cls.PRIMARY: _l("Primary care doctor"),
            cls.SPECIALIST: _l("Specialist"),
            cls.REPORTING: _l("Reporting doctor"),
        }


class CareTeamStatus(LabeledEnum):
    ACTIVE = "ACTIVE"
    INACTIVE = "INACTIVE"
    COMPLETED = "COMPLETED"

    @classmethod
    def labels(cls) -> dict:
        return {
            cls.ACTIVE: _l("Active"),
            cls.INACTIVE: _l("Inactive"),
            cls.COMPLETED: _l("Completed"),
        }


class CareTeamMember(TimestampMixin, VersionedMixin, db.Model):
    """One doctor on one patient's care team.

    The patient's referring doctor (``Patient.referring_doctor_id``, what the listing filters
    and the import's ``referring_doctor`` column use) is the doctor of their active REFERRING
    link: backoffice/services/care_team.py keeps the two in step, whichever side changes.
    """

    __tablename__ = "care_team_member"
    __table_args__ = (
        # A doctor's patients (the doctor's page, the list filtered by doctor), active first.
        Index("ix_care_team_member_doctor_status", "doctor_id", "status", "patient_id"),
        # A patient's team (the chart, the inline rows).
        Index("ix_care_team_member_patient", "patient_id", "role", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(
        ForeignKey("patient.id", ondelete="CASCADE"), nullable=False
    )
    doctor_id: Mapped[int] = mapped_column(
        ForeignKey("doctor.id", ondelete="RESTRICT"), nullable=False
    )
    role: Mapped[CareTeamRole] = mapped_column(
        enum_column(CareTeamRole), nullable=False, default=CareTeamRole.REFERRING
    )
    status: Mapped[CareTeamStatus] = mapped_column(
        enum_column(CareTeamStatus), nullable=False, default=CareTeamStatus.ACTIVE
    )
    reason: Mapped[str | None] = mapped_column(String(200))
    notes: Mapped[str | None] = mapped_column(Text)
    since: Mapped[date | None] = mapped_column(Date)
    until: Mapped[date | None] = mapped_column(Date)
    # The import batch that created the link (a referring doctor given in a patients file).
    import_batch_id: Mapped[int | None] = mapped_column(
        ForeignKey("import_batch.id", ondelete="SET NULL"), index=True
    )

    patient: Mapped[Patient] = relationship(back_populates="care_team")
    doctor: Mapped[Doctor] = relationship(back_populates="care_links")

    @validates("reason", "notes")
    def _validate_text(self, key: str, value: str | None) -> str | None:
        return blank_to_none(value)

    @validates("role")
    def _validate_role(self, key: str, value: object) -> CareTeamRole | None:
        return None if value is None else CareTeamRole.parse(value)

    @validates("status")
    def _validate_status(self, key: str, value: object) -> CareTeamStatus | None:
        return None if value is None else CareTeamStatus.parse(value)

    @property
    def is_active(self) -> bool:
        return self.status == CareTeamStatus.ACTIVE

    def __str__(self) -> str:
        role = self.role.label if isinstance(self.role, CareTeamRole) else (self.role or "")
        doctor = str(self.doctor) if self.doctor is not None else ""
        patient = self.patient.full_name if self.patient is not None else ""
        return " · ".join(part for part in (doctor, role, patient) if part) or (
            f"Care team link #{self.id}"
        )

    def __repr__(self) -> str:
        return f"<CareTeamMember {self.id}>"
