"""Making a move: the checks (role, status, reason, time, the version the user saw), the study's
new status and times, its event, and its audit entry, in the caller's transaction."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import current_app, has_app_context
from flask_babel import format_datetime
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm.exc import StaleDataError

from backoffice.auth.permissions import user_can
from backoffice.extensions import db
from backoffice.i18n import _
from backoffice.models import Study, StudyEvent, StudyStatus, utcnow
from backoffice.services.workflow.rules import Transition, refusal, rule
from backoffice.validation import blank_to_none, whole_number

REASON_MAX = 500


class WorkflowError(ValueError):
    """A move was refused; the message says why, in words for the person who tried."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotPermitted(WorkflowError):
    """The user's roles do not allow this move (the views answer 403)."""


class StaleStudy(WorkflowError):
    """The study changed since the user opened it: the move is refused, as a stale edit is."""


def clinic_zone() -> ZoneInfo:
    name = current_app.config["BABEL_DEFAULT_TIMEZONE"] if has_app_context() else "UTC"
    return ZoneInfo(name)


def local_day(moment: datetime) -> date:
    """The calendar day of ``moment`` in the clinic's time zone (BACKOFFICE_TIMEZONE)."""
    return moment.astimezone(clinic_zone()).date()


def parse_local_time(raw: str | None) -> datetime | None:
    """A date and time typed in the clinic's time zone (``2026-12-01T09:30``), as UTC.

    A wall time that happens twice when the clocks go back is taken as the first one; one that
    never happens when they go forward lands just past the gap."""
    text = (raw or "").strip()
    if not text:
        return None
    try:
        naive = datetime.fromisoformat(text)
    except ValueError:
        raise WorkflowError(
            _("'%(value)s' is not a date and time; expected YYYY-MM-DD HH:MM.", value=text)
        ) from None
    if naive.tzinfo is not None:
        return naive.astimezone(UTC)
    # fold=0: the first of two equal wall times; a time in a gap is read with the offset
    # before the gap, which lands it just after the gap.
    return naive.replace(tzinfo=clinic_zone()).astimezone(UTC)


def stale_message(study: Study, opened: int | None) -> str:
    """Who changed the study, and when, since the version the user opened."""
    from backoffice.services.audit import entries_since_version

    last = None
    if opened is not None:
        entries = entries_since_version("study", study.id, opened)
        last = entries[-1] if entries else None
    if last is not None:
        return _(
            "%(study)s was changed by %(name)s at %(time)s since you opened it: nothing was "
            "done. Reload it and try again.",
            study=str(study),
            name=last.actor_label or _("another user"),
            time=format_datetime(last.at, "short"),
        )
    return _(
        "%(study)s was changed by someone else since you opened it: nothing was done. "
        "Reload it and try again.",
        study=str(study),
    )


def _check(
    study: Study,
    move: Transition,
    user: Any,
    expected_version: int | None,
    reason: str | None,
    scheduled_for: datetime | None,
    via_report: bool,
) -> str | None:
    if user is not None and not user_can(user, move.permission):
        raise NotPermitted(_("Your role does not allow “%(action)s”.", action=move.label))
    if move.by_report and not via_report:
        raise WorkflowError(_("A study is reported by signing its report."))
    if expected_version is not None and study.version != expected_version:
        raise StaleStudy(stale_message(study, expected_version))
    if not move.allowed_from(study.status):
        raise WorkflowError(refusal(move, study.status))
    reason = blank_to_none(reason)
    if move.needs_reason and not reason:
        raise WorkflowError(_("“%(action)s” needs a reason.", action=move.label))
    if reason is not None and len(reason) > REASON_MAX:
        raise WorkflowError(_("The reason is too long: at most %(n)d characters.", n=REASON_MAX))
    if move.needs_time:
        if scheduled_for is None:
            raise WorkflowError(_("“%(action)s” needs a date and time.", action=move.label))
        if local_day(scheduled_for) < local_day(utcnow()):
            raise WorkflowError(_("The appointment cannot be on a day that has passed."))
    return reason


def make_move(
    study: Study,
    code: str,
    *,
    user: Any = None,
    expected_version: int | None = None,
    reason: str | None = None,
    scheduled_for: datetime | None = None,
    via_report: bool = False,
) -> StudyEvent:
    """Move ``study`` by the transition ``code``; flushed, not committed.

    ``user`` is checked against the role matrix (None: a command, whose operator is the actor
    of the audit entry). ``expected_version`` is the version the user saw: a study changed since
    is refused (``StaleStudy``), as a concurrent change caught by the version check at the
    flush is. Raises ``WorkflowError`` with a message for the user.
    """
    try:
        move = rule(code)
    except KeyError:
        raise WorkflowError(_("There is no such step.")) from None
    if user is not None and not user_can(user, move.permission):
        raise NotPermitted(_("Your role does not allow “%(action)s”.", action=move.label))
    if move.code == "order":
        raise WorkflowError(_("A study is ordered by creating it."))
    reason = _check(study, move, user, expected_version, reason, scheduled_for, via_report)
    return _apply(study, move, user=user, reason=reason, scheduled_for=scheduled_for)


