"""How one search word matches one column: anywhere in a name, from the start in a key.

Names are searched anywhere in the value (``ILIKE '%word%'``, served on PostgreSQL by pg_trgm
GIN indexes). Keys people type from the start (medical record numbers, email addresses) are
matched from their first character (``lower(column) LIKE 'word%'``, served by a b-tree
``text_pattern_ops`` index): a trigram index on a unique key costs more to keep up than every
other index of the table together (a million-row import spent 10 of its 24 s there), and
nobody looks a record number up by its middle.

A word may say how it matches, as in Flask-Admin: ``^word`` from the start, ``=word`` the
whole value; both compare without regard to case.

What a search may cost is bounded where it is read (``bounded_search``): every word adds a
condition over every searched column, so a thousand words made one statement take 78 s.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import String, Unicode, cast, func
from sqlalchemy.sql.elements import ColumnElement

from backoffice.i18n import _

ESCAPE = "\\"
MAX_SEARCH_WORDS = 10
MAX_SEARCH_CHARS = 200


@dataclass(frozen=True)
class SearchText:
    """What is searched: the typed words, at most MAX_SEARCH_WORDS words and MAX_SEARCH_CHARS
    characters; ``cut`` when the typed text held more."""

    text: str
    cut: bool = False

    def message(self) -> str:
        """What the page says when the search was cut."""
        return _(
            "A search uses at most %(words)d words and %(chars)d characters: only "
            "“%(kept)s” was searched.",
            words=MAX_SEARCH_WORDS,
            chars=MAX_SEARCH_CHARS,
            kept=self.text,
        )


def bounded_search(raw: str | None) -> SearchText:
    """The search as it is run: words separated by single spaces, within the bounds."""
    words = (raw or "").split()
    cut = len(words) > MAX_SEARCH_WORDS
    text = " ".join(words[:MAX_SEARCH_WORDS])
    if len(text) > MAX_SEARCH_CHARS:
        text, cut = text[:MAX_SEARCH_CHARS].rstrip(), True
    return SearchText(text, cut)


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
