"""The patient chart in a browser: an operator orders a study and adds a doctor from the chart,
creates a patient with phones and a care team, and every changed page at 1366 and 390 px in
English and Spanish (screenshots in artifacts/screenshots/, nothing scrolls sideways)."""

from __future__ import annotations

import re

import pytest

from e2e.conftest import login, screenshot
from e2e.test_operator_doctor import choose, pick_ajax


def open_chart(page, mrn: str = "1") -> None:  # noqa: ANN001
    page.goto(f"/admin/patient/?search=={mrn}")
    page.click("table.model-list a[href*='/details/']")
    page.wait_for_selector("#chart-title")


def test_operator_orders_a_study_and_adds_a_doctor_from_the_chart(new_page):
    page = new_page()
    login(page, "operator")
    open_chart(page)
    assert page.inner_text("#chart-title") == "Jose Villalobos"
    alerts = page.inner_text("#chart-alerts")
    assert "Contrast agent allergy" in alerts and "open high-urgency" in alerts
    studies_before = page.locator("#chart-studies-table tbody tr").count()
    chart_url = re.compile(r".*/admin/patient/details/\?id=\d+$")

    page.click("text=Add a study for this patient")
    page.wait_for_url(re.compile(r".*/admin/study/new/.*"))
    assert "Jose Villalobos (MRN 1)" in page.inner_text("#s2id_patient")
    assert "allergic to contrast agents" in page.inner_text(".alert-warning")
    choose(page, "study_type", "CT scan")
    choose(page, "urgency", "Medium")
    page.fill("#body_part", "head")
    page.click("input[type=submit][value='Save']")
    page.wait_for_url(chart_url)
    assert "Saved CT scan head" in page.inner_text(".alert-success")
    assert page.locator("#chart-studies-table tbody tr").count() == studies_before + 1

    page.click("text=Add a doctor to the care team")
    page.wait_for_url(re.compile(r".*/admin/care-team/new/.*"))
    pick_ajax(page, "doctor", "Treviño")
    choose(page, "role", "Specialist")
    page.fill("#reason", "Segunda opinión")
    page.click("input[type=submit][value='Save']")
    page.wait_for_url(chart_url)
    assert "Dr. Jorge Treviño" in page.inner_text("#chart-care-team")
    assert "Segunda opinión" in page.inner_text("#chart-care-team")


def test_operator_creates_a_patient_with_phones_and_a_care_team(new_page):
    page = new_page()
    login(page, "operator")
    page.goto("/admin/patient/new/")
    page.fill("#first_name", "Lucía")
    page.fill("#last_name", "Navegadora")
    page.fill("#birth_date", "1984-05-06")
    choose(page, "sex", "Female")
    page.click("#phones-button")
    page.fill("#phones-0-number", "55 1234 9876")
    page.check("#phones-0-is_primary")
    page.fill("#city", "Puebla")
    page.fill("#allergies", "Látex")
    page.check("#contrast_allergy")
    page.click("#care_team-button")
    pick_ajax(page, "care_team-0-doctor", "Martínez")
    page.click("input[type=submit][value='Save']")
    page.wait_for_selector("#chart-title")
    assert page.inner_text("#chart-title") == "Lucía Navegadora"
    assert re.search(r"MRN-\d{6}", page.inner_text("#chart-mrn"))
    assert "Saved Lucía Navegadora (MRN MRN-" in page.inner_text(".alert-success")
    assert "55 1234 9876" in page.inner_text("#chart-contact")
    assert "Referring doctor" in page.inner_text("#chart-care-team")
    assert "Dr. Ana Martínez" in page.inner_text("#chart-clinic")


PAGES = {
    "chart": None,  # the first reference patient's chart, found by MRN
    "patient-form": "/admin/patient/new/",
    "patient-list": "/admin/patient/",
    "doctor-form": "/admin/doctor/new/",
    "doctor-details": None,  # the first doctor on the list
    "care-team-list": "/admin/care-team/",
}


@pytest.mark.parametrize("width", [1366, 390])
@pytest.mark.parametrize("language", ["en", "es"])
def test_the_changed_pages_at_both_widths_in_both_languages(new_page, language, width):
    page = new_page(locale="es-MX" if language == "es" else "en-US")
    page.set_viewport_size({"width": width, "height": 900})
    login(page, "admin")
    for name, url in PAGES.items():
        if name == "chart":
            open_chart(page)
        elif name == "doctor-details":
            page.goto("/admin/doctor/")
            page.click("table.model-list a[href*='/details/']")
        else:
            page.goto(url)
        page.wait_for_load_state("networkidle")
        logout = {"en": "Log out", "es": "Cerrar sesión"}[language]
        assert logout in page.inner_text("#logout-form"), (name, language)
        sideways = page.evaluate("document.documentElement.scrollWidth")
        assert sideways <= width, (name, language, width, sideways)
        screenshot(page, f"{name}-{language}-{width}")
    if width == 1366:
        open_chart(page)
        page.emulate_media(media="print")
        assert not page.is_visible("#chart-actions")
        assert page.is_visible(".chart-print-header")
        screenshot(page, f"chart-print-{language}")
