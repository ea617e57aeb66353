"""Export and list-speed benchmark (not a test): a million patients, three million studies.

Seeds ``backoffice_bench_export`` on PostgreSQL with COPY (once; reused by later runs and left in
place), then measures, median of several runs, the server's own time (the WSGI app in-process,
driven by Flask's test client, body read to the end) and peak memory (max RSS of a child process
that does nothing else) for the exports and the list pages of issue 6, and PostgreSQL's own
``COPY (SELECT ...) TO STDOUT`` of the same patient rows as the floor.

    .venv/bin/python bench/bench_export.py              # seed if needed, measure, print a table
    .venv/bin/python bench/bench_export.py --reseed     # drop and seed the database again
    .venv/bin/python bench/bench_export.py --runs 5 --page-runs 15
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DB_NAME = os.environ.get("BENCH_EXPORT_DB", "backoffice_bench_export")
SERVER = os.environ.get("BENCH_PG_SERVER", "postgresql://postgres@127.0.0.1:5432")
URL = f"{SERVER}/{DB_NAME}"
PATIENTS = 1_000_000
STUDIES = 3_000_000
CLINICS = 20
DOCTORS = 2_000
ADMIN_EMAIL = "bench.admin@example.com"
ADMIN_PASSWORD = "bench export passphrase 2026"  # noqa: S105 - a throwaway bench account

FIRST = [
    "José", "María", "Juan", "Guadalupe", "Francisco", "Fernanda", "Alejandro", "Ximena",
    "Luis", "Ana", "Carlos", "Sofía", "Miguel", "Valeria", "Jorge", "Daniela", "Diego",
    "Camila", "Ricardo", "Lucía", "Eduardo", "Paola", "Roberto", "Andrea", "Héctor", "Mariana",
]  # fmt: skip
# 52 stems x 8 endings: about 400 surnames, a few thousand patients each.
STEMS = [
    "Garc", "Hernánd", "Lóp", "Martín", "Gonzál", "Pér", "Rodríg", "Núñ", "Sánch", "Ramír",
    "Flor", "Gómez", "Vázqu", "Cruz", "Moral", "Reyes", "Gutiérr", "Ortiz", "Cháv", "Ruiz",
    "Jimén", "Mendoz", "Álvar", "Castill", "Romer", "Torr", "Ríos", "Vargas", "Aguilar", "Medin",
    "Guerrer", "Castr", "Luna", "Herrer", "Navarr", "Salaz", "Domíng", "Ibarr", "Peñ", "Zamor",
    "Villalob", "Trevi", "Delgad", "Cabrer", "Esquivel", "Fuent", "Orozc", "Pineda", "Rangel",
    "Robles", "Soto", "Valdez",
]  # fmt: skip
ENDINGS = ["ez", "a", "o", "es", "ia", "as", "il", "ón"]
LAST = [stem + end for stem in STEMS for end in ENDINGS]
TYPES = {
    "XRAY": ["CHEST", "HAND", "KNEE", "SPINE", "STOMACH", "NECK"],
    "MAMMOGRAM": ["BREASTS"],
    "CT": ["HEAD", "ABDOMEN", "CHEST"],
    "MRI": ["BRAIN", "KNEE", "SPINE"],
    "ULTRASOUND": ["ABDOMEN", "PELVIS", "THYROID"],
    "PET": ["WHOLE_BODY"],
    "OTHER": ["OTHER"],
}
DESCRIPTIONS = [
    "NO FINDINGS", "FOLLOW-UP IN 6 MONTHS", "NORMAL", "SMALL NODULE, BENIGN",
    "HIGH DENSITY ON LEFT SIDE", "UNUSUAL RATIO", "NORMAL THYROID", "",
]  # fmt: skip
URGENCIES = ["HIGH"] * 15 + ["MID"] * 35 + ["LOW"] * 50


# --------------------------------------------------------------------------- seeding


class _Lines(io.RawIOBase):
    """A file-like view of a generator of text lines, for psycopg2's ``copy_expert``."""

    def __init__(self, lines: Iterator[str]) -> None:
        super().__init__()
        self._lines = lines
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = "".join(line for _, line in zip(range(2000), self._lines, strict=False))
            if not chunk:
                break
            self._buffer += chunk.encode("utf-8")
        if size < 0:
            size = len(self._buffer)
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out


