"""A study's life: every status × every move × every role, the refusals, the buttons, the bulk
moves, stale moves, and what each move records (times, events, the audit trail).

``ALLOWED`` and ``WHO`` are written out here from the issue, not read from the rules: the
matrix test fails if the rules drift from them.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select

from backoffice.extensions import db
from backoffice.models import AuditEntry, RoleName, Study, StudyEvent, StudyStatus, User
from backoffice.services.audit import acting_as
from backoffice.services.workflow import (
    TRANSITIONS,
    NotPermitted,
    StaleStudy,
    WorkflowError,
    bulk_move,
    local_day,
    make_move,
    parse_local_time,
)
from tests.conftest import csrf_token_from, make_user
from tests.factories import make_doctor, make_patient, make_study
from tests.test_admin_crud import filter_arg, flashes

S = StudyStatus
ALLOWED = {
    "order": (set(), S.ORDERED),
    "schedule": ({S.ORDERED, S.SCHEDULED, S.NO_SHOW}, S.SCHEDULED),
    "check_in": ({S.ORDERED, S.SCHEDULED}, S.ARRIVED),
    "start": ({S.ARRIVED}, S.IN_PROGRESS),
    "complete": ({S.IN_PROGRESS}, S.PERFORMED),
    "report": ({S.PERFORMED}, S.REPORTED),
    "no_show": ({S.SCHEDULED}, S.NO_SHOW),
    "cancel": ({S.ORDERED, S.SCHEDULED, S.ARRIVED, S.IN_PROGRESS}, S.CANCELLED),
    "reopen": ({S.REPORTED}, S.PERFORMED),
}
FRONT_DESK = {"ADMIN", "OPERATOR"}
WHO = {
    "order": FRONT_DESK,
    "schedule": FRONT_DESK,
    "check_in": FRONT_DESK,
    "start": FRONT_DESK,
    "complete": FRONT_DESK,
    "no_show": FRONT_DESK,
    "cancel": FRONT_DESK,
    "report": {"DOCTOR"},
    "reopen": {"ADMIN"},
}
STAMP = {
    "schedule": "scheduled_for",
    "check_in": "arrived_at",
    "start": "started_at",
    "complete": "performed_at",
    "no_show": "no_show_at",
    "cancel": "cancelled_at",
}
ROLES = ("ADMIN", "MANAGER", "OPERATOR", "SUPPORT", "DOCTOR")


def tomorrow_at_nine() -> datetime:
    return parse_local_time((date.today() + timedelta(days=1)).isoformat() + "T09:00")


def inputs(code: str) -> dict:
    """What a move asks for: a reason, an appointment."""
    if code in ("cancel", "reopen"):
        return {"reason": "The patient asked"}
    if code == "schedule":
        return {"scheduled_for": tomorrow_at_nine()}
    return {}


def test_the_rules_are_the_issues_table():
    assert {t.code: (set(t.sources), t.target) for t in TRANSITIONS} == ALLOWED
    from backoffice.auth.permissions import roles_for

    assert {t.code: {r.value for r in roles_for(t.permission)} for t in TRANSITIONS} == WHO


@pytest.fixture
def people():
    doctor = make_doctor("Rita", "Reporter")
    users = {}
    for role in ROLES:
        user = make_user(f"{role.lower()}@flow.example.com", RoleName(role))
        if role == "DOCTOR":
            user.doctor_id = doctor.id
        users[role] = user
    db.session.commit()
    return doctor, users


@pytest.mark.parametrize("status", list(StudyStatus), ids=lambda s: s.value)
@pytest.mark.parametrize("code", list(ALLOWED))
def test_every_status_move_and_role(people, status, code):
    doctor, users = people
    sources, target = ALLOWED[code]
    for role in ROLES:
        study = make_study(
            status=status,
            reporting_doctor=doctor,
            ordering_doctor=doctor,
            cancel_reason="Duplicate" if status == S.CANCELLED else None,
        )
        db.session.commit()
        before = (study.status, study.version, len(study.events))
        try:
            with db.session.begin_nested():
                make_move(study, code, user=users[role], **inputs(code))
        except NotPermitted as exc:
            outcome = "not permitted"
            message = exc.message
        except WorkflowError as exc:
            outcome = "refused"
            message = exc.message
        else:
            outcome = "done"
            message = ""
        db.session.expire_all()
        if role not in WHO[code]:
            assert outcome == "not permitted", (role, code, status)
        elif code == "order":
            assert outcome == "refused" and "ordered by creating it" in message
        elif code == "report":
            # the doctor may report, but only by signing the report (tests/test_reports.py)
            assert outcome == "refused" and "signing its report" in message
        elif status not in sources:
            assert outcome == "refused", (role, code, status)
            assert status.label in message
        else:
            assert outcome == "done", (role, code, status, message)
        if outcome == "done":
            assert study.status == target
            assert study.version == before[1] + 1
            event = study.events[-1]
            assert (event.transition, event.from_status, event.to_status) == (code, status, target)
            assert event.user_id == users[role].id
            if code in STAMP:
                assert getattr(study, STAMP[code]) is not None
        else:
            assert (study.status, study.version, len(study.events)) == before


def test_a_refusal_names_the_moves_that_are_possible(people):
    _doctor, users = people
    study = make_study(status=S.PERFORMED)
    with pytest.raises(WorkflowError) as refused:
        make_move(study, "check_in", user=users["OPERATOR"])
    assert refused.value.message == (
        "“Check in” is not possible: the study is Performed. From Performed it can only be: "
        "Sign the report."
    )
    cancelled = make_study(status=S.CANCELLED, cancel_reason="Duplicate")
    with pytest.raises(WorkflowError) as final:
        make_move(cancelled, "schedule", user=users["OPERATOR"], scheduled_for=tomorrow_at_nine())
    assert "nothing follows Cancelled" in final.value.message
    scheduled = make_study(status=S.SCHEDULED)
    with pytest.raises(WorkflowError) as other:
        make_move(scheduled, "start", user=users["OPERATOR"])
    assert "Schedule, Check in, Mark as no-show, Cancel the study" in other.value.message


def test_cancel_and_reopen_need_a_reason_schedule_a_time_in_the_future(people):
    _doctor, users = people
    study = make_study(status=S.SCHEDULED)
    for reason in (None, "", "   "):
        with pytest.raises(WorkflowError, match="needs a reason"):
            make_move(study, "cancel", user=users["OPERATOR"], reason=reason)
    with pytest.raises(WorkflowError, match="at most 500"):
        make_move(study, "cancel", user=users["OPERATOR"], reason="x" * 501)
    with pytest.raises(WorkflowError, match="needs a date and time"):
        make_move(study, "schedule", user=users["OPERATOR"])
    yesterday = datetime.now(UTC) - timedelta(days=1, hours=1)
    with pytest.raises(WorkflowError, match="a day that has passed"):
        make_move(study, "schedule", user=users["OPERATOR"], scheduled_for=yesterday)
    assert study.status == S.SCHEDULED and study.events == []
    make_move(study, "cancel", user=users["OPERATOR"], reason="  Patient moved away  ")
    assert study.cancel_reason == "Patient moved away"
    assert study.events[-1].reason == "Patient moved away"


def test_the_studys_date_follows_the_appointment_in_the_clinics_time_zone(app, people):
    """23:30 in Mexico City is 05:30 UTC the next day: the study is on the local day."""
    _doctor, users = people
    assert app.config["BABEL_DEFAULT_TIMEZONE"] == "America/Mexico_City"
    study = make_study(status=S.ORDERED, study_date=date(2026, 1, 1))
    day = date.today() + timedelta(days=3)
    late = parse_local_time(f"{day.isoformat()}T23:30")
    assert late.astimezone(UTC).date() == day + timedelta(days=1)
    make_move(study, "schedule", user=users["OPERATOR"], scheduled_for=late)
    assert study.study_date == day
    assert local_day(study.scheduled_for) == day


def test_typed_times_around_a_change_of_clocks():
    """Wall times are read in the clinic's zone; a time the clocks skip lands after the gap, a
    time they repeat is the first of the two (America/Mexico_City kept DST until 2022)."""
    skipped = parse_local_time("2022-04-03T02:30")  # clocks went 02:00 -> 03:00
    assert skipped == datetime(2022, 4, 3, 8, 30, tzinfo=UTC)  # 03:30 CDT
    repeated = parse_local_time("2022-10-30T01:30")  # clocks went 02:00 -> 01:00
    assert repeated == datetime(2022, 10, 30, 6, 30, tzinfo=UTC)  # the first 01:30 (CDT)
    assert parse_local_time("2026-06-01T10:00") == datetime(2026, 6, 1, 16, 0, tzinfo=UTC)
    with pytest.raises(WorkflowError, match="not a date and time"):
        parse_local_time("tomorrow morning")


def test_every_move_is_in_the_audit_trail(people):
    _doctor, users = people
    study = make_study(status=S.SCHEDULED)
    db.session.commit()
    operator = users["OPERATOR"]
    with acting_as(operator.email, operator.id):  # as in the operator's request
        make_move(study, "no_show", user=operator)
    db.session.commit()
    entry = db.session.scalars(
        select(AuditEntry).where(
            AuditEntry.entity == "study", AuditEntry.entity_id == str(study.id)
        )
    ).all()[-1]
    assert entry.action == "TRANSITION"
    assert entry.details["transition"] == "no_show"
    assert (entry.details["from"], entry.details["to"]) == ("SCHEDULED", "NO_SHOW")
    assert entry.changes["status"] == ["SCHEDULED", "NO_SHOW"]
    assert "no_show_at" in entry.changes
    assert entry.actor_id == users["OPERATOR"].id


def test_a_stale_move_is_refused_and_names_who_changed_the_study(people):
    _doctor, users = people
    study = make_study(status=S.SCHEDULED)
    db.session.commit()
    seen = study.version
    admin = users["ADMIN"]
    with acting_as(admin.email, admin.id):
        make_move(study, "check_in", user=admin, expected_version=seen)
    db.session.commit()
    with pytest.raises(StaleStudy) as stale:
        make_move(study, "no_show", user=users["OPERATOR"], expected_version=seen)
    assert "was changed by admin@flow.example.com at" in stale.value.message
    assert study.status == S.ARRIVED


def test_a_new_study_from_the_form_is_ordered_now_by_its_creator(client, auth):
    operator = auth.as_role(RoleName.OPERATOR)
    patient = make_patient(mrn="F-1")
    db.session.commit()
    page = client.get("/admin/study/new/")
    response = client.post(
        "/admin/study/new/",
        data={
            "patient": str(patient.id),
            "study_date": date.today().isoformat(),
            "urgency": "HIGH",
            "study_type": "CT",
            "body_part": "head",
            "csrf_token": csrf_token_from(page.get_data(as_text=True)),
        },
    )
    assert response.status_code == 302, flashes(response.get_data(as_text=True))
    study = db.session.scalar(select(Study).where(Study.patient_id == patient.id))
    assert study.status == S.ORDERED
    assert study.ordered_at is not None
    assert [(e.transition, e.to_status, e.user_id) for e in study.events] == [
        ("order", S.ORDERED, operator.id)
    ]


def test_the_status_is_not_a_form_field(client, auth):
    """A forged ``status`` in the edit form changes nothing: moves go through the workflow."""
    auth.as_role(RoleName.OPERATOR)
    study = make_study(status=S.ORDERED, study_date=date(2026, 3, 1))
    db.session.commit()
    url = f"/admin/study/edit/?id={study.id}"
    page = client.get(url).get_data(as_text=True)
    assert 'name="status"' not in page
    client.post(
        url,
        data={
            "patient": str(study.patient_id),
            "study_date": "2026-03-01",
            "urgency": "LOW",
            "study_type": "XRAY",
            "body_part": "CHEST",
            "status": "REPORTED",
            "opened_version": str(study.version),
            "csrf_token": csrf_token_from(page),
        },
    )
    db.session.expire_all()
    assert db.session.get(Study, study.id).status == S.ORDERED


# --------------------------------------------------------------------------- the buttons


def details(client, study_id: int) -> str:
    response = client.get(f"/admin/study/details/?id={study_id}")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def press(client, study_id: int, code: str, page: str, **fields: str):
    """Submit the button's own form, as the browser does."""
    form = re.search(
        rf'<form[^>]*action="/admin/study/transition/"[^>]*>(?:(?!</form>).)*?'
        rf'name="transition" value="{code}".*?</form>',
        page,
        re.S,
    )
    assert form, f"no {code} button on the page"
    data = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form.group(0)))
    data.update(fields)
    return client.post("/admin/study/transition/", data=data, follow_redirects=True)


