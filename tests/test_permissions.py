"""The role matrix, enforced on the server for every endpoint, role and HTTP method, and the
record scope of the doctor role on every endpoint that names a patient or a study.

``EXPECTED`` is the whole table. ``test_every_endpoint_is_in_the_matrix`` fails as soon as the app
grows an endpoint that is not listed here, so a new page cannot ship without a declared rule.
CSRF stays on: every POST carries a real token taken from a rendered page.

The doctor walks the matrix on records of their own (a study they ordered); the scope walk then
sends them, endpoint by endpoint, to another doctor's study and patient: 404, nothing changed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import select, text

from backoffice.extensions import db
from backoffice.models import RoleName
from tests.conftest import csrf_token_from, make_user
from tests.factories import make_clinic, make_doctor, make_patient, make_study

ADMIN, MANAGER, OPERATOR, SUPPORT, DOCTOR = "ADMIN", "MANAGER", "OPERATOR", "SUPPORT", "DOCTOR"
EVERYONE = frozenset({ADMIN, MANAGER, OPERATOR, SUPPORT, DOCTOR})
NOBODY: frozenset[str] = frozenset()
ADMIN_ONLY = frozenset({ADMIN})
CREATORS = frozenset({ADMIN, OPERATOR})
EDITORS = frozenset({ADMIN, OPERATOR, SUPPORT})
EXPORTERS = frozenset({ADMIN, MANAGER, DOCTOR})
FRONT_DESK = frozenset({ADMIN, OPERATOR})  # the workflow's moves (admins also reopen)
DOCTORS = frozenset({DOCTOR})
LOOKUP = CREATORS | EDITORS  # ajax look-ups serve the create and edit forms

# Who may use each (endpoint, method): the permission matrix.
RECORD_VIEWS = ("clinic", "doctor", "patient", "study")
EXPECTED: dict[tuple[str, str], frozenset[str]] = {("admin.index", "GET"): EVERYONE}
for _v in RECORD_VIEWS:
    EXPECTED.update(
        {
            (f"{_v}.index_view", "GET"): EVERYONE,
            (f"{_v}.details_view", "GET"): EVERYONE,
            (f"{_v}.create_view", "GET"): CREATORS,
            (f"{_v}.create_view", "POST"): CREATORS,
            (f"{_v}.edit_view", "GET"): EDITORS,
            (f"{_v}.edit_view", "POST"): EDITORS,
            (f"{_v}.delete_view", "POST"): ADMIN_ONLY,
            (f"{_v}.action_view", "POST"): ADMIN_ONLY,
            (f"{_v}.ajax_lookup", "GET"): LOOKUP,
            (f"{_v}.ajax_update", "POST"): EDITORS,
            (f"{_v}.export", "GET"): EXPORTERS,
            (f"{_v}.history_view", "GET"): EVERYONE,
        }
    )
# A study's moves and its report.
EXPECTED.update(
    {
        ("study.transition_view", "POST"): FRONT_DESK,
        ("study.bulk_move_view", "POST"): FRONT_DESK,
        ("study.report_view", "GET"): EVERYONE,
        ("study.report_print_view", "GET"): EVERYONE,
        ("study.report_pdf_view", "GET"): EVERYONE,
        ("study.report_save_view", "POST"): DOCTORS,
        ("study.addendum_view", "POST"): DOCTORS,
    }
)
for _m in (
    "index_view",
    "details_view",
    "create_view",
    "edit_view",
    "ajax_lookup",
    "export",
    "history_view",
):
    EXPECTED[(f"user.{_m}", "GET")] = ADMIN_ONLY
for _m in ("create_view", "edit_view", "delete_view", "action_view", "ajax_update"):
    EXPECTED[(f"user.{_m}", "POST")] = ADMIN_ONLY

# Care-team links are part of the patient's record: the roles that edit a patient add and
# change them (here or inline on the patient); deleting one is for admins.
EXPECTED.update(
    {
        ("care_team.index_view", "GET"): EVERYONE,
        ("care_team.details_view", "GET"): EVERYONE,
        ("care_team.create_view", "GET"): EDITORS,
        ("care_team.create_view", "POST"): EDITORS,
        ("care_team.edit_view", "GET"): EDITORS,
        ("care_team.edit_view", "POST"): EDITORS,
        ("care_team.delete_view", "POST"): ADMIN_ONLY,
        ("care_team.action_view", "POST"): ADMIN_ONLY,
        ("care_team.ajax_lookup", "GET"): LOOKUP,
        ("care_team.ajax_update", "POST"): EDITORS,
        ("care_team.export", "GET"): EXPORTERS,
        ("care_team.history_view", "GET"): EVERYONE,
    }
)

# The audit log: admins read it and undo from it; nobody creates, edits or deletes an entry.
EXPECTED.update(
    {
        ("audit.index_view", "GET"): ADMIN_ONLY,
        ("audit.details_view", "GET"): ADMIN_ONLY,
        ("audit.restore_view", "POST"): ADMIN_ONLY,
        ("audit.revert_view", "POST"): ADMIN_ONLY,
        ("audit.create_view", "GET"): NOBODY,
        ("audit.create_view", "POST"): NOBODY,
        ("audit.edit_view", "GET"): NOBODY,
        ("audit.edit_view", "POST"): NOBODY,
        ("audit.delete_view", "POST"): NOBODY,
        ("audit.action_view", "POST"): NOBODY,
        ("audit.ajax_update", "POST"): NOBODY,
        ("audit.ajax_lookup", "GET"): NOBODY,
        ("audit.history_view", "GET"): NOBODY,
        ("audit.export", "GET"): NOBODY,
    }
)

# The patient–study listing: everyone reads it; its export is for exporters.
EXPECTED[("patient_studies.index", "GET")] = EVERYONE
EXPECTED[("patient_studies.export", "GET")] = EXPORTERS

# The bulk upload: every step is for the roles that may upload; import batches are for admins.
UPLOADERS = frozenset({ADMIN, OPERATOR})
for _m, _method in (
    ("index", "GET"),
    ("upload", "POST"),
    ("status", "GET"),
    ("confirm", "POST"),
    ("discard", "POST"),
    ("progress", "GET"),
    ("rejected", "GET"),
    ("template", "GET"),
):
    EXPECTED[(f"bulk_upload.{_m}", _method)] = UPLOADERS
EXPECTED[("import_batch.index_view", "GET")] = ADMIN_ONLY
EXPECTED[("import_batch.details_view", "GET")] = ADMIN_ONLY
for _m, _method in (
    ("create_view", "GET"),
    ("create_view", "POST"),
    ("edit_view", "GET"),
    ("edit_view", "POST"),
    ("delete_view", "POST"),
    ("action_view", "POST"),
    ("ajax_update", "POST"),
    ("ajax_lookup", "GET"),
    ("history_view", "GET"),
    ("export", "GET"),
):
    EXPECTED[(f"import_batch.{_m}", _method)] = NOBODY

# Endpoints outside the role matrix, with the reason they are open.
PUBLIC = {
    ("auth.login", "GET"): "the login page",
    ("auth.login", "POST"): "the login form",
    ("auth.logout", "POST"): "any logged-in user may log out",
    ("root", "GET"): "redirects to the dashboard",
    ("healthz", "GET"): "says only that the app and database are up",
    ("locale.set_language", "POST"): "anyone may choose the language of their own pages",
    ("static", "GET"): "CSS and JavaScript",
    ("admin.static", "GET"): "Flask-Admin's CSS and JavaScript",
}


def app_endpoints(app) -> set[tuple[str, str]]:
    found = set()
    for rule in app.url_map.iter_rules():
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            found.add((rule.endpoint, method))
    return found


def test_every_endpoint_is_in_the_matrix(app):
    missing = app_endpoints(app) - set(EXPECTED) - set(PUBLIC)
    assert not missing, f"endpoints without a declared rule: {sorted(missing)}"
    stale = (set(EXPECTED) | set(PUBLIC)) - app_endpoints(app)
    assert not stale, f"rules for endpoints that no longer exist: {sorted(stale)}"


@dataclass
class World:
    clinic_id: int
    doctor_id: int
    patient_id: int
    study_id: int
    user_id: int
    audit_entry_id: int
    link_id: int = 0
    other_doctor_id: int = 0
    #: a study of the same patient, reported (its report signed): the report's pages
    reported_study_id: int = 0
    #: another doctor's study and patient, out of the doctor role's reach
    other_patient_id: int = 0
    other_study_id: int = 0
    other_link_id: int = 0


@pytest.fixture
def world() -> World:
    from backoffice.models import AuditEntry, Report, StudyStatus

    clinic = make_clinic("Matrix Clinic", city="Puebla")
    doctor = make_doctor("Marta", "Matrix", clinic=clinic, phones=["55 1111 2222"])
    # The doctor user of the walk is Dr. Matrix: the study is theirs to see (they ordered it).
    patient = make_patient(
        "Pablo", "Matrix", mrn="MX-1", email="pablo@matrix.example.com", referring_doctor=doctor
    )
    study = make_study(patient=patient, ordering_doctor=doctor)
    reported = make_study(
        patient=patient,
        ordering_doctor=doctor,
        reporting_doctor=doctor,
        status=StudyStatus.PERFORMED,
        body_part="KNEE",
    )
    db.session.add(
        Report(
            study=reported,
            number=1,
            findings="Normal knee.",
            impression="Normal.",
            author_id=doctor.id,
            signed_at=datetime(2026, 1, 2, 10, 0, tzinfo=UTC),
            signed_as="Dr. Marta Matrix",
        )
    )
    reported.status = StudyStatus.REPORTED
    other_doctor = make_doctor("Otto", "Matrix", clinic=clinic)
    other_patient = make_patient(
        "Olga", "Other", mrn="MX-2", email="olga@matrix.example.com", referring_doctor=other_doctor
    )
    other_study = make_study(patient=other_patient, ordering_doctor=other_doctor)
    target = make_user("target@matrix.example.com", RoleName.SUPPORT)
    db.session.commit()
    from backoffice.models import CareTeamMember

    entry_id = db.session.scalar(select(AuditEntry.id).order_by(AuditEntry.id.desc()).limit(1))
    link_id = db.session.scalar(
        select(CareTeamMember.id).where(CareTeamMember.patient_id == patient.id)
    )
    other_link_id = db.session.scalar(
        select(CareTeamMember.id).where(CareTeamMember.patient_id == other_patient.id)
    )
    return World(
        clinic.id,
        doctor.id,
        patient.id,
        study.id,
        target.id,
        entry_id,
        link_id,
        other_doctor.id,
        reported_study_id=reported.id,
        other_patient_id=other_patient.id,
        other_study_id=other_study.id,
        other_link_id=other_link_id,
    )


def _record_id(view: str, w: World) -> int:
    return {
        "clinic": w.clinic_id,
        "doctor": w.doctor_id,
        "patient": w.patient_id,
        "study": w.study_id,
        "user": w.user_id,
        "care_team": w.link_id,
        "audit": w.audit_entry_id,
        "import_batch": 1,  # may not exist: an admin is redirected, everyone else refused
    }[view]


def _create_data(view: str, w: World) -> dict:
    return {
        "clinic": {"name": "Created Clinic"},
        "doctor": {
            "first_name": "New",
            "last_name": "Doctor",
            "email": "new.doctor@matrix.example.com",
            "specialties": "RADIOLOGY",
            "clinic": str(w.clinic_id),
            "active": "y",
        },
        "patient": {
            "first_name": "New",
            "last_name": "Patient",
            "birth_date": "1980-01-01",
            "active": "y",
        },
        "care_team": {
            "patient": str(w.patient_id),
            "doctor": str(w.other_doctor_id),
            "role": "SPECIALIST",
            "status": "ACTIVE",
        },
        "study": {
            "patient": str(w.patient_id),
            "study_date": date.today().isoformat(),
            "urgency": "LOW",
            "study_type": "XRAY",
            "body_part": "HAND",
        },
        "user": {
            "email": "created@matrix.example.com",
            "display_name": "Created",
            "roles": "3",
            "active": "y",
            "new_password": "a long enough passphrase",
        },
    }.get(view, {"action": "CREATE"})


def _edit_data(view: str, w: World) -> dict:
    data = {
        "clinic": {"name": "Matrix Clinic Renamed", "city": "Puebla"},
        "doctor": {
            "first_name": "Marta",
            "last_name": "Edited",
            "email": "marta@matrix.example.com",
            "specialties": "ONCOLOGY",
            "clinic": str(w.clinic_id),
            "active": "y",
        },
        "patient": {
            "mrn": "MX-1",
            "first_name": "Pablo",
            "last_name": "Edited",
            "birth_date": "1970-01-01",
            "email": "pablo@matrix.example.com",
            "active": "y",
        },
        "care_team": {
            "patient": str(w.patient_id),
            "doctor": str(w.doctor_id),
            "role": "REFERRING",
            "status": "ACTIVE",
            "reason": "Edited",
        },
        "study": {
            "patient": str(w.patient_id),
            "study_date": "2026-01-02",
            "urgency": "HIGH",
            "study_type": "CT",
            "body_part": "HEAD",
        },
        "user": {
            "email": "target@matrix.example.com",
            "display_name": "Target Edited",
            "roles": "4",
            "active": "y",
        },
    }.get(view, {"action": "UPDATE"})
    return data


def build_request(
    endpoint: str, method: str, w: World, record_id: int | None = None
) -> tuple[str, dict | None]:
    """URL and form data for one endpoint, pointing at records that exist (``record_id``: this
    record of the view instead of the world's)."""
    if endpoint == "admin.index":
        return "/admin/", None
    if endpoint == "patient_studies.index":
        return "/admin/patient-studies/", None
    if endpoint == "patient_studies.export":
        return "/admin/patient-studies/export/csv/", None
    if endpoint.startswith("bulk_upload."):
        # An upload token nobody has: allowed roles get a 404 (or a redirect), never a 403.
        step, token = endpoint.split(".")[1], "NoSuchUploadToken0000"
        return {
            "index": ("/admin/bulk-upload/", None),
            "upload": ("/admin/bulk-upload/upload", {"kind": "patients"}),
            "status": (f"/admin/bulk-upload/{token}/", None),
            "confirm": (f"/admin/bulk-upload/{token}/confirm", {}),
            "discard": (f"/admin/bulk-upload/{token}/discard", {}),
            "progress": (f"/admin/bulk-upload/{token}/progress", None),
            "rejected": (f"/admin/bulk-upload/{token}/rejected.csv", None),
            "template": ("/admin/bulk-upload/template/patients.csv", None),
        }[step]
    view, name = endpoint.split(".")
    base = {"care_team": "/admin/care-team/"}.get(view, f"/admin/{view}/")
    rid = record_id if record_id is not None else _record_id(view, w)
    if name == "transition_view":
        return f"{base}transition/", {"id": str(rid), "transition": "check_in", "version": "1"}
    if name == "bulk_move_view":
        return f"{base}bulk/", {"transition": "cancel", "rowid": str(rid), "reason": "Matrix"}
    if name in ("report_view", "report_print_view", "report_pdf_view"):
        reported = record_id if record_id is not None else w.reported_study_id
        page = {"report_view": "", "report_print_view": "print/", "report_pdf_view": "pdf/"}
        return f"{base}report/{page[name]}?id={reported}", None
    if name == "report_save_view":
        data = {"id": str(rid), "study_version": "1", "findings": "F", "impression": "I"}
        return f"{base}report/save/", data | {"action": "save"}
    if name == "addendum_view":
        reported = record_id if record_id is not None else w.reported_study_id
        return f"{base}report/addendum/", {"id": str(reported), "text": "Matrix addendum"}
    if name == "index_view":
        return base, None
    if name == "details_view":
        return f"{base}details/?id={rid}", None
    if name == "create_view":
        return f"{base}new/", (_create_data(view, w) if method == "POST" else None)
    if name == "edit_view":
        return f"{base}edit/?id={rid}", (_edit_data(view, w) if method == "POST" else None)
    if name == "delete_view":
        return f"{base}delete/", {"id": str(rid)}
    if name == "action_view":
        return f"{base}action/", {"action": "delete", "rowid": str(rid)}
    if name == "ajax_lookup":
        field = {
            "clinic": "x",
            "doctor": "clinic",
            "patient": "clinic",
            "study": "patient",
            "care_team": "doctor",
        }
        return f"{base}ajax/lookup/?name={field.get(view, 'x')}&query=Ma", None
    if name == "ajax_update":
        return f"{base}ajax/update/", {"list_form_pk": str(rid), "name": "Changed"}
    if name == "export":
        return f"{base}export/csv/", None
    if name == "history_view":
        return f"{base}history/?id={rid}", None
    if name in ("restore_view", "revert_view"):
        return f"{base}{name.removesuffix('_view')}/", {"entry_id": str(rid)}
    raise AssertionError(f"no request recipe for {endpoint}")


def snapshot() -> str:
    """A digest of every row of every table: equal digests mean nothing changed."""
    conn = db.session.connection()
    digest = hashlib.sha256()
    for table in sorted(db.metadata.sorted_tables, key=lambda t: t.name):
        order = [c for c in table.primary_key.columns] or list(table.columns)
        for row in conn.execute(select(table).order_by(*order)):
            digest.update(repr((table.name, tuple(row))).encode())
    return digest.hexdigest()


ROLES = ("ADMIN", "MANAGER", "OPERATOR", "SUPPORT", "DOCTOR", "NO_ROLE", "ANONYMOUS")
CASES = sorted(EXPECTED)


def _login(client, role: str, doctor_id: int | None = None) -> None:
    roles = () if role == "NO_ROLE" else (RoleName(role),)
    email = f"{role.lower()}@matrix.example.com"
    user = make_user(email, *roles)
    if role == "DOCTOR":
        user.doctor_id = doctor_id
        db.session.commit()
    page = client.get("/login")
    token = csrf_token_from(page.get_data(as_text=True))
    from tests.conftest import PASSWORD

    response = client.post(
        "/login", data={"email": email, "password": PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 302


def _token(client) -> str:
    # Every logged-in page carries the logout form and its token; the login page does for
    # anonymous visitors.
    for url in ("/admin/", "/login"):
        response = client.get(url)
        html = response.get_data(as_text=True)
        if 'name="csrf_token"' in html:
            return csrf_token_from(html)
    raise AssertionError("no page with a CSRF token")


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("endpoint", "method"), CASES, ids=[f"{e}-{m}" for e, m in CASES])
def test_role_matrix(client, world, endpoint: str, method: str, role: str):
    allowed = EXPECTED[(endpoint, method)]
    if role != "ANONYMOUS":
        _login(client, role, world.doctor_id)
    url, data = build_request(endpoint, method, world)
    db.session.expire_all()
    before = snapshot()
    if method == "POST":
        payload = dict(data or {})
        payload["csrf_token"] = _token(client)
        response = client.post(url, data=payload)
    else:
        response = client.get(url)
    db.session.expire_all()
    after = snapshot()

    if role == "ANONYMOUS":
        assert response.status_code == 302
        assert response.headers["Location"].startswith("/login?next=")
        assert after == before
    elif role == "NO_ROLE":
        assert response.status_code == 403
        assert "no role" in response.get_data(as_text=True).lower()
        assert after == before
    elif role in allowed:
        assert response.status_code not in (401, 403), response.status_code
        assert not response.headers.get("Location", "").startswith("/login")
        if role == "DOCTOR" and method == "GET":
            # The walk's records are the doctor's own: their pages open (not a 404).
            assert response.status_code != 404, (endpoint, response.status_code)
    else:
        assert response.status_code == 403
        assert "Access denied" in response.get_data(as_text=True)
        assert after == before


@pytest.mark.parametrize("view", [*RECORD_VIEWS, "care_team"])
def test_allowed_writes_really_happen(client, world, view):
    """The matrix test proves refusals; this proves an allowed create actually writes."""
    _login(client, "OPERATOR")
    url, data = build_request(f"{view}.create_view", "POST", world)
    data = dict(data or {}, csrf_token=_token(client))
    before = snapshot()
    response = client.post(url, data=data)
    assert response.status_code == 302, response.get_data(as_text=True)[:2000]
    db.session.expire_all()
    assert snapshot() != before


def test_several_roles_get_the_union(client, world):
    make_user("both@matrix.example.com", RoleName.MANAGER, RoleName.SUPPORT)
    page = client.get("/login")
    from tests.conftest import PASSWORD

    client.post(
        "/login",
        data={
            "email": "both@matrix.example.com",
            "password": PASSWORD,
            "csrf_token": csrf_token_from(page.get_data(as_text=True)),
        },
    )
    assert client.get(f"/admin/patient/edit/?id={world.patient_id}").status_code == 200  # support
    assert client.get("/admin/patient/export/csv/").status_code != 403  # manager
    assert client.get("/admin/patient/new/").status_code == 403  # neither
    assert client.get("/admin/user/").status_code == 403


def test_menu_and_buttons_follow_the_role(client, world):
    _login(client, "MANAGER")
    html = client.get("/admin/patient/").get_data(as_text=True)
    assert "/admin/patient/new/" not in html
    assert "/admin/patient/edit/" not in html
    assert "/admin/patient/delete/" not in html
    assert "/admin/user/" not in client.get("/admin/").get_data(as_text=True)


def test_delete_by_get_is_refused(client, world):
    _login(client, "ADMIN")
    response = client.get(f"/admin/clinic/delete/?id={world.clinic_id}")
    assert response.status_code == 405
    db.session.expire_all()
    assert (
        db.session.execute(
            text("SELECT count(*) FROM clinic WHERE id = :i"), {"i": world.clinic_id}
        ).scalar()
        == 1
    )


# --------------------------------------------------------------------------- the record scope

# The views of scoped entities (a patient, a study, a patient's care-team link), and every
# endpoint of theirs that names a record (by ``id``, ``rowid`` or ``list_form_pk``).
SCOPED_VIEWS = ("patient", "study", "care_team")
NAMED_RECORD = sorted(
    (endpoint, method)
    for endpoint, method in EXPECTED
    if endpoint.split(".")[0] in SCOPED_VIEWS
    and endpoint.split(".")[1] not in ("index_view", "create_view", "ajax_lookup", "export")
)


def test_the_scope_walk_covers_every_record_endpoint(app):
    """A new endpoint of the patient or study views must be placed: walked, or named here as
    one that names no record (its lists are checked by tests/test_scope.py)."""
    unnamed = {"index_view", "create_view", "ajax_lookup", "export"}
    for endpoint, _method in app_endpoints(app):
        view, _sep, name = endpoint.partition(".")
        if view in SCOPED_VIEWS and name not in unnamed and name != "static":
            assert any(e == endpoint for e, _m in NAMED_RECORD), endpoint


@pytest.mark.parametrize(
    ("endpoint", "method"), NAMED_RECORD, ids=[f"{e}-{m}" for e, m in NAMED_RECORD]
)
def test_a_doctor_gets_404_on_another_doctors_study_and_patient(client, world, endpoint, method):
    """Through every endpoint that names a record (the other patient's care-team link too),
    whatever the role allows there: 404, nothing sent of the record, nothing changed."""
    _login(client, "DOCTOR", world.doctor_id)
    view = endpoint.split(".")[0]
    other = {
        "study": world.other_study_id,
        "patient": world.other_patient_id,
        "care_team": world.other_link_id,
    }[view]
    assert other
    url, data = build_request(endpoint, method, world, record_id=other)
    if (
        data is not None
        and "rowid" in data
        and view == "study"
        and endpoint.endswith("action_view")
    ):
        data["action"] = "check_in"
    db.session.expire_all()
    before = snapshot()
    if method == "POST":
        response = client.post(url, data={**(data or {}), "csrf_token": _token(client)})
    else:
        response = client.get(url)
    db.session.expire_all()
    assert response.status_code == 404, (endpoint, response.status_code)
    page = response.get_data(as_text=True)
    assert "Olga" not in page and "MX-2" not in page
    assert snapshot() == before


def test_the_same_doors_open_for_the_doctors_own_records(client, world):
    _login(client, "DOCTOR", world.doctor_id)
    for url in (
        f"/admin/study/details/?id={world.study_id}",
        f"/admin/patient/details/?id={world.patient_id}",
        f"/admin/study/history/?id={world.study_id}",
        f"/admin/patient/history/?id={world.patient_id}",
        f"/admin/study/report/?id={world.reported_study_id}",
        f"/admin/study/report/pdf/?id={world.reported_study_id}",
    ):
        assert client.get(url).status_code == 200, url
