"""Admin view of patients: the list (active patients by default), the form, and the chart."""

from __future__ import annotations

from typing import Any

from flask import abort, current_app, g, request, url_for
from flask_admin import expose
from flask_admin.contrib.sqla.filters import (
    BooleanEqualFilter,
    DateBetweenFilter,
    EnumEqualFilter,
    FilterLike,
)
from flask_admin.form import Select2Field, rules
from flask_babel import format_date, format_datetime
from markupsafe import Markup, escape
from sqlalchemy import select, true
from wtforms import StringField
from wtforms.validators import (
    AnyOf,
    DataRequired,
    Length,
    Optional,
    StopValidation,
    ValidationError,
)

from backoffice.admin_views.base import SecuredModelView
from backoffice.admin_views.care_team import (
    PATIENT_FILTER,
    CareTeamInlineForm,
    attach_problems,
)
from backoffice.admin_views.fields import CodeSelectField, FieldRow, RenderedByHiddenTag
from backoffice.admin_views.filters import ActiveFilter, filtered_list_url
from backoffice.admin_views.formatters import relation_link, urgency_badge
from backoffice.admin_views.phones import (
    PhoneInlineForm,
    PhoneRowsConverter,
    PhoneSearchMixin,
    display_phone,
    phones_detail,
    phones_export,
    phones_national,
    repeated_numbers,
)
from backoffice.auth.permissions import Perm, can
from backoffice.extensions import db
from backoffice.i18n import _, _l, ngettext
from backoffice.models import (
    AdministrativeSex,
    CareTeamMember,
    CareTeamRole,
    Clinic,
    Doctor,
    Patient,
    PatientPhone,
    utcnow,
)
from backoffice.services.chart import load_chart, study_is_open, study_status
from backoffice.services.record_numbers import format_mrn
from backoffice.validation import (
    blank_to_none,
    check_birth_date,
    normalize_email,
    normalize_name,
    normalize_phone,
)
from backoffice.vocabularies import country_choices, country_name, language_choices, language_name

ACTIVE_FILTER = ActiveFilter(Patient.active, _l("Status"))
SEX_FILTER = EnumEqualFilter(Patient.sex, _l("Sex"), options=AdministrativeSex.choices)
CITY_FILTER = FilterLike(Patient.city, _l("City"))


def _birth_date_with_age(view: Any, context: Any, model: Patient, name: str) -> Markup:
    if model.birth_date is None:
        return Markup("")
    age = model.age()
    return Markup("{} <small class='text-muted'>({})</small>").format(
        format_date(model.birth_date, "medium"),
        escape(ngettext("%(num)d year", "%(num)d years", age)),
    )


def _birth_date_not_out_of_bounds(form: Any, field: Any) -> None:
    try:
        check_birth_date(field.data)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def _mrn_kept(form: Any, field: Any) -> None:
    """On edit the MRN cannot be emptied: uploads find the patient by it."""
    if getattr(form, "_obj", None) is not None and not field.data:
        # StopValidation: the Optional() that follows would clear a ValidationError.
        raise StopValidation(
            _("The MRN identifies the patient in uploads: it cannot be removed, only changed.")
        )


def _mrn_free(form: Any, field: Any) -> None:
    """Another patient's MRN is refused, naming that patient (every role may open them)."""
    if not field.data:
        return
    holder = db.session.scalars(select(Patient).where(Patient.mrn == field.data)).first()
    editing = getattr(form, "_obj", None)
    if holder is not None and (editing is None or holder.id != editing.id):
        raise ValidationError(
            _(
                "MRN %(mrn)s already belongs to %(name)s.",
                mrn=field.data,
                name=holder.full_name,
            )
        )


def _country(view: Any, context: Any, model: Patient, name: str) -> str:
    return country_name(model.country)


def _language(view: Any, context: Any, model: Patient, name: str) -> str:
    return language_name(model.preferred_language)


def default_country() -> str | None:
    return current_app.config.get("PHONE_DEFAULT_REGION")