def test_the_day_of_a_study_through_its_buttons(client, auth):
    """Order, schedule, check in, start, complete: each button posts and the page says so."""
    auth.as_role(RoleName.OPERATOR)
    study = make_study(status=S.ORDERED)
    db.session.commit()
    page = details(client, study.id)
    assert re.findall(r'name="transition" value="(\w+)"', page) == [
        "schedule",
        "check_in",
        "cancel",
    ]
    when = (date.today() + timedelta(days=2)).isoformat() + "T10:15"
    done = press(client, study.id, "schedule", page, scheduled_for=when)
    assert "Scheduled" in " ".join(flashes(done.get_data(as_text=True)))
    for code, label in (
        ("check_in", "Checked in"),
        ("start", "In progress"),
        ("complete", "Performed"),
    ):
        page = details(client, study.id)
        done = press(client, study.id, code, page)
        assert any(label in f for f in flashes(done.get_data(as_text=True))), code
    db.session.expire_all()
    study = db.session.get(Study, study.id)
    assert study.status == S.PERFORMED
    assert [e.transition for e in study.events] == ["schedule", "check_in", "start", "complete"]
    assert study.scheduled_for == parse_local_time(when)
    assert study.arrived_at <= study.started_at <= study.performed_at
    # Nothing is left for the front desk: the report is the doctor's.
    assert 'name="transition"' not in details(client, study.id)


