"""A study's day in the browser: an operator orders a study, books it, checks the patient in,
starts and completes it; the doctor writes and signs the report, then adds an addendum; the
front desk moves several studies at once and sees what happened to each."""

from __future__ import annotations

import re
from datetime import date, timedelta

from e2e.conftest import login, screenshot
from e2e.test_operator_doctor import choose, pick_ajax


def status_of(page) -> str:  # noqa: ANN001
    return page.locator("#study-workflow .card-title .study-status").inner_text()


def test_a_study_from_order_to_signed_report(new_page):
    operator = new_page()
    login(operator, "operator")
    operator.goto("/admin/study/new/")
    pick_ajax(operator, "patient", "Villalobos")
    choose(operator, "urgency", "High")
    choose(operator, "study_type", "CT scan")
    operator.fill("#body_part", "chest")
    operator.fill("#accession_number", "E2E-WF-1")
    pick_ajax(operator, "reporting_doctor", "Martínez")
    operator.click("input[type=submit][value='Save']")
    operator.wait_for_url("**/admin/study/**")
    operator.goto("/admin/study/?search=E2E-WF-1")
    operator.click("table.model-list a[href*='/details/']")
    assert status_of(operator) == "Ordered"

    # Book it for tomorrow 09:30, then the day itself.
    operator.click("#study-workflow summary:has-text('Schedule')")
    tomorrow = (date.today() + timedelta(days=1)).isoformat()
    operator.fill("#study-workflow input[name=scheduled_for]", f"{tomorrow}T09:30")
    operator.click("#study-workflow button:has-text('Confirm: Schedule')")
    operator.wait_for_load_state()
    assert status_of(operator) == "Scheduled"
    assert "Appointment" in operator.locator("#study-timeline").inner_text()
    for button, status in (
        ("Check in", "Checked in"),
        ("Start", "In progress"),
        ("Complete", "Performed"),
    ):
        operator.click(f"#study-workflow button:text-is('{button}')")
        operator.wait_for_load_state()
        assert status_of(operator) == status, button
    screenshot(operator, "study-performed-operator")
    study_url = operator.url
    assert operator.locator("#study-workflow button").count() == 0  # nothing left: the report

    doctor = new_page()
    login(doctor, "doctor")
    doctor.goto(study_url)
    doctor.click("#write-report")
    doctor.fill("#r-findings", "Small nodule in the right upper lobe, 4 mm.")
    doctor.click("#save-draft")
    assert "Draft saved." in doctor.locator(".alert-success").inner_text()
    doctor.fill("#r-impression", "Benign-appearing nodule.")
    doctor.once("dialog", lambda dialog: dialog.accept())
    doctor.click("#sign-report")
    doctor.wait_for_load_state()
    assert "The report is signed" in doctor.locator(".alert-success").inner_text()
    assert "Signed by Dr. Ana Martínez" in doctor.locator("#report-signature").inner_text()
    assert doctor.locator("#report-form").count() == 0  # a signed report has no form

    doctor.fill("#addendum-text", "Compared with the study of last year: unchanged.")
    doctor.once("dialog", lambda dialog: dialog.accept())
    doctor.click("#sign-addendum")
    doctor.wait_for_load_state()
    assert "Addendum 1" in doctor.locator("#addendum-1").inner_text()
    screenshot(doctor, "report-signed-with-addendum")
    pdf = doctor.request.get(doctor.locator("#pdf-report").get_attribute("href"))
    assert pdf.status == 200 and pdf.body().startswith(b"%PDF")
    doctor.goto(doctor.locator("#print-report").get_attribute("href"))
    assert "Small nodule in the right upper lobe" in doctor.locator("main").inner_text()
    screenshot(doctor, "report-print")

    operator.reload()
    assert status_of(operator) == "Reported"
    assert "Signed by Dr. Ana Martínez" in operator.locator("#study-report").inner_text()


def test_the_front_desk_moves_several_studies_at_once(new_page):
    page = new_page()
    login(page, "operator")
    page.goto("/admin/patient-studies/?status=SCHEDULED")
    assert page.locator(".listing-study").count() > 0
    page.goto("/admin/study/?sort=0&desc=1")
    boxes = page.locator("input.action-checkbox")
    rows = [boxes.nth(i) for i in range(3)]
    for box in rows:
        box.check()
    page.click("a:has-text('With selected')")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("a[data-model-action='check_in']")
    page.wait_for_selector("#bulk-outcomes")
    summary = page.locator("#bulk-summary").inner_text()
    assert re.fullmatch(r"\d of 3 studies done\.", summary.strip()), summary
    screenshot(page, "bulk-check-in-result")

    page.click("text=Back to the list")
    for i in range(2):
        page.locator("input.action-checkbox").nth(i).check()
    page.click("a:has-text('With selected')")
    page.click("a[data-model-action='cancel']")
    page.wait_for_selector("#bulk-move-form")
    screenshot(page, "bulk-cancel-form")
    page.fill("#bulk-reason", "The scanner is down for maintenance")
    page.click("#bulk-move-form button[type=submit]")
    page.wait_for_selector("#bulk-outcomes")
    assert page.locator("#bulk-outcomes tbody tr").count() == 2
