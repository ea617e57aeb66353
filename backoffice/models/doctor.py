"""Doctors: their phone numbers, specialties, languages and biographies."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import TYPE_CHECKING

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
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
from backoffice.validation import (
    blank_to_none,
    check_practising_since,
    normalize_email,
    normalize_language_list,
    normalize_phone,
)

if TYPE_CHECKING:
    from backoffice.models.care_team import CareTeamMember
    from backoffice.models.clinic import Clinic

# The UI languages a biography is written in; English is shown where the reader's is missing.
BIOGRAPHY_LANGUAGES = ("en", "es", "fr")


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
    licence_number: Mapped[str | None] = mapped_column(String(64), unique=True)
    qualification: Mapped[str | None] = mapped_column(String(200))
    # The year the doctor started practising; the years of experience follow from it.
    practising_since: Mapped[int | None] = mapped_column(Integer)
    # ISO 639 codes, sorted, separated by commas ("en,es"): a short list from a fixed
    # vocabulary, filtered with LIKE on ",code," (see DoctorView).
    languages: Mapped[str | None] = mapped_column(String(200))
    bio_en: Mapped[str | None] = mapped_column(Text)
    bio_es: Mapped[str | None] = mapped_column(Text)
    bio_fr: Mapped[str | None] = mapped_column(Text)
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
    specialty_rows: Mapped[list[DoctorSpecialty]] = relationship(
        back_populates="doctor",
        cascade="all, delete-orphan",
        order_by="DoctorSpecialty.specialty",
        lazy="selectin",
    )
    care_links: Mapped[list[CareTeamMember]] = relationship(
        back_populates="doctor", passive_deletes="all"
    )

    @validates(
        "first_name", "last_name", "licence_number", "qualification", "bio_en", "bio_es", "bio_fr"
    )
    def _validate_text(self, key: str, value: str | None) -> str | None:
        return blank_to_none(value)

    @validates("email")
    def _validate_email(self, key: str, value: str | None) -> str | None:
        return normalize_email(value)

    @validates("practising_since")
    def _validate_since(self, key: str, value: object) -> int | None:
        return check_practising_since(value)

    @validates("languages")
    def _validate_languages(self, key: str, value: object) -> str | None:
        return normalize_language_list(value)

    # -- specialties: rows of doctor_specialty, read and written as a list of codes ---------
    @property
    def specialties(self) -> list[Specialty]:
        """The doctor's specialties in the order of the Specialty codes."""
        order = list(Specialty)
        return sorted((row.specialty for row in self.specialty_rows), key=order.index)

    @specialties.setter
    def specialties(self, values: Iterable[Specialty | str] | None) -> None:
        """Keep the rows that stay, add the new ones, remove the others (never delete and
        insert the same row in one flush: the unit of work writes inserts first)."""
        wanted = {Specialty.parse(v) for v in (values or ()) if v}
        for row in list(self.specialty_rows):
            if row.specialty not in wanted:
                self.specialty_rows.remove(row)
        have = {row.specialty for row in self.specialty_rows}
        for specialty in sorted(wanted - have, key=list(Specialty).index):
            self.specialty_rows.append(DoctorSpecialty(specialty=specialty))

    @property
    def specialty_labels(self) -> str:
        return ", ".join(str(s.label) for s in self.specialties)

    @property
    def language_codes(self) -> list[str]:
        return self.languages.split(",") if self.languages else []

    def years_of_experience(self, on: date | None = None) -> int | None:
        """Whole years since the year the doctor started practising."""
        if self.practising_since is None:
            return None
        return max(0, (on or date.today()).year - self.practising_since)

    def biography(self, language: str | None) -> tuple[str | None, str | None]:
        """(text, language) of the biography in ``language``, else in English, else None."""
        for code in (language, "en"):
            if code in BIOGRAPHY_LANGUAGES:
                text = getattr(self, f"bio_{code}")
                if text:
                    return text, code
        return None, None

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


class DoctorSpecialty(db.Model):
    """One of a doctor's specialties (a doctor has one or more; deleted with the doctor).

    Recorded in the audit trail as the doctor's ``specialties`` field, not as records of their
    own (backoffice/services/audit.py).
    """

    __tablename__ = "doctor_specialty"

    doctor_id: Mapped[int] = mapped_column(
        ForeignKey("doctor.id", ondelete="CASCADE"), primary_key=True
    )
    specialty: Mapped[Specialty] = mapped_column(
        enum_column(Specialty), primary_key=True, index=True
    )

    doctor: Mapped[Doctor] = relationship(back_populates="specialty_rows")

    @validates("specialty")
    def _validate_specialty(self, key: str, value: object) -> Specialty | None:
        return None if value is None else Specialty.parse(value)

    def __str__(self) -> str:
        return str(self.specialty.label) if isinstance(self.specialty, Specialty) else ""

    def __repr__(self) -> str:
        return f"<DoctorSpecialty {self.doctor_id} {self.specialty}>"