def test_a_button_from_a_page_opened_before_a_change_is_refused(app, client, auth):
    auth.as_role(RoleName.OPERATOR, email="first@flow.example.com")
    study = make_study(status=S.SCHEDULED)
    db.session.commit()
    stale_page = details(client, study.id)
    other = app.test_client()
    make_user("second@flow.example.com", RoleName.OPERATOR)
    from tests.conftest import AuthActions

    AuthActions(other).login("second@flow.example.com")
    press(other, study.id, "no_show", details(other, study.id))
    response = press(client, study.id, "check_in", stale_page)
    messages = " ".join(flashes(response.get_data(as_text=True)))
    assert "was changed by second@flow.example.com" in messages
    db.session.expire_all()
    study = db.session.get(Study, study.id)
    assert study.status == S.NO_SHOW
    assert [e.transition for e in study.events] == ["no_show"]


def test_a_move_the_role_may_not_make_is_403_and_changes_nothing(client, auth):
    auth.as_role(RoleName.OPERATOR)
    study = make_study(status=S.REPORTED)
    db.session.commit()
    token = csrf_token_from(details(client, study.id))
    response = client.post(
        "/admin/study/transition/",
        data={
            "id": str(study.id),
            "transition": "reopen",
            "version": str(study.version),
            "reason": "x",
            "csrf_token": token,
        },
    )
    assert response.status_code == 403
    db.session.expire_all()
    assert db.session.get(Study, study.id).status == S.REPORTED


