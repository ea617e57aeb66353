"""Admin view of doctors: phones edited inline, specialties, languages, biographies, patients."""

from __future__ import annotations

from typing import Any

from flask_admin.contrib.sqla.filters import BooleanEqualFilter, FilterLike
from flask_admin.form import rules
from flask_babel import format_date
from markupsafe import Markup
from sqlalchemy import func, literal, select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.orm import joinedload
from wtforms import IntegerField, TextAreaField
from wtforms.validators import DataRequired, InputRequired, Optional, ValidationError

from backoffice.admin_views.base import SecuredModelView
from backoffice.admin_views.fields import CodeListField, FieldRow, RenderedByHiddenTag
from backoffice.admin_views.filters import (
    CodeInListFilter,
    HasChildFilter,
    LazyOptions,
    filtered_list_url,
)
from backoffice.admin_views.formatters import relation_link
from backoffice.admin_views.phones import (
    PhoneInlineForm,
    PhoneRowsConverter,
    PhoneSearchMixin,
    phones_detail,
    phones_export,
    phones_short,
    repeated_numbers,
)
from backoffice.extensions import db
from backoffice.i18n import _, _l, ngettext
from backoffice.locale import current_language
from backoffice.models import (
    CareTeamMember,
    CareTeamStatus,
    Clinic,
    Doctor,
    DoctorPhone,
    DoctorSpecialty,
    Specialty,
)
from backoffice.validation import RuleError, blank_to_none, check_practising_since, normalize_email
from backoffice.vocabularies import language_choices, language_name

# How many of a doctor's patients their page lists (the care-team list has them all).
PATIENTS_SHOWN = 20

SPECIALTY_FILTER = HasChildFilter(
    Doctor.id,
    _l("Specialty"),
    child_column=DoctorSpecialty.specialty,
    owner_key=DoctorSpecialty.doctor_id,
    options=LazyOptions(Specialty.choices),
)
LANGUAGE_FILTER = CodeInListFilter(
    Doctor.languages, _l("Language spoken"), options=LazyOptions(language_choices)
)


def _specialties(view: Any, context: Any, model: Doctor, name: str) -> str:
    return model.specialty_labels


def _languages(view: Any, context: Any, model: Doctor, name: str) -> str:
    return ", ".join(language_name(code) for code in model.language_codes)


def _practising(view: Any, context: Any, model: Doctor, name: str) -> Markup:
    if model.practising_since is None:
        return Markup("")
    years = model.years_of_experience()
    return Markup("{} <small class='text-muted'>({})</small>").format(
        model.practising_since,
        ngettext("%(num)d year of experience", "%(num)d years of experience", years),
    )


def _biography(view: Any, context: Any, model: Doctor, name: str) -> Markup:
    """The biography in the reader's language, else the English one (said so)."""
    reader = current_language()
    text, shown = model.biography(reader)
    if text is None:
        return Markup('<span class="text-muted">&mdash;</span>')
    body = Markup('<div class="doctor-biography" lang="{}">{}</div>').format(
        shown, Markup("<br>").join(text.splitlines())
    )
    if shown != reader:
        body += Markup('<small class="text-muted">{}</small>').format(
            _("Not written in your language yet: shown in English.")
        )
    return body


