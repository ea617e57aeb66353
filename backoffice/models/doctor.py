"""Doctors and their phone numbers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Boolean, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship, validates

from backoffice.extensions import db
from backoffice.i18n import _l
from backoffice.models.base import (
    LabeledEnum,
    TimestampMixin,
    VersionedMixin,
    enum_column,
    trigram_index,
)
from backoffice.validation import blank_to_none, normalize_email, normalize_phone

if TYPE_CHECKING:
    from backoffice.models.clinic import Clinic


class Specialty(LabeledEnum):
    RADIOLOGY = "RADIOLOGY"
    GENERAL_PRACTICE = "GENERAL_PRACTICE"
    CARDIOLOGY = "CARDIOLOGY"
    ONCOLOGY = "ONCOLOGY"
    GYNECOLOGY = "GYNECOLOGY"
    PEDIATRICS = "PEDIATRICS"
    INTERNAL_MEDICINE = "INTERNAL_MEDICINE"
    OTHER = "OTHER"

    @classmethod
    def labels(cls) -> dict:
        return {
            cls.RADIOLOGY: _l("Radiology"),
            cls.GENERAL_PRACTICE: _l("General practice"),
            cls.CARDIOLOGY: _l("Cardiology"),
            cls.ONCOLOGY: _l("Oncology"),
            cls.GYNECOLOGY: _l("Gynecology"),
            cls.PEDIATRICS: _l("Pediatrics"),
            cls.INTERNAL_MEDICINE: _l("Internal medicine"),
            cls.OTHER: _l("Other"),
        }


class PhoneKind(LabeledEnum):
    MOBILE = "MOBILE"
    OFFICE = "OFFICE"
    HOME = "HOME"
    FAX = "FAX"

    @classmethod
    def labels(cls) -> dict:
        return {
            cls.MOBILE: _l("Mobile"),
            cls.OFFICE: _l("Office"),
            cls.HOME: _l("Home"),
            cls.FAX: _l("Fax"),
        }


class Doctor(TimestampMixin, VersionedMixin, db.Model):
    """A doctor working at one clinic, with any number of phones."""

    __tablename__ = "doctor"
    # Substring search (ILIKE '%term%') is served by trigram indexes, on PostgreSQL only.
    __table_args__ = tuple(
        trigram_index("doctor", column) for column in ("first_name", "last_name", "email")
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    first_name: Mapped[str] = mapped_column(String(100), nullable=False)
    last_name: Mapped[str] = mapped_column(String(100), nullable=False, index=True)
    email: Mapped[str] = mapped_column(String(254), unique=True, nullable=False)
    specialty: Mapped[Specialty] = mapped_column(
        enum_column(Specialty), nullable=False, default=Specialty.GENERAL_PRACTICE, index=True
    )
    licence_number: Mapped[str | None] = mapped_column(String(64), unique=True)
    clinic_id: Mapped[int] = mapped_column(
        ForeignKey("clinic.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    # The import batch that created the row (its history points there instead of one entry each).
    import_batch_id: Mapped[int | None] = mapped_column(
        ForeignKey("import_batch.id", ondelete="SET NULL"), index=True
    )

    clinic: Mapped[Clinic] = relationship(back_populates="doctors")
    phones: Mapped[list[DoctorPhone]] = relationship(
        back_populates="doctor",
        cascade="all, delete-orphan",
        order_by="(DoctorPhone.is_primary.desc(), DoctorPhone.id)",
        # Loaded and deleted one by one (not left to ON DELETE CASCADE) so that each phone's
        # deletion is in the audit trail and a restored doctor gets its phones back.
        passive_deletes=False,
    )

    @validates("first_name", "last_name", "licence_number")
    def _validate_text(self, key: str, value: str | None) -> str | None:
        return blank_to_none(value)

    @validates("email")
    def _validate_email(self, key: str, value: str | None) -> str | None:
        return normalize_email(value)

    @validates("specialty")
    def _validate_specialty(self, key: str, value: object) -> Specialty | None:
        return None if value is None else Specialty.parse(value)

    @property
    def full_name(self) -> str:
        return " ".join(p for p in (self.first_name, self.last_name) if p)

    def __str__(self) -> str:
        return f"Dr. {self.full_name}" if self.full_name else f"Doctor #{self.id}"

    def __repr__(self) -> str:
        return f"<Doctor {self.id}>"


class DoctorPhone(db.Model):
    """One phone number of a doctor, stored in E.164; deleted with its doctor."""

    __tablename__ = "doctor_phone"
    __table_args__ = (UniqueConstraint("doctor_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    doctor_id: Mapped[int] = mapped_column(
        ForeignKey("doctor.id", ondelete="CASCADE"), nullable=False, index=True
    )
    number: Mapped[str] = mapped_column(String(20), nullable=False, index=True)
    kind: Mapped[PhoneKind] = mapped_column(
        enum_column(PhoneKind), nullable=False, default=PhoneKind.MOBILE
    )
    is_primary: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)

    doctor: Mapped[Doctor] = relationship(back_populates="phones")

    @validates("number")
    def _validate_number(self, key: str, value: str | None) -> str | None:
        return normalize_phone(value)

    @validates("kind")
    def _validate_kind(self, key: str, value: object) -> PhoneKind | None:
        return None if value is None else PhoneKind.parse(value)

    def __str__(self) -> str:
        kind = self.kind.label if isinstance(self.kind, PhoneKind) else (self.kind or "")
        return f"{self.number} ({kind})" if kind else (self.number or "")

    def __repr__(self) -> str:
        return f"<DoctorPhone {self.id}>"
