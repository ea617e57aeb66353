"""A report as a document to print: the clinic's header, the patient's identification, the study,
the sections, the signature block and the addenda, in the reader's language.

Built once and drawn twice: the printable page (``admin/study/report_print.html``, A4 print
CSS) and the PDF (``pdf.py``) show the same content from this.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from flask import current_app
from flask_babel import format_date, format_datetime

from backoffice.i18n import _, ngettext
from backoffice.models import Report, Study, utcnow


@dataclass
class Signed:
    """A signature block: who signed, when."""

    who: str
    when: str


@dataclass
class Addendum:
    heading: str
    text: str
    signed: Signed


@dataclass
class ReportDocument:
    title: str
    clinic: str
    clinic_lines: list[str]
    patient: list[tuple[str, str]]
    study: list[tuple[str, str]]
    sections: list[tuple[str, str]]
    signed: Signed | None
    addenda: list[Addendum] = field(default_factory=list)
    #: a draft, or a version that a later one replaces: said on every page
    notice: str | None = None
    footer: str = ""
    printed_at: str = ""
    file_stem: str = "report"


def _phone(number: str) -> str:
    """A stored E.164 number as people read it (+52 55 5424 7200)."""
    import phonenumbers

    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return number
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def _when(moment: datetime | None) -> str:
    return format_datetime(moment, "medium") if moment else ""


def report_document(study: Study, report: Report) -> ReportDocument:
    """The document of ``report`` (a version of ``study``'s report) as it is printed."""
    patient = study.patient
    clinic = patient.clinic
    clinic_name = clinic.name if clinic else current_app.config["BACKOFFICE_NAME"]
    parts = (clinic.address, clinic.city, clinic.phone and _phone(clinic.phone)) if clinic else ()
    clinic_lines = [line for line in parts if line]
    age = patient.age()
    identification = [
        (_("Patient"), patient.full_name),
        (_("MRN"), patient.mrn or "—"),
        (
            _("Birth date"),
            f"{format_date(patient.birth_date, 'medium')} "
            f"({ngettext('%(num)d year', '%(num)d years', age)})"
            if patient.birth_date
            else "—",
        ),
    ]
    about = [
        (_("Study"), f"{study.study_type.label} · {study.body_part}"),
        (_("Urgency"), study.urgency.label),
        (_("Study date"), format_date(study.study_date, "medium")),
        (_("Accession number"), study.accession_number or "—"),
        (_("Ordering doctor"), str(study.ordering_doctor) if study.ordering_doctor else "—"),
        (_("Performed"), _when(study.performed_at) or "—"),
    ]
    sections = [
        (label, text)
        for label, text in (
            (_("Findings"), report.findings),
            (_("Impression"), report.impression),
            (_("Recommendation"), report.recommendation),
        )
        if text
    ]
    signed = Signed(report.signed_as or "", _when(report.signed_at)) if report.is_signed else None
    addenda = [
        Addendum(
            _("Addendum %(n)d", n=i),
            a.text,
            Signed(a.signed_as, _when(a.signed_at)),
        )
        for i, a in enumerate(report.addenda, start=1)
    ]
    notice = None
    latest = study.current_report
    if not report.is_signed:
        notice = _("Draft, not signed: this is not a medical report yet.")
    elif latest is not None and latest.number > report.number:
        notice = _(
            "Replaced: the study was reopened and version %(n)d of its report replaces this one.",
            n=latest.number,
        )
    key = study.accession_number or f"#{study.id}"
    return ReportDocument(
        title=_("Imaging report"),
        clinic=clinic_name,
        clinic_lines=clinic_lines,
        patient=identification,
        study=about,
        sections=sections,
        signed=signed,
        addenda=addenda,
        notice=notice,
        footer=_(
            "%(patient)s · study %(study)s · report version %(n)d",
            patient=patient.full_name,
            study=key,
            n=report.number,
        ),
        printed_at=_("Printed %(when)s", when=_when(utcnow())),
        # a file name: letters, digits, - and _ only (it goes into a header)
        file_stem=re.sub(r"[^A-Za-z0-9_-]", "_", f"report-{key.lstrip('#')}-v{report.number}"),
    )