def _patients(view: Any, context: Any, model: Doctor, name: str) -> Markup:
    """The doctor's patients (care-team links), active first, and a link to all of them."""
    from backoffice.admin_views.care_team import DOCTOR_FILTER

    links = db.session.scalars(
        select(CareTeamMember)
        .where(CareTeamMember.doctor_id == model.id)
        .options(joinedload(CareTeamMember.patient))
        .order_by(CareTeamMember.status, CareTeamMember.id.desc())
        .limit(PATIENTS_SHOWN)
    ).all()
    counts = dict(
        db.session.execute(
            select(CareTeamMember.status, func.count())
            .where(CareTeamMember.doctor_id == model.id)
            .group_by(CareTeamMember.status)
        ).all()
    )
    if not links:
        return Markup('<span class="text-muted">{}</span>').format(
            _("No patient has this doctor on their care team.")
        )
    items = Markup("").join(
        Markup(
            '<li class="mb-1"><a href="{url}">{patient}</a> '
            '<small class="text-muted">{role} · {status}{since}</small></li>'
        ).format(
            url=view.get_url("patient.details_view", id=link.patient_id),
            patient=str(link.patient),
            role=link.role.label,
            status=link.status.label,
            since=(
                Markup(" · {}").format(_("since %(day)s", day=format_date(link.since, "medium")))
                if link.since
                else ""
            ),
        )
        for link in links
    )
    total = sum(counts.values())
    active = counts.get(CareTeamStatus.ACTIVE, 0)
    summary = Markup('<p class="mb-1">{} <a href="{}">{}</a></p>').format(
        ngettext(
            "%(num)d patient link, %(active)d active.",
            "%(num)d patient links, %(active)d active.",
            total,
            active=active,
        ),
        filtered_list_url("care_team", [(DOCTOR_FILTER, str(model.id))]),
        _("See them all in the care-team list"),
    )
    return summary + Markup('<ul class="list-unstyled mb-0 doctor-patients">{}</ul>').format(items)


def _specialties_export(dialect: str) -> Any:
    """Every specialty code of a doctor in one cell: ``CARDIOLOGY; RADIOLOGY``."""
    if dialect == "postgresql":
        return (
            select(
                func.string_agg(
                    DoctorSpecialty.specialty,
                    aggregate_order_by(literal("; "), DoctorSpecialty.specialty),
                )
            )
            .where(DoctorSpecialty.doctor_id == Doctor.id)
            .scalar_subquery()
        )
    ordered = (
        select(DoctorSpecialty.specialty)
        .where(DoctorSpecialty.doctor_id == Doctor.id)
        .order_by(DoctorSpecialty.specialty)
        .correlate(Doctor)
        .subquery()
    )
    return select(func.group_concat(ordered.c.specialty, "; ")).scalar_subquery()


def _practising_since_rule(form: Any, field: Any) -> None:
    try:
        check_practising_since(field.data)
    except RuleError as exc:
        raise ValidationError(str(exc)) from None