def history_text(entry: Any, labels: dict[str, Any]) -> str:
    """One line of the chart's history, in words ("Changed email, phones")."""
    changes = entry.changes or {}
    fields = ", ".join(
        str(
            labels.get(name)
            or labels.get(name.removesuffix("_id"))
            or name.removesuffix("_id").replace("_", " ")
        )
        for name in sorted(changes)
        if name not in ("import_batch_id", "patient_id")
    )
    if entry.entity == "patient_phone":
        number = changes.get("number") or [None, None]
        shown = display_phone(number[1] or number[0])
        return {
            "CREATE": _("Phone added: %(number)s", number=shown),
            "DELETE": _("Phone removed: %(number)s", number=shown),
        }.get(entry.action, _("Phone changed: %(fields)s", fields=fields))
    if entry.entity == "care_team_member":
        role = changes.get("role") or [None, None]
        code = role[1] or role[0]
        role_label = CareTeamRole(code).label if code in CareTeamRole.codes() else ""
        return {
            "CREATE": _("Care team: doctor added (%(role)s)", role=role_label),
            "DELETE": _("Care team: link removed (%(role)s)", role=role_label),
        }.get(entry.action, _("Care team: link changed (%(fields)s)", fields=fields))
    if entry.action == "CREATE":
        return _("Record created")
    if entry.action == "RESTORE":
        return _("Record restored")
    if entry.action == "REVERT":
        return _("A change was reverted: %(fields)s", fields=fields)
    if entry.batch_id:
        return _("Updated by import #%(batch)s: %(fields)s", batch=entry.batch_id, fields=fields)
    return _("Changed: %(fields)s", fields=fields) if fields else _("Changed")


