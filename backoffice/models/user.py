"""Back-office users and their roles."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import TYPE_CHECKING

from flask_login import UserMixin
from sqlalchemy import Boolean, Column, ForeignKey, String, Table
from sqlalchemy.orm import Mapped, mapped_column, relationship, validates

from backoffice.extensions import db
from backoffice.i18n import _l
from backoffice.models.base import LabeledEnum, TimestampMixin, UTCDateTime, enum_column
from backoffice.validation import normalize_email

if TYPE_CHECKING:
    from backoffice.models.doctor import Doctor


class RoleName(LabeledEnum):
    ADMIN = "ADMIN"
    MANAGER = "MANAGER"
    OPERATOR = "OPERATOR"
    SUPPORT = "SUPPORT"
    DOCTOR = "DOCTOR"

    @classmethod
    def labels(cls) -> dict:
        return {
            cls.ADMIN: _l("Administrator"),
            cls.MANAGER: _l("Manager"),
            cls.OPERATOR: _l("Operator"),
            cls.SUPPORT: _l("Support"),
            cls.DOCTOR: _l("Doctor"),
        }


user_roles = Table(
    "user_role",
    db.Model.metadata,
    Column("user_id", ForeignKey("user_account.id", ondelete="CASCADE"), primary_key=True),
    Column("role_id", ForeignKey("role.id", ondelete="CASCADE"), primary_key=True),
)


class Role(db.Model):
    """One of the roles; rows are created by the migrations (0001, and 0013 for DOCTOR)."""

    __tablename__ = "role"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[RoleName] = mapped_column(enum_column(RoleName), unique=True, nullable=False)

    def __str__(self) -> str:
        return self.name.label if isinstance(self.name, RoleName) else str(self.name)

    def __repr__(self) -> str:
        return f"<Role {self.name}>"


def new_session_token() -> str:
    return secrets.token_urlsafe(32)


class User(UserMixin, TimestampMixin, db.Model):
    """A person who logs in to the back office."""

    __tablename__ = "user_account"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True, nullable=False)
    display_name: Mapped[str] = mapped_column(String(120), nullable=False)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Rotated on logout, password change and deactivation: every session that carries an older
    # token is refused at its next request, without any server-side session store.
    session_token: Mapped[str] = mapped_column(
        String(64), nullable=False, default=new_session_token
    )

    # Login throttling lives in the database so that it holds across server processes.
    failed_login_count: Mapped[int] = mapped_column(nullable=False, default=0)
    failed_login_window_start: Mapped[datetime | None] = mapped_column(UTCDateTime())
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    locale: Mapped[str | None] = mapped_column(String(8))
    # The Doctor record a user of the doctor role is (one login per doctor): what they may
    # see follows from it (backoffice/auth/scope.py).
    doctor_id: Mapped[int | None] = mapped_column(
        ForeignKey("doctor.id", ondelete="RESTRICT"), unique=True
    )

    roles: Mapped[list[Role]] = relationship(secondary=user_roles, lazy="selectin")
    doctor: Mapped[Doctor | None] = relationship()

    @validates("email")
    def _validate_email(self, key: str, value: str | None) -> str | None:
        return normalize_email(value)

    # Flask-Login
    @property
    def is_active(self) -> bool:  # type: ignore[override]
        return bool(self.active)

    def get_id(self) -> str:
        return f"{self.id}:{self.session_token}"

    @property
    def role_names(self) -> frozenset[RoleName]:
        return frozenset(RoleName(r.name) for r in self.roles)

    def has_role(self, *names: RoleName | str) -> bool:
        mine = self.role_names
        return any(RoleName(n) in mine for n in names)

    def set_password(self, password: str) -> None:
        from backoffice.auth.passwords import hash_password

        self.password_hash = hash_password(password)
        self.session_token = new_session_token()

    def check_password(self, password: str) -> bool:
        from backoffice.auth.passwords import verify_password

        return verify_password(self.password_hash, password)

    def rotate_session_token(self) -> None:
        self.session_token = new_session_token()

    def __str__(self) -> str:
        return f"{self.display_name} <{self.email}>"

    def __repr__(self) -> str:
        return f"<User {self.id}>"
