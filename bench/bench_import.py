"""Bulk import benchmark (not a test): time and peak memory of previews, commits and re-uploads.

Generates realistic patient and study files, imports each into a fresh database, once as a
preview and once as a commit, on PostgreSQL and SQLite, and measures PostgreSQL's own
``COPY FROM`` of the same patient file into the same table as the floor. Each measurement runs
in a child process so that its peak memory (max RSS) is its own.

    .venv/bin/python bench/bench_import.py                       # everything (about 10 minutes)
    .venv/bin/python bench/bench_import.py --sizes 100000 --engines postgresql
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/backoffice_bench"
)
FIRST = ["José", "María", "Juan", "Guadalupe", "Francisco", "Fernanda", "Alejandro", "Ximena"]
LAST = ["García", "Hernández", "López", "Martínez", "González", "Pérez", "Rodríguez", "Núñez"]
TYPES = {
    "XRAY": ["CHEST", "HAND", "KNEE", "SPINE", "STOMACH", "NECK"],
    "MAMMOGRAM": ["BREASTS"],
    "CT": ["HEAD", "ABDOMEN", "CHEST"],
    "MRI": ["BRAIN", "KNEE", "SPINE"],
    "ULTRASOUND": ["ABDOMEN", "PELVIS", "THYROID"],
}
DESCRIPTIONS = ["NO FINDINGS", "FOLLOW-UP IN 6 MONTHS", "NORMAL", "SMALL NODULE, BENIGN"]


def make_patients(path: Path, n: int, seed: int = 1) -> None:
    """Patients as the reference file has them (spaces after commas), with an MRN each."""
    rng = random.Random(seed)
    start = date(1935, 1, 1)
    with path.open("w", newline="", encoding="utf-8") as fh:
        fh.write("first_name, last_name, birth_date, email, id\n")
        w = csv.writer(fh)
        for i in range(1, n + 1):
            birth = start + timedelta(days=rng.randrange(0, 365 * 85))
            w.writerow(
                [
                    rng.choice(FIRST),
                    rng.choice(LAST),
                    birth.isoformat(),
                    f"paciente{i}@correo.example.com",
                    f"MRN{i:08d}",
                ]
            )


def make_studies(path: Path, n: int, patients: int, seed: int = 2) -> None:
    rng = random.Random(seed)
    today = date(2026, 11, 1)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "urgency_level",
                "body_part",
                "description",
                "type",
                "patient_id",
                "study_date",
                "accession_number",
            ]
        )
        for i in range(1, n + 1):
            kind = rng.choice(list(TYPES))
            w.writerow(
                [
                    rng.choice(["HIGH", "MID", "LOW"]),
                    rng.choice(TYPES[kind]),
                    rng.choice(DESCRIPTIONS),
                    kind,
                    f"MRN{rng.randrange(1, patients + 1):08d}",
                    (today - timedelta(days=rng.randrange(0, 900))).isoformat(),
                    f"ACC{i:09d}",
                ]
            )


def database_url(engine: str, workdir: Path) -> str:
    if engine == "postgresql":
        return PG_URL
    return f"sqlite:///{workdir / 'bench.sqlite'}"


def reset_database(url: str, drop_trigram: bool = False) -> None:
    """A fresh schema, built by the migrations (optionally without the trigram indexes that
    substring search adds on PostgreSQL, to see what they cost every write)."""
    from sqlalchemy import create_engine, text

    from backoffice import create_app
    from backoffice.extensions import db
    from config import normalise_database_url

    url = normalise_database_url(url)  # type: ignore[assignment]
    if url.startswith("sqlite"):
        Path(url.removeprefix("sqlite:///")).unlink(missing_ok=True)
    else:
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()
    app = create_app({"ENV_NAME": "development", "SQLALCHEMY_DATABASE_URI": url})
    with app.app_context():
        from flask_migrate import upgrade

        upgrade()
        if drop_trigram and not url.startswith("sqlite"):
            with db.engine.begin() as conn:
                names = conn.execute(
                    text("SELECT indexname FROM pg_indexes WHERE indexname LIKE '%\\_trgm'")
                ).scalars()
                for name in list(names):
                    conn.execute(text(f'DROP INDEX "{name}"'))
        db.engine.dispose()


def child(args: argparse.Namespace) -> None:
    """One measurement, in its own process: prints a JSON line."""
    import logging

    logging.disable(logging.INFO)
    from backoffice import create_app
    from backoffice.extensions import db
    from backoffice.services.audit import acting_as
    from backoffice.services.imports import run_import
    from config import normalise_database_url

    url = normalise_database_url(args.url)
    app = create_app(
        {"ENV_NAME": "development", "SQLALCHEMY_DATABASE_URI": url, "MAX_CONTENT_LENGTH": None}
    )
    with app.app_context(), acting_as("bench"):
        if args.action == "copy":
            # The floor: PostgreSQL loading the same file into the same (empty) table, with
            # its indexes and constraints; the columns the file lacks get defaults.
            conn = db.engine.raw_connection()
            cur = conn.cursor()
            started = time.perf_counter()
            cur.execute(
                "ALTER TABLE patient ALTER created_at SET DEFAULT now(), "
                "ALTER updated_at SET DEFAULT now(), ALTER version SET DEFAULT 1"
            )
            with open(args.file, encoding="utf-8") as fh:
                cur.copy_expert(
                    "COPY patient (first_name, last_name, birth_date, email, mrn) "
                    "FROM STDIN WITH (FORMAT csv, HEADER true)",
                    fh,
                )
            conn.commit()
            seconds = time.perf_counter() - started
            conn.close()
            result = {"seconds": seconds, "outcome": "copied"}
        else:
            started = time.perf_counter()
            report = run_import(args.file, args.kind, dry_run=args.action == "preview")
            seconds = time.perf_counter() - started
            result = {"seconds": seconds, "outcome": report.outcome, **report.counts}
    result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def measure(url: str, action: str, kind: str, file: Path) -> dict:
    out = subprocess.run(  # noqa: S603 - our own script with our own arguments
        [
            sys.executable,
            __file__,
            "--child",
            action,
            "--url",
            url,
            "--kind",
            kind,
            "--file",
            str(file),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        raise SystemExit(f"measurement failed: {out.stderr[-3000:]}")
    result = json.loads(lines[-1])
    # The machine may be shared: the load says how far to trust a figure.
    result["load"] = os.getloadavg()[0]
    return result


def baseline_rss() -> float:
    out = subprocess.run(  # noqa: S603 - our own script with our own arguments
        [
            sys.executable,
            "-c",
            "import resource, backoffice, flask_admin, sqlalchemy; "
            "import backoffice.services.imports.run; "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    return float(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=["preview", "commit", "copy"])
    parser.add_argument("--url")
    parser.add_argument("--kind", default="patients")
    parser.add_argument("--file")
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--engines", default="postgresql,sqlite")
    parser.add_argument("--studies", type=int, default=1_000_000)
    parser.add_argument(
        "--drop-trigram-indexes",
        action="store_true",
        help="Measure PostgreSQL without the pg_trgm indexes of migration 0004.",
    )
    args = parser.parse_args()
    if args.child:
        args.action = args.child
        child(args)
        return

    sizes = [int(s) for s in args.sizes.split(",") if s]
    engines = [e for e in args.engines.split(",") if e]
    rows: list[tuple] = []
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        work = Path(tmp)
        files = {}
        for n in sizes:
            files[n] = work / f"patients_{n}.csv"
            make_patients(files[n], n)
        study_file = None
        if args.studies:
            study_file = work / f"studies_{args.studies}.csv"
            make_studies(study_file, args.studies, max(sizes))
        for engine in engines:
            url = database_url(engine, work)
            for n in sizes:
                size_mb = files[n].stat().st_size / 1e6
                if engine == "postgresql":
                    reset_database(url, args.drop_trigram_indexes)
                    r = measure(url, "copy", "patients", files[n])
                    rows.append((engine, f"{n:,} patients", "COPY floor", size_mb, r))
                reset_database(url, args.drop_trigram_indexes)
                r = measure(url, "preview", "patients", files[n])
                rows.append((engine, f"{n:,} patients", "preview", size_mb, r))
                r = measure(url, "commit", "patients", files[n])
                rows.append((engine, f"{n:,} patients", "commit", size_mb, r))
                if n == min(sizes):
                    r = measure(url, "commit", "patients", files[n])
                    rows.append((engine, f"{n:,} patients", "re-upload", size_mb, r))
            if study_file is not None:
                # Studies need their patients: the largest patient file is committed first.
                size_mb = study_file.stat().st_size / 1e6
                label = f"{args.studies:,} studies"
                r = measure(url, "preview", "studies", study_file)
                rows.append((engine, label, "preview", size_mb, r))
                r = measure(url, "commit", "studies", study_file)
                rows.append((engine, label, "commit", size_mb, r))
    base = baseline_rss()
    print()
    print(
        f"Python {sys.version.split()[0]}, {os.cpu_count()} cores; process baseline "
        f"(app imported, nothing read) {base:.0f} MB max RSS"
    )
    print(
        f"{'engine':<11} {'file':<20} {'step':<11} {'MB':>6} {'seconds':>8} {'rows/s':>10} "
        f"{'peak MB':>8} {'load':>5}  outcome"
    )
    for engine, label, step, size_mb, r in rows:
        n = int(label.split()[0].replace(",", ""))
        print(
            f"{engine:<11} {label:<20} {step:<11} {size_mb:>6.1f} {r['seconds']:>8.2f} "
            f"{n / r['seconds']:>10,.0f} {r['peak_mb']:>8.0f} {r['load']:>5.1f}  {r['outcome']} "
            + (
                f"({r.get('created', 0)} created, {r.get('updated', 0)} updated, "
                f"{r.get('unchanged', 0)} unchanged, {r.get('rejected', 0)} rejected)"
                if step != "COPY floor"
                else ""
            )
        )


if __name__ == "__main__":
    main()