def _psql_admin(sql: str) -> None:
    import psycopg2

    conn = psycopg2.connect(f"{SERVER}/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


def _database_ready() -> bool:
    import psycopg2

    try:
        conn = psycopg2.connect(URL)
    except psycopg2.OperationalError:
        return False
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM study WHERE id > %s", (STUDIES - 10,))
            return cur.fetchone()[0] >= 1
    except psycopg2.Error:
        return False
    finally:
        conn.close()


def _copy(cur: Any, table: str, columns: str, lines: Iterator[str]) -> None:
    cur.copy_expert(f"COPY {table} ({columns}) FROM STDIN", _Lines(lines), size=1 << 16)


def seed() -> float:
    """Drop and create the database, migrate it, COPY the rows in, index, analyse."""
    started = time.perf_counter()
    _psql_admin(f'DROP DATABASE IF EXISTS "{DB_NAME}"')
    _psql_admin(f'CREATE DATABASE "{DB_NAME}"')
    app = _app()
    from flask_migrate import upgrade

    from backoffice.extensions import db
    from backoffice.models import Patient, Role, RoleName, Study, User

    with app.app_context():
        upgrade()
        admin = User(email=ADMIN_EMAIL, display_name="Bench admin", active=True)
        admin.roles = [db.session.scalars(db.select(Role).filter_by(name=RoleName.ADMIN)).one()]
        admin.set_password(ADMIN_PASSWORD)
        db.session.add(admin)
        db.session.commit()
        indexes = [
            ix
            for table in (Patient.__table__, Study.__table__)
            for ix in table.indexes
            if not ix.unique
        ]
        engine = db.engine
    rng = random.Random(6)
    now = datetime.now(UTC).isoformat()
    raw = engine.raw_connection()
    cur = raw.cursor()
    cur.execute("SET maintenance_work_mem = '512MB'")
    for ix in indexes:
        cur.execute(f'DROP INDEX IF EXISTS "{ix.name}"')
    for table in ("clinic", "doctor", "doctor_phone", "patient", "study"):
        # The rows are consistent by construction: no per-row foreign-key checks while loading.
        cur.execute(f"ALTER TABLE {table} DISABLE TRIGGER ALL")

    print(f"seeding {DB_NAME}: clinics, doctors ...", flush=True)
    cities = ["Ciudad de México", "Guadalajara", "Monterrey", "Puebla", "Querétaro"]
    _copy(
        cur,
        "clinic",
        "id, name, city, phone, created_at, updated_at, version",
        (
            f"{i}\tClínica {rng.choice(LAST)} {i}\t{cities[i % 5]}\t+5255{5000000 + i:08d}"
            f"\t{now}\t{now}\t1\n"
            for i in range(1, CLINICS + 1)
        ),
    )
    specialties = ["RADIOLOGY", "GENERAL_PRACTICE", "CARDIOLOGY", "ONCOLOGY", "OTHER"]
    _copy(
        cur,
        "doctor",
        "id, first_name, last_name, email, specialty, clinic_id, active,"
        " created_at, updated_at, version",
        (
            f"{i}\t{rng.choice(FIRST)}\t{rng.choice(LAST)}\tdoctor{i}@clinica.example.com"
            f"\t{specialties[i % 5]}\t{1 + i % CLINICS}\tt\t{now}\t{now}\t1\n"
            for i in range(1, DOCTORS + 1)
        ),
    )
    _copy(
        cur,
        "doctor_phone",
        "id, doctor_id, number, kind, is_primary",
        (
            f"{i}\t{1 + (i - 1) // 2}\t+5255{10000000 + i:08d}\t{'MOBILE' if i % 2 else 'OFFICE'}"
            f"\t{'t' if i % 2 else 'f'}\n"
            for i in range(1, DOCTORS * 2 + 1)
        ),
    )

    print(f"seeding {DB_NAME}: {PATIENTS:,} patients ...", flush=True)
    start = date(1930, 1, 1)

    def patients() -> Iterator[str]:
        r = random.Random(1)
        for i in range(1, PATIENTS + 1):
            first, last = r.choice(FIRST), r.choice(LAST)
            birth = start + timedelta(days=r.randrange(0, 365 * 90))
            clinic = "\\N" if i % 25 == 0 else str(1 + r.randrange(CLINICS))
            doctor = "\\N" if i % 10 == 0 else str(1 + r.randrange(DOCTORS))
            yield (
                f"{i}\tMRN{i:08d}\t{first}\t{last}\t{birth.isoformat()}"
                f"\tpaciente{i}@correo.example.com\t{doctor}\t{clinic}\t{now}\t{now}\t1\n"
            )

    _copy(
        cur,
        "patient",
        "id, mrn, first_name, last_name, birth_date, email, referring_doctor_id, clinic_id,"
        " created_at, updated_at, version",
        patients(),
    )

    print(f"seeding {DB_NAME}: {STUDIES:,} studies ...", flush=True)
    today = date.today()
    types = list(TYPES)

    def studies() -> Iterator[str]:
        r = random.Random(2)
        for i in range(1, STUDIES + 1):
            kind = types[r.randrange(5)] if r.random() < 0.95 else r.choice(types)
            description = r.choice(DESCRIPTIONS) or "\\N"
            yield (
                f"{i}\t{1 + r.randrange(PATIENTS)}\t{r.choice(URGENCIES)}\t"
                f"{r.choice(TYPES[kind])}\t{description}\t{kind}\t{1 + r.randrange(DOCTORS)}\t"
                f"{(today - timedelta(days=r.randrange(0, 3 * 365))).isoformat()}\t"
                f"ACC{i:09d}\t{now}\t{now}\t1\n"
            )

    _copy(
        cur,
        "study",
        "id, patient_id, urgency, body_part, description, study_type, ordering_doctor_id,"
        " study_date, accession_number, created_at, updated_at, version",
        studies(),
    )
    for table in ("clinic", "doctor", "doctor_phone", "patient", "study"):
        cur.execute(f"ALTER TABLE {table} ENABLE TRIGGER ALL")
        cur.execute(f"SELECT setval('{table}_id_seq', (SELECT max(id) FROM {table}))")
    # The studies came in with their triggers off: the per-patient summary the listing sorts
    # by (migration 0008) is filled here, as the migration's backfill does.
    from backoffice.models import Urgency

    rank = " ".join(f"WHEN '{u.value}' THEN {u.rank}" for u in Urgency)
    cur.execute(
        "INSERT INTO patient_study_summary (patient_id, top_rank, latest_date) "
        f"SELECT patient_id, min(CASE urgency {rank} END), max(study_date) "
        "FROM study GROUP BY patient_id"
    )
    raw.commit()
    print(f"seeding {DB_NAME}: indexes ...", flush=True)
    from sqlalchemy.schema import CreateIndex

    for ix in indexes:
        cur.execute(str(CreateIndex(ix).compile(dialect=engine.dialect)))
        raw.commit()
    raw.dbapi_connection.autocommit = True
    cur.execute("VACUUM ANALYZE")
    cur.close()
    raw.close()
    return time.perf_counter() - started


def _ensure_indexes(app: Any) -> None:
    """A reused database gets the indexes the models declare now (and fresh statistics)."""
    from sqlalchemy import inspect

    from backoffice.extensions import db
    from backoffice.models import Doctor, Patient, Study

    with app.app_context():
        engine = db.engine
        existing = {
            ix["name"]
            for table in ("patient", "study", "doctor")
            for ix in inspect(engine).get_indexes(table)
        }
        missing = [
            ix
            for model in (Patient, Study, Doctor)
            for ix in model.__table__.indexes
            if ix.name not in existing
        ]
        if not missing:
            return
        with engine.begin() as conn:
            for ix in missing:
                print(f"creating index {ix.name}", flush=True)
                ix.create(conn)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            from sqlalchemy import text

            conn.execute(text("VACUUM ANALYZE patient"))


# --------------------------------------------------------------------------- measuring


def _app() -> Any:
    from backoffice import create_app

    return create_app(
        {
            "ENV_NAME": "development",
            "SQLALCHEMY_DATABASE_URI": URL.replace("postgresql://", "postgresql+psycopg2://"),
            "LOGIN_RATE_LIMIT": "1000 per minute",
        }
    )


def _client(app: Any) -> Any:
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    response = client.post(
        "/login", data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 302, response.status_code
    return client


def _filter_arg(app: Any, endpoint: str, column: Any) -> str:
    """The query-string key of a view's "equals" filter on ``column`` (its index may move)."""
    admin = app.extensions["admin"][0]
    view = next(v for v in admin._views if getattr(v, "endpoint", None) == endpoint)
    for index, flt in enumerate(view._filters):
        if getattr(flt, "column", None) is column and "equal" in str(flt.operation()):
            return f"flt0_{index}"
    raise LookupError(f"no equals filter on {column} in {endpoint}")


def _urls(app: Any) -> dict[str, str]:
    from sqlalchemy import select

    from backoffice.extensions import db
    from backoffice.models import Clinic, Study

    with app.app_context():
        high = _filter_arg(app, "study", Study.urgency)
        clinic = db.session.scalar(select(Clinic.id).order_by(Clinic.id))
    return {
        "export_patients_csv": "/admin/patient/export/csv/",
        "export_studies_high_csv": f"/admin/study/export/csv/?{high}=HIGH",
        "export_listing_clinic_csv": f"/admin/patient-studies/export/csv/?clinic={clinic}",
        "export_listing_clinic_xlsx": f"/admin/patient-studies/export/xlsx/?clinic={clinic}",
        "listing_first_page": "/admin/patient-studies/",
        "listing_deep_page": "/admin/patient-studies/?page=10000",
        "listing_last_name_search": "/admin/patient-studies/?search=Zamora",
        "listing_by_urgency": "/admin/patient-studies/?sort=urgency",
        "listing_by_urgency_deep": "/admin/patient-studies/?sort=urgency&page=10000",
        "listing_by_recent": "/admin/patient-studies/?sort=recent",
        "patients_page_1": "/admin/patient/",
        "patients_page_10000": "/admin/patient/?page=9999",
        "patients_substring_search": "/admin/patient/?search=ernánd",
        "patients_surname_search": "/admin/patient/?search=llalobes",
        "studies_high": f"/admin/study/?{high}=HIGH",
        "studies_page_10000": "/admin/study/?page=9999",
        "studies_search_patient": "/admin/study/?search=Zamora",
    }


def _rss_mb() -> float:
    """The process's resident memory now (VmRSS), in MB."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def child_export(url: str) -> dict[str, Any]:
    """One export in a fresh process: seconds to the first byte and to the last, and the
    process's resident memory sampled at every chunk (its peak while the export runs; the
    login's Argon2 hash, 64 MB for a moment, is over before the export starts)."""
    app = _app()
    client = _client(app)
    rss_before = _rss_mb()
    peak = rss_before
    cpu_before = time.process_time()
    started = time.perf_counter()
    response = client.get(url, buffered=False)
    first = None
    size = 0
    lines = 0
    tail = b""
    for chunk in response.response:
        if first is None:
            first = time.perf_counter() - started
        size += len(chunk)
        lines += chunk.count(b"\n")
        tail = (tail + chunk)[-300:]
        peak = max(peak, _rss_mb())
    response.close()
    total = time.perf_counter() - started
    assert response.status_code == 200, response.status_code
    assert b"EXPORT FAILED" not in tail
    return {
        "seconds": total,
        "first_byte": first,
        "bytes": size,
        "rows": lines - 1,
        "peak_mb": peak,
        "cpu_seconds": time.process_time() - cpu_before,
        "rss_before_mb": rss_before,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def child_copy_floor() -> dict[str, Any]:
    """PostgreSQL's own CSV of the same patient rows: ``COPY (SELECT ...) TO STDOUT``."""
    import psycopg2

    class Sink:
        size = 0

        def write(self, data: bytes) -> int:
            Sink.size += len(data)
            return len(data)

    conn = psycopg2.connect(URL)
    started = time.perf_counter()
    with conn.cursor() as cur:
        cur.copy_expert(
            "COPY (SELECT p.mrn, p.first_name, p.last_name, p.birth_date, p.email, d.email,"
            " c.name FROM patient p LEFT JOIN doctor d ON d.id = p.referring_doctor_id"
            " LEFT JOIN clinic c ON c.id = p.clinic_id"
            " ORDER BY p.last_name, p.first_name, p.id) TO STDOUT WITH (FORMAT csv, HEADER)",
            Sink(),
        )
    total = time.perf_counter() - started
    conn.close()
    return {
        "seconds": total,
        "bytes": Sink.size,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def child_pages(names: list[str], runs: int) -> dict[str, Any]:
    """List pages in one process: one warm-up each, then the median of ``runs``."""
    app = _app()
    client = _client(app)
    urls = _urls(app)
    out = {}
    for name in names:
        url = urls[name]
        timings = []
        for run in range(runs + 1):
            started = time.perf_counter()
            response = client.get(url)
            body = response.get_data()
            elapsed = time.perf_counter() - started
            assert response.status_code == 200, (name, response.status_code)
            if run:
                timings.append(elapsed)
        total = re.search(rb"(?:List \(|of )([^)<]*)", body)
        out[name] = {
            "median_ms": statistics.median(timings) * 1000,
            "min_ms": min(timings) * 1000,
            "total_shown": total.group(1).decode().strip() if total else "",
        }
    return out


def _in_child(*args: str) -> dict[str, Any]:
    result = subprocess.run(  # noqa: S603 - this very script, with our own arguments
        [sys.executable, __file__, "--child", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    if result.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reseed", action="store_true", help="drop and seed the database again")
    parser.add_argument("--runs", type=int, default=3, help="runs per export (median)")
    parser.add_argument("--page-runs", type=int, default=9, help="runs per list page (median)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        kind = args.child[0]
        if kind == "export":
            result = child_export(args.child[1])
        elif kind == "copy":
            result = child_copy_floor()
        else:
            result = child_pages(args.child[2:], int(args.child[1]))
        print(json.dumps(result))
        return

    if args.reseed or not _database_ready():
        seconds = seed()
        print(f"seeded {DB_NAME} in {seconds:.0f} s", flush=True)
    else:
        print(f"reusing {DB_NAME} (--reseed to seed it again)", flush=True)

    app = _app()
    _ensure_indexes(app)
    urls = _urls(app)
    rows: list[tuple[str, str, str, str, str]] = []

    def export_row(name: str, target: str) -> None:
        results = [_in_child("export", urls[name]) for _ in range(args.runs)]
        med = statistics.median(r["seconds"] for r in results)
        first = statistics.median(r["first_byte"] for r in results)
        peak = max(r["peak_mb"] for r in results)
        before = min(r["rss_before_mb"] for r in results)
        cpu = statistics.median(r["cpu_seconds"] for r in results)
        rows.append(
            (
                name,
                f"{med:.2f} s (first byte {first * 1000:.0f} ms)",
                f"{peak:.0f} MB (app idle {before:.0f})",
                (f"{results[0]['rows']:,} rows, " if "/csv/" in urls[name] else "")
                + f"{results[0]['bytes'] / 1e6:.0f} MB, CPU {cpu:.1f} s",
                target,
            )
        )
        print(rows[-1], flush=True)

    floor = [_in_child("copy") for _ in range(args.runs)]
    rows.append(
        (
            "floor: COPY (SELECT patients) TO STDOUT",
            f"{statistics.median(r['seconds'] for r in floor):.2f} s",
            f"{max(r['peak_mb'] for r in floor):.0f} MB",
            f"{floor[0]['bytes'] / 1e6:.0f} MB",
            "",
        )
    )
    print(rows[-1], flush=True)
    export_row("export_patients_csv", "< 5 s, < 150 MB")
    export_row("export_studies_high_csv", "")
    export_row("export_listing_clinic_csv", "")
    export_row("export_listing_clinic_xlsx", "")

    page_names = [
        "listing_first_page",
        "listing_deep_page",
        "listing_last_name_search",
        "listing_by_urgency",
        "listing_by_urgency_deep",
        "listing_by_recent",
        "patients_page_1",
        "patients_page_10000",
        "patients_substring_search",
        "patients_surname_search",
        "studies_high",
        "studies_page_10000",
        "studies_search_patient",
    ]
    pages = _in_child("pages", str(args.page_runs), *page_names)
    for name in page_names:
        r = pages[name]
        rows.append(
            (
                name,
                f"{r['median_ms']:.1f} ms (min {r['min_ms']:.1f})",
                "",
                f"total shown: {r['total_shown']}",
                "< 50 ms",
            )
        )

    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    header = ("measure", "server time (median)", "peak RSS", "size", "target")
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=True)]
    print()
    print(f"PostgreSQL database {DB_NAME}: {PATIENTS:,} patients, {STUDIES:,} studies")
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


if __name__ == "__main__":
    main()
