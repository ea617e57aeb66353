"""A study's report in the admin: its page (write, sign, add addenda), its printable page, its PDF.

The pages open the study through the view's ``get_one``: a study out of the user's reach
answers 404 here as everywhere. Writing and signing call backoffice/services/reports.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Response, abort, flash, redirect, render_template, request
from flask_admin import expose
from flask_login import current_user
from markupsafe import Markup

from backoffice.auth.permissions import Perm
from backoffice.extensions import db
from backoffice.i18n import _
from backoffice.models import Report, Study
from backoffice.services.reports import (
    TEXT_MAX,
    ReportError,
    add_addendum,
    draft_of,
    may_add_addendum,
    may_read_draft,
    may_write,
    report_document,
    report_pdf,
    save_draft,
    sign_report,
)
from backoffice.services.workflow import WorkflowError
from backoffice.validation import whole_number

REPORT_ENDPOINTS: dict[str, Perm] = {
    "report_view": Perm.VIEW,
    "report_print_view": Perm.VIEW,
    "report_pdf_view": Perm.VIEW,
    "report_save_view": Perm.REPORT,
    "addendum_view": Perm.REPORT,
}


def readable_reports(study: Study, user: Any) -> list[Report]:
    """The versions of the study's report the user may read (a draft: its doctor only)."""
    return [r for r in study.reports if may_read_draft(user, r)]


def chosen_report(study: Study, user: Any, raw_number: str | None) -> Report | None:
    """The version asked for (``?version=2``), else the latest the user may read."""
    readable = readable_reports(study, user)
    if raw_number:
        number = whole_number(raw_number)
        if number is None:
            abort(404)
        found = [r for r in readable if r.number == number]
        if not found:
            abort(404)
        return found[0]
    return readable[-1] if readable else None


def css_string(text: str) -> str:
    """``text`` as a CSS string literal: quotes, backslashes, markup and control characters
    escaped (it goes into a ``<style>`` element, where nothing is unescaped)."""
    out = []
    for ch in text:
        if ch in '"\\<>&' or ord(ch) < 0x20:
            out.append(f"\\{ord(ch):x} ")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def page_margin_css(clinic: str, footer: str) -> Markup:
    """The print page's margin boxes: the clinic at the top of every page after the first (the
    first has the full header), the document's line at the bottom left and "Page 2 of 3" at the
    bottom right, in the reader's language."""
    label = _("Page %(page)s of %(pages)s", page="\x00page\x00", pages="\x00pages\x00")
    counters = {"\x00page\x00": "counter(page)", "\x00pages\x00": "counter(pages)"}
    parts = [
        counters.get(piece) or css_string(piece)
        for piece in re.split(r"(\x00pages?\x00)", label)
        if piece
    ]
    top, bottom, counter = css_string(clinic), css_string(footer), " ".join(parts)
    return Markup(  # noqa: S704 - every text in it went through css_string
        f"@page {{ @top-left {{ content: {top}; }} @bottom-left {{ content: {bottom}; }} "
        f"@bottom-right {{ content: {counter}; }} }} "
        "@page :first { @top-left { content: none; } }"
    )


class StudyReportMixin:
    """The report endpoints of ``StudyView``."""

    def report_state(self, study: Study) -> dict[str, Any]:
        """What the study's page says about its report, for the current user."""
        current = study.current_report
        return {
            "current": current,
            "signed": study.signed_report,
            "may_write": may_write(current_user, study),
            "readable": bool(readable_reports(study, current_user)),
        }

    def _study(self, raw_id: str | None) -> Study:
        if whole_number(raw_id) is None:
            abort(404)
        return self.get_one(raw_id)  # type: ignore[attr-defined]  # 404 when out of reach

    @expose("/report/", methods=("GET",))
    def report_view(self) -> Any:
        study = self._study(request.args.get("id"))
        report = chosen_report(study, current_user, request.args.get("version"))
        writing = may_write(current_user, study)
        draft = draft_of(study) if writing else None
        return self.render(  # type: ignore[attr-defined]
            "admin/study/report.html",
            study=study,
            report=report,
            draft=draft,
            may_write=writing,
            may_add_addendum=may_add_addendum(current_user, study),
            versions=readable_reports(study, current_user),
            text_max=TEXT_MAX,
            form_values=None,
        )

    @expose("/report/save/", methods=("POST",))
    def report_save_view(self) -> Any:
        form = request.form
        study = self._study(form.get("id"))
        raw_study_version = form.get("study_version", "")
        raw_report_version = form.get("report_version", "")
        if whole_number(raw_study_version) is None or (
            raw_report_version and whole_number(raw_report_version) is None
        ):
            abort(400)
        values = {k: form.get(k) for k in ("findings", "impression", "recommendation")}
        signing = form.get("action") == "sign"
        try:
            write = sign_report if signing else save_draft
            extra = {"expected_study_version": int(raw_study_version)} if signing else {}
            write(
                study,
                current_user,
                expected_version=int(raw_report_version) if raw_report_version else None,
                **values,
                **extra,
            )
            db.session.commit()
        except (ReportError, WorkflowError) as exc:
            db.session.rollback()
            flash(exc.message, "error")
            # The text typed is shown again, never lost: nothing of it was saved.
            study = self._study(form.get("id"))
            return self.render(  # type: ignore[attr-defined]
                "admin/study/report.html",
                study=study,
                report=chosen_report(study, current_user, None),
                draft=draft_of(study),
                may_write=may_write(current_user, study),
                may_add_addendum=may_add_addendum(current_user, study),
                versions=readable_reports(study, current_user),
                text_max=TEXT_MAX,
                form_values=values,
            )
        if signing:
            flash(_("The report is signed; the study is reported."), "success")
        else:
            flash(_("Draft saved."), "success")
        return redirect(self.get_url(".report_view", id=study.id))  # type: ignore[attr-defined]

    @expose("/report/addendum/", methods=("POST",))
    def addendum_view(self) -> Any:
        study = self._study(request.form.get("id"))
        try:
            add_addendum(study, current_user, request.form.get("text"))
            db.session.commit()
        except ReportError as exc:
            db.session.rollback()
            flash(exc.message, "error")
        else:
            flash(_("The addendum is signed and added to the report."), "success")
        return redirect(self.get_url(".report_view", id=study.id))  # type: ignore[attr-defined]

    @expose("/report/print/", methods=("GET",))
    def report_print_view(self) -> Any:
        study = self._study(request.args.get("id"))
        report = chosen_report(study, current_user, request.args.get("version"))
        if report is None:
            abort(404)
        doc = report_document(study, report)
        return render_template(
            "admin/study/report_print.html",
            doc=doc,
            study=study,
            page_css=page_margin_css(doc.clinic, doc.footer),
        )

    @expose("/report/pdf/", methods=("GET",))
    def report_pdf_view(self) -> Any:
        study = self._study(request.args.get("id"))
        report = chosen_report(study, current_user, request.args.get("version"))
        if report is None:
            abort(404)
        doc = report_document(study, report)
        response = Response(report_pdf(doc), mimetype="application/pdf")
        response.headers["Content-Disposition"] = f'inline; filename="{doc.file_stem}.pdf"'
        return response
