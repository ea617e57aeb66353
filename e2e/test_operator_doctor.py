"""An operator creates a clinic and a doctor with phones, edits one phone, removes the other."""

from __future__ import annotations

import re

from e2e.conftest import login, screenshot


def pick_ajax(page, field_id: str, text: str) -> None:  # noqa: ANN001
    """Choose a related record in a select2 look-up by typing, as a person would."""
    page.click(f"#s2id_{field_id} a, #s2id_{field_id}")
    page.keyboard.type(text)
    page.wait_for_selector(".select2-result-selectable", state="visible")
    page.click(f".select2-result-selectable:has-text('{text}')")


def choose(page, field_id: str, label: str) -> None:  # noqa: ANN001
    page.click(f"#s2id_{field_id}")
    page.click(f".select2-result-selectable:has-text('{label}')")


def test_operator_creates_clinic_and_doctor_with_phones(new_page):
    page = new_page()
    login(page, "operator")

    page.goto("/admin/clinic/new/")
    page.fill("#name", "Clínica Playwright Norte")
    page.fill("#city", "Puebla")
    page.fill("#phone", "222 123 4567")
    page.click("input[type=submit][value='Save']")
    page.wait_for_url("**/admin/clinic/**")
    assert page.locator(".alert-success").count() == 1

    page.goto("/admin/doctor/new/")
    page.fill("#first_name", "Paula")
    page.fill("#last_name", "Navegador")
    page.fill("#email", "paula.navegador@clinica.example.com")
    choose(page, "specialties", "Radiology")
    pick_ajax(page, "clinic", "Clínica Playwright Norte")
    page.click("#phones-button")
    page.click("#phones-button")
    page.fill("#phones-0-number", "55 1234 5678")
    page.fill("#phones-1-number", "(55) 8765-4321")
    page.check("#phones-0-is_primary")
    screenshot(page, "doctor-form-with-phones")
    page.click("input[type=submit][value='Save and Continue Editing']")
    page.wait_for_url(re.compile(r".*/admin/doctor/edit/.*"))
    assert page.locator(".alert-success").count() == 1
    assert page.input_value("#phones-0-number") == "+525512345678"
    assert page.input_value("#phones-1-number") == "+525587654321"

    # edit the first phone, remove the second: one save
    page.fill("#phones-0-number", "+52 55 1111 2222")
    page.check("#del-phones-1")
    page.click("input[type=submit][value='Save']")
    page.wait_for_url("**/admin/doctor/**")

    page.goto("/admin/doctor/?search=Navegador")
    page.click("table.model-list a[href*='/details/']")
    details = page.locator("table").first.inner_text()
    screenshot(page, "doctor-details")
    assert "+525511112222" in details
    assert "+525587654321" not in details
    assert "Clínica Playwright Norte" in details
