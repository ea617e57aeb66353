"""MRNs given from the configured sequence: format, gaps, collisions, and simultaneous saves
against a real server (on the suite's engine: PostgreSQL's sequence or SQLite's counter row)."""

from __future__ import annotations

import http.cookiejar
import re
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import select

from backoffice import create_app
from backoffice.extensions import db
from backoffice.models import Patient, RoleName
from tests.conftest import PASSWORD, csrf_token_from, make_user
from tests.factories import make_patient
from tests.scratch import is_postgresql, scratch_database


def test_the_format_comes_from_the_configuration(app):
    previous = app.config["MRN_PREFIX"], app.config["MRN_DIGITS"]
    app.config.update(MRN_PREFIX="HC-", MRN_DIGITS=8)
    try:
        patient = make_patient()
        db.session.commit()
    finally:
        app.config["MRN_PREFIX"], app.config["MRN_DIGITS"] = previous
    assert re.fullmatch(r"HC-\d{8}", patient.mrn), patient.mrn


@pytest.mark.parametrize(
    ("prefix", "digits"), [("MRN-", 0), ("MRN-", 30), ("bad prefix!", 6), ("X" * 41, 6)]
)
def test_a_format_that_cannot_work_stops_the_app_from_starting(prefix, digits):
    with pytest.raises(RuntimeError, match="MRN_"):
        create_app({"ENV_NAME": "testing", "MRN_PREFIX": prefix, "MRN_DIGITS": digits})


def test_numbers_others_already_hold_are_skipped_in_forms_and_imports(app, tmp_path):
    from backoffice.services.imports import run_import
    from backoffice.services.record_numbers import format_mrn, reserve

    upcoming = reserve(db.session.connection(), 1)[0] + 1
    taken = [format_mrn(upcoming), format_mrn(upcoming + 2)]  # typed in the same format
    for mrn in taken:
        make_patient(mrn=mrn)
    db.session.commit()
    first = make_patient()  # skips upcoming
    db.session.commit()
    path = tmp_path / "no-ids.csv"
    path.write_text(
        "first_name,last_name,birth_date,email\n"
        "A,Uno,1970-01-01,a@mrn.example.com\n"
        "B,Dos,1971-01-01,b@mrn.example.com\n"
        "C,Tres,1972-01-01,c@mrn.example.com\n",
        encoding="utf-8",
    )
    report = run_import(path, "patients", dry_run=False)
    assert report.outcome == "committed", report.text_lines()
    assert report.created == 3
    given = [
        db.session.scalar(select(Patient.mrn).where(Patient.email == f"{c}@mrn.example.com"))
        for c in "abc"
    ]
    assert first.mrn == format_mrn(upcoming + 1)
    # the next numbers after the form's, never one already held
    assert sorted(given) == [format_mrn(upcoming + n) for n in (3, 4, 5)]
    mrns = db.session.scalars(select(Patient.mrn)).all()
    assert len(mrns) == len(set(mrns))
    # the studies of an uploaded file find the patient by the MRN given to them
    studies = tmp_path / "studies.csv"
    studies.write_text(
        f"urgency_level,body_part,type,patient_id\nHIGH,CHEST,XRAY,{given[1]}\n", encoding="utf-8"
    )
    report = run_import(studies, "studies", dry_run=False)
    assert report.outcome == "committed" and report.created == 1, report.text_lines()
    dos = db.session.scalars(select(Patient).where(Patient.mrn == given[1])).one()
    assert [s.body_part for s in dos.studies] == ["CHEST"]


# --------------------------------------------------------------------------- simultaneous saves


