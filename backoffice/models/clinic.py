"""Clinics: the sites where doctors work and patients are seen."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import FetchedValue, ForeignKey, Index, String, func, select
from sqlalchemy.orm import Mapped, mapped_column, relationship, validates

from backoffice.extensions import db
from backoffice.models.base import TimestampMixin, VersionedMixin
from backoffice.validation import blank_to_none, normalize_name

if TYPE_CHECKING:
    from backoffice.models.doctor import Doctor


class Clinic(TimestampMixin, VersionedMixin, db.Model):
    """A clinic; it cannot be deleted while doctors still belong to it."""

    __tablename__ = "clinic"
    __table_args__ = (Index("uq_clinic_name_key", "name_key", unique=True),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True, nullable=False)
    # The name folded by the database (bo_name_key: no accents, lower case, single spaces) and
    # kept by a trigger, whatever writes the row (migration 0012): one name, whatever its case
    # or accents. Never set by the app.
    name_key: Mapped[str | None] = mapped_column(
        String(200), server_default=FetchedValue(), server_onupdate=FetchedValue()
    )
    address: Mapped[str | None] = mapped_column(String(300))
    city: Mapped[str | None] = mapped_column(String(120), index=True)
    phone: Mapped[str | None] = mapped_column(String(32))
    # The import batch that created the row (its history points there instead of one entry each).
    import_batch_id: Mapped[int | None] = mapped_column(
        ForeignKey("import_batch.id", ondelete="SET NULL"), index=True
    )

    doctors: Mapped[list[Doctor]] = relationship(
        back_populates="clinic",
        order_by="(Doctor.last_name, Doctor.first_name, Doctor.id)",
        passive_deletes="all",
    )

    @validates("name")
    def _validate_name(self, key: str, value: str | None) -> str | None:
        return normalize_name(value)

    @validates("address", "city")
    def _validate_text(self, key: str, value: str | None) -> str | None:
        return blank_to_none(value)

    @validates("phone")
    def _validate_phone(self, key: str, value: str | None) -> str | None:
        from backoffice.validation import normalize_phone

        return normalize_phone(value)

    def __str__(self) -> str:
        return self.name or f"Clinic #{self.id}"

    def __repr__(self) -> str:
        return f"<Clinic {self.id} {self.name!r}>"


def clinic_holding_name(name: str | None, exclude_id: int | None = None) -> Clinic | None:
    """The clinic whose name is ``name`` whatever its case or accents (the database folds both
    with ``bo_name_key``), other than ``exclude_id``; None if there is none."""
    if not name:
        return None
    query = select(Clinic).where(Clinic.name_key == func.bo_name_key(name))
    if exclude_id is not None:
        query = query.where(Clinic.id != exclude_id)
    with db.session.no_autoflush:
        return db.session.scalars(query.order_by(Clinic.id).limit(1)).first()