def test_the_move_endpoint_refuses_malformed_posts(client, auth):
    auth.as_role(RoleName.ADMIN)
    study = make_study(status=S.ORDERED)
    db.session.commit()
    token = csrf_token_from(details(client, study.id))
    base = {"id": str(study.id), "transition": "check_in", "version": "1", "csrf_token": token}
    assert client.post("/admin/study/transition/", data=base | {"id": "x"}).status_code == 400
    assert client.post("/admin/study/transition/", data=base | {"version": ""}).status_code == 400
    assert (
        client.post("/admin/study/transition/", data=base | {"transition": "fly"}).status_code
        == 400
    )
    assert client.post("/admin/study/transition/", data=base | {"id": "999999"}).status_code == 404
    bad_time = base | {"transition": "schedule", "scheduled_for": "soon"}
    page = client.post("/admin/study/transition/", data=bad_time, follow_redirects=True)
    assert "'soon' is not a date and time" in " ".join(flashes(page.get_data(as_text=True)))
    del base["csrf_token"]
    assert client.post("/admin/study/transition/", data=base).status_code == 400
    db.session.expire_all()
    assert db.session.get(Study, study.id).status == S.ORDERED


# --------------------------------------------------------------------------- bulk moves


def list_page(client, **args) -> str:
    response = client.get("/admin/study/", query_string=args)
    assert response.status_code == 200
    return response.get_data(as_text=True)


def row_versions(page: str) -> str:
    match = re.search(r'name="row_versions" value="([^"]*)"', page)
    assert match, "the bulk form carries no row versions"
    return match.group(1)


def test_a_bulk_check_in_reports_each_study(client, auth):
    auth.as_role(RoleName.OPERATOR)
    patient = make_patient("Bea", "Bulk")
    first = make_study(patient=patient, status=S.SCHEDULED, body_part="KNEE")
    second = make_study(patient=patient, status=S.ORDERED, body_part="HAND")
    done_already = make_study(patient=patient, status=S.PERFORMED, body_part="FOOT")
    db.session.commit()
    page = list_page(client)
    assert ">Check in</a>" in page
    response = client.post(
        "/admin/study/action/",
        data={
            "action": "check_in",
            "rowid": [str(first.id), str(second.id), str(done_already.id)],
            "row_versions": row_versions(page),
            "url": "/admin/study/",
            "csrf_token": csrf_token_from(page),
        },
    )
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "2 of 3 studies done." in html
    rows = re.findall(r'<tr class="(bulk-done|bulk-refused[^"]*)">(.*?)</tr>', html, re.S)
    assert [r[0].split()[0] for r in rows] == ["bulk-done", "bulk-done", "bulk-refused"]
    assert "the study is Performed" in rows[2][1]
    db.session.expire_all()
    assert [db.session.get(Study, s.id).status for s in (first, second, done_already)] == [
        S.ARRIVED,
        S.ARRIVED,
        S.PERFORMED,
    ]


