"""Care-team links: their own filterable list, and the rows edited inline on the patient."""

from __future__ import annotations

from datetime import date
from typing import Any

from flask_admin.contrib.sqla.filters import DateBetweenFilter, EnumEqualFilter, FilterLike
from flask_admin.model.form import InlineFormAdmin
from sqlalchemy import select
from sqlalchemy.orm import joinedload
from wtforms.validators import DataRequired

from backoffice.admin_views.base import MODEL_ENDPOINT_PERMISSIONS, SecuredModelView
from backoffice.admin_views.filters import IdEqualFilter, record_options
from backoffice.admin_views.formatters import relation_link
from backoffice.auth.permissions import Perm, can
from backoffice.extensions import db
from backoffice.i18n import _, _l
from backoffice.models import CareTeamMember, CareTeamRole, CareTeamStatus, Doctor, Patient
from backoffice.services.care_team import TeamRow, team_problems
from backoffice.validation import blank_to_none

DOCTOR_FILTER = IdEqualFilter(
    CareTeamMember.doctor_id,
    _l("Doctor"),
    options=record_options(Doctor, (Doctor.last_name, Doctor.first_name, Doctor.id)),
)
PATIENT_FILTER = IdEqualFilter(CareTeamMember.patient_id, _l("Patient (record)"))
ROLE_FILTER = EnumEqualFilter(CareTeamMember.role, _l("Role"), options=CareTeamRole.choices)
STATUS_FILTER = EnumEqualFilter(CareTeamMember.status, _l("Status"), options=CareTeamStatus.choices)

LABELS = {
    "patient": _l("Patient"),
    "doctor": _l("Doctor"),
    "role": _l("Role"),
    "status": _l("Status"),
    "since": _l("Since"),
    "until": _l("Until"),
    "reason": _l("Reason"),
    "notes": _l("Notes"),
    "created_at": _l("Created"),
    "updated_at": _l("Updated"),
}
DOCTOR_LOOKUP = {
    "fields": ("last_name", "first_name", "email"),
    "order_by": "last_name",
    "page_size": 20,
}
FIELD_ARGS = {
    "reason": {
        "filters": [blank_to_none],
        "description": _l("Why this doctor is on the team, e.g. follow-up of a nodule"),
    },
    "notes": {"filters": [blank_to_none]},
    "since": {
        "description": _l("The day the doctor joined the team (YYYY-MM-DD)"),
        "default": date.today,  # a new link starts today unless someone says otherwise
    },
    "until": {"description": _l("Empty while the link lasts")},
}


class CareTeamInlineForm(InlineFormAdmin):
    """The patient form's care-team rows."""

    form_columns = ("id", "doctor", "role", "status", "since", "until", "reason", "notes")
    form_label = _l("Care-team doctor")
    column_labels = LABELS
    form_args = {**FIELD_ARGS, "doctor": {"validators": [DataRequired()]}}
    form_ajax_refs = {"doctor": DOCTOR_LOOKUP}


def rows_of(entries: list[Any], should_delete: Any) -> list[TeamRow]:
    """The team's rows as a form holds them (rows marked for removal left out)."""
    out = []
    for index, entry in enumerate(entries):
        if should_delete(entry):
            continue
        sub = entry.form
        doctor = sub.doctor.data
        out.append(
            TeamRow(
                index=index,
                doctor_id=getattr(doctor, "id", None),
                role=sub.role.data,
                status=sub.status.data,
                since=sub.since.data,
                until=sub.until.data,
            )
        )
    return out


def attach_problems(rows_field: Any) -> bool:
    """Check the inline care-team rows together; each problem is shown on its row's field."""
    problems = team_problems(rows_of(rows_field.entries, rows_field.should_delete))
    for index, field_name, message in problems:
        field = rows_field.entries[index].form[field_name]
        field.errors = list(field.errors) + [message]
    return not problems


