"""The dashboard: figures and charts computed from the data, linked to the lists they count."""

from __future__ import annotations

import re
from datetime import date, timedelta
from html import unescape

from backoffice.extensions import db
from backoffice.models import RoleName
from backoffice.services import dashboard as figures
from tests.conftest import csrf_token_from
from tests.factories import make_clinic, make_patient, make_study


def _world() -> dict:
    today = date.today()
    north, south = make_clinic("Clínica Norte"), make_clinic("Clínica Sur")
    ana = make_patient("Ana", "Norte", clinic=north)
    beto = make_patient("Beto", "Sur", clinic=south)
    make_study(ana, urgency="HIGH", study_type="CT", study_date=today)
    make_study(ana, urgency="HIGH", study_type="XRAY", study_date=today - timedelta(days=2))
    make_study(ana, urgency="LOW", study_type="XRAY", study_date=today - timedelta(days=20))
    make_study(beto, urgency="MID", study_type="MRI", study_date=today - timedelta(days=8))
    make_study(beto, urgency="HIGH", study_type="XRAY", study_date=today - timedelta(days=200))
    db.session.commit()
    return {"north": north.id, "south": south.id, "today": today}


def test_key_figures_count_what_the_database_holds(app):
    w = _world()
    today = w["today"]
    key = figures.key_figures(today)
    week_start = figures.week_start(today)
    dates = [
        today,
        today - timedelta(days=2),
        today - timedelta(days=20),
        today - timedelta(days=8),
        today - timedelta(days=200),
    ]
    assert key["studies_week"].value == sum(week_start <= d <= today for d in dates)
    assert key["studies_month"].value == sum(today.replace(day=1) <= d <= today for d in dates)
    assert key["high_last_7_days"].value == 2
    assert key["patients"].value >= 2 and not key["patients"].approximate
    assert key["clinics"].value >= 2


def test_weekly_chart_splits_the_last_twelve_weeks_by_urgency(app):
    w = _world()
    weeks = figures.weekly_by_urgency(w["today"])
    assert len(weeks) == 12
    assert weeks[-1].start <= w["today"] <= weeks[-1].end
    assert sum(b.total for b in weeks) == 4  # the study 200 days ago is outside the window
    assert sum(b.counts[figures.Urgency.HIGH] for b in weeks) == 2


def test_by_type_and_by_clinic_count_the_window(app):
    w = _world()
    since = figures.weekly_by_urgency(w["today"])[0].start
    by_type = dict((t.value, n) for t, n in figures.by_type(since, w["today"]))
    assert by_type == {"XRAY": 2, "CT": 1, "MRI": 1}
    by_clinic = {name: n for _cid, name, n in figures.by_clinic(since, w["today"])}
    assert by_clinic == {"Clínica Norte": 3, "Clínica Sur": 1}


def test_the_page_draws_charts_whose_bars_open_the_filtered_list(client, auth):
    _world()
    auth.as_role(RoleName.MANAGER)
    html = client.get("/admin/").get_data(as_text=True)
    for chart in ("chart-weekly", "chart-types", "chart-clinics"):
        assert f'id="{chart}"' in html
    assert "<script" not in html.split('id="chart-weekly"')[1].split("</svg>")[0]
    links = [unescape(u) for u in re.findall(r'<a href="(/admin/study/\?[^"]+)"><rect', html)]
    assert links
    # the CT bar of the type chart lists exactly the one CT study
    ct = next(
        u
        for u in re.findall(r'<a href="([^"]+)"><rect[^>]*><title>([^<]+)</title>', html)
        if "CT" in u[1]
    )
    page = client.get(unescape(ct[0])).get_data(as_text=True)
    body = page.split("</thead>", 1)[1].split("</table>", 1)[0]
    assert body.count("<tr") == 1
    assert "Norte" in body


def test_chart_labels_follow_the_language(client, auth):
    _world()
    auth.as_role(RoleName.MANAGER)
    page = client.get("/admin/")
    client.post("/language", data={"lang": "es", "csrf_token": csrf_token_from(page.text)})
    html = client.get("/admin/").get_data(as_text=True)
    assert "Alta" in html and "Tomografía" in html


def test_recent_import_batches_only_for_roles_that_upload(client, auth):
    from backoffice.models import ImportBatch

    db.session.add(
        ImportBatch(
            kind="patients",
            file_name="lote-de-prueba.csv",
            file_sha256="0" * 64,
            status="committed",
            rows_total=4,
        )
    )
    db.session.commit()
    auth.as_role(RoleName.MANAGER)
    assert "lote-de-prueba.csv" not in client.get("/admin/").get_data(as_text=True)


def test_admins_see_the_recent_import_batches(client, auth):
    from backoffice.models import ImportBatch

    db.session.add(
        ImportBatch(
            kind="patients",
            file_name="lote-admin.csv",
            file_sha256="0" * 64,
            status="committed",
            rows_total=4,
        )
    )
    db.session.commit()
    auth.as_role(RoleName.ADMIN)
    assert "lote-admin.csv" in client.get("/admin/").get_data(as_text=True)
