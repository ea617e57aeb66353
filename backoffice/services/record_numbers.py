"""Medical record numbers: the next MRN of the configured sequence, never handed out twice.

An MRN is the configured prefix and a zero-padded number (``MRN_PREFIX`` "MRN-", ``MRN_DIGITS``
6: ``MRN-000042``). The numbers come from the database, so that concurrent saves in several
processes never get the same one:

- PostgreSQL: the sequence ``patient_mrn_seq`` (``nextval`` is atomic and outside transactions:
  a number taken by a save that rolls back is skipped, never handed out again);
- SQLite: the ``record_counter`` row ``patient_mrn``, raised by one ``UPDATE ... RETURNING`` in
  the writing transaction (SQLite has one writer at a time, so two saves cannot read the same
  value; a rolled-back save takes its number back with it, and no patient ever held it).

A number whose MRN a patient already holds (typed in a form or imported in the same format) is
skipped. Every door that creates patients goes through here: the ORM hook below (forms, seed,
commands, restore of a record that had none) and the importer's set-based SQL
(backoffice/services/imports/plan.py), which uses ``format_sql`` and ``reserve``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from flask import current_app, has_app_context
from sqlalchemy import event, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from backoffice.models import Patient, RecordCounter

MRN_COUNTER = "patient_mrn"
MRN_SEQUENCE = "patient_mrn_seq"
DEFAULT_PREFIX = "MRN-"
DEFAULT_DIGITS = 6
# A number that keeps colliding is skipped; this many rounds means the configured format is
# the same as the one MRNs are typed in, densely (a configuration to change, not a loop to run).
MAX_ROUNDS = 50


def mrn_format() -> tuple[str, int]:
    """The configured (prefix, digits)."""
    prefix, digits = DEFAULT_PREFIX, DEFAULT_DIGITS
    if has_app_context():
        prefix = current_app.config.get("MRN_PREFIX", DEFAULT_PREFIX)
        digits = int(current_app.config.get("MRN_DIGITS", DEFAULT_DIGITS))
    return prefix, digits


def format_mrn(number: int, prefix: str | None = None, digits: int | None = None) -> str:
    default_prefix, default_digits = mrn_format()
    prefix = default_prefix if prefix is None else prefix
    digits = default_digits if digits is None else digits
    return f"{prefix}{number:0{digits}d}"


def reserve(connection: Connection, count: int) -> list[int]:
    """``count`` numbers no one else gets, in increasing order."""
    if count <= 0:
        return []
    if connection.dialect.name == "postgresql":
        rows = connection.execute(
            text("SELECT nextval('patient_mrn_seq') FROM generate_series(1, :n)"), {"n": count}
        ).scalars()
        return sorted(int(n) for n in rows)
    table = RecordCounter.__table__
    end = connection.execute(
        update(table)
        .where(table.c.name == MRN_COUNTER)
        .values(value=table.c.value + count)
        .returning(table.c.value)
    ).scalar_one_or_none()
    if end is None:  # a database built without the migration's row (create_all)
        connection.execute(table.insert().values(name=MRN_COUNTER, value=count))
        end = count
    return list(range(int(end) - count + 1, int(end) + 1))


def held(connection: Connection, mrns: Sequence[str]) -> set[str]:
    """The MRNs of ``mrns`` that patients already hold."""
    found: set[str] = set()
    column = Patient.__table__.c.mrn
    for start in range(0, len(mrns), 500):
        part = list(mrns[start : start + 500])
        found.update(connection.execute(select(column).where(column.in_(part))).scalars())
    return found


def allocate(connection: Connection, count: int, also_taken: Iterable[str] = ()) -> list[str]:
    """``count`` new MRNs: the sequence's next numbers, skipping MRNs already held."""
    taken = set(also_taken)
    out: list[str] = []
    for _round in range(MAX_ROUNDS):
        if len(out) >= count:
            return out
        candidates = [format_mrn(n) for n in reserve(connection, count - len(out))]
        clash = held(connection, candidates) | taken
        out.extend(c for c in candidates if c not in clash)
    raise RuntimeError("the MRN sequence keeps meeting numbers already in use: change MRN_PREFIX")


def format_sql(number_sql: str, dialect: str) -> str:
    """SQL that formats the integer expression ``number_sql`` as an MRN (bound parameters
    ``mrn_prefix`` and ``mrn_digits``); never truncates a number longer than the padding."""
    if dialect == "postgresql":
        as_text = f"CAST({number_sql} AS TEXT)"
        return (
            f"CAST(:mrn_prefix AS TEXT) || "
            f"lpad({as_text}, GREATEST(CAST(:mrn_digits AS INTEGER), length({as_text})), '0')"
        )
    return f":mrn_prefix || printf('%0' || :mrn_digits || 'd', {number_sql})"


# --------------------------------------------------------------------------- the ORM hook


def _assign_missing(session: Session, flush_context: Any, instances: Any) -> None:
    """New patients without an MRN get the next ones, in the order they were added."""
    missing = [obj for obj in session.new if isinstance(obj, Patient) and not obj.mrn]
    if not missing:
        return
    others = [obj.mrn for obj in session.new if isinstance(obj, Patient) and obj.mrn]
    numbers = allocate(session.connection(), len(missing), also_taken=others)
    for patient, mrn in zip(missing, numbers, strict=True):
        patient.mrn = mrn


def register_record_number_hooks(session_cls: type[Session] | Any = Session) -> None:
    if not event.contains(session_cls, "before_flush", _assign_missing):
        event.listen(session_cls, "before_flush", _assign_missing)


__all__ = [
    "MRN_COUNTER",
    "MRN_SEQUENCE",
    "allocate",
    "format_mrn",
    "format_sql",
    "mrn_format",
    "register_record_number_hooks",
    "reserve",
]
