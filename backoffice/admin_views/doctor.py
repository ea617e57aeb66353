"""Admin view of doctors, with their phone numbers edited inline."""

from __future__ import annotations

import re
from typing import Any

from flask_admin.contrib.sqla.fields import InlineModelFormList
from flask_admin.contrib.sqla.filters import BooleanEqualFilter, EnumEqualFilter, FilterLike
from flask_admin.contrib.sqla.form import InlineModelConverter
from flask_admin.model.form import InlineFormAdmin
from sqlalchemy import func, literal, or_, select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from wtforms.validators import DataRequired

from backoffice.admin_views.base import SecuredModelView
from backoffice.admin_views.formatters import bullet_list, relation_link
from backoffice.extensions import db
from backoffice.i18n import _, _l
from backoffice.models import Clinic, Doctor, DoctorPhone, Specialty
from backoffice.validation import RuleError, blank_to_none, normalize_email, normalize_phone

_PHONE_LIKE = re.compile(r"^[\d\s()+.\-]*\d[\d\s()+.\-]*$")


class PhoneRowsField(InlineModelFormList):
    """The inline phone rows; rows marked for deletion are deleted first, in a flush of their own.

    The unit of work writes inserts and updates before deletes: a number removed from one row and
    typed into another (or added again as a new row) in the same save would otherwise collide
    with itself on the (doctor, number) unique key. This runs inside the view's save, after its
    checks and within its error handling.
    """

    def populate_obj(self, obj: Any, name: str) -> None:
        removed_ids = {
            str(entry.form.id.data)
            for entry in self.entries
            if self.should_delete(entry) and entry.form.id.data
        }
        if removed_ids:
            for phone in [p for p in getattr(obj, name) if str(p.id) in removed_ids]:
                getattr(obj, name).remove(phone)  # delete-orphan: deleted by this flush
            db.session.flush()
            self.entries = [e for e in self.entries if not self.should_delete(e)]
        super().populate_obj(obj, name)


class PhoneRowsConverter(InlineModelConverter):
    inline_field_list_type = PhoneRowsField


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


def _phones(view: Any, context: Any, model: Doctor, name: str) -> Any:
    return bullet_list([str(p) + (" ★" if p.is_primary else "") for p in model.phones])


def _phones_short(view: Any, context: Any, model: Doctor, name: str) -> str:
    return ", ".join(p.number for p in model.phones)


def _phones_export(dialect: str) -> Any:
    """All of a doctor's numbers in one cell, primary first: ``+525512345678; +525587654321``."""
    order = (DoctorPhone.is_primary.desc(), DoctorPhone.id)
    if dialect == "postgresql":
        return (
            select(func.string_agg(DoctorPhone.number, aggregate_order_by(literal("; "), *order)))
            .where(DoctorPhone.doctor_id == Doctor.id)
            .scalar_subquery()
        )
    ordered = (
        select(DoctorPhone.number)
        .where(DoctorPhone.doctor_id == Doctor.id)
        .order_by(*order)
        .correlate(Doctor)
        .subquery()
    )
    return select(func.group_concat(ordered.c.number, "; ")).scalar_subquery()


