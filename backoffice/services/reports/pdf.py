"""The report as a PDF (fpdf2: pure Python, no system library), laid out as the printable page.

A4, the clinic's header and the page number ("Page 2 of 3") on every page, the patient's
identification, the sections, the signature block and each addendum with its own. The fonts
are DejaVu Sans, shipped in ``backoffice/data/fonts`` and embedded (subset) in the file, so
every name prints as written whatever machine opens it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backoffice.i18n import _
from backoffice.services.reports.document import ReportDocument, Signed

FONTS = Path(__file__).resolve().parent.parent.parent / "data" / "fonts"
FONT = "DejaVu"
INK = (33, 37, 41)
MUTED = (108, 117, 125)
RULE = (173, 181, 189)


def report_pdf(doc: ReportDocument) -> bytes:
    """The PDF file of ``doc``."""
    from fpdf import FPDF
    from fpdf.enums import XPos, YPos

    page_label = _("Page %(page)s of %(pages)s", page="{page}", pages="{nb}")

    class ReportPDF(FPDF):
        def header(self) -> None:
            self.set_font(FONT, "B", 13)
            self.set_text_color(*INK)
            self.cell(0, 7, doc.clinic, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            self.set_font(FONT, "", 8.5)
            self.set_text_color(*MUTED)
            if doc.clinic_lines:
                self.cell(0, 4.5, " · ".join(doc.clinic_lines), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            self.set_draw_color(*RULE)
            y = self.get_y() + 2
            self.line(self.l_margin, y, self.w - self.r_margin, y)
            self.set_y(y + 3)
            if doc.notice:
                self.set_font(FONT, "B", 9)
                self.set_text_color(176, 42, 55)
                self.multi_cell(0, 5, doc.notice, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
                self.ln(1)
            self.set_text_color(*INK)

        def footer(self) -> None:
            self.set_y(-14)
            self.set_font(FONT, "", 7.5)
            self.set_text_color(*MUTED)
            text = page_label.replace("{page}", str(self.page_no()))
            self.cell(0, 5, doc.footer, new_x=XPos.LMARGIN, new_y=YPos.NEXT, align="L")
            self.cell(0, 4, f"{doc.printed_at} · {text}", align="L")

    pdf = ReportPDF(format="A4", unit="mm")
    pdf.add_font(FONT, "", str(FONTS / "DejaVuSans.ttf"))
    pdf.add_font(FONT, "B", str(FONTS / "DejaVuSans-Bold.ttf"))
    pdf.set_margins(18, 16, 18)
    pdf.set_auto_page_break(True, margin=22)
    pdf.set_title(doc.title)
    pdf.set_creator("Clinic Back Office")
    pdf.add_page()

    pdf.set_font(FONT, "B", 16)
    pdf.cell(0, 9, doc.title, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(1)
    _pairs(pdf, doc.patient, bold=True)  # who the patient is stands out
    pdf.ln(1.5)
    _pairs(pdf, doc.study, bold=False)
    pdf.ln(3)
    for label, text in doc.sections:
        _section(pdf, label, text)
    if doc.signed is not None:
        _signature(pdf, _("Signed"), doc.signed)
    for addendum in doc.addenda:
        _section(pdf, addendum.heading, addendum.text)
        _signature(pdf, _("Signed"), addendum.signed)
    return bytes(pdf.output())


def _pairs(pdf: Any, pairs: list[tuple[str, str]], bold: bool) -> None:
    """Label: value lines, two to a row."""
    from fpdf.enums import XPos, YPos

    width = (pdf.w - pdf.l_margin - pdf.r_margin) / 2
    for i, (label, value) in enumerate(pairs):
        pdf.set_font(FONT, "", 7.5)
        pdf.set_text_color(*MUTED)
        x = pdf.l_margin + (i % 2) * width
        if i % 2 == 0:
            top = pdf.get_y()
        pdf.set_xy(x, top)
        pdf.cell(width, 4, label.upper(), new_x=XPos.LEFT, new_y=YPos.NEXT)
        pdf.set_x(x)
        pdf.set_font(FONT, "B" if bold else "", 10)
        pdf.set_text_color(*INK)
        pdf.cell(width, 5.5, value, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        if i % 2 == 1 or i == len(pairs) - 1:
            pdf.set_y(top + 10.5)


def _section(pdf: Any, label: str, text: str) -> None:
    from fpdf.enums import XPos, YPos

    pdf.set_font(FONT, "B", 11)
    pdf.set_text_color(*INK)
    pdf.cell(0, 7, label, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font(FONT, "", 10)
    pdf.multi_cell(0, 5.2, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(2.5)


def _signature(pdf: Any, label: str, signed: Signed) -> None:
    from fpdf.enums import XPos, YPos

    pdf.ln(2)
    pdf.set_draw_color(*RULE)
    y = pdf.get_y()
    pdf.line(pdf.l_margin, y, pdf.l_margin + 80, y)
    pdf.ln(1.5)
    pdf.set_font(FONT, "", 7.5)
    pdf.set_text_color(*MUTED)
    pdf.cell(0, 4, label.upper(), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font(FONT, "B", 10)
    pdf.set_text_color(*INK)
    pdf.cell(0, 5.5, signed.who, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font(FONT, "", 9)
    pdf.cell(0, 5, signed.when, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(4)
