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
    NOBODY = "nobody"  # endpoints that exist in Flask-Admin but must never be used


ADMIN, MANAGER, OPERATOR, SUPPORT = (
    RoleName.ADMIN,
    RoleName.MANAGER,
    RoleName.OPERATOR,
    RoleName.SUPPORT,
)

MATRIX: dict[Perm, frozenset[RoleName]] = {
    Perm.VIEW: frozenset({ADMIN, MANAGER, OPERATOR, SUPPORT}),
    Perm.CREATE: frozenset({ADMIN, OPERATOR}),
    Perm.EDIT: frozenset({ADMIN, OPERATOR, SUPPORT}),
    Perm.DELETE: frozenset({ADMIN}),
    Perm.EXPORT: frozenset({ADMIN, MANAGER}),
    Perm.UPLOAD: frozenset({ADMIN, OPERATOR}),
    Perm.MANAGE_USERS: frozenset({ADMIN}),
    Perm.AUDIT: frozenset({ADMIN}),
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