def _who(user: Any) -> tuple[int | None, str | None]:
    """Who makes a move: the user given, else whoever is acting (a command's operator)."""
    from backoffice.services.audit import current_actor

    if user is not None and getattr(user, "id", None) is not None:
        return user.id, user.email
    actor = current_actor()
    return actor.user_id, actor.label


def _apply(
    study: Study,
    move: Transition,
    *,
    user: Any,
    reason: str | None,
    scheduled_for: datetime | None,
) -> StudyEvent:
    from backoffice.services.audit import audit_as

    now = utcnow()
    old = StudyStatus(study.status) if study.status is not None else None
    details = {"transition": move.code, "from": old.value if old else None, "to": move.target}
    if reason:
        details["reason"] = reason
    user_id, label = _who(user)
    with audit_as("TRANSITION", details):
        study.status = move.target
        if move.stamp == "scheduled_for":
            study.scheduled_for = scheduled_for
        elif move.stamp:
            setattr(study, move.stamp, now)
        if move.code == "cancel":
            study.cancel_reason = reason
        if move.code == "reopen":
            study.reported_at = None
        if move.dates_study:
            study.study_date = local_day(scheduled_for or now)
        event = StudyEvent(
            study=study,
            transition=move.code,
            from_status=old,
            to_status=move.target,
            at=now,
            user_id=user_id,
            actor_label=label,
            reason=reason,
            scheduled_for=scheduled_for if move.needs_time else None,
        )
        db.session.add(event)
        label = str(study)  # the failed flush below leaves nothing to read
        try:
            db.session.flush()
        except (StaleDataError, OperationalError) as exc:
            # Changed between our read and our write: the version check of the UPDATE found a
            # newer row, or (SQLite, one writer at a time) another transaction wrote first and
            # this one's snapshot cannot become a write. The same race, lost the same way.
            if isinstance(exc, OperationalError) and not _sqlite_busy(exc):
                raise
            raise StaleStudy(
                _(
                    "%(study)s was changed by someone else at the same moment: nothing was "
                    "done. Reload it and try again.",
                    study=label,
                )
            ) from None
    return event


def _sqlite_busy(exc: OperationalError) -> bool:
    return exc.connection_invalidated is False and "database is locked" in str(exc.orig)


def order_study(study: Study, user: Any = None) -> StudyEvent:
    """A new study, ordered now: ORDERED, its order time, its first event (flushed)."""
    move = rule("order")
    study.status = StudyStatus.ORDERED
    study.ordered_at = study.ordered_at or utcnow()
    user_id, label = _who(user)
    event = StudyEvent(
        study=study,
        transition=move.code,
        from_status=None,
        to_status=StudyStatus.ORDERED,
        at=study.ordered_at,
        user_id=user_id,
        actor_label=label,
    )
    db.session.add(event)
    db.session.flush()
    return event


@dataclass
class Outcome:
    """What one study of a bulk move became."""

    study_id: int
    study: str
    done: bool
    message: str
    #: the study's status afterwards (None for a study not found)
    status: StudyStatus | None = None


def bulk_move(
    ids: Iterable[int | str],
    code: str,
    *,
    user: Any = None,
    versions: Mapping[int, int] | None = None,
    reason: str | None = None,
    scheduled_for: datetime | None = None,
) -> list[Outcome]:
    """Make the same move on several studies, each on its own: one refused (a status it cannot
    move from, a change since the list was opened, a study out of reach) leaves the others
    moved. ``versions``: the version of each study the user saw (a study without one is
    refused). Flushed, not committed; one ``Outcome`` per study, in the order given."""
    try:
        move = rule(code)
    except KeyError:
        raise WorkflowError(_("There is no such step.")) from None
    if user is not None and not user_can(user, move.permission):
        raise NotPermitted(_("Your role does not allow “%(action)s”.", action=move.label))
    wanted: list[int] = []
    for raw in ids:
        number = whole_number(raw)
        if number is not None and number not in wanted:
            wanted.append(number)
    found = {s.id: s for s in db.session.scalars(select(Study).where(Study.id.in_(wanted))).all()}
    outcomes = []
    for study_id in wanted:
        study = found.get(study_id)
        if study is None:
            outcomes.append(Outcome(study_id, f"#{study_id}", False, _("No such study.")))
            continue
        label = str(study)
        expected = None
        if versions is not None:
            expected = versions.get(study_id)
            if expected is None:
                outcomes.append(
                    Outcome(study_id, label, False, _("Reload the list and try again."))
                )
                continue
        try:
            with db.session.begin_nested():
                make_move(
                    study,
                    code,
                    user=user,
                    expected_version=expected,
                    reason=reason,
                    scheduled_for=scheduled_for,
                )
        except WorkflowError as exc:
            outcomes.append(Outcome(study_id, label, False, exc.message, study.status))
            continue
        outcomes.append(Outcome(study_id, label, True, _("Done."), move.target))
    return outcomes
