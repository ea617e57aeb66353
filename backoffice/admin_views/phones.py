"""Phone numbers edited inline (a doctor's, a patient's): rows, search by digits, the export cell.

One implementation for every owner of phones: the numbers go through the same rule
(``validation.normalize_phone``, E.164), the same inline rows, the same search and the same
export cell (``+525512345678; +525587654321``, primary first).
"""

from __future__ import annotations

import re
from typing import Any

import phonenumbers
from flask_admin.contrib.sqla.fields import InlineModelFormList
from flask_admin.contrib.sqla.form import InlineModelConverter
from flask_admin.model.form import InlineFormAdmin
from sqlalchemy import func, literal, or_, select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from wtforms.validators import DataRequired

from backoffice.admin_views.formatters import bullet_list
from backoffice.extensions import db
from backoffice.i18n import _l
from backoffice.validation import RuleError, normalize_phone, phone_region

PHONE_LIKE = re.compile(r"^[\d\s()+.\-]*\d[\d\s()+.\-]*$")


class InlineRowsField(InlineModelFormList):
    """Inline rows; rows marked for deletion are deleted first, in a flush of their own.

    The unit of work writes inserts and updates before deletes: a number removed from one row and
    typed into another (or added again as a new row) in the same save would otherwise collide
    with itself on the (owner, number) unique key. This runs inside the view's save, after its
    checks and within its error handling.
    """

    def populate_obj(self, obj: Any, name: str) -> None:
        removed_ids = {
            str(entry.form.id.data)
            for entry in self.entries
            if self.should_delete(entry) and entry.form.id.data
        }
        if removed_ids:
            for row in [r for r in getattr(obj, name) if str(r.id) in removed_ids]:
                getattr(obj, name).remove(row)  # delete-orphan: deleted by this flush
            db.session.flush()
            self.entries = [e for e in self.entries if not self.should_delete(e)]
        super().populate_obj(obj, name)


class InlineRowsConverter(InlineModelConverter):
    inline_field_list_type = InlineRowsField


# The name the views use: a doctor's and a patient's phones, and a patient's care team.
PhoneRowsConverter = InlineRowsConverter


class PhoneInlineForm(InlineFormAdmin):
    form_columns = ("id", "number", "kind", "is_primary")
    form_label = _l("Phone")
    column_labels = {"number": _l("Number"), "kind": _l("Kind"), "is_primary": _l("Primary")}
    form_args = {
        "number": {
            "filters": [normalize_phone],
            "validators": [DataRequired()],
            "description": _l("With or without country code, e.g. +52 55 1234 5678"),
        }
    }


def display_phone(number: str | None) -> str:
    """A stored E.164 number as people read it: national format for the default region
    ("55 1234 5678"), international for the others ("+1 212-555-0100")."""
    if not number:
        return ""
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return number
    region = phonenumbers.region_code_for_number(parsed)
    style = (
        phonenumbers.PhoneNumberFormat.NATIONAL
        if region == phone_region()
        else phonenumbers.PhoneNumberFormat.INTERNATIONAL
    )
    return phonenumbers.format_number(parsed, style)


def phones_national(view: Any, context: Any, model: Any, name: str) -> str:
    """The list's phone cell: the primary number first, as people read them."""
    return ", ".join(display_phone(p.number) for p in model.phones)


def phones_detail(view: Any, context: Any, model: Any, name: str) -> Any:
    return bullet_list([str(p) + (" ★" if p.is_primary else "") for p in model.phones])


def phones_short(view: Any, context: Any, model: Any, name: str) -> str:
    return ", ".join(p.number for p in model.phones)


def phones_export(phone_model: type, owner_model: type, owner_key: str):  # noqa: ANN201
    """Export source: all of an owner's numbers in one cell, primary first."""

    def source(dialect: str) -> Any:
        order = (phone_model.is_primary.desc(), phone_model.id)
        owner_column = getattr(phone_model, owner_key)
        if dialect == "postgresql":
            return (
                select(
                    func.string_agg(phone_model.number, aggregate_order_by(literal("; "), *order))
                )
                .where(owner_column == owner_model.id)
                .scalar_subquery()
            )
        ordered = (
            select(phone_model.number)
            .where(owner_column == owner_model.id)
            .order_by(*order)
            .correlate(owner_model)
            .subquery()
        )
        return select(func.group_concat(ordered.c.number, "; ")).scalar_subquery()

    return source


def repeated_numbers(form: Any, field_name: str, message: str) -> bool:
    """Mark every row that repeats a number of an earlier row; True when none does."""
    rows = getattr(form, field_name, None)
    if rows is None:
        return True
    valid = True
    seen: set[str] = set()
    for entry in rows.entries:
        sub = entry.form
        if rows.should_delete(entry):
            continue
        number = sub.number.data
        if not number:
            continue
        if number in seen:
            sub.number.errors = list(sub.number.errors) + [message]
            valid = False
        seen.add(number)
    return valid


class PhoneSearchMixin:
    """Every search word must match a column of the record or one of its phones.

    A search that is a whole phone number ("(55) 1234-5678") looks for its stored E.164 form; a
    word made of digits and phone punctuation matches phones by its digits, from
    ``phone_min_digits`` digits on (a patient's phones are searched from three digits: a
    trigram index serves that, not one or two digits over a million phones).
    Phones are searched through EXISTS, not a join: a join repeats a record once per matching
    phone, which inflates the count and leaves pages short.
    """

    phone_model: type
    #: the model's relationship to its phones ("phones")
    phone_relation_key = "phones"
    phone_min_digits = 1

    def init_search(self) -> bool:
        supported = super().init_search()  # type: ignore[misc]
        self._search_fields = [
            (column, path)
            for column, path in self._search_fields or []  # type: ignore[has-type]
            if column.table is not self.phone_model.__table__
        ]
        return supported

    def _apply_search(
        self, query: Any, count_query: Any, joins: dict, count_joins: dict, search: str
    ) -> tuple[Any, Any, dict, dict]:
        try:
            number = normalize_phone(search)
        except RuleError:
            number = None
        terms = [number] if number else search.split(" ")
        for term in terms:
            if not term:
                continue
            clauses = [
                clause
                for column, _path in self._search_fields
                if (clause := self._search_clause(column, term)) is not None  # type: ignore[attr-defined]
            ]
            if PHONE_LIKE.match(term):
                digits = re.sub(r"\D", "", term)
                if len(digits) >= self.phone_min_digits:
                    relation = getattr(self.model, self.phone_relation_key)  # type: ignore[attr-defined]
                    clauses.append(relation.any(self.phone_model.number.like(f"%{digits}%")))
            if not clauses:
                continue
            query = query.filter(or_(*clauses))
            if count_query is not None:
                count_query = count_query.filter(or_(*clauses))
        return query, count_query, joins, count_joins
