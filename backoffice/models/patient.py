"""Patients: identity, contact details, clinical alerts, phones and their care team."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Any

from sqlalchemy import Boolean, Date, ForeignKey, Index, String, Text, UniqueConstraint, false, true
from sqlalchemy.orm import Mapped, mapped_column, relationship, validates

from backoffice.extensions import db
from backoffice.i18n import _, _l
from backoffice.models.base import (
    LabeledEnum,
    TimestampMixin,
    VersionedMixin,
    enum_column,
    prefix_index,
    trigram_index,
)
from backoffice.models.doctor import PhoneKind
from backoffice.validation import (
    blank_to_none,
    check_birth_date,
    normalize_country,
    normalize_email,
    normalize_language,
    normalize_name,
    normalize_phone,
)

if TYPE_CHECKING:
    from backoffice.models.care_team import CareTeamMember
    from backoffice.models.clinic import Clinic
    from backoffice.models.doctor import Doctor
    from backoffice.models.study import Study


class AdministrativeSex(LabeledEnum):
    """Administrative sex as registration systems record it (HL7's four codes)."""

    FEMALE = "FEMALE"
    MALE = "MALE"
    OTHER = "OTHER"
    UNKNOWN = "UNKNOWN"

    @classmethod
    def labels(cls) -> dict:
        return {
            cls.FEMALE: _l("Female"),
            cls.MALE: _l("Male"),
            cls.OTHER: _l("Other"),
            cls.UNKNOWN: _l("Unknown"),
        }


# The columns an export of patients reads besides the name (see ix_patient_name_export).
NAME_ORDER_INCLUDE = ("mrn", "birth_date", "email", "referring_doctor_id", "clinic_id")


def age_on(birth_date: date | None, on: date | None = None) -> int | None:
    """Age in whole years on a given day (today by default); None without a birth date."""
    if birth_date is None:
        return None
    on = on or date.today()
    years = on.year - birth_date.year
    if (on.month, on.day) < (birth_date.month, birth_date.day):
        years -= 1
    return years


class Patient(TimestampMixin, VersionedMixin, db.Model):
    """A patient; ``mrn`` is the record number used by the systems we import from."""

    __tablename__ = "patient"
    # Names are searched anywhere (ILIKE '%term%'): trigram indexes, on PostgreSQL only. The
    # MRN and the email are searched from their start (see backoffice/services/search.py),
    # served by the prefix indexes declared after the class.
    __table_args__ = (
        trigram_index("patient", "first_name"),
        trigram_index("patient", "last_name"),
        # Lists sorted by name: a deep page reads its ids from this narrow index alone, the
        # active flag included (the list hides inactive patients by default).
        Index("ix_patient_name_order", "last_name", "first_name", "id", "active"),
        # An export of every patient reads its rows from this one, in order: no sort, no
        # table reads (too wide for deep pages: three times the pages to skip).
        Index(
            "ix_patient_name_export",
            "last_name",
            "first_name",
            "id",
            postgresql_include=list(NAME_ORDER_INCLUDE),
        ).ddl_if(dialect="postgresql"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # Required: a patient left without one by a form or an import row gets the next number of
    # the MRN sequence before the row is written (backoffice/services/record_numbers.py).
    mrn: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    first_name: Mapped[str] = mapped_column(String(100), nullable=False)
    last_name: Mapped[str] = mapped_column(String(100), nullable=False)
    birth_date: Mapped[date] = mapped_column(Date, nullable=False)
    sex: Mapped[AdministrativeSex] = mapped_column(
        enum_column(AdministrativeSex),
        nullable=False,
        default=AdministrativeSex.UNKNOWN,
        server_default=AdministrativeSex.UNKNOWN.value,
    )
    email: Mapped[str | None] = mapped_column(String(254), unique=True)
    # Address
    street: Mapped[str | None] = mapped_column(String(200))
    city: Mapped[str | None] = mapped_column(String(120), index=True)
    state: Mapped[str | None] = mapped_column(String(120))
    postal_code: Mapped[str | None] = mapped_column(String(20))
    country: Mapped[str | None] = mapped_column(String(2))  # ISO 3166 alpha-2
    preferred_language: Mapped[str | None] = mapped_column(String(8))  # ISO 639
    # Emergency contact
    emergency_contact_name: Mapped[str | None] = mapped_column(String(200))
    emergency_contact_relation: Mapped[str | None] = mapped_column(String(100))
    emergency_contact_phone: Mapped[str | None] = mapped_column(String(20))
    # Clinical alerts shown on the chart; the contrast flag matters before CT and MRI.
    allergies: Mapped[str | None] = mapped_column(Text)
    contrast_allergy: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false()
    )
    # An inactive patient is hidden from lists by default; deactivation never deletes.
    active: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=True, server_default=true()
    )
    referring_doctor_id: Mapped[int | None] = mapped_column(
        ForeignKey("doctor.id", ondelete="RESTRICT"), index=True
    )
    clinic_id: Mapped[int | None] = mapped_column(
        ForeignKey("clinic.id", ondelete="RESTRICT"), index=True
    )
    # The import batch that created the row (its history points there instead of one entry each).
    import_batch_id: Mapped[int | None] = mapped_column(
        ForeignKey("import_batch.id", ondelete="SET NULL"), index=True
    )

    referring_doctor: Mapped[Doctor | None] = relationship(foreign_keys=[referring_doctor_id])
    clinic: Mapped[Clinic | None] = relationship()
    studies: Mapped[list[Study]] = relationship(
        back_populates="patient",
        order_by="(Study.study_date.desc(), Study.id.desc())",
        passive_deletes="all",
    )
    phones: Mapped[list[PatientPhone]] = relationship(
        back_populates="patient",
        cascade="all, delete-orphan",
        order_by="(PatientPhone.is_primary.desc(), PatientPhone.id)",
        # One by one, as a doctor's phones: each deletion is audited and restorable.
        passive_deletes=False,
    )
    care_team: Mapped[list[CareTeamMember]] = relationship(
        back_populates="patient",
        cascade="all, delete-orphan",
        order_by="(CareTeamMember.status, CareTeamMember.role, CareTeamMember.id)",
        passive_deletes=False,
    )

    @validates(
        "mrn",
        "first_name",
        "last_name",
        "street",
        "city",
        "state",
        "emergency_contact_relation",
        "allergies",
    )
    def _validate_text(self, key: str, value: str | None) -> str | None:
        return blank_to_none(value)

    @validates("emergency_contact_name")
    def _validate_name(self, key: str, value: str | None) -> str | None:
        return normalize_name(value)

    @validates("postal_code")
    def _validate_postal_code(self, key: str, value: str | None) -> str | None:
        value = normalize_name(value)
        return value.upper() if isinstance(value, str) else value

    @validates("country")
    def _validate_country(self, key: str, value: str | None) -> str | None:
        return normalize_country(value)

    @validates("preferred_language")
    def _validate_language(self, key: str, value: str | None) -> str | None:
        return normalize_language(value)

    @validates("emergency_contact_phone")
    def _validate_phone(self, key: str, value: str | None) -> str | None:
        return normalize_phone(value)

    @validates("sex")
    def _validate_sex(self, key: str, value: object) -> AdministrativeSex | None:
        return None if value is None else AdministrativeSex.parse(value)

    @validates("email")
    def _validate_email(self, key: str, value: str | None) -> str | None:
        return normalize_email(value)

    @validates("birth_date")
    def _validate_birth_date(self, key: str, value: date | None) -> date | None:
        return check_birth_date(value)

    @property
    def full_name(self) -> str:
        return " ".join(p for p in (self.first_name, self.last_name) if p)

    def age(self, on: date | None = None) -> int | None:
        """Age in whole years on a given day (today by default)."""
        return age_on(self.birth_date, on)

    def __str__(self) -> str:
        name = self.full_name or f"Patient #{self.id}"
        return _("%(name)s (MRN %(mrn)s)", name=name, mrn=self.mrn) if self.mrn else name

    def __repr__(self) -> str:
        return f"<Patient {self.id}>"

    @classmethod
    def lookup_criteria(cls) -> Any:
        """What the boxes that pick a patient (a study's patient) offer: active patients."""
        return cls.active == true()

    @property
    def primary_phone(self) -> PatientPhone | None:
        return self.phones[0] if self.phones else None

    def form_alerts(self) -> list[str]:
        """What a form opened for this patient must say first (a study's create form)."""
        alerts = []
        if self.contrast_allergy:
            alerts.append(
                _(
                    "%(name)s is allergic to contrast agents: check before a CT or MRI with "
                    "contrast.",
                    name=self.full_name,
                )
            )
        if self.allergies:
            alerts.append(_("Allergies: %(what)s", what=self.allergies))
        return alerts

    @property
    def has_allergies(self) -> bool:
        return bool(self.allergies) or bool(self.contrast_allergy)


class PatientPhone(db.Model):
    """One phone number of a patient, stored in E.164 (the doctors' rule); deleted with them."""

    __tablename__ = "patient_phone"
    __table_args__ = (
        UniqueConstraint("patient_id", "number"),
        # Searched by digits anywhere in the number (``LIKE '%5512%'``), as a doctor's phones.
        trigram_index("patient_phone", "number"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(
        ForeignKey("patient.id", ondelete="CASCADE"), nullable=False, index=True
    )
    number: Mapped[str] = mapped_column(String(20), nullable=False)
    kind: Mapped[PhoneKind] = mapped_column(
        enum_column(PhoneKind), nullable=False, default=PhoneKind.MOBILE
    )
    is_primary: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)

    patient: Mapped[Patient] = relationship(back_populates="phones")

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
        return f"<PatientPhone {self.id}>"


# The MRN and the email are searched from their start (SQLite scans).
for _column in ("mrn", "email"):
    prefix_index(Patient.__table__, _column, f"ix_patient_{_column}_prefix")
