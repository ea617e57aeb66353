"""Password hashing with Argon2id (argon2-cffi)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from flask import current_app, has_app_context


def _hasher() -> PasswordHasher:
    if has_app_context():
        cfg = current_app.config
        if "ARGON2_TIME_COST" in cfg:
            return PasswordHasher(
                time_cost=cfg["ARGON2_TIME_COST"], memory_cost=cfg["ARGON2_MEMORY_COST"]
            )
    return PasswordHasher()  # RFC 9106 low-memory profile, Argon2id


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    if not password_hash:
        return False
    try:
        return _hasher().verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


_DUMMY_HASH: dict[str, str] = {}


def burn_verify_time(password: str) -> None:
    """Spend the time of one real verification, so an unknown email is not faster to refuse."""
    key = "dummy"
    if key not in _DUMMY_HASH:
        _DUMMY_HASH[key] = hash_password("not-a-real-password-for-timing-only")
    verify_password(_DUMMY_HASH[key], password)