class CareTeamView(SecuredModelView):
    """Every patient–doctor link, filterable by doctor, role, status and dates.

    Links are part of the patient's record: the roles that edit a patient add and change them
    (here or inline on the patient); deleting one is for admins (end it instead: status
    completed or inactive, with an end date).
    """

    endpoint_permissions = {**MODEL_ENDPOINT_PERMISSIONS, "create_view": Perm.EDIT}

    @property
    def can_create(self) -> bool:  # type: ignore[override]
        return can(Perm.EDIT)

    column_list = ("patient", "doctor", "role", "status", "since", "until", "reason")
    column_details_list = (
        "patient",
        "doctor",
        "role",
        "status",
        "since",
        "until",
        "reason",
        "notes",
        "created_at",
        "updated_at",
    )
    column_default_sort = [("updated_at", True), ("id", True)]
    column_sortable_list = (
        "role",
        "status",
        "since",
        "until",
        ("patient", "patient.last_name"),
        ("doctor", "doctor.last_name"),
        "updated_at",
    )
    column_searchable_list = (Patient.last_name, Patient.first_name, Patient.mrn, "reason")
    column_search_prefix = ("mrn",)
    column_filters = (
        DOCTOR_FILTER,
        FilterLike(Doctor.last_name, _l("Doctor (last name)")),
        ROLE_FILTER,
        STATUS_FILTER,
        DateBetweenFilter(CareTeamMember.since, _l("Since")),
        PATIENT_FILTER,
    )
    column_select_related_list = (CareTeamMember.patient, CareTeamMember.doctor)
    column_labels = {
        **LABELS,
        "last_name": _l("Patient last name"),
        "first_name": _l("Patient first name"),
        "mrn": _l("Patient MRN"),
    }
    column_formatters = {
        "patient": relation_link("patient", "patient"),
        "doctor": relation_link("doctor", "doctor"),
    }
    column_formatters_detail = column_formatters
    form_columns = ("patient", "doctor", "role", "status", "since", "until", "reason", "notes")
    form_args = {
        **FIELD_ARGS,
        "patient": {"validators": [DataRequired()]},
        "doctor": {"validators": [DataRequired()]},
    }
    form_ajax_refs = {
        "patient": {
            "fields": ("last_name", "first_name", "mrn", "email"),
            "prefix": ("mrn", "email"),
            "order_by": "last_name",
            "page_size": 20,
        },
        "doctor": DOCTOR_LOOKUP,
    }
    export_columns = (
        ("patient_id", (CareTeamMember.patient, Patient.mrn)),
        ("doctor", (CareTeamMember.doctor, Doctor.email)),
        ("role", CareTeamMember.role),
        ("status", CareTeamMember.status),
        ("since", CareTeamMember.since),
        ("until", CareTeamMember.until),
        ("reason", CareTeamMember.reason),
        ("notes", CareTeamMember.notes),
    )
    export_file_stem = "care-team"

    def validate_form(self, form: Any) -> bool:
        """This link checked with the patient's other links (one active referring doctor, a
        doctor once per role)."""
        valid = super().validate_form(form)
        if not valid or not hasattr(form, "role"):
            return valid
        patient = form.patient.data
        editing = getattr(form, "_obj", None)
        others: list[CareTeamMember] = []
        if patient is not None and getattr(patient, "id", None) is not None:
            query = (
                select(CareTeamMember)
                .where(CareTeamMember.patient_id == patient.id)
                .options(joinedload(CareTeamMember.doctor))
            )
            if editing is not None and editing.id is not None:
                query = query.where(CareTeamMember.id != editing.id)
            others = list(db.session.scalars(query.order_by(CareTeamMember.id)))
        rows = [
            TeamRow(
                i,
                o.doctor_id,
                o.role.value,
                o.status.value,
                o.since,
                o.until,
                name=_("The link with %(doctor)s", doctor=o.doctor),
            )
            for i, o in enumerate(others)
        ]
        doctor = form.doctor.data
        mine = TeamRow(
            len(rows),
            getattr(doctor, "id", None),
            form.role.data,
            form.status.data,
            form.since.data,
            form.until.data,
        )
        # This link last: a rule broken by two links is reported on the second one.
        problems = [p for p in team_problems([*rows, mine]) if p[0] == mine.index]
        for _index, field_name, message in problems:
            field = form[field_name]
            field.errors = list(field.errors) + [message]
        return not problems
