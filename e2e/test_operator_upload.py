"""An operator loads the two reference files through the bulk upload page, on an empty database."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e.conftest import login, screenshot

DATA = Path(__file__).resolve().parent.parent / "backoffice" / "data"


@pytest.fixture
def base_url(empty_server: str) -> str:
    return empty_server


def upload(page, kind: str, path: Path) -> None:  # noqa: ANN001
    page.goto("/admin/bulk-upload/")
    page.select_option("#bulk-kind", kind)
    page.set_input_files("#bulk-file", str(path))
    page.click("#bulk-upload-form button[type=submit]")
    page.wait_for_selector("#bulk-outcome", timeout=60_000)


def count(page, key: str) -> int:  # noqa: ANN001
    return int(page.inner_text(f"#count-{key}").replace(",", ""))


def confirm(page) -> None:  # noqa: ANN001
    page.click("#bulk-confirm-form button[type=submit]")
    page.wait_for_selector("#bulk-outcome.alert-success", timeout=60_000)


def test_operator_uploads_the_reference_files(new_page, tmp_path):
    page = new_page()
    login(page, "operator")

    upload(page, "patients", DATA / "patients.csv")
    screenshot(page, "upload-preview")
    assert (count(page, "created"), count(page, "rejected")) == (4, 0)
    assert "Villalobos" in page.inner_text("table.bulk-sample")
    confirm(page)
    assert count(page, "created") == 4

    upload(page, "studies", DATA / "studies.csv")
    assert (count(page, "created"), count(page, "rejected")) == (4, 0)
    confirm(page)

    page.goto("/admin/patient-studies/")
    screenshot(page, "listing")
    listing = page.inner_text("body")
    for name in ("Villalobos", "Ramirez", "Del Toro", "Trevino"):
        assert name in listing
    for part in ("STOMACH", "NECK", "CHEST", "BREASTS"):
        assert part in listing or part.title() in listing

    # the same files again: nothing changes, and the page says so
    upload(page, "patients", DATA / "patients.csv")
    assert (count(page, "created"), count(page, "updated"), count(page, "unchanged")) == (0, 0, 4)
    upload(page, "studies", DATA / "studies.csv")
    assert (count(page, "created"), count(page, "updated"), count(page, "unchanged")) == (0, 0, 4)

    # a bad row: its line, column, value and the reason
    bad = tmp_path / "patients-bad.csv"
    bad.write_text(
        "first_name, last_name, birth_date, email, id\n"
        "Ana, Buena, 1980-01-02, ana.buena@ejemplo.com, 10\n"
        "Beto, Malo, 1955-13-10, beto@ejemplo.com, 11\n",
        encoding="utf-8",
    )
    upload(page, "patients", bad)
    screenshot(page, "upload-preview-with-errors")
    assert count(page, "rejected") == 1
    problems = page.inner_text("table.bulk-problems")
    assert "3" in problems.split("\n")[1]  # the line of the bad row (header is line 1)
    assert "birth_date" in problems
    assert "1955-13-10" in problems
    assert "YYYY-MM-DD" in problems
