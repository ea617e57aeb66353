"""Reports: the medical record of a study, a draft until its doctor signs it, then read-only.

A signed report never changes, through any door: the application refuses it and triggers of
migration 0013b refuse an UPDATE or DELETE of a signed row underneath. Corrections are signed
addenda (each with its own time and author), equally fixed once written. A study reopened by
an admin gets a new version of its report (``number`` 2, 3, ...); the earlier ones stay.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship, validates

from backoffice.extensions import db
from backoffice.models.base import TimestampMixin, UTCDateTime, VersionedMixin, utcnow
from backoffice.validation import blank_to_none

if TYPE_CHECKING:
    from backoffice.models.doctor import Doctor
    from backoffice.models.study import Study
    from backoffice.models.user import User


class Report(TimestampMixin, VersionedMixin, db.Model):
    """One version of a study's report: findings, impression, recommendation."""

    __tablename__ = "report"
    __table_args__ = (UniqueConstraint("study_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # served by the unique (study_id, number) index
    study_id: Mapped[int] = mapped_column(
        ForeignKey("study.id", ondelete="RESTRICT"), nullable=False
    )
    number: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    findings: Mapped[str | None] = mapped_column(Text)
    impression: Mapped[str | None] = mapped_column(Text)
    recommendation: Mapped[str | None] = mapped_column(Text)
    # The reporting doctor who last wrote the draft (the signer once signed).
    author_id: Mapped[int] = mapped_column(
        ForeignKey("doctor.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    signed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    signed_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("user_account.id", ondelete="RESTRICT"), index=True
    )
    # The signature as it was given (name and licence at that moment): renaming the doctor
    # later does not change a signed document.
    signed_as: Mapped[str | None] = mapped_column(String(300))

    study: Mapped[Study] = relationship(back_populates="reports")
    author: Mapped[Doctor] = relationship()
    signed_by: Mapped[User | None] = relationship()
    addenda: Mapped[list[ReportAddendum]] = relationship(
        back_populates="report",
        order_by="(ReportAddendum.signed_at, ReportAddendum.id)",
        passive_deletes="all",
    )

    @validates("findings", "impression", "recommendation")
    def _validate_text(self, key: str, value: str | None) -> str | None:
        return blank_to_none(value)

    @property
    def is_signed(self) -> bool:
        return self.signed_at is not None

    def __str__(self) -> str:
        return f"Report {self.number} of study #{self.study_id}"

    def __repr__(self) -> str:
        return f"<Report {self.id}>"


class ReportAddendum(db.Model):
    """A correction to a signed report, signed when it is written, never changed after."""

    __tablename__ = "report_addendum"
    __table_args__ = (Index("ix_report_addendum_report_signed", "report_id", "signed_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    report_id: Mapped[int] = mapped_column(
        ForeignKey("report.id", ondelete="RESTRICT"), nullable=False
    )
    text: Mapped[str] = mapped_column(Text, nullable=False)
    author_id: Mapped[int] = mapped_column(
        ForeignKey("doctor.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    signed_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False, default=utcnow)
    signed_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("user_account.id", ondelete="RESTRICT"), index=True
    )
    signed_as: Mapped[str] = mapped_column(String(300), nullable=False)

    report: Mapped[Report] = relationship(back_populates="addenda")
    author: Mapped[Doctor] = relationship()

    @validates("text")
    def _validate_text(self, key: str, value: str | None) -> str | None:
        return blank_to_none(value)

    def __str__(self) -> str:
        return f"Addendum {self.id} to report #{self.report_id}"

    def __repr__(self) -> str:
        return f"<ReportAddendum {self.id}>"