class DoctorView(SecuredModelView):
    column_list = ("last_name", "first_name", "specialty", "clinic", "email", "phones", "active")
    column_details_list = (
        "first_name",
        "last_name",
        "email",
        "specialty",
        "licence_number",
        "clinic",
        "phones",
        "active",
        "created_at",
        "updated_at",
    )
    column_default_sort = [("last_name", False), ("first_name", False), ("id", False)]
    column_sortable_list = (
        "last_name",
        "first_name",
        "specialty",
        "email",
        "active",
        ("clinic", "clinic.name"),
    )
    column_searchable_list = (
        "first_name",
        "last_name",
        "email",
        "licence_number",
        DoctorPhone.number,
    )
    column_filters = (
        FilterLike(Clinic.name, _l("Clinic")),
        EnumEqualFilter(Doctor.specialty, _l("Specialty"), options=Specialty.choices),
        BooleanEqualFilter(Doctor.active, _l("Active")),
    )
    column_select_related_list = (Doctor.clinic, Doctor.phones)
    column_labels = {
        "first_name": _l("First name"),
        "last_name": _l("Last name"),
        "email": _l("Email"),
        "specialty": _l("Specialty"),
        "licence_number": _l("Licence number"),
        "clinic": _l("Clinic"),
        "phones": _l("Phones"),
        "active": _l("Active"),
        "created_at": _l("Created"),
        "updated_at": _l("Updated"),
        "number": _l("Phone"),  # DoctorPhone.number, in the search box's placeholder
    }
    column_formatters = {"clinic": relation_link("clinic", "clinic"), "phones": _phones_short}
    column_formatters_detail = {"clinic": relation_link("clinic", "clinic"), "phones": _phones}
    form_columns = (
        "first_name",
        "last_name",
        "email",
        "specialty",
        "licence_number",
        "clinic",
        "active",
        "phones",
    )
    # Filters apply the model's rules before the form's "required" and "unique" checks run, so
    # "   " is reported as missing and a duplicate written differently is caught next to its field.
    form_args = {
        "first_name": {"filters": [blank_to_none], "validators": [DataRequired()]},
        "last_name": {"filters": [blank_to_none], "validators": [DataRequired()]},
        "email": {"filters": [normalize_email], "validators": [DataRequired()]},
        "licence_number": {"filters": [blank_to_none]},
    }
    form_ajax_refs = {
        "clinic": {"fields": ("name", "city"), "order_by": "name", "page_size": 20},
    }
    inline_models = (PhoneInlineForm(DoctorPhone),)
    # The bulk upload's column names; ``phones`` holds every number, separated by "; ".
    export_columns = (
        ("first_name", Doctor.first_name),
        ("last_name", Doctor.last_name),
        ("email", Doctor.email),
        ("specialty", Doctor.specialty),
        ("licence_number", Doctor.licence_number),
        ("clinic", (Doctor.clinic, Clinic.name)),
        ("active", Doctor.active),
        ("phones", _phones_export),
    )
    inline_model_form_converter = PhoneRowsConverter

    def init_search(self) -> bool:
        supported = super().init_search()
        # Phone numbers are searched through EXISTS (see _apply_search), not through a join: a
        # join repeats a doctor once per matching phone, which inflates the count and leaves
        # pages short.
        self._search_fields = [
            (column, path)
            for column, path in self._search_fields or []
            if column.table is not DoctorPhone.__table__
        ]
        return supported

    def _apply_search(
        self, query: Any, count_query: Any, joins: dict, count_joins: dict, search: str
    ) -> tuple[Any, Any, dict, dict]:
        """Every word must match a doctor column or one of the doctor's phones.

        A search that is a whole phone number ("(55) 1234-5678") looks for its stored E.164
        form; a word made of digits and phone punctuation matches phones by its digits.
        """
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
                if (clause := self._search_clause(column, term)) is not None
            ]
            if _PHONE_LIKE.match(term):
                digits = re.sub(r"\D", "", term)
                clauses.append(Doctor.phones.any(DoctorPhone.number.like(f"%{digits}%")))
            query = query.filter(or_(*clauses))
            if count_query is not None:
                count_query = count_query.filter(or_(*clauses))
        return query, count_query, joins, count_joins

    def validate_form(self, form: Any) -> bool:
        """The same number twice on one doctor is an error on the repeated row."""
        valid = super().validate_form(form)
        if not valid or not hasattr(form, "phones"):
            return valid
        seen: dict[str, int] = {}
        for index, entry in enumerate(form.phones.entries):
            sub = entry.form
            if form.phones.should_delete(entry):
                continue
            number = sub.number.data
            if not number:
                continue
            if number in seen:
                sub.number.errors = list(sub.number.errors) + [
                    _("This number is already listed for this doctor.")
                ]
                valid = False
            seen[number] = index
        return valid
