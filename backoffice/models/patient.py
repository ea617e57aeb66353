"""Patients, introduced by a referring doctor and optionally attached to a clinic."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from sqlalchemy import Date, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column, relationship, validates

from backoffice.extensions import db
from backoffice.i18n import _
from backoffice.models.base import TimestampMixin, VersionedMixin, prefix_index, trigram_index
from backoffice.validation import blank_to_none, check_birth_date, normalize_email

if TYPE_CHECKING:
    from backoffice.models.clinic import Clinic
    from backoffice.models.doctor import Doctor
    from backoffice.models.study import Study


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
        # Lists sorted by name: a deep page reads its ids from this narrow index alone.
        Index("ix_patient_name_order", "last_name", "first_name", "id"),
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
    mrn: Mapped[str | None] = mapped_column(String(64), unique=True)
    first_name: Mapped[str] = mapped_column(String(100), nullable=False)
    last_name: Mapped[str] = mapped_column(String(100), nullable=False)
    birth_date: Mapped[date] = mapped_column(Date, nullable=False)
    email: Mapped[str | None] = mapped_column(String(254), unique=True)
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

    @validates("mrn", "first_name", "last_name")
    def _validate_text(self, key: str, value: str | None) -> str | None:
        return blank_to_none(value)

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


# The MRN and the email are searched from their start (SQLite scans).
for _column in ("mrn", "email"):
    prefix_index(Patient.__table__, _column, f"ix_patient_{_column}_prefix")
