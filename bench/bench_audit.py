"""Audit cost benchmark (not a test): a doctor form save with three phones, audit on and off.

Creates and migrates its own PostgreSQL database, logs in through the login form with the test
client, then times N saves of the doctor edit form (a name and all three phone rows changed on
every save) with the audit trail on and with it off (``AUDIT_ENABLED``, a benchmark-only switch).
Only the POST is timed; the form is read (untimed) before each save, as a browser would have it.
Times come from child processes that alternate audit on and off from one save to the next, so
a busy machine slows both modes alike; each mode's peak RSS comes from a child of its own.

    .venv/bin/python bench/bench_audit.py                  # 300 saves per mode, 2 rounds each
    .venv/bin/python bench/bench_audit.py --saves 100 --rounds 1
    BENCH_AUDIT_DATABASE_URL=postgresql://user@host/db .venv/bin/python bench/bench_audit.py
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config import normalise_database_url  # noqa: E402

PG_URL = normalise_database_url(
    os.environ.get(
        "BENCH_AUDIT_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/backoffice_bench_audit"
    )
)
EMAIL = "bench-admin@bench.example.com"
PASSWORD = "bench passphrase that is long enough"  # noqa: S105 - the bench's own database
DOCTOR_EMAIL = "bench.doctor@bench.example.com"
NUMBERS = (
    ("55 1234 5678", "55 8765 4321", "33 1122 3344"),
    ("55 2222 3333", "55 4444 5555", "33 6666 7777"),
)
KINDS = (("MOBILE", "OFFICE", "HOME"), ("OFFICE", "HOME", "FAX"))


def build_app(audit: bool = True):  # noqa: ANN201
    from backoffice import create_app

    return create_app(
        {
            "ENV_NAME": "development",
            "SQLALCHEMY_DATABASE_URI": PG_URL,
            "AUDIT_ENABLED": audit,
            "LOG_LEVEL": "WARNING",
        }
    )


# --------------------------------------------------------------------------- set-up


def recreate_database() -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(PG_URL)
    server = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{url.database}"'))
    server.dispose()


def prepare() -> None:
    """A fresh, migrated database with one admin and one doctor with three phones."""
    from flask_migrate import upgrade

    from backoffice.extensions import db
    from backoffice.models import Clinic, Doctor, DoctorPhone, Role, RoleName, User

    recreate_database()
    app = build_app()
    with app.app_context():
        upgrade()
        admin_role = db.session.scalar(db.select(Role).where(Role.name == RoleName.ADMIN))
        if admin_role is None:  # roles come from the migrations; be safe if they do not
            admin_role = Role(name=RoleName.ADMIN)
        user = User(email=EMAIL, display_name="Bench", roles=[admin_role])
        user.set_password(PASSWORD)
        clinic = Clinic(name="Clínica Benchmark", city="Ciudad de México")
        doctor = Doctor(first_name="Ana", last_name="Martínez", email=DOCTOR_EMAIL, clinic=clinic)
        for i, (number, kind) in enumerate(zip(NUMBERS[0], KINDS[0], strict=True)):
            doctor.phones.append(DoctorPhone(number=number, kind=kind, is_primary=i == 0))
        db.session.add_all([user, doctor])
        db.session.commit()
        db.engine.dispose()


# --------------------------------------------------------------------------- one child


class FormReader(HTMLParser):
    """What a browser would send back from the page's admin form."""

    def __init__(self) -> None:
        super().__init__()
        self.inside = False
        self.values: dict[str, str] = {}
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "form" and "admin-form" in (a.get("class") or ""):
            self.inside = True
        if not self.inside:
            return
        name = a.get("name")
        if tag == "input" and name:
            if a.get("type") in ("checkbox", "radio"):
                if "checked" in a:
                    self.values[name] = a.get("value") or "y"
            elif a.get("type") not in ("submit", "button", "file"):
                self.values[name] = a.get("value") or ""
        elif tag == "select" and name:
            self._select = name
        elif tag == "option" and self._select and "selected" in a:
            self.values[self._select] = a.get("value") or ""
        elif tag == "textarea" and name:
            self.values[name] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False
        elif tag == "select":
            self._select = None


def form_of(html: str) -> dict[str, str]:
    reader = FormReader()
    reader.feed(html)
    return reader.values


