"""The role matrix: who may do what. Anything not declared here is for admins only."""

from __future__ import annotations

import enum
from collections.abc import Iterable

from flask_login import current_user

from backoffice.models.user import RoleName


class Perm(enum.Enum):
    VIEW = "view"
    CREATE = "create"
    EDIT = "edit"
    DELETE = "delete"
    EXPORT = "export"
    UPLOAD = "upload"
    MANAGE_USERS = "manage_users"
    AUDIT = "audit"
    # A study's life (backoffice/services/workflow): each move is a permission of its own.
    ORDER = "order"
    SCHEDULE = "schedule"
    CHECK_IN = "check_in"
    START = "start"
    COMPLETE = "complete"
    CANCEL = "cancel"
    NO_SHOW = "no_show"
    REOPEN = "reopen"
    #: choose the doctor who reports a study
    ASSIGN_REPORTER = "assign_reporter"
    #: write and sign reports, add addenda (a doctor, on the studies assigned to them)
    REPORT = "report"
    NOBODY = "nobody"  # endpoints that exist in Flask-Admin but must never be used


ADMIN, MANAGER, OPERATOR, SUPPORT, DOCTOR = (
    RoleName.ADMIN,
    RoleName.MANAGER,
    RoleName.OPERATOR,
    RoleName.SUPPORT,
    RoleName.DOCTOR,
)

# Operators run the day (order, schedule, check in, start, complete, cancel, no-show); doctors
# report; admins do what operators do and may also reopen a reported study. What a doctor sees
# is narrowed to their own studies and patients by the record scope (backoffice/auth/scope.py):
# VIEW and EXPORT mean "of what they may see".
FRONT_DESK = frozenset({ADMIN, OPERATOR})
MATRIX: dict[Perm, frozenset[RoleName]] = {
    Perm.VIEW: frozenset({ADMIN, MANAGER, OPERATOR, SUPPORT, DOCTOR}),
    Perm.CREATE: FRONT_DESK,
    Perm.EDIT: frozenset({ADMIN, OPERATOR, SUPPORT}),
    Perm.DELETE: frozenset({ADMIN}),
    Perm.EXPORT: frozenset({ADMIN, MANAGER, DOCTOR}),
    Perm.UPLOAD: FRONT_DESK,
    Perm.MANAGE_USERS: frozenset({ADMIN}),
    Perm.AUDIT: frozenset({ADMIN}),
    Perm.ORDER: FRONT_DESK,
    Perm.SCHEDULE: FRONT_DESK,
    Perm.CHECK_IN: FRONT_DESK,
    Perm.START: FRONT_DESK,
    Perm.COMPLETE: FRONT_DESK,
    Perm.CANCEL: FRONT_DESK,
    Perm.NO_SHOW: FRONT_DESK,
    Perm.REOPEN: frozenset({ADMIN}),
    Perm.ASSIGN_REPORTER: FRONT_DESK,
    Perm.REPORT: frozenset({DOCTOR}),
    Perm.NOBODY: frozenset(),
}

ADMIN_ONLY = frozenset({ADMIN})


def roles_for(perm: Perm | None) -> frozenset[RoleName]:
    """Roles granted ``perm``; an undeclared permission (None) is admin-only."""
    if perm is None:
        return ADMIN_ONLY
    return MATRIX.get(perm, ADMIN_ONLY)


def user_can(user: object, perms: Perm | Iterable[Perm] | None) -> bool:
    """True if the user holds a role granting ``perms`` (any one of them, when several)."""
    if user is None or not getattr(user, "is_authenticated", False):
        return False
    if not getattr(user, "is_active", False):
        return False
    mine = user.role_names  # type: ignore[attr-defined]
    if perms is None or isinstance(perms, Perm):
        return bool(mine & roles_for(perms))
    return any(mine & roles_for(p) for p in perms)


def can(perms: Perm | Iterable[Perm] | None) -> bool:
    """Check the current user (for templates and view code)."""
    return user_can(current_user, perms)
