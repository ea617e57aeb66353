"""The dashboard draws its charts from the seeded data, and every bar links to a list."""

from __future__ import annotations

from e2e.conftest import login, screenshot


def test_dashboard_charts_render_with_seeded_data(new_page):
    page = new_page()
    login(page, "manager")
    page.goto("/admin/")
    for chart in ("#chart-weekly", "#chart-types", "#chart-clinics"):
        svg = page.locator(chart)
        assert svg.is_visible()
        box = svg.bounding_box()
        assert box and box["width"] > 200 and box["height"] > 50
        assert svg.locator("rect.chart-bar").count() > 0, chart
    assert int(page.locator("#figure-patients .figure-value").inner_text().replace(",", "")) > 0
    screenshot(page, "dashboard")
    # a bar opens the matching filtered list
    page.locator("#chart-types a").first.click()
    page.wait_for_url("**/admin/study/**")
    assert "flt" in page.url
    screenshot(page, "list-studies-filtered")


def test_every_list_renders(new_page):
    page = new_page()
    login(page, "admin")
    for view in ("clinic", "doctor", "patient", "study", "user", "audit"):
        page.goto(f"/admin/{view}/")
        assert page.locator("table.model-list tbody tr").count() > 0, view
        screenshot(page, f"list-{view}")