def run_child(mode: str, saves: int, warmup: int) -> dict:
    """``on`` or ``off``: every save in that mode; ``mixed``: on and off save after save."""
    from sqlalchemy import event, func, select

    from backoffice.extensions import db
    from backoffice.models import AuditEntry, Doctor

    app = build_app(audit=mode != "off")
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    response = client.post(
        "/login", data={"email": EMAIL, "password": PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 302, "login failed"
    with app.app_context():
        doctor_id = db.session.scalar(select(Doctor.id).where(Doctor.email == DOCTOR_EMAIL))
        entries_before = db.session.scalar(select(func.count()).select_from(AuditEntry))
        engine = db.engine
    url = f"/admin/doctor/edit/?id={doctor_id}"

    statements = 0

    def count(*_args: object) -> None:
        nonlocal statements
        statements += 1

    times: dict[str, list[float]] = {"on": [], "off": []}
    queries: dict[str, list[int]] = {"on": [], "off": []}
    for i in range(warmup + 2 * saves if mode == "mixed" else warmup + saves):
        now = mode if mode != "mixed" else ("on", "off")[i % 2]
        app.config["AUDIT_ENABLED"] = now == "on"
        data = form_of(client.get(url).get_data(as_text=True))
        variant = i % 2
        data["last_name"] = ("Martínez", "Martínez López")[variant]
        data["licence_number"] = f"CED-{i:06d}"
        for row in range(3):
            data[f"phones-{row}-number"] = NUMBERS[variant][row]
            data[f"phones-{row}-kind"] = KINDS[variant][row]
        statements = 0
        event.listen(engine, "before_cursor_execute", count)
        started = time.perf_counter()
        response = client.post(url, data=data)
        elapsed = time.perf_counter() - started
        event.remove(engine, "before_cursor_execute", count)
        if response.status_code != 302:
            raise SystemExit(f"save {i} was refused ({response.status_code})")
        if i >= warmup:
            times[now].append(elapsed)
            queries[now].append(statements)
    with app.app_context():
        entries_after = db.session.scalar(select(func.count()).select_from(AuditEntry))
    return {
        "mode": mode,
        "times": times,
        "queries": {k: statistics.median(v) for k, v in queries.items() if v},
        "entries_per_save": (entries_after - entries_before) / (i + 1),
        "max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


# --------------------------------------------------------------------------- the report


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def child(mode: str, saves: int, warmup: int) -> dict:
    out = subprocess.run(  # noqa: S603 - our own script with our own arguments
        [sys.executable, __file__, "--child", mode, "--saves", str(saves), "--warmup", str(warmup)],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    print(f"  {mode}: done", file=sys.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=300, help="timed saves per mode and round")
    parser.add_argument("--warmup", type=int, default=30, help="untimed saves first")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    parser.add_argument("--child", choices=("on", "off", "mixed"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(run_child(args.child, args.saves, args.warmup)))
        return

    prepare()
    mixed = [child("mixed", args.saves, args.warmup) for _ in range(args.rounds)]
    alone = {mode: child(mode, args.saves, args.warmup) for mode in ("off", "on")}

    rows = {}
    for mode in ("off", "on"):
        times = [t for run in mixed for t in run["times"][mode]]
        rows[mode] = {
            "median": statistics.median(times) * 1000,
            "p95": p95(times) * 1000,
            "queries": statistics.median(run["queries"][mode] for run in mixed),
            "entries": alone[mode]["entries_per_save"],
            "rss": alone[mode]["max_rss_kb"] / 1024,
            "n": len(times),
        }
    on, off = rows["on"], rows["off"]
    print()
    print(
        "Doctor form save with three phones (name, licence and 3 phone rows changed), "
        f"PostgreSQL; {args.rounds} round(s) of {args.saves} saves per mode, on and off "
        f"alternating, after {args.warmup} warm-up saves"
    )
    print()
    header = f"{'audit':<6} {'saves':>6} {'median ms':>10} {'p95 ms':>8} "
    header += f"{'SQL/save':>9} {'entries/save':>13} {'peak RSS MB':>12}"
    print(header)
    print("-" * len(header))
    for mode in ("off", "on"):
        r = rows[mode]
        print(
            f"{mode:<6} {r['n']:>6} {r['median']:>10.2f} {r['p95']:>8.2f} "
            f"{r['queries']:>9.0f} {r['entries']:>13.1f} {r['rss']:>12.1f}"
        )
    print()
    median_cost = (on["median"] / off["median"] - 1) * 100
    p95_cost = (on["p95"] / off["p95"] - 1) * 100
    print(f"audit overhead: median {median_cost:+.1f}%, p95 {p95_cost:+.1f}% (target: under 15%)")


if __name__ == "__main__":
    main()