class PatientView(PhoneSearchMixin, SecuredModelView):
    audit_reads = True  # opening a record is recorded: who looked at this patient
    phone_model = PatientPhone
    phone_min_digits = 3
    list_template = "admin/patient/list.html"

    column_list = (
        "mrn",
        "last_name",
        "first_name",
        "birth_date",
        "sex",
        "email",
        "phones",
        "city",
        "clinic",
        "referring_doctor",
        "active",
    )
    column_default_sort = [("last_name", False), ("first_name", False), ("id", False)]
    column_sortable_list = (
        "mrn",
        "last_name",
        "first_name",
        "birth_date",
        "email",
        "city",
        ("clinic", "clinic.name"),
    )
    column_searchable_list = ("first_name", "last_name", "email", "mrn", PatientPhone.number)
    # Names anywhere in the value, record numbers and emails from their start, phones by digits.
    column_search_prefix = ("email", "mrn")
    column_filters = (
        FilterLike(Clinic.name, _l("Clinic")),
        FilterLike(Doctor.last_name, _l("Referring doctor (last name)")),
        DateBetweenFilter(Patient.birth_date, _l("Birth date")),
        SEX_FILTER,
        CITY_FILTER,
        ACTIVE_FILTER,
        BooleanEqualFilter(Patient.contrast_allergy, _l("Contrast agent allergy")),
    )
    column_select_related_list = (Patient.referring_doctor, Patient.clinic, Patient.phones)
    column_labels = {
        "mrn": _l("MRN"),
        "first_name": _l("First name"),
        "last_name": _l("Last name"),
        "birth_date": _l("Birth date"),
        "sex": _l("Sex"),
        "email": _l("Email"),
        "phones": _l("Phones"),
        "street": _l("Street and number"),
        "city": _l("City"),
        "state": _l("State"),
        "postal_code": _l("Postal code"),
        "country": _l("Country"),
        "preferred_language": _l("Preferred language"),
        "emergency_contact_name": _l("Emergency contact"),
        "emergency_contact_relation": _l("Relation to the patient"),
        "emergency_contact_phone": _l("Emergency contact phone"),
        "allergies": _l("Allergies"),
        "contrast_allergy": _l("Contrast agent allergy"),
        "active": _l("Active"),
        "referring_doctor": _l("Referring doctor"),
        "clinic": _l("Clinic"),
        "care_team": _l("Care team"),
        "studies": _l("Studies"),
        "created_at": _l("Created"),
        "updated_at": _l("Updated"),
        "number": _l("Phone"),  # PatientPhone.number, in the search box's placeholder
    }
    column_descriptions = {"mrn": _l("Medical record number in the system the patient came from")}
    column_formatters = {
        "referring_doctor": relation_link("doctor", "referring_doctor"),
        "clinic": relation_link("clinic", "clinic"),
        "phones": phones_national,
    }
    column_formatters_detail = {
        **column_formatters,
        "phones": phones_detail,
        "birth_date": _birth_date_with_age,
        "country": _country,
        "preferred_language": _language,
    }
    form_columns = (
        "mrn",
        "first_name",
        "last_name",
        "birth_date",
        "sex",
        "email",
        "phones",
        "preferred_language",
        "street",
        "city",
        "state",
        "postal_code",
        "country",
        "emergency_contact_name",
        "emergency_contact_relation",
        "emergency_contact_phone",
        "allergies",
        "contrast_allergy",
        "clinic",
        "active",
        "care_team",
    )
    form_extra_fields = {
        # Not "required" as the column is: left empty, the sequence gives the next number.
        "mrn": StringField(
            _l("MRN"),
            filters=[blank_to_none],
            validators=[
                _mrn_kept,
                Optional(),
                Length(max=64),
                _mrn_free,
            ],
        ),
        # Unknown until someone records it (the first choice would otherwise be preselected);
        # a form that does not send the field keeps the record's value.
        "sex": Select2Field(
            _l("Sex"),
            choices=AdministrativeSex.choices,
            default=AdministrativeSex.UNKNOWN.value,
            coerce=lambda v: getattr(v, "value", v),
            validators=[AnyOf(AdministrativeSex.codes())],
        ),
        "country": CodeSelectField(_l("Country"), choices=country_choices, default=default_country),
        "preferred_language": CodeSelectField(_l("Preferred language"), choices=language_choices),
    }
    form_create_rules = form_edit_rules = (
        RenderedByHiddenTag("csrf_token", "opened_version"),
        rules.FieldSet(
            (FieldRow("mrn", "birth_date", "sex"), FieldRow("first_name", "last_name")),
            _l("Identity"),
        ),
        rules.HTML('<span id="contact" class="form-anchor"></span>'),
        rules.FieldSet((FieldRow("email", "preferred_language"), "phones"), _l("Contact details")),
        rules.FieldSet(
            ("street", FieldRow("city", "state"), FieldRow("postal_code", "country")),
            _l("Address"),
        ),
        rules.FieldSet(
            (
                FieldRow(
                    "emergency_contact_name",
                    "emergency_contact_relation",
                    "emergency_contact_phone",
                ),
            ),
            _l("Emergency contact"),
        ),
        rules.FieldSet(("allergies", "contrast_allergy"), _l("Clinical alerts")),
        rules.HTML('<span id="care-team" class="form-anchor"></span>'),
        rules.FieldSet((FieldRow("clinic", "active"), "care_team"), _l("Clinic and care team")),
    )
    # Filters apply the model's rules before the form's "required" and "unique" checks run, so a
    # duplicate written differently (" 1 ", "PEPE@...") is reported next to its field.
    form_args = {
        "first_name": {"filters": [blank_to_none], "validators": [DataRequired()]},
        "last_name": {"filters": [blank_to_none], "validators": [DataRequired()]},
        "email": {"filters": [normalize_email]},
        "birth_date": {"validators": [_birth_date_not_out_of_bounds]},
        "street": {"filters": [blank_to_none]},
        "city": {"filters": [normalize_name]},
        "state": {"filters": [normalize_name]},
        "postal_code": {"filters": [blank_to_none]},
        "emergency_contact_name": {"filters": [normalize_name], "label": _l("Name")},
        "emergency_contact_relation": {
            "filters": [blank_to_none],
            "description": _l("e.g. daughter, husband, neighbour"),
        },
        "emergency_contact_phone": {
            "filters": [normalize_phone],
            "description": _l("With or without country code, e.g. +52 55 1234 5678"),
        },
        "allergies": {
            "filters": [blank_to_none],
            "description": _l("What the patient is allergic to and how they react."),
        },
        "contrast_allergy": {
            "description": _l(
                "Allergic to iodinated or gadolinium contrast agents: check before CT and MRI."
            )
        },
        "active": {
            "default": True,
            "description": _l(
                "Inactive patients are hidden from lists and look-ups; nothing is deleted."
            ),
        },
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
        ("sex", Patient.sex),
        ("phones", phones_export(PatientPhone, Patient, "patient_id")),
        ("street", Patient.street),
        ("city", Patient.city),
        ("state", Patient.state),
        ("postal_code", Patient.postal_code),
        ("country", Patient.country),
        ("preferred_language", Patient.preferred_language),
        ("emergency_contact_name", Patient.emergency_contact_name),
        ("emergency_contact_relation", Patient.emergency_contact_relation),
        ("emergency_contact_phone", Patient.emergency_contact_phone),
        ("allergies", Patient.allergies),
        ("contrast_allergy", Patient.contrast_allergy),
        ("active", Patient.active),
    )
    form_ajax_refs = {
        "clinic": {"fields": ("name", "city"), "order_by": "name", "page_size": 20},
    }
    inline_models = (PhoneInlineForm(PatientPhone), CareTeamInlineForm(CareTeamMember))
    inline_model_form_converter = PhoneRowsConverter

    # -- the list: active patients unless the status filter says otherwise ------------------
    def _status_filter_given(self, filters: Any) -> bool:
        return any(self._filters[idx] is ACTIVE_FILTER for idx, _name, _value in filters or ())

    def list_query(self, sort_column: Any, sort_desc: bool, search: Any, filters: Any) -> Any:
        query = super().list_query(sort_column, sort_desc, search, filters)
        if not self._status_filter_given(filters):
            query = query.filter(Patient.active == true())
        return query

    def get_list(
        self,
        page: Any,
        sort_column: Any,
        sort_desc: bool,
        search: Any,
        filters: Any,
        execute: bool = True,
        page_size: Any = None,
    ) -> Any:
        g.patients_hiding_inactive = not self._status_filter_given(filters)
        return super().get_list(
            page, sort_column, sort_desc, search, filters, execute=execute, page_size=page_size
        )

    def list_total(self, query: Any, filtered: bool) -> Any:
        # Hiding inactive patients is a filter: the total counts what the list shows.
        return super().list_total(query, filtered or g.get("patients_hiding_inactive", True))

    def render(self, template: str, **kwargs: Any) -> Any:
        if template == self.list_template:
            kwargs["show_inactive_url"] = filtered_list_url(
                "patient", [(ACTIVE_FILTER, ActiveFilter.ALL)]
            )
            kwargs["hiding_inactive"] = g.get("patients_hiding_inactive", False)
        return super().render(template, **kwargs)

    # -- the form ---------------------------------------------------------------------------
    def create_form(self, obj: Any = None) -> Any:
        form = super().create_form(obj)
        form.mrn.description = _(
            "Leave it empty to give the next number of the sequence (such as %(example)s).",
            example=format_mrn(42),
        )
        return form

    def validate_form(self, form: Any) -> bool:
        """Phones and care-team rows are checked row by row; problems show on their row."""
        valid = super().validate_form(form)
        if not valid:
            return valid
        valid = repeated_numbers(
            form, "phones", _("This number is already listed for this patient.")
        )
        if hasattr(form, "care_team"):
            valid = attach_problems(form.care_team) and valid
        return valid

    # -- the chart --------------------------------------------------------------------------
    @expose("/details/")
    def details_view(self) -> Any:
        """The patient's chart (their details page)."""
        raw = request.args.get("id", "")
        if not raw.isdigit() or len(raw) > 12:
            abort(404)
        if self.get_one(raw) is None:  # records who opened the chart
            abort(404)
        chart = load_chart(int(raw))
        if chart is None:
            abort(404)
        here = url_for(".details_view", id=chart.patient.id)
        return self.render(
            "admin/patient/chart.html",
            chart=chart,
            patient=chart.patient,
            here=here,
            actions=self._chart_actions(chart, here),
            study_status=study_status,
            study_is_open=study_is_open,
            urgency_badge=urgency_badge,
            country_name=country_name,
            display_phone=display_phone,
            language_name=language_name,
            care_team_url=filtered_list_url("care_team", [(PATIENT_FILTER, str(chart.patient.id))]),
            studies_url=url_for("study.index_view", search="=" + (chart.patient.mrn or "")),
            return_url=url_for(".index_view"),
            now_label=format_datetime(utcnow(), "short"),
            history_text=lambda entry: history_text(entry, self.column_labels),
        )

    def _chart_actions(self, chart: Any, here: str) -> list[tuple[str, str, str]]:
        """(label, url, style) of the actions the user's roles allow."""
        pid = chart.patient.id
        actions = []
        if can(Perm.EDIT):
            actions.append(
                (
                    _("Edit contact details"),
                    url_for(".edit_view", id=pid, url=here) + "#contact",
                    "primary",
                )
            )
        if can(Perm.CREATE):
            actions.append(
                (
                    _("Add a study for this patient"),
                    url_for("study.create_view", patient=pid, url=here),
                    "primary",
                )
            )
        if can(Perm.EDIT):
            actions.append(
                (
                    _("Add a doctor to the care team"),
                    url_for("care_team.create_view", patient=pid, url=here),
                    "outline-primary",
                )
            )
        return actions
