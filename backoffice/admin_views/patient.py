"""Admin view of patients; their studies show on the details page, newest first."""

from __future__ import annotations

from typing import Any

from flask import url_for
from flask_admin.contrib.sqla.filters import DateBetweenFilter, FilterLike
from flask_babel import format_date
from markupsafe import Markup, escape
from wtforms.validators import DataRequired

from backoffice.admin_views.base import SecuredModelView
from backoffice.admin_views.fields import rule_validator
from backoffice.admin_views.formatters import relation_link, urgency_badge
from backoffice.i18n import _, _l, ngettext
from backoffice.models import Clinic, Doctor, Patient
from backoffice.validation import blank_to_none, check_birth_date, normalize_email


def _studies(view: Any, context: Any, model: Patient, name: str) -> Markup:
    if not model.studies:
        return Markup('<span class="text-muted">{}</span>').format(_("No studies"))
    rows = Markup("").join(
        Markup(
            "<tr><td>{date}</td><td>{urgency}</td><td>{type}</td><td>{part}</td>"
            '<td>{desc}</td><td><a href="{url}">{open}</a></td></tr>'
        ).format(
            date=s.study_date.isoformat(),
            urgency=urgency_badge(s.urgency),
            type=s.study_type.label,
            part=s.body_part,
            desc=s.description or "",
            url=url_for("study.details_view", id=s.id),
            open=_("Open"),
        )
        for s in model.studies
    )
    head = Markup("").join(
        Markup("<th>{}</th>").format(h)
        for h in (_("Date"), _("Urgency"), _("Type"), _("Body part"), _("Description"), "")
    )
    return Markup(
        '<table class="table table-sm table-bordered mb-0 patient-studies">'
        "<thead><tr>{}</tr></thead><tbody>{}</tbody></table>"
    ).format(head, rows)


def _birth_date_with_age(view: Any, context: Any, model: Patient, name: str) -> Markup:
    if model.birth_date is None:
        return Markup("")
    age = model.age()
    return Markup("{} <small class='text-muted'>({})</small>").format(
        format_date(model.birth_date, "medium"),
        escape(ngettext("%(num)d year", "%(num)d years", age)),
    )


class PatientView(SecuredModelView):
    audit_reads = True  # opening a record is recorded: who looked at this patient
    column_list = (
        "mrn",
        "last_name",
        "first_name",
        "birth_date",
        "email",
        "referring_doctor",
        "clinic",
    )
    column_details_list = (
        "mrn",
        "first_name",
        "last_name",
        "birth_date",
        "email",
        "referring_doctor",
        "clinic",
        "studies",
        "created_at",
        "updated_at",
    )
    column_default_sort = [("last_name", False), ("first_name", False), ("id", False)]
    column_sortable_list = (
        "mrn",
        "last_name",
        "first_name",
        "birth_date",
        "email",
        ("clinic", "clinic.name"),
    )
    column_searchable_list = ("first_name", "last_name", "email", "mrn")
    # Names anywhere in the value, record numbers and emails from their start.
    column_search_prefix = ("email", "mrn")
    column_filters = (
        FilterLike(Clinic.name, _l("Clinic")),
        FilterLike(Doctor.last_name, _l("Referring doctor (last name)")),
        DateBetweenFilter(Patient.birth_date, _l("Birth date")),
    )
    column_select_related_list = (Patient.referring_doctor, Patient.clinic)
    column_labels = {
        "mrn": _l("MRN"),
        "first_name": _l("First name"),
        "last_name": _l("Last name"),
        "birth_date": _l("Birth date"),
        "email": _l("Email"),
        "referring_doctor": _l("Referring doctor"),
        "clinic": _l("Clinic"),
        "studies": _l("Studies"),
        "created_at": _l("Created"),
        "updated_at": _l("Updated"),
    }
    column_descriptions = {"mrn": _l("Medical record number in the system the patient came from")}
    column_formatters = {
        "referring_doctor": relation_link("doctor", "referring_doctor"),
        "clinic": relation_link("clinic", "clinic"),
    }
    column_formatters_detail = {
        **column_formatters,
        "studies": _studies,
        "birth_date": _birth_date_with_age,
    }
    form_columns = (
        "mrn",
        "first_name",
        "last_name",
        "birth_date",
        "email",
        "referring_doctor",
        "clinic",
    )
    # Filters apply the model's rules before the form's "required" and "unique" checks run, so a
    # duplicate written differently (" 1 ", "PEPE@...") is reported next to its field.
    form_args = {
        "mrn": {"filters": [blank_to_none]},
        "first_name": {"filters": [blank_to_none], "validators": [DataRequired()]},
        "last_name": {"filters": [blank_to_none], "validators": [DataRequired()]},
        "email": {"filters": [normalize_email]},
        "birth_date": {"validators": [rule_validator(check_birth_date)]},
    }
    # The bulk upload's column names (``id`` is the MRN there), so that an exported file can be
    # uploaded again and change nothing; related records by their natural keys.
    export_columns = (
        ("id", Patient.mrn),
        ("first_name", Patient.first_name),
        ("last_name", Patient.last_name),
        ("birth_date", Patient.birth_date),
        ("email", Patient.email),
        ("referring_doctor", (Patient.referring_doctor, Doctor.email)),
        ("clinic", (Patient.clinic, Clinic.name)),
    )
    form_ajax_refs = {
        "referring_doctor": {
            "fields": ("last_name", "first_name", "email"),
            "order_by": "last_name",
            "page_size": 20,
        },
        "clinic": {"fields": ("name", "city"), "order_by": "name", "page_size": 20},
    }
