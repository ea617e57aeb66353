"""How one search word matches one column: anywhere in a name, from the start in a key.

Names are searched anywhere in the value (``ILIKE '%word%'``, served on PostgreSQL by pg_trgm
GIN indexes). Keys people type from the start (medical record numbers, email addresses) are
matched from their first character (``lower(column) LIKE 'word%'``, served by a b-tree
``text_pattern_ops`` index): a trigram index on a unique key costs more to keep up than every
other index of the table together (a million-row import spent 10 of its 24 s there), and
nobody looks a record number up by its middle.

A word may say how it matches, as in Flask-Admin: ``^word`` from the start, ``=word`` the
whole value; both compare without regard to case.
"""

from __future__ import annotations

from sqlalchemy import String, Unicode, cast, func
from sqlalchemy.sql.elements import ColumnElement

ESCAPE = "\\"


def escape_like(text: str) -> str:
    """``text`` with LIKE's wildcards taken literally (``50%`` finds ``50%``, not ``500``)."""
    return text.replace(ESCAPE, ESCAPE * 2).replace("%", ESCAPE + "%").replace("_", ESCAPE + "_")


def _as_text(column: ColumnElement) -> ColumnElement:
    # A string column is compared as it is (a cast would hide it from its index).
    if isinstance(getattr(column, "type", None), String):
        return column
    return cast(column, Unicode)


def contains(column: ColumnElement, word: str) -> ColumnElement:
    return _as_text(column).ilike(f"%{escape_like(word)}%", escape=ESCAPE)


def starts_with(column: ColumnElement, word: str) -> ColumnElement:
    return func.lower(_as_text(column)).like(f"{escape_like(word.lower())}%", escape=ESCAPE)


def equals(column: ColumnElement, word: str, prefix: bool = False) -> ColumnElement:
    if prefix:
        return func.lower(_as_text(column)).like(escape_like(word.lower()), escape=ESCAPE)
    return _as_text(column).ilike(escape_like(word), escape=ESCAPE)


def word_matches(column: ColumnElement, word: str, prefix: bool = False) -> ColumnElement | None:
    """The condition for ``word`` on ``column``; ``prefix`` columns match from the start.

    None for a word that says nothing (``^`` or ``=`` alone).
    """
    if word.startswith("="):
        return equals(column, word[1:], prefix) if word[1:] else None
    if word.startswith("^"):
        return starts_with(column, word[1:]) if word[1:] else None
    return starts_with(column, word) if prefix else contains(column, word)
