"""Validation rules, one place each, shared by model attributes, admin forms, imports and commands.

Every rule is a plain function that returns the normalised value or raises ``RuleError`` (a
``ValueError``) with
a message a person understands. WTForms runs filters before validators and turns a filter's
``ValueError`` into a field error, so the same function serves as a form filter.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from datetime import date, timedelta
from typing import TypeVar

import email_validator
import phonenumbers
from email_validator import EmailNotValidError, validate_email
from flask import current_app, has_app_context

from backoffice.i18n import _

MIN_BIRTH_DATE = date(1900, 1, 1)
MIN_STUDY_DATE = date(1900, 1, 1)
MAX_STUDY_DAYS_AHEAD = 366
DEFAULT_PHONE_REGION = "MX"
_CODE_RE = re.compile(r"^[A-Z0-9_]+$")
_ISO_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_SPACES_RE = re.compile(r"\s+")
_LETTERS_RE = re.compile(r"[A-Za-z]")
_WHOLE_NUMBER_RE = re.compile(r"[0-9]{1,19}")
INT32_MAX = 2**31 - 1

# The common shape of an address (ASCII dot-atom @ ASCII host name): email_validator accepts it
# unchanged but for the domain's case, so the bulk import (a million addresses) need not run
# the full validator on each. Anything else, or any doubt, goes through email_validator.
_ATEXT = r"[a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~]+"
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9\-]{0,61}[a-zA-Z0-9])?"  # at most 63 characters
_PLAIN_EMAIL_RE = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@{_LABEL}(?:\.{_LABEL})+")

E = TypeVar("E")


class RuleError(ValueError):
    """A rule was broken; the message is written for the person who entered the value."""


def blank_to_none(value: object) -> object:
    """Trim strings; an empty string becomes None so 'unique when present' holds."""
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value


def normalize_name(value: object) -> object:
    """Trim and collapse inner runs of spaces (``"  Clínica   Roma "`` -> ``"Clínica Roma"``)."""
    value = blank_to_none(value)
    return " ".join(value.split()) if isinstance(value, str) else value


# Letters that Unicode does not decompose into a base letter and an accent.
_FOLDED_LETTERS = str.maketrans(
    {"æ": "ae", "œ": "oe", "ø": "o", "đ": "d", "ð": "d", "ł": "l", "þ": "th", "ı": "i"}
)


def clinic_name_key(name: str | None) -> str | None:
    """A clinic name folded to its key: without accents, in lower case, spaces collapsed
    (``"Clínica  ROMA"`` -> ``"clinica roma"``). Two clinics cannot have names with one key.

    This is SQLite's ``bo_name_key`` (PostgreSQL's is SQL over ``unaccent``, see migration
    0012); the forms and the importer ask the database, so each database has one rule.
    """
    if name is None:
        return None
    decomposed = unicodedata.normalize("NFKD", name)
    text = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(text.casefold().translate(_FOLDED_LETTERS).split())


def phone_region() -> str:
    if has_app_context():
        return current_app.config.get("PHONE_DEFAULT_REGION", DEFAULT_PHONE_REGION)
    return DEFAULT_PHONE_REGION


def normalize_phone(raw: str | None, region: str | None = None) -> str | None:
    """Return the number in E.164 (``+525512345678``); numbers without a country code use
    the configured default region."""
    value = blank_to_none(raw)
    if value is None:
        return None
    value = str(value)
    if _LETTERS_RE.search(value.replace("ext", "")):
        raise RuleError(_("'%(value)s' is not a phone number: it contains letters.", value=value))
    try:
        parsed = phonenumbers.parse(value, region or phone_region())
    except phonenumbers.NumberParseException:
        raise RuleError(
            _("'%(value)s' is not a phone number: it could not be read as one.", value=value)
        ) from None
    if not phonenumbers.is_possible_number(parsed):
        raise RuleError(
            _(
                "'%(value)s' is not a phone number: it has the wrong number of digits.",
                value=value,
            )
        )
    if not phonenumbers.is_valid_number(parsed):
        raise RuleError(_("'%(value)s' is not a valid phone number for its country.", value=value))
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def normalize_email(raw: str | None) -> str | None:
    """Lower-case and check an email address (syntax only; no DNS lookup)."""
    value = blank_to_none(raw)
    if value is None:
        return None
    if isinstance(value, str) and _is_plain_email(value):
        return value.lower()
    try:
        result = validate_email(str(value), check_deliverability=False)
    except EmailNotValidError:
        raise RuleError(_("'%(value)s' is not a valid email address.", value=value)) from None
    return result.normalized.lower()


def _is_plain_email(value: str) -> bool:
    """True when email_validator would accept ``value`` and normalise it to ``value.lower()``
    (mirrors its rules for ASCII addresses: lengths, labels, TLD, reserved names)."""
    if len(value) > 254 or not _PLAIN_EMAIL_RE.fullmatch(value):
        return False
    domain = value[value.index("@") + 1 :].lower()
    # "xn--" (Punycode) and other "ab--" labels get email_validator's own checks.
    if "--" in domain or len(domain) > 253 or not domain[-1].isalpha():
        return False
    # Read the reserved names each time: callers may change email_validator's list.
    return not ("." + domain).endswith(_dotted(tuple(email_validator.SPECIAL_USE_DOMAIN_NAMES)))


@functools.lru_cache(maxsize=8)
def _dotted(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple("." + name for name in names)


def check_birth_date(value: date | None) -> date | None:
    """A birth date is not in the future and not before 1900."""
    if value is None:
        return None
    if value > date.today():
        raise RuleError(_("Birth date %(value)s is in the future.", value=value.isoformat()))
    if value < MIN_BIRTH_DATE:
        raise RuleError(_("Birth date %(value)s is before 1900.", value=value.isoformat()))
    return value


def check_study_date(value: date | None, today: date | None = None) -> date | None:
    """A study date is not before 1900 and at most a year ahead (a study may be booked ahead;
    9999-12-31 is a typing error, not a plan)."""
    if value is None:
        return None
    today = today or date.today()
    if value < MIN_STUDY_DATE:
        raise RuleError(_("Study date %(value)s is before 1900.", value=value.isoformat()))
    latest = today + timedelta(days=MAX_STUDY_DAYS_AHEAD)
    if value > latest:
        raise RuleError(
            _(
                "Study date %(value)s is more than a year ahead (the latest is %(latest)s).",
                value=value.isoformat(),
                latest=latest.isoformat(),
            )
        )
    return value


def parse_iso_date(raw: str | None) -> date | None:
    """Parse ``YYYY-MM-DD`` and nothing else; other formats are refused, never guessed."""
    value = blank_to_none(raw)
    if value is None:
        return None
    if isinstance(value, date):
        return value
    text = str(value)
    if not _ISO_DATE_RE.fullmatch(text):
        raise RuleError(_("'%(value)s' is not a date; expected YYYY-MM-DD.", value=text))
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise RuleError(_("'%(value)s' is not a date; expected YYYY-MM-DD.", value=text)) from None


def normalize_body_part(raw: str | None) -> str | None:
    """Body parts are free upper-case codes (STOMACH, NECK ...): trimmed, spaces to underscores."""
    value = blank_to_none(raw)
    if value is None:
        return None
    code = _SPACES_RE.sub("_", str(value).upper())
    if not _CODE_RE.match(code):
        raise RuleError(
            _(
                "'%(value)s' is not a body part code: use letters, digits and underscores.",
                value=value,
            )
        )
    return code


def parse_code(enum_cls: type[E], raw: object) -> E:
    """Look up an enum member by its code, case-insensitively; the error lists allowed codes."""
    if isinstance(raw, enum_cls):
        return raw
    value = blank_to_none(raw)
    if value is not None:
        member = _members_by_code(enum_cls).get(str(value).upper())
        if member is not None:
            return member
    codes = [m.value for m in enum_cls]  # type: ignore[attr-defined]
    raise RuleError(
        _(
            "'%(value)s' is not one of the allowed codes: %(allowed)s.",
            value="" if value is None else value,
            allowed=", ".join(codes),
        )
    )


@functools.cache
def _members_by_code(enum_cls: type[E]) -> dict[str, E]:
    return {m.value: m for m in enum_cls}  # type: ignore[attr-defined]


# --- patient chart and doctor profile (issue 13) ----------------------------------------------

MIN_PRACTISING_YEAR = 1940


def normalize_country(raw: object) -> str | None:
    """A country as its ISO 3166 two-letter code; a code or a name in en, es or fr is accepted
    (``mx``, ``Mexico``, ``México`` -> ``MX``)."""
    from backoffice.vocabularies import lookup_code

    value = blank_to_none(raw)
    if value is None:
        return None
    code = lookup_code("country", str(value))
    if code is None:
        raise RuleError(
            _("'%(value)s' is not a country: use its two-letter code, such as MX.", value=value)
        )
    return code


def normalize_language(raw: object) -> str | None:
    """A language as its ISO 639 code; a code or a name in en, es or fr is accepted
    (``ES``, ``Spanish``, ``español`` -> ``es``)."""
    from backoffice.vocabularies import lookup_code

    value = blank_to_none(raw)
    if value is None:
        return None
    code = lookup_code("language", str(value))
    if code is None:
        raise RuleError(
            _("'%(value)s' is not a language: use its code, such as es or en.", value=value)
        )
    return code


def normalize_language_list(raw: object) -> str | None:
    """Several languages, stored as their codes in one text, sorted and separated by commas
    (``"Spanish; en"`` or ``["en", "es"]`` -> ``"en,es"``); None when there is none."""
    if raw is None:
        return None
    parts = raw if isinstance(raw, list | tuple | set) else re.split(r"[;,]", str(raw))
    codes = {normalize_language(p) for p in parts}
    codes.discard(None)
    return ",".join(sorted(codes)) or None  # type: ignore[arg-type]


def check_practising_since(value: object) -> int | None:
    """The year a doctor started practising: a whole year from 1940 to this year."""
    value = blank_to_none(value)
    if value is None:
        return None
    try:
        year = int(str(value).strip())
    except ValueError:
        raise RuleError(_("'%(value)s' is not a year.", value=value)) from None
    if not MIN_PRACTISING_YEAR <= year <= date.today().year:
        raise RuleError(
            _(
                "%(year)d is not a plausible year to start practising: use a year from "
                "%(first)d to %(last)d.",
                year=year,
                first=MIN_PRACTISING_YEAR,
                last=date.today().year,
            )
        )
    return year


def check_period(since: date | None, until: date | None) -> None:
    """A period ends on or after the day it starts."""
    if since is not None and until is not None and until < since:
        raise RuleError(
            _(
                "The end date %(until)s is before the start date %(since)s.",
                until=until.isoformat(),
                since=since.isoformat(),
            )
        )


def whole_number(raw: object, maximum: int = INT32_MAX) -> int | None:
    """``raw`` (an id, a version, a page typed into an address or a form) as a whole number from
    0 to ``maximum``, or None when it cannot be one.

    ``str.isdigit`` is not enough: it accepts ``²`` and other digits ``int()`` refuses, and any
    length, which overflows the database's integers (both were 500s).
    """
    text = str(raw).strip() if raw is not None else ""
    if not _WHOLE_NUMBER_RE.fullmatch(text):
        return None
    number = int(text)
    return number if number <= maximum else None
