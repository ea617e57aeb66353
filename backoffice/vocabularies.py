"""Countries and languages: stored as ISO codes, shown by name in the reader's language.

Names come from the Unicode CLDR data that Babel ships (already translated into every UI
language); the few languages of Mexico that CLDR does not name yet have names of our own,
translated in our catalogs.
"""

from __future__ import annotations

import functools
import unicodedata

from babel import Locale
from flask_babel import get_locale

from backoffice.i18n import _l

# Territory codes CLDR lists that are not countries a person lives in.
_NOT_COUNTRIES = {"EU", "EZ", "UN", "QO", "XA", "XB", "ZZ"}

# Languages spoken in Mexico that CLDR has no name for (ISO 639-3 codes).
EXTRA_LANGUAGES = {
    "nah": _l("Nahuatl"),
    "yua": _l("Yucatec Maya"),
    "mix": _l("Mixtec"),
    "tzo": _l("Tzotzil"),
    "tzh": _l("Tzeltal"),
    "oto": _l("Otomi"),
    "maz": _l("Mazahua"),
    "mfs": _l("Mexican Sign Language"),
}


@functools.cache
def _cldr(language: str) -> Locale:
    return Locale.parse(language)


def _reader() -> Locale:
    locale = get_locale()
    return locale if locale is not None else _cldr("en")


@functools.cache
def country_codes() -> tuple[str, ...]:
    """Two-letter ISO 3166 codes of the countries CLDR names."""
    return tuple(
        sorted(
            code
            for code in _cldr("en").territories
            if len(code) == 2 and code.isalpha() and code not in _NOT_COUNTRIES
        )
    )


@functools.cache
def language_codes() -> tuple[str, ...]:
    """ISO 639-1 codes (two letters) CLDR names, then the languages of Mexico it lacks."""
    names = _cldr("en").languages
    two_letter = sorted(code for code in names if len(code) == 2 and code.isalpha())
    return tuple(two_letter + [c for c in EXTRA_LANGUAGES if c not in names])


def country_name(code: str | None, locale: Locale | None = None) -> str:
    """``MX`` -> "México" for a Spanish reader; an unknown code is shown as it is."""
    if not code:
        return ""
    locale = locale or _reader()
    return locale.territories.get(code) or _cldr("en").territories.get(code) or code


def language_name(code: str | None, locale: Locale | None = None) -> str:
    """``fr`` -> "francés" for a Spanish reader, capitalised as a label."""
    if not code:
        return ""
    if code in EXTRA_LANGUAGES:
        return str(EXTRA_LANGUAGES[code])
    locale = locale or _reader()
    name = locale.languages.get(code) or _cldr("en").languages.get(code) or code
    return name[:1].upper() + name[1:]


def country_choices() -> list[tuple[str, str]]:
    """(code, name) pairs in the reader's language, sorted by name as the reader reads it."""
    locale = _reader()
    return sorted(((c, country_name(c, locale)) for c in country_codes()), key=_by_name)


def language_choices() -> list[tuple[str, str]]:
    locale = _reader()
    return sorted(((c, language_name(c, locale)) for c in language_codes()), key=_by_name)


def _by_name(pair: tuple[str, str]) -> str:
    return fold(pair[1])


def fold(text: str) -> str:
    """Lower case without accents ("México" -> "mexico"), for matching names people type."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold().strip()


@functools.cache
def _names_to_codes(kind: str) -> dict[str, str]:
    """Every name in English, Spanish and French (folded) -> its code."""
    out: dict[str, str] = {}
    for language in ("fr", "es", "en"):  # English last: it wins where names collide
        locale = _cldr(language)
        if kind == "country":
            for code in country_codes():
                if code in locale.territories:
                    out[fold(locale.territories[code])] = code
        else:
            for code in language_codes():
                if code in locale.languages:
                    out[fold(locale.languages[code])] = code
    return out


def lookup_code(kind: str, raw: str) -> str | None:
    """A code from a code or a name in one of the UI languages ("mx", "Mexico", "México")."""
    text = raw.strip()
    if not text:
        return None
    codes = country_codes() if kind == "country" else language_codes()
    key = text.upper() if kind == "country" else text.lower()
    if key in codes:
        return key
    folded = fold(text)
    found = _names_to_codes(kind).get(folded)
    if found:
        return found
    if kind == "language":
        for code, label in EXTRA_LANGUAGES.items():
            if fold(str(label)) == folded:
                return code
    return None