class Browser:
    """A person at a browser: cookies of their own, CSRF tokens taken from the pages."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
            _NoRedirect(),
        )

    def get(self, path: str) -> str:
        with self.opener.open(self.base + path, timeout=30) as response:
            return response.read().decode()

    def post(self, path: str, data: dict) -> int:
        body = urllib.parse.urlencode(data, doseq=True).encode()
        try:
            with self.opener.open(self.base + path, data=body, timeout=60) as response:
                self.last_page = response.read().decode()
                return response.status
        except urllib.error.HTTPError as exc:  # the 302 after a save
            return exc.code

    def login(self, email: str) -> None:
        token = csrf_token_from(self.get("/login"))
        assert self.post("/login", {"email": email, "password": PASSWORD, "csrf_token": token})


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        return None


def test_simultaneous_saves_and_imports_never_get_the_same_mrn(tmp_path: Path):
    """Twelve people save a new patient at the same moment while two imports of patients
    without an id run: every patient gets an MRN of their own, none twice."""
    from flask_migrate import upgrade
    from werkzeug.serving import make_server

    with scratch_database(tmp_path, "mrn") as url:
        server_app = create_app({"ENV_NAME": "testing", "SQLALCHEMY_DATABASE_URI": url})
        with server_app.app_context():
            upgrade()
            make_user("counter@mrn.example.com", RoleName.OPERATOR)
        server = make_server("127.0.0.1", 0, server_app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        base = f"http://127.0.0.1:{server.server_port}"
        try:
            people = [Browser(base) for _ in range(12)]
            forms = []
            for person in people:
                person.login("counter@mrn.example.com")
                page = person.get("/admin/patient/new/")
                forms.append(csrf_token_from(page))
            files = []
            for n in range(2):
                path = tmp_path / f"batch{n}.csv"
                path.write_text(
                    "first_name,last_name,birth_date,email\n"
                    + "".join(
                        f"Imp{n},Row{i},1980-01-01,imp{n}.{i}@mrn.example.com\n" for i in range(5)
                    ),
                    encoding="utf-8",
                )
                files.append(path)

            start = threading.Barrier(len(people) + len(files))
            results: list[object] = []

            def save(person: Browser, token: str, i: int) -> None:
                data = {
                    "csrf_token": token,
                    "mrn": "",
                    "first_name": "Simultánea",
                    "last_name": f"Persona{i}",
                    "birth_date": "1990-01-01",
                    "sex": "UNKNOWN",
                    "active": "y",
                }
                start.wait()
                results.append(person.post("/admin/patient/new/", data))

            def upload(path: Path) -> None:
                from backoffice.services.imports import run_import

                with server_app.app_context():
                    start.wait()
                    results.append(run_import(path, "patients", dry_run=False).outcome)
                    db.session.remove()

            workers = [
                threading.Thread(target=save, args=(p, t, i))
                for i, (p, t) in enumerate(zip(people, forms, strict=True))
            ] + [threading.Thread(target=upload, args=(f,)) for f in files]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(timeout=120)
            from tests.test_admin_crud import flashes

            refused = [flashes(p.last_page) for p in people if getattr(p, "last_page", None)]
            saved = sum(1 for r in results if r == 302)
            imported = sum(1 for r in results if r == "committed")
            if is_postgresql():
                # PostgreSQL waits for the other writers: every save and import goes through
                assert (saved, imported) == (12, 2), (results, refused)
            else:
                # SQLite has one writer at a time and refuses a save that meets another, whole,
                # with a message that says so (never a half-saved patient, never a 500)
                assert saved >= 1, (results, refused)
                busy = "Another change was being saved at the same moment"
                assert all(busy in " ".join(m) for m in refused), refused
                assert set(results) <= {302, 200, "committed", "failed"}, results
            with server_app.app_context():
                mrns = db.session.scalars(select(Patient.mrn)).all()
                db.session.remove()
            assert len(mrns) == saved + 5 * imported
            assert len(set(mrns)) == len(mrns), sorted(mrns)  # none given twice
            assert all(re.fullmatch(r"MRN-\d{6}", m) for m in mrns)
        finally:
            server.shutdown()
            thread.join(timeout=10)
            with server_app.app_context():
                db.engine.dispose()


def test_a_patient_always_has_an_mrn_so_studies_can_find_them(app):
    patient = make_patient(mrn=None)
    db.session.commit()
    assert patient.mrn
    patient.mrn = None
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError):
        db.session.commit()
    db.session.rollback()
    assert db.session.get(Patient, patient.id).mrn
    assert Patient.__table__.c.mrn.nullable is False
