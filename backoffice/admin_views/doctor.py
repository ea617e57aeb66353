"""Admin view of doctors, with their phone numbers edited inline."""

from __future__ import annotations

from typing import Any

from flask_admin.contrib.sqla.filters import BooleanEqualFilter, EnumEqualFilter, FilterLike
from flask_admin.model.form import InlineFormAdmin

from backoffice.admin_views.base import SecuredModelView
from backoffice.admin_views.formatters import bullet_list, relation_link
from backoffice.i18n import _, _l
from backoffice.models import Clinic, Doctor, DoctorPhone, Specialty
from backoffice.validation import normalize_email, normalize_phone


class PhoneInlineForm(InlineFormAdmin):
    form_columns = ("id", "number", "kind", "is_primary")
    form_label = _l("Phone")
    column_labels = {"number": _l("Number"), "kind": _l("Kind"), "is_primary": _l("Primary")}
    form_args = {
        "number": {
            "filters": [normalize_phone],
            "description": _l("With or without country code, e.g. +52 55 1234 5678"),
        }
    }


def _phones(view: Any, context: Any, model: Doctor, name: str) -> Any:
    return bullet_list([str(p) + (" ★" if p.is_primary else "") for p in model.phones])


def _phones_short(view: Any, context: Any, model: Doctor, name: str) -> str:
    return ", ".join(p.number for p in model.phones)


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
        "DoctorPhone.number": _l("Phone"),
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
    form_args = {"email": {"filters": [normalize_email]}}
    form_ajax_refs = {
        "clinic": {"fields": ("name", "city"), "order_by": "name", "page_size": 20},
    }
    inline_models = (PhoneInlineForm(DoctorPhone),)

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