class DoctorView(PhoneSearchMixin, SecuredModelView):
    phone_model = DoctorPhone

    column_list = (
        "last_name",
        "first_name",
        "specialties",
        "clinic",
        "email",
        "phones",
        "active",
    )
    column_details_list = (
        "first_name",
        "last_name",
        "email",
        "specialties",
        "qualification",
        "practising_since",
        "languages",
        "biography",
        "licence_number",
        "clinic",
        "phones",
        "active",
        "patients",
        "created_at",
        "updated_at",
    )
    column_default_sort = [("last_name", False), ("first_name", False), ("id", False)]
    column_sortable_list = (
        "last_name",
        "first_name",
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
        SPECIALTY_FILTER,
        LANGUAGE_FILTER,
        BooleanEqualFilter(Doctor.active, _l("Active")),
    )
    column_select_related_list = (Doctor.clinic, Doctor.phones)
    column_labels = {
        "first_name": _l("First name"),
        "last_name": _l("Last name"),
        "email": _l("Email"),
        "specialties": _l("Specialties"),
        "qualification": _l("Qualification"),
        "practising_since": _l("Practising since"),
        "languages": _l("Languages spoken"),
        "biography": _l("Biography"),
        "licence_number": _l("Licence number"),
        "clinic": _l("Clinic"),
        "phones": _l("Phones"),
        "active": _l("Active"),
        "patients": _l("Patients"),
        "created_at": _l("Created"),
        "updated_at": _l("Updated"),
        "bio_en": _l("Biography in English"),
        "bio_es": _l("Biography in Spanish"),
        "bio_fr": _l("Biography in French"),
        "number": _l("Phone"),  # DoctorPhone.number, in the search box's placeholder
    }
    column_formatters = {
        "clinic": relation_link("clinic", "clinic"),
        "phones": phones_short,
        "specialties": _specialties,
    }
    column_formatters_detail = {
        "clinic": relation_link("clinic", "clinic"),
        "phones": phones_detail,
        "specialties": _specialties,
        "languages": _languages,
        "practising_since": _practising,
        "biography": _biography,
        "patients": _patients,
    }
    form_columns = (
        "first_name",
        "last_name",
        "email",
        "specialties",
        "qualification",
        "practising_since",
        "languages",
        "licence_number",
        "clinic",
        "active",
        "bio_en",
        "bio_es",
        "bio_fr",
        "phones",
    )
    form_extra_fields = {
        "specialties": CodeListField(
            _l("Specialties"),
            validators=[InputRequired()],
            choices=Specialty.choices,
            from_model=lambda values: [getattr(v, "value", v) for v in values],
            description=_l("One or more."),
        ),
        "languages": CodeListField(
            _l("Languages spoken"),
            choices=language_choices,
            to_model=lambda codes: ",".join(sorted(codes)) or None,
            from_model=lambda text: text.split(",") if text else [],
        ),
        "practising_since": IntegerField(
            _l("Practising since"),
            validators=[Optional(), _practising_since_rule],
            description=_l("The year the doctor started practising, e.g. 2008."),
        ),
        "bio_en": TextAreaField(_l("Biography in English"), filters=[blank_to_none]),
        "bio_es": TextAreaField(_l("Biography in Spanish"), filters=[blank_to_none]),
        "bio_fr": TextAreaField(_l("Biography in French"), filters=[blank_to_none]),
    }
    form_create_rules = form_edit_rules = (
        RenderedByHiddenTag("csrf_token", "opened_version"),
        rules.FieldSet(
            (FieldRow("first_name", "last_name"), FieldRow("email", "clinic"), "active"),
            _l("Identity and clinic"),
        ),
        rules.FieldSet(
            (
                "specialties",
                FieldRow("qualification", "practising_since", "licence_number"),
                "languages",
            ),
            _l("Practice"),
        ),
        rules.FieldSet(("phones",), _l("Phones")),
        rules.FieldSet(
            ("bio_en", "bio_es", "bio_fr"),
            _l("Biography (shown in the reader's language; English where it is missing)"),
        ),
    )
    # Filters apply the model's rules before the form's "required" and "unique" checks run, so
    # "   " is reported as missing and a duplicate written differently is caught next to its field.
    form_args = {
        "first_name": {"filters": [blank_to_none], "validators": [DataRequired()]},
        "last_name": {"filters": [blank_to_none], "validators": [DataRequired()]},
        "email": {"filters": [normalize_email], "validators": [DataRequired()]},
        "licence_number": {"filters": [blank_to_none]},
        "qualification": {
            "filters": [blank_to_none],
            "description": _l(
                "Degree and board certification, e.g. MD, board-certified radiologist"
            ),
        },
    }
    form_ajax_refs = {
        "clinic": {"fields": ("name", "city"), "order_by": "name", "page_size": 20},
    }
    inline_models = (PhoneInlineForm(DoctorPhone),)
    # The bulk upload's column names; ``phones`` holds every number, separated by "; ", and
    # ``specialty`` every specialty code.
    export_columns = (
        ("first_name", Doctor.first_name),
        ("last_name", Doctor.last_name),
        ("email", Doctor.email),
        ("specialty", _specialties_export),
        ("licence_number", Doctor.licence_number),
        ("clinic", (Doctor.clinic, Clinic.name)),
        ("active", Doctor.active),
        ("phones", phones_export(DoctorPhone, Doctor, "doctor_id")),
        ("qualification", Doctor.qualification),
        ("practising_since", Doctor.practising_since),
        ("languages", Doctor.languages),
        ("bio_en", Doctor.bio_en),
        ("bio_es", Doctor.bio_es),
        ("bio_fr", Doctor.bio_fr),
    )
    inline_model_form_converter = PhoneRowsConverter

    def validate_form(self, form: Any) -> bool:
        """The same number twice on one doctor is an error on the repeated row."""
        valid = super().validate_form(form)
        if not valid:
            return valid
        return repeated_numbers(form, "phones", _("This number is already listed for this doctor."))
