"""User rules: password policy and the safeguards around admins."""

from __future__ import annotations

from backoffice.i18n import _

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 256


class UserError(ValueError):
    """A user-management rule was broken; the message says which."""


def validate_new_password(password: str, user_inputs: tuple[str, ...] = ()) -> str:
    """At least 12 characters, at most 256 (never truncated), no composition rules."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(
            _("The password must have at least %(n)d characters.", n=MIN_PASSWORD_LENGTH)
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise UserError(
            _("The password must have at most %(n)d characters.", n=MAX_PASSWORD_LENGTH)
        )
    lowered = password.lower()
    for value in user_inputs:
        if value and len(value) >= 4 and lowered == value.lower():
            raise UserError(_("The password must not be your email or name."))
    return password
