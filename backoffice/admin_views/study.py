"""Admin view of imaging studies: the record, its moves (``workflow.py``) and its report
(``report.py``)."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, request
from flask_admin import expose
from flask_admin.babel import lazy_gettext
from flask_admin.contrib.sqla.filters import (
    BaseSQLAFilter,
    DateBetweenFilter,
    EnumEqualFilter,
    FilterLike,
)
from sqlalchemy import or_, select, union_all
from sqlalchemy.orm import aliased
from wtforms.validators import DataRequired

from backoffice.admin_views.base import MODEL_ENDPOINT_PERMISSIONS, SecuredModelView
from backoffice.admin_views.fields import rule_validator
from backoffice.admin_views.formatters import relation_link, status_formatter, urgency_formatter
from backoffice.admin_views.report import REPORT_ENDPOINTS, StudyReportMixin
from backoffice.admin_views.workflow import WORKFLOW_ENDPOINTS, StudyWorkflowMixin
from backoffice.auth.permissions import Perm, can
from backoffice.extensions import db
from backoffice.i18n import _, _l
from backoffice.models import (
    Clinic,
    Doctor,
    Patient,
    Study,
    StudyStatus,
    StudyType,
    Urgency,
)
from backoffice.services.workflow import order_study
from backoffice.validation import (
    RuleError,
    blank_to_none,
    check_study_date,
    normalize_body_part,
    whole_number,
)


class PatientClinicFilter(BaseSQLAFilter):
    """Studies of the patients of one clinic (a study reaches its clinic through its patient)."""

    def apply(self, query: Any, value: Any, alias: Any = None) -> Any:
        patients = select(Patient.id).where(Patient.clinic_id == int(value))
        return query.filter(Study.patient_id.in_(patients))

    def operation(self) -> Any:
        return lazy_gettext("equals")

    def validate(self, value: Any) -> bool:
        return str(value).isdecimal() and len(str(value)) < 12


class ClinicOptions:
    """Filter options read when the list renders (Flask-Admin builds its filter menu once, at
    start-up, and would otherwise freeze the clinics that existed then)."""

    def __iter__(self):  # noqa: ANN204
        from backoffice.extensions import db

        rows = db.session.execute(select(Clinic.id, Clinic.name).order_by(Clinic.name)).all()
        return iter([(str(i), n) for i, n in rows])

    def __bool__(self) -> bool:
        return True


# Module-level so the dashboard can link its charts to these exact filters.
STATUS_FILTER = EnumEqualFilter(Study.status, _l("Status"), options=StudyStatus.choices)
URGENCY_FILTER = EnumEqualFilter(Study.urgency, _l("Urgency"), options=Urgency.choices)
TYPE_FILTER = EnumEqualFilter(Study.study_type, _l("Type"), options=StudyType.choices)
DATE_FILTER = DateBetweenFilter(Study.study_date, _l("Study date"))
CLINIC_FILTER = PatientClinicFilter(Study.patient_id, _l("Clinic"), options=ClinicOptions())
STUDY_FILTERS = (
    URGENCY_FILTER,
    TYPE_FILTER,
    FilterLike(Study.body_part, _l("Body part")),
    DATE_FILTER,
    CLINIC_FILTER,
    # Last: a filter's place is its number in the list's URLs (flt0_0 is the urgency), and
    # links people keep must not change meaning.
    STATUS_FILTER,
)


class StudyView(StudyWorkflowMixin, StudyReportMixin, SecuredModelView):
    audit_reads = True  # opening a record is recorded: who looked at this patient
    endpoint_permissions = {
        **MODEL_ENDPOINT_PERMISSIONS,
        "create_view": Perm.ORDER,  # creating a study is ordering it
        **WORKFLOW_ENDPOINTS,
        **REPORT_ENDPOINTS,
    }
    details_template = "admin/study/details.html"
    list_template = "admin/study/list.html"
    column_list = (
        "study_date",
        "status",
        "urgency",
        "study_type",
        "body_part",
        "description",
        "patient",
        "ordering_doctor",
    )
    column_details_list = (
        "patient",
        "status",
        "study_date",
        "urgency",
        "study_type",
        "body_part",
        "description",
        "ordering_doctor",
        "reporting_doctor",
        "accession_number",
        "scheduled_for",
        "created_at",
        "updated_at",
    )
    column_default_sort = [("study_date", True), ("id", True)]
    column_sortable_list = (
        "study_date",
        "status",
        "urgency",
        "study_type",
        "body_part",
        ("patient", "patient.last_name"),
    )
    column_searchable_list = (
        "body_part",
        "description",
        "accession_number",
        Patient.last_name,
        Patient.mrn,
    )
    column_search_prefix = ("accession_number", "mrn")

    def _apply_search(
        self, query: Any, count_query: Any, joins: dict, count_joins: dict, search: str
    ) -> tuple[Any, Any, dict, dict]:
        """Every word must match a study column or the study's patient, as the base search,
        but as the union of two look-ups that indexes serve (the studies whose own columns
        match; the studies of the patients who match) instead of one OR across a join, which
        reads every study (2 s at three million)."""
        for word in search.split():
            matching = self._studies_matching(word)
            if matching is None:
                continue
            query = query.filter(Study.id.in_(matching))
            if count_query is not None:
                count_query = count_query.filter(Study.id.in_(matching))
        return query, count_query, joins, count_joins

    def _studies_matching(self, word: str) -> Any:
        """The ids of the studies ``word`` finds, or None for a word that says nothing."""
        study, patient = aliased(Study), aliased(Patient)
        fields = [column for column, _path in self._search_fields or []]

        def clauses(table: Any, alias: Any) -> list[Any]:
            found = []
            for column in fields:
                if column.table is table:
                    clause = self._search_clause(getattr(alias, column.key), word)
                    if clause is not None:
                        found.append(clause)
            return found

        parts = []
        if own := clauses(Study.__table__, study):
            parts.append(select(study.id).where(or_(*own)).correlate(None))
        if related := clauses(Patient.__table__, patient):
            other = aliased(Study)
            parts.append(
                select(other.id)
                .join(patient, patient.id == other.patient_id)
                .where(or_(*related))
                .correlate(None)
            )
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else union_all(*parts)

    column_filters = STUDY_FILTERS
    column_select_related_list = (Study.patient, Study.ordering_doctor)
    column_labels = {
        "study_date": _l("Date"),
        "status": _l("Status"),
        "reporting_doctor": _l("Reporting doctor"),
        "scheduled_for": _l("Appointment"),
        "cancel_reason": _l("Cancellation reason"),
        "urgency": _l("Urgency"),
        "study_type": _l("Type"),
        "body_part": _l("Body part"),
        "description": _l("Description"),
        "patient": _l("Patient"),
        "ordering_doctor": _l("Ordering doctor"),
        "accession_number": _l("Accession number"),
        "created_at": _l("Created"),
        "updated_at": _l("Updated"),
        # Patient.last_name and Patient.mrn, in the search box's placeholder
        "last_name": _l("Patient last name"),
        "mrn": _l("Patient MRN"),
    }
    column_formatters = {
        "status": status_formatter,
        "urgency": urgency_formatter,
        "patient": relation_link("patient", "patient"),
        "ordering_doctor": relation_link("doctor", "ordering_doctor"),
        "reporting_doctor": relation_link("doctor", "reporting_doctor"),
    }
    column_formatters_detail = column_formatters
    # The status is never a form field: it changes by the study's moves only.
    form_columns = (
        "patient",
        "study_date",
        "urgency",
        "study_type",
        "body_part",
        "description",
        "ordering_doctor",
        "reporting_doctor",
        "accession_number",
    )
    form_args = {
        "body_part": {
            "filters": [normalize_body_part],
            "validators": [DataRequired()],
            "description": _l("An upper-case code such as CHEST, NECK, STOMACH"),
        },
        "accession_number": {"filters": [blank_to_none]},
        "study_date": {"validators": [rule_validator(check_study_date)]},
        "reporting_doctor": {
            "description": _l("The doctor who writes and signs the report of this study")
        },
    }
    # The bulk upload's column names (``patient_id`` is the patient's MRN there), so that an
    # exported file can be uploaded again and change nothing.
    export_columns = (
        ("patient_id", (Study.patient, Patient.mrn)),
        ("study_date", Study.study_date),
        ("urgency_level", Study.urgency),
        ("type", Study.study_type),
        ("body_part", Study.body_part),
        ("description", Study.description),
        ("ordering_doctor", (Study.ordering_doctor, Doctor.email)),
        ("accession_number", Study.accession_number),
        ("status", Study.status),
    )
    export_file_stem = "studies"
    form_ajax_refs = {
        "patient": {
            "fields": ("last_name", "first_name", "mrn", "email"),
            "prefix": ("mrn", "email"),
            "order_by": "last_name",
            "page_size": 20,
            "placeholder": _l("Type the patient's name, MRN or email"),
        },
        "ordering_doctor": {
            "fields": ("last_name", "first_name", "email"),
            "order_by": "last_name",
            "page_size": 20,
            "placeholder": _l("Type the doctor's name or email"),
        },
        "reporting_doctor": {
            "fields": ("last_name", "first_name", "email"),
            "order_by": "last_name",
            "page_size": 20,
            "placeholder": _l("Type the doctor's name or email"),
        },
    }

    # -- who may choose the reporting doctor: a field the form does not have is never written
    def create_form(self, obj: Any = None) -> Any:
        return self._without_reporter_unless_allowed(super().create_form(obj))

    def edit_form(self, obj: Any = None) -> Any:
        return self._without_reporter_unless_allowed(super().edit_form(obj))

    def _without_reporter_unless_allowed(self, form: Any) -> Any:
        if not can(Perm.ASSIGN_REPORTER) and "reporting_doctor" in form:
            del form["reporting_doctor"]
        return form

    # -- a reported study is the signed record: not edited through any form -----------------
    @expose("/edit/", methods=("GET", "POST"))
    def edit_view(self) -> Any:
        key = whole_number(request.args.get("id", ""))
        study = db.session.get(Study, key) if key is not None else None
        if study is not None and study.status == StudyStatus.REPORTED:
            flash(self.reported_message(), "error")
            return redirect(self.get_url(".details_view", id=study.id))
        return super().edit_view()

    @staticmethod
    def reported_message() -> str:
        return _(
            "This study is reported: what its signed report describes cannot change. An "
            "administrator can reopen it; corrections to the report are addenda."
        )

    def on_model_change(self, form: Any, model: Study, is_created: bool) -> None:
        super().on_model_change(form, model, is_created)
        if is_created:
            order_study(model)
        elif model.status == StudyStatus.REPORTED:
            raise RuleError(self.reported_message())
