"""A manager exports the HIGH-urgency listing, exactly those rows, and sees no write controls."""

from __future__ import annotations

import csv
import io

from e2e.conftest import login, screenshot


def test_manager_exports_the_high_urgency_listing(new_page):
    page = new_page(accept_downloads=True)
    login(page, "manager")
    page.goto("/admin/patient-studies/")
    page.select_option("#f-urgency", "HIGH")
    page.click("#listing-filters button[type=submit]")
    page.wait_for_url("**urgency=HIGH**")
    screenshot(page, "listing-high")
    with page.expect_download() as download_info:
        page.click("#listing-export a:has-text('Export CSV')")
    download = download_info.value
    text = download.path().read_bytes().decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows, "the export is empty"
    urgency_column = next(c for c in rows[0] if "urgency" in c.lower())
    assert {r[urgency_column] for r in rows} == {"HIGH"}
    # exactly the HIGH studies the database holds (the listing's export: one row per study)
    page.goto("/admin/study/")
    page.goto(page.url.split("?")[0] + "?flt0_0=HIGH&page_size=100")
    shown = page.locator("table.model-list tbody tr").count()
    assert len(rows) == shown


def test_manager_sees_no_write_controls(new_page):
    page = new_page()
    login(page, "manager")
    for url in ("/admin/patient/", "/admin/study/", "/admin/doctor/", "/admin/clinic/"):
        page.goto(url)
        assert page.locator("a[href*='/new/']").count() == 0, url
        assert page.locator("a[href*='/edit/']").count() == 0, url
        assert page.locator("form[action*='/delete/']").count() == 0, url
    page.goto("/admin/")
    assert page.locator("a[href*='/admin/bulk-upload/']").count() == 0
    assert page.request.get("/admin/bulk-upload/").status == 403
