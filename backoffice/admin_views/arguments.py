"""Arguments of admin requests read defensively: record ids, pages and filter values.

Flask-Admin passes what it reads from the address to the database as it comes: ``?id=abc`` or
a 21-digit id, ``?page=-1`` and an enum filter's unknown code all ended in a 500. Every value
is checked here first; one that makes no sense reads as "no such record" or "no such filter",
which the pages already answer in words.
"""

from __future__ import annotations

from typing import Any

from flask_admin.contrib.sqla.filters import (
    FilterEqual,
    FilterGreater,
    FilterNotEqual,
    FilterSmaller,
)
from sqlalchemy import BigInteger, Integer

from backoffice.validation import whole_number

#: the deepest list page anyone can ask for (its offset must fit a 64-bit integer)
MAX_PAGE = 1_000_000
#: the longest value a filter box takes (a name, a date range, a code)
MAX_FILTER_CHARS = 200

# Flask-Admin's filters that compare their column with the typed value as it is.
COMPARING_FILTERS = (FilterEqual, FilterNotEqual, FilterGreater, FilterSmaller)
_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1


def parse_record_id(model: type, raw: Any) -> Any:
    """``raw`` as the key of a ``model`` record, or None when it cannot be one.

    An integer key must be digits that fit its column (``abc``, ``-1``, ``1.5`` or 21 digits
    are None); a model with another kind of key gets ``raw`` back unchanged.
    """
    keys = list(model.__mapper__.primary_key)  # type: ignore[attr-defined]
    if len(keys) != 1 or not isinstance(keys[0].type, Integer):
        return raw
    text = str(raw).strip() if raw is not None else ""
    return int(text) if _fits(text, keys[0].type) else None


def _fits(text: str, sql_type: Any) -> bool:
    """Whether ``text`` is a whole number (no sign) that an integer column of ``sql_type``
    holds."""
    return whole_number(text, _INT64_MAX if _is_big(sql_type) else _INT32_MAX) is not None


def _is_big(sql_type: Any) -> bool:
    if isinstance(sql_type, BigInteger):
        return True
    # BIGINT on PostgreSQL, INTEGER on SQLite (models.audit.BigId): both hold 64 bits.
    variants = getattr(sql_type, "_variant_mapping", {}) or {}
    return any(isinstance(v, BigInteger) for v in variants.values())


def bounded_page(page: int | None) -> int:
    """A list page number between 0 and MAX_PAGE (``?page=-1`` is the first page)."""
    return max(0, min(page or 0, MAX_PAGE))


def filter_value_usable(flt: Any, value: str) -> bool:
    """Whether a list filter can use ``value``: short enough, one of its options when it has
    a fixed list, and accepted by the filter's own parser (an unknown enum code raises
    KeyError there, which Flask-Admin does not expect)."""
    if len(value) > MAX_FILTER_CHARS:
        return False
    column_type = getattr(getattr(flt, "column", None), "type", None)
    compares = isinstance(flt, COMPARING_FILTERS)
    if compares and isinstance(column_type, Integer) and not _fits(value, column_type):
        return False  # a number column compared with text fails in the database
    options = _option_values(flt)
    if options is not None and value not in options:
        return False
    try:
        if not flt.validate(value):
            return False
        flt.clean(value)
    except Exception:  # noqa: BLE001 - any parser error means "this value cannot be used"
        return False
    return True


def _option_values(flt: Any) -> set[str] | None:
    options = getattr(flt, "options", None)
    if options is None:
        return None
    if callable(options):
        options = options()
    return {str(value) for value, _label in options}
