"""Any user switches the language to Spanish, and the pages they then visit are in Spanish."""

from __future__ import annotations

from e2e.conftest import login, screenshot


def test_switch_to_spanish(new_page):
    page = new_page()
    login(page, "support")
    with page.expect_navigation():  # the switcher submits itself when changed
        page.select_option("#language-select", "es")
    for url, words in {
        "/admin/": ["Pacientes", "Cerrar sesión"],
        "/admin/patient/": ["Apellido", "Fecha de nacimiento"],
        "/admin/study/": ["Urgencia"],
        "/admin/patient-studies/": ["Urgencia"],
    }.items():
        page.goto(url)
        text = page.inner_text("body")
        for word in words:
            assert word in text, (url, word)
        assert "Log out" not in text
    screenshot(page, "dashboard-es")
    # the choice is remembered for the user: back to English for the other journeys
    with page.expect_navigation():
        page.select_option("#language-select", "en")
    assert "Log out" in page.inner_text("body")
