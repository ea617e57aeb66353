"""Admin view of clinics."""

from __future__ import annotations

from typing import Any

from flask_admin.contrib.sqla.filters import DateTimeBetweenFilter, FilterLike
from wtforms.validators import DataRequired, StopValidation

from backoffice.admin_views.base import SecuredModelView
from backoffice.admin_views.formatters import bullet_list, record_link
from backoffice.i18n import _, _l
from backoffice.models import Clinic, clinic_holding_name
from backoffice.validation import normalize_name, normalize_phone


def _name_not_taken(form: Any, field: Any) -> None:
    """One name, whatever its case or accents: say which clinic already holds it."""
    edited = getattr(form, "_obj", None)
    holder = clinic_holding_name(field.data, exclude_id=getattr(edited, "id", None))
    if holder is not None:
        # StopValidation: Flask-Admin's own "unique" check after this one would say it again.
        raise StopValidation(
            _(
                "The clinic “%(name)s” already has this name (names are compared without "
                "regard to case or accents).",
                name=holder.name,
            )
        )


def _doctors(view: Any, context: Any, model: Clinic, name: str) -> Any:
    return bullet_list([record_link("doctor", d) for d in model.doctors])


class ClinicView(SecuredModelView):
    column_list = ("name", "city", "phone", "address", "updated_at")
    column_details_list = (
        "name",
        "address",
        "city",
        "phone",
        "doctors",
        "created_at",
        "updated_at",
    )
    column_default_sort = [("name", False), ("id", False)]
    column_searchable_list = ("name", "city", "address")
    column_filters = (
        FilterLike(Clinic.city, _l("City")),
        DateTimeBetweenFilter(Clinic.created_at, _l("Created")),
    )
    column_labels = {
        "name": _l("Name"),
        "address": _l("Address"),
        "city": _l("City"),
        "phone": _l("Phone"),
        "doctors": _l("Doctors"),
        "created_at": _l("Created"),
        "updated_at": _l("Updated"),
    }
    column_formatters_detail = {"doctors": _doctors}
    form_columns = ("name", "address", "city", "phone")
    # The bulk upload's column names, so that an exported file can be uploaded again.
    export_columns = (
        ("name", Clinic.name),
        ("address", Clinic.address),
        ("city", Clinic.city),
        ("phone", Clinic.phone),
    )
    # The form applies the model's own rules first, so "unique" and "required" are checked on the
    # value that would be stored ("  Roma  Norte " is a duplicate of "Roma Norte", "   " is empty)
    # and reported next to the field instead of failing in the database.
    form_args = {
        "name": {"filters": [normalize_name], "validators": [DataRequired(), _name_not_taken]},
        "phone": {"filters": [normalize_phone]},
    }
