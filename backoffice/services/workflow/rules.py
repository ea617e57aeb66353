"""The moves of a study's life: from which statuses each is allowed, who may make it, what it
records. The table is data: the views, the bulk actions, the importer and the tests read it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from backoffice.auth.permissions import Perm, user_can
from backoffice.i18n import _, _l
from backoffice.models import StudyStatus

S = StudyStatus


@dataclass(frozen=True)
class Transition:
    """One move: from ``sources`` to ``target``, by the roles that hold ``permission``."""

    code: str
    label: Any  # the button ("Check in")
    sources: frozenset[StudyStatus]
    target: StudyStatus
    permission: Perm
    #: the study column that records when it happened (``scheduled_for``: the appointment)
    stamp: str | None = None
    needs_reason: bool = False
    #: asks for the appointment's date and time
    needs_time: bool = False
    #: the study's date becomes the local day of the move (the appointment's, the arrival's,
    #: the day it was performed): "Date" on the lists is when the study happens
    dates_study: bool = False
    #: made only by signing the study's report (backoffice/services/reports)
    by_report: bool = False
    #: an upload may make it on an existing study: it needs nothing a file does not carry
    importable: bool = False
    #: offered as a bulk action on the studies list
    bulk: bool = True
    #: the button's Bootstrap style
    style: str = "outline-primary"

    def allowed_from(self, status: StudyStatus | str | None) -> bool:
        return status is not None and StudyStatus(status) in self.sources


TRANSITIONS: tuple[Transition, ...] = (
    # Ordering is the creation of the study: no status leads to it.
    Transition("order", _l("Order"), frozenset(), S.ORDERED, Perm.ORDER, "ordered_at", bulk=False),
    Transition(
        "schedule",
        _l("Schedule"),
        frozenset({S.ORDERED, S.SCHEDULED, S.NO_SHOW}),  # book, move, or book again
        S.SCHEDULED,
        Perm.SCHEDULE,
        "scheduled_for",
        needs_time=True,
        dates_study=True,
    ),
    Transition(
        "check_in",
        _l("Check in"),
        frozenset({S.ORDERED, S.SCHEDULED}),  # with an appointment, or walking in
        S.ARRIVED,
        Perm.CHECK_IN,
        "arrived_at",
        dates_study=True,
        importable=True,
        style="primary",
    ),
    Transition(
        "start",
        _l("Start"),
        frozenset({S.ARRIVED}),
        S.IN_PROGRESS,
        Perm.START,
        "started_at",
        importable=True,
        style="primary",
    ),
    Transition(
        "complete",
        _l("Complete"),
        frozenset({S.IN_PROGRESS}),
        S.PERFORMED,
        Perm.COMPLETE,
        "performed_at",
        dates_study=True,
        importable=True,
        style="primary",
    ),
    Transition(
        "report",
        _l("Sign the report"),
        frozenset({S.PERFORMED}),
        S.REPORTED,
        Perm.REPORT,
        "reported_at",
        by_report=True,
        bulk=False,
    ),
    Transition(
        "no_show",
        _l("Mark as no-show"),
        frozenset({S.SCHEDULED}),
        S.NO_SHOW,
        Perm.NO_SHOW,
        "no_show_at",
        importable=True,
        style="outline-dark",
    ),
    Transition(
        "cancel",
        _l("Cancel the study"),
        frozenset({S.ORDERED, S.SCHEDULED, S.ARRIVED, S.IN_PROGRESS}),
        S.CANCELLED,
        Perm.CANCEL,
        "cancelled_at",
        needs_reason=True,
        style="outline-danger",
    ),
    # The report stays as it was signed; the study waits for a new version of it.
    Transition(
        "reopen",
        _l("Reopen"),
        frozenset({S.REPORTED}),
        S.PERFORMED,
        Perm.REOPEN,
        None,
        needs_reason=True,
        bulk=False,
        style="outline-danger",
    ),
)
BY_CODE: dict[str, Transition] = {t.code: t for t in TRANSITIONS}
BULK: tuple[Transition, ...] = tuple(t for t in TRANSITIONS if t.bulk)
#: the statuses a new study may be uploaded in (a cancellation needs its reason, a report its
#: signature: neither is in a file)
IMPORTABLE_STATUSES: tuple[StudyStatus, ...] = (
    S.ORDERED,
    S.SCHEDULED,
    S.ARRIVED,
    S.IN_PROGRESS,
    S.PERFORMED,
    S.NO_SHOW,
)
#: the column that records when a study uploaded in a status got there
STATUS_STAMPS: dict[StudyStatus, str] = {
    t.target: t.stamp for t in TRANSITIONS if t.stamp and t.code not in ("reopen",)
}


def rule(code: str) -> Transition:
    """The move named ``code``; a ``KeyError`` for a code that is none."""
    return BY_CODE[code]


def moves_from(status: StudyStatus | str | None) -> list[Transition]:
    """Every move the rules allow from ``status`` (whoever may make it)."""
    return [t for t in TRANSITIONS if t.allowed_from(status)]


def available_to(user: Any, status: StudyStatus | str | None) -> list[Transition]:
    """The moves ``user`` may make from ``status`` with a button (signing is on the report)."""
    return [t for t in moves_from(status) if not t.by_report and user_can(user, t.permission)]


def import_move(old: StudyStatus | str, new: StudyStatus | str) -> Transition | None:
    """The move an upload makes when a file gives an existing study another status, if any."""
    for t in moves_from(old):
        if t.importable and t.target == StudyStatus(new):
            return t
    return None


def refusal(transition: Transition, status: StudyStatus | str) -> str:
    """Why ``transition`` cannot be made from ``status``, naming the moves that can."""
    current = StudyStatus(status)
    allowed = [str(t.label) for t in moves_from(current)]
    if allowed:
        return _(
            "“%(action)s” is not possible: the study is %(status)s. From %(status)s it can "
            "only be: %(allowed)s.",
            action=transition.label,
            status=current.label,
            allowed=", ".join(allowed),
        )
    return _(
        "“%(action)s” is not possible: the study is %(status)s, and nothing follows %(status)s.",
        action=transition.label,
        status=current.label,
    )
