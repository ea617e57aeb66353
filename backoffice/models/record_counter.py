"""Counters the application numbers records from: the MRN sequence and its SQLite stand-in."""

from __future__ import annotations

from sqlalchemy import BigInteger, Integer, Sequence, String
from sqlalchemy.orm import Mapped, mapped_column

from backoffice.extensions import db

# PostgreSQL: the MRN numbers come from this sequence (nextval is atomic and never hands a
# number out twice, even to transactions that roll back). SQLite has no sequences: there the
# ``record_counter`` row named "patient_mrn" is incremented in the writing transaction, which
# SQLite's single writer lock serialises (backoffice/services/record_numbers.py).
MRN_SEQUENCE = Sequence("patient_mrn_seq", metadata=db.metadata, start=1)


class RecordCounter(db.Model):
    """A named counter (SQLite's sequences); incremented with one atomic UPDATE."""

    __tablename__ = "record_counter"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), nullable=False, default=0
    )

    def __str__(self) -> str:
        return f"{self.name}: {self.value}"

    def __repr__(self) -> str:
        return f"<RecordCounter {self.name}={self.value}>"
