"""Care-team rules: the referring doctor and the REFERRING link agree, and a team makes sense.

``Patient.referring_doctor_id`` is what the listing filters and the import's ``referring_doctor``
column read and write; the care team is what people edit. They are kept in step by a
``before_flush`` hook, whichever door changed one of them:

- a link changed (added, removed, its role, status or doctor edited): the patient's referring
  doctor becomes the doctor of their active REFERRING link, or nobody;
- the referring doctor changed on the patient (seed, commands, code): the other active REFERRING
  links become inactive (ended today) and the new doctor gets an active REFERRING link.

The importer's set-based SQL applies the same rule (``PatientPlan.after_writes``).
``team_problems`` holds the checks a team's rows must pass; the patient form shows them on
the row they are about.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import Session

from backoffice.i18n import _
from backoffice.models import CareTeamMember, CareTeamRole, CareTeamStatus, Doctor, Patient


def _changed(obj: Any, *keys: str) -> bool:
    state = inspect(obj)
    return any(state.attrs[key].history.has_changes() for key in keys)


def _is_or_was_referring(link: CareTeamMember) -> bool:
    history = inspect(link).attrs.role.history
    roles = [link.role, *(history.deleted or ())]
    return any(role == CareTeamRole.REFERRING for role in roles)


def _doctor_id(link: CareTeamMember) -> int | None:
    return link.doctor.id if link.doctor is not None else link.doctor_id


def _patient_of(session: Session, link: CareTeamMember) -> Patient | None:
    if link.patient is not None:
        return link.patient
    if link.patient_id is None:
        return None
    return session.get(Patient, link.patient_id)


def _active_referring(session: Session, patient: Patient) -> list[CareTeamMember]:
    return [
        link
        for link in patient.care_team
        if link.role == CareTeamRole.REFERRING
        and link.status == CareTeamStatus.ACTIVE
        and link not in session.deleted
    ]


def _column_from_links(session: Session, patient: Patient) -> None:
    active = _active_referring(session, patient)
    # Several active REFERRING links only come from code (the form refuses them): the latest.
    active.sort(key=lambda link: (link.since or date.min, link.id or 0))
    link = active[-1] if active else None
    wanted = _doctor_id(link) if link is not None else None
    current = (
        patient.referring_doctor.id
        if patient.referring_doctor is not None
        else patient.referring_doctor_id
    )
    if link is None:
        if current is not None:
            patient.referring_doctor = None
    elif link.doctor is not None and link.doctor is not patient.referring_doctor:
        patient.referring_doctor = link.doctor
    elif link.doctor is None and wanted != current:
        patient.referring_doctor = session.get(Doctor, wanted)


def _links_from_column(session: Session, patient: Patient) -> None:
    state = inspect(patient)
    if state.attrs.referring_doctor_id.history.has_changes():
        target_id = patient.referring_doctor_id
        doctor = session.get(Doctor, target_id) if target_id is not None else None
    else:
        doctor = patient.referring_doctor
        target_id = doctor.id if doctor is not None else None
    today = date.today()
    kept = False
    for link in _active_referring(session, patient):
        same = doctor is not None and (
            link.doctor is doctor or (target_id is not None and _doctor_id(link) == target_id)
        )
        if same and not kept:
            kept = True
            continue
        link.status = CareTeamStatus.INACTIVE
        if link.until is None:
            link.until = today
    if doctor is not None and not kept:
        patient.care_team.append(
            CareTeamMember(
                doctor=doctor,
                role=CareTeamRole.REFERRING,
                status=CareTeamStatus.ACTIVE,
                since=today,
            )
        )


def _sync_referring(session: Session, flush_context: Any, instances: Any) -> None:
    from_links: list[Patient] = []
    from_column: list[Patient] = []

    def add(target: list[Patient], patient: Patient | None) -> None:
        if patient is not None and patient not in session.deleted and patient not in target:
            target.append(patient)

    with session.no_autoflush:
        for obj in list(session.new) + list(session.dirty):
            if isinstance(obj, CareTeamMember):
                # Only REFERRING links (now or before this change) say who the referring
                # doctor is; a specialist added to the team changes nothing about it.
                if _is_or_was_referring(obj) and (
                    obj in session.new
                    or _changed(
                        obj, "role", "status", "doctor", "doctor_id", "patient", "patient_id"
                    )
                ):
                    add(from_links, _patient_of(session, obj))
                    for old in inspect(obj).attrs.patient.history.deleted or ():
                        add(from_links, old)
            elif isinstance(obj, Patient):
                removed = inspect(obj).attrs.care_team.history.deleted or ()
                if any(_is_or_was_referring(link) for link in removed):
                    add(from_links, obj)
                if _changed(obj, "referring_doctor", "referring_doctor_id"):
                    add(from_column, obj)
        for obj in session.deleted:
            if isinstance(obj, CareTeamMember) and _is_or_was_referring(obj):
                add(from_links, _patient_of(session, obj))
        for patient in from_links:
            _column_from_links(session, patient)
        for patient in from_column:
            if patient not in from_links:
                _links_from_column(session, patient)


def register_care_team_hooks(session_cls: type[Session] | Any = Session) -> None:
    if not event.contains(session_cls, "before_flush", _sync_referring):
        event.listen(session_cls, "before_flush", _sync_referring)


# --------------------------------------------------------------------------- checks


@dataclass(frozen=True)
class TeamRow:
    """One row of a care team as a form holds it: ``index`` is its position in the form,
    ``name`` how a message refers to it ("Row 2", "The link with Dr. Ana Ruiz")."""

    index: int
    doctor_id: int | None
    role: str | None
    status: str | None
    since: date | None
    until: date | None
    name: str = ""


def team_problems(rows: Sequence[TeamRow], today: date | None = None) -> list[tuple[int, str, str]]:
    """(row index, field, message) for each rule a team breaks; empty when it is sound.

    - a period ends on or after it starts;
    - an active link has not ended yet;
    - one doctor holds one role once among the active links;
    - a patient has one active referring doctor.
    """
    today = today or date.today()
    problems: list[tuple[int, str, str]] = []
    seen: dict[tuple[int, str], TeamRow] = {}
    referring: TeamRow | None = None
    for row in rows:
        if row.since and row.until and row.until < row.since:
            problems.append(
                (
                    row.index,
                    "until",
                    _(
                        "The end date %(until)s is before the start date %(since)s.",
                        until=row.until.isoformat(),
                        since=row.since.isoformat(),
                    ),
                )
            )
        if row.status != CareTeamStatus.ACTIVE.value:
            continue
        if row.until and row.until < today:
            problems.append(
                (
                    row.index,
                    "status",
                    _(
                        "This link ended on %(until)s: mark it completed or inactive, or clear "
                        "the end date.",
                        until=row.until.isoformat(),
                    ),
                )
            )
        if row.doctor_id is not None and row.role:
            key = (row.doctor_id, row.role)
            if key in seen:
                problems.append(
                    (
                        row.index,
                        "doctor",
                        _(
                            "%(other)s already gives this doctor this role, active.",
                            other=_name(seen[key]),
                        ),
                    )
                )
            else:
                seen[key] = row
        if row.role == CareTeamRole.REFERRING.value:
            if referring is not None and referring.doctor_id != row.doctor_id:
                problems.append(
                    (
                        row.index,
                        "role",
                        _(
                            "%(other)s already names the active referring doctor, and a patient "
                            "has one: mark one of them inactive.",
                            other=_name(referring),
                        ),
                    )
                )
            elif referring is None:
                referring = row
    return problems


def _name(row: TeamRow) -> str:
    return row.name or _("Row %(n)d", n=row.index + 1)
