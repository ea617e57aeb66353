"""Reports, the medical record of a study: drafts, signing, addenda, and the printed forms.

``writing`` holds the rules (who writes, when, what a signature fixes); ``document`` builds the
report as printed (the page and the PDF show the same); ``pdf`` draws it with fpdf2.
"""

from backoffice.services.reports.document import ReportDocument, report_document
from backoffice.services.reports.pdf import report_pdf
from backoffice.services.reports.writing import (
    SECTIONS,
    TEXT_MAX,
    ReportError,
    StaleReport,
    add_addendum,
    draft_of,
    is_reporting_doctor,
    may_add_addendum,
    may_read_draft,
    may_write,
    save_draft,
    sign_report,
    signature,
)

__all__ = [
    "SECTIONS",
    "TEXT_MAX",
    "ReportDocument",
    "ReportError",
    "StaleReport",
    "add_addendum",
    "draft_of",
    "is_reporting_doctor",
    "may_add_addendum",
    "may_read_draft",
    "may_write",
    "report_document",
    "report_pdf",
    "save_draft",
    "sign_report",
    "signature",
]
