"""Dashboard benchmark (not a test): the figures and charts at a million patients and three
million studies.

Reuses the database that ``bench/bench_export.py`` seeds (``backoffice_bench_export``: 1,000,000
patients, 3,000,000 studies over three years) and measures, median of several runs, the server's
own time for each aggregate query behind the dashboard and for the whole page (WSGI app
in-process, Flask's test client, body read to the end), and the process's peak memory.

    .venv/bin/python bench/bench_export.py          # once, to seed the database
    .venv/bin/python bench/bench_dashboard.py       # then this
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DB_NAME = os.environ.get("BENCH_EXPORT_DB", "backoffice_bench_export")
SERVER = os.environ.get("BENCH_PG_SERVER", "postgresql://postgres@127.0.0.1:5432")
EMAIL = "bench.dashboard@example.com"
PASSWORD = "bench dashboard passphrase 2026"  # noqa: S105 - a throwaway bench account


def median_ms(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    fn()  # warm-up: plans and caches, as on a server that has been up for a while
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()

    from flask_migrate import upgrade

    from backoffice import create_app
    from backoffice.extensions import db
    from backoffice.models import Patient, Study, User
    from backoffice.services import dashboard as figures
    from backoffice.services.seed import ensure_roles
    from config import normalise_database_url

    app = create_app(
        {
            "ENV_NAME": "development",
            "SQLALCHEMY_DATABASE_URI": normalise_database_url(f"{SERVER}/{DB_NAME}"),
            "WTF_CSRF_ENABLED": False,
            "LOGIN_RATE_LIMIT": "10000 per minute",
        }
    )
    from backoffice.auth.scope import unscoped

    with app.app_context():
        upgrade()
    # A command that reads every patient and study says so (recorded in the audit trail).
    with app.app_context(), unscoped("bench/bench_dashboard.py"):
        patients = db.session.scalar(db.select(db.func.count()).select_from(Patient))
        studies = db.session.scalar(db.select(db.func.count()).select_from(Study))
        if not db.session.scalar(db.select(User.id).where(User.email == EMAIL)):
            roles = ensure_roles()
            from backoffice.models import RoleName

            user = User(email=EMAIL, display_name="Bench", roles=[roles[RoleName.MANAGER]])
            user.set_password(PASSWORD)
            db.session.add(user)
            db.session.commit()
        today = db.session.scalar(db.select(db.func.max(Study.study_date))) or date.today()
        since = figures.week_start(today) - timedelta(weeks=figures.CHART_WEEKS - 1)
        rows = []
        for name, fn in (
            ("key figures (6 cards)", lambda: figures.key_figures(today)),
            ("studies per week by urgency, 12 weeks", lambda: figures.weekly_by_urgency(today)),
            ("studies by type, 12 weeks", lambda: figures.by_type(since, today)),
            ("studies by clinic, 12 weeks", lambda: figures.by_clinic(since, today)),
        ):
            med, worst = median_ms(fn, args.runs)
            rows.append((name, med, worst))
            db.session.rollback()

    client = app.test_client()
    client.post("/login", data={"email": EMAIL, "password": PASSWORD})

    def page() -> None:
        response = client.get("/admin/")
        assert response.status_code == 200, response.status_code
        response.get_data()

    med, worst = median_ms(page, args.runs)
    rows.append(("whole dashboard page (/admin/)", med, worst))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"\nDashboard on PostgreSQL ({DB_NAME}): {patients:,} patients, {studies:,} studies")
    print(f"{'what':<42} {'median ms':>10} {'max ms':>9}")
    for name, m, w in rows:
        print(f"{name:<42} {m:>10.1f} {w:>9.1f}")
    print(f"peak RSS of this process: {peak:.0f} MB (runs: {args.runs})")


if __name__ == "__main__":
    main()