def test_a_bulk_move_refuses_rows_changed_since_the_list_was_opened(client, auth):
    auth.as_role(RoleName.OPERATOR)
    kept = make_study(status=S.SCHEDULED, body_part="KNEE")
    changed = make_study(status=S.SCHEDULED, body_part="HAND")
    db.session.commit()
    page = list_page(client)
    changed.description = "edited meanwhile"
    db.session.commit()
    response = client.post(
        "/admin/study/action/",
        data={
            "action": "no_show",
            "rowid": [str(kept.id), str(changed.id)],
            "row_versions": row_versions(page),
            "csrf_token": csrf_token_from(page),
        },
    )
    html = response.get_data(as_text=True)
    assert "1 of 2 studies done." in html
    assert "was changed by" in html
    db.session.expire_all()
    assert db.session.get(Study, kept.id).status == S.NO_SHOW
    assert db.session.get(Study, changed.id).status == S.SCHEDULED


def test_a_bulk_cancel_asks_for_the_reason_first(client, auth):
    auth.as_role(RoleName.ADMIN)
    one = make_study(status=S.ORDERED, body_part="KNEE")
    two = make_study(status=S.SCHEDULED, body_part="HAND")
    db.session.commit()
    page = list_page(client)
    form = client.post(
        "/admin/study/action/",
        data={
            "action": "cancel",
            "rowid": [str(one.id), str(two.id)],
            "row_versions": row_versions(page),
            "csrf_token": csrf_token_from(page),
        },
    )
    html = form.get_data(as_text=True)
    assert form.status_code == 200 and 'id="bulk-move-form"' in html
    db.session.expire_all()
    assert db.session.get(Study, one.id).status == S.ORDERED  # nothing yet
    fields = dict(
        re.findall(
            r'<input type="hidden" name="(csrf_token|transition|row_versions)" value="([^"]*)"',
            html,
        )
    )
    ids = re.findall(r'name="rowid" value="(\d+)"', html)
    blank = client.post("/admin/study/bulk/", data=fields | {"rowid": ids, "reason": " "})
    assert "0 of 2 studies done." in blank.get_data(as_text=True)
    done = client.post("/admin/study/bulk/", data=fields | {"rowid": ids, "reason": "Machine down"})
    assert "2 of 2 studies done." in done.get_data(as_text=True)
    db.session.expire_all()
    for study in (one, two):
        study = db.session.get(Study, study.id)
        assert (study.status, study.cancel_reason) == (S.CANCELLED, "Machine down")


def test_bulk_moves_are_offered_to_the_front_desk_only(client, auth):
    auth.as_role(RoleName.SUPPORT)
    study = make_study(status=S.SCHEDULED)
    db.session.commit()
    page = list_page(client)
    assert 'data-model-action="check_in"' not in page
    response = client.post(
        "/admin/study/action/",
        data={"action": "check_in", "rowid": str(study.id), "csrf_token": csrf_token_from(page)},
    )
    assert response.status_code == 403
    db.session.expire_all()
    assert db.session.get(Study, study.id).status == S.SCHEDULED


def test_bulk_move_of_a_missing_study_says_so(people):
    _doctor, users = people
    study = make_study(status=S.ARRIVED)
    outcomes = bulk_move([study.id, 987654, "x"], "start", user=users["OPERATOR"])
    assert [(o.study_id, o.done) for o in outcomes] == [(study.id, True), (987654, False)]
    assert outcomes[1].message == "No such study."


def test_the_status_filter_of_the_studies_list(client, auth):
    auth.as_role(RoleName.MANAGER)
    waiting = make_study(status=S.ARRIVED, body_part="KNEE")
    make_study(status=S.REPORTED, body_part="HAND")
    db.session.commit()
    arg = filter_arg(list_page(client), "Status")
    page = list_page(client, **{f"flt0_{arg}": "ARRIVED"})
    ids = set(re.findall(r"/admin/study/details/\?id=(\d+)", page))
    assert ids == {str(waiting.id)}
    assert ">Checked in<" in page


def test_events_belong_to_their_user(people):
    _doctor, users = people
    study = make_study(status=S.ORDERED)
    make_move(study, "check_in", user=users["ADMIN"])
    db.session.commit()
    event = db.session.scalar(select(StudyEvent).where(StudyEvent.study_id == study.id))
    assert db.session.get(User, event.user_id).email == "admin@flow.example.com"
