"""A study's life: ORDERED → SCHEDULED → ARRIVED → IN_PROGRESS → PERFORMED → REPORTED, and
CANCELLED or NO_SHOW on the way. The one entry the views, the bulk actions, the commands, the
importer (which reads the rules) and later the API use.

``rules`` is the table of moves (from where, to where, by whom, what each records); ``moves``
makes a move: checks, new status and times, the study's event and its audit entry, flushed in
the caller's transaction.
"""

from backoffice.services.workflow.moves import (
    NotPermitted,
    Outcome,
    StaleStudy,
    WorkflowError,
    bulk_move,
    clinic_zone,
    local_day,
    make_move,
    order_study,
    parse_local_time,
    stale_message,
)
from backoffice.services.workflow.rules import (
    BULK,
    BY_CODE,
    IMPORTABLE_STATUSES,
    STATUS_STAMPS,
    TRANSITIONS,
    Transition,
    available_to,
    import_move,
    moves_from,
    refusal,
    rule,
)

__all__ = [
    "BULK",
    "BY_CODE",
    "IMPORTABLE_STATUSES",
    "STATUS_STAMPS",
    "TRANSITIONS",
    "NotPermitted",
    "Outcome",
    "StaleStudy",
    "Transition",
    "WorkflowError",
    "available_to",
    "bulk_move",
    "clinic_zone",
    "import_move",
    "local_day",
    "make_move",
    "moves_from",
    "order_study",
    "parse_local_time",
    "refusal",
    "rule",
    "stale_message",
]
