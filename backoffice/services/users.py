"""User management rules, shared by the Users admin view and the ``users`` commands.

Passwords: at least 12 characters, up to 256 (never truncated: Argon2 hashes the whole string),
no composition rules (NIST SP 800-63B), refused when found in a list of common passwords and,
in production, when it is the published demo password.
The last active admin can neither be deactivated nor lose the admin role.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from flask import current_app, has_app_context
from sqlalchemy import func, select

from backoffice.extensions import db
from backoffice.i18n import _
from backoffice.models import Doctor, Role, RoleName, User
from backoffice.validation import whole_number
from config import DEFAULT_DEMO_PASSWORD

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 256
COMMON_PASSWORDS_FILE = (
    Path(__file__).resolve().parent.parent / "auth" / "data" / ("common-passwords.txt.gz")
)


class UserError(ValueError):
    """A user-management rule was broken; the message says which."""


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    with gzip.open(COMMON_PASSWORDS_FILE, "rt", encoding="utf-8") as fh:
        return frozenset(line.strip().lower() for line in fh if line.strip())


def validate_new_password(password: str, user_inputs: Iterable[str | None] = ()) -> str:
    """Return the password unchanged if it may be used, else raise UserError saying why."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(
            _("The password must have at least %(n)d characters.", n=MIN_PASSWORD_LENGTH)
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise UserError(
            _("The password must have at most %(n)d characters.", n=MAX_PASSWORD_LENGTH)
        )
    lowered = password.strip().lower()
    if lowered in common_passwords():
        raise UserError(_("This password is too common: choose another one."))
    if lowered in demo_passwords():
        raise UserError(
            _("This is the demo password, published with the software: choose another one.")
        )
    for value in user_inputs:
        if value and len(value) >= 4 and lowered == value.strip().lower():
            raise UserError(_("The password must not be your email or name."))
    return password


def demo_passwords() -> frozenset[str]:
    """In production, the demo password (the README's and the configured one) is refused for
    every user: it is published, so an account holding it is an open door."""
    if not has_app_context() or current_app.config.get("ENV_NAME") != "production":
        return frozenset()
    configured = current_app.config.get("DEMO_PASSWORD") or DEFAULT_DEMO_PASSWORD
    return frozenset({DEFAULT_DEMO_PASSWORD.lower(), configured.strip().lower()})


def roles_by_name() -> dict[RoleName, Role]:
    return {r.name: r for r in db.session.scalars(select(Role))}


def active_admin_count(excluding: User | None = None) -> int:
    """Active admins in the database, other than ``excluding``.

    The rows of every active admin are locked (``FOR UPDATE`` on PostgreSQL; SQLite takes no row
    locks and serialises writers instead), in id order: two admins deactivating each other at
    the same moment are then checked one after the other, and the second one is refused instead
    of both succeeding and leaving no admin at all.
    """
    ids = db.session.scalars(
        select(User.id)
        .join(User.roles)
        .where(User.active.is_(True), Role.name == RoleName.ADMIN)
        .order_by(User.id)
        .with_for_update(of=User)
    ).all()
    if excluding is not None and excluding.id is not None:
        return sum(1 for i in ids if i != excluding.id)
    return len(ids)


def check_admin_remains(user: User, *, will_be_active: bool, will_be_admin: bool) -> None:
    """Refuse a change that would leave no active admin."""
    if will_be_active and will_be_admin:
        return
    with db.session.no_autoflush:
        if user.id is not None and active_admin_count(excluding=user) == 0:
            was_admin_and_active = db.session.scalar(
                select(func.count())
                .select_from(User)
                .join(User.roles)
                .where(User.id == user.id, User.active.is_(True), Role.name == RoleName.ADMIN)
            )
            if was_admin_and_active:
                raise UserError(
                    _(
                        "%(email)s is the last active administrator: give another user the "
                        "admin role before deactivating this one or removing their admin role.",
                        email=user.email,
                    )
                )


def check_doctor_link(user: User, doctor_id: int | None) -> None:
    """A user of the doctor role is linked to exactly one Doctor record, which no other user
    is linked to; a user without the role is linked to none."""
    is_doctor = user.has_role(RoleName.DOCTOR)
    if is_doctor and doctor_id is None:
        raise UserError(_("A user with the doctor role must be linked to the doctor they are."))
    if not is_doctor and doctor_id is not None:
        raise UserError(_("Only a user with the doctor role is linked to a doctor."))
    if doctor_id is None:
        return
    with db.session.no_autoflush:
        other = db.session.scalar(
            select(User).where(User.doctor_id == doctor_id, User.id != (user.id or 0))
        )
        if other is not None:
            doctor = db.session.get(Doctor, doctor_id)
            raise UserError(
                _(
                    "%(doctor)s is already the doctor of the user %(email)s.",
                    doctor=str(doctor) if doctor else f"#{doctor_id}",
                    email=other.email,
                )
            )


def find_doctor(key: str) -> Doctor:
    """A doctor by email or id (``users create --doctor``)."""
    key = key.strip()
    doctor = None
    if (number := whole_number(key)) is not None:
        doctor = db.session.get(Doctor, number)
    if doctor is None:
        doctor = db.session.scalar(select(Doctor).where(Doctor.email == key.lower()))
    if doctor is None:
        raise UserError(_("No doctor has the email or id %(key)s.", key=key))
    return doctor


def create_user(
    email: str,
    display_name: str,
    roles: Iterable[RoleName | str],
    password: str,
    doctor: Doctor | None = None,
) -> User:
    """Create a user (flushed, not committed); ``doctor``: the Doctor record a user of the
    doctor role is."""
    user = User(email=email, display_name=display_name.strip() or email.split("@")[0])
    if db.session.scalar(select(User.id).where(User.email == user.email)):
        raise UserError(_("A user with this email already exists."))
    validate_new_password(password, (user.email, user.display_name))
    rows = roles_by_name()
    user.roles = [rows[RoleName(str(r).upper())] for r in roles]
    check_doctor_link(user, doctor.id if doctor is not None else None)
    user.doctor_id = doctor.id if doctor is not None else None
    user.set_password(password)
    db.session.add(user)
    db.session.flush()
    return user


def set_password(user: User, password: str) -> None:
    """Change the password; every other session of the user ends at its next request."""
    validate_new_password(password, (user.email, user.display_name))
    user.set_password(password)
    user.failed_login_count = 0
    user.locked_until = None


def set_active(user: User, active: bool) -> None:
    """Deactivate or reactivate; a deactivated user's sessions end at their next request.

    The change is flushed at once, so that the next check in the same transaction (a bulk
    action deactivating several admins) counts this user as gone.
    """
    check_admin_remains(user, will_be_active=active, will_be_admin=user.has_role(RoleName.ADMIN))
    user.active = active
    if not active:
        user.rotate_session_token()
    db.session.flush()


def set_roles(user: User, roles: Iterable[Role]) -> None:
    roles = list(roles)
    will_be_admin = any(RoleName(r.name) == RoleName.ADMIN for r in roles)
    check_admin_remains(user, will_be_active=bool(user.active), will_be_admin=will_be_admin)
    user.roles = roles
    db.session.flush()  # as in set_active: later checks in this transaction see the change
