"""What each kind of import file holds: its columns, how a cell becomes a stored value, its keys."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from backoffice.i18n import _, _l
from backoffice.models import (
    AdministrativeSex,
    Clinic,
    Doctor,
    Patient,
    PhoneKind,
    Specialty,
    Study,
    StudyStatus,
    StudyType,
    Urgency,
)
from backoffice.validation import (
    RuleError,
    blank_to_none,
    check_birth_date,
    check_practising_since,
    normalize_body_part,
    normalize_country,
    normalize_email,
    normalize_language,
    normalize_language_list,
    normalize_name,
    normalize_phone,
    parse_code,
    parse_iso_date,
)

Parser = Callable[[str], Any]


def _length(model: type, column: str) -> int | None:
    return getattr(model.__table__.c[column].type, "length", None)


def text_of(model: type, column: str, normalise: Callable[[Any], Any] = blank_to_none) -> Parser:
    """A text cell, normalised as the model normalises it, within the column's length."""
    limit = _length(model, column)

    def parse(raw: str) -> Any:
        value = normalise(raw)
        if limit is not None and value is not None and len(value) > limit:
            raise RuleError(
                _(
                    "is too long: %(n)d characters, at most %(limit)d.",
                    n=len(value),
                    limit=limit,
                )
            )
        return value

    return parse


def code_of(enum_cls: type) -> Parser:
    def parse(raw: str) -> str | None:
        if not raw.strip():
            return None
        return parse_code(enum_cls, raw).value

    return parse


def birth_date(raw: str) -> str | None:
    # The rules accept YYYY-MM-DD only, so the accepted text is already the stored form.
    return None if check_birth_date(parse_iso_date(raw)) is None else raw.strip()


def any_date(raw: str) -> str | None:
    return None if parse_iso_date(raw) is None else raw.strip()


def email_of(model: type, column: str) -> Parser:
    return text_of(model, column, normalize_email)


def phone(raw: str) -> str | None:
    return normalize_phone(raw)


_TRUE = {"1", "y", "yes", "true", "t", "si", "sí", "x", "active", "activo"}
_FALSE = {"0", "n", "no", "false", "f", "inactive", "inactivo"}


def yes_no(raw: str) -> bool | None:
    key = raw.strip().lower()
    if not key:
        return None
    if key in _TRUE:
        return True
    if key in _FALSE:
        return False
    raise RuleError(_("'%(value)s' is not yes or no (use yes/no, true/false or 1/0).", value=raw))


def phone_list(raw: str) -> list[tuple[str, str]]:
    """``"mobile:55 1234 5678; 55 5208 1001"`` -> ``[("MOBILE", "+5255..."), ("MOBILE", ...)]``.

    Each number may carry its kind before a colon; numbers repeated in the cell count once.
    """
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    if not raw.strip():
        return None  # type: ignore[return-value]
    for part in raw.split(";"):
        part = part.strip()
        if not part:
            continue
        kind = PhoneKind.MOBILE.value
        number = part
        if ":" in part:
            head, number = part.split(":", 1)
            try:
                kind = parse_code(PhoneKind, head).value
            except RuleError as exc:
                raise RuleError(
                    _("'%(part)s': the kind %(error)s", part=part, error=str(exc))
                ) from None
        normalised = normalize_phone(number)
        if normalised and normalised not in seen:
            seen.add(normalised)
            out.append((kind, normalised))
    return out


def code_list_of(enum_cls: type) -> Parser:
    """Several codes separated by ";" or ",": stored sorted, joined by ";" (``RADIOLOGY;OTHER``
    -> ``OTHER;RADIOLOGY``), each checked as a single code is."""

    def parse(raw: str) -> str | None:
        codes = {
            parse_code(enum_cls, part).value for part in re.split(r"[;,]", raw) if part.strip()
        }
        return ";".join(sorted(codes)) or None

    return parse


def postal_code(raw: str) -> str | None:
    value = normalize_name(raw)
    return value.upper() if isinstance(value, str) else value


def year(raw: str) -> int | None:
    return check_practising_since(raw)


@dataclass(frozen=True)
class Column:
    """One column of an import file."""

    name: str
    parse: Parser
    help: Any
    example: str = ""
    required: bool = False  # the column must be in the header
    needed: bool = False  # its cells must not be empty
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Kind:
    """An import kind: columns (in stage order), the model, and how rows are keyed."""

    name: str
    label: Any
    model: type
    entity: str
    columns: tuple[Column, ...]
    # At least one of these columns must be present (patients: id or email).
    one_of: tuple[str, ...] = ()
    notes: tuple[Any, ...] = field(default=())

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


CLINICS = Kind(
    "clinics",
    _l("Clinics"),
    Clinic,
    "clinic",
    (
        Column(
            "name",
            text_of(Clinic, "name", normalize_name),
            _l("Clinic name; a clinic with this name is updated, otherwise one is created."),
            "Clínica Roma Norte",
            required=True,
            needed=True,
            aliases=("clinic", "clinic_name"),
        ),
        Column("address", text_of(Clinic, "address"), _l("Street address."), "Av. Álvaro 121"),
        Column("city", text_of(Clinic, "city"), _l("City."), "Ciudad de México"),
        Column(
            "phone",
            phone,
            _l("Main phone, with or without country code."),
            "+52 55 5208 1000",
        ),
    ),
)

DOCTORS = Kind(
    "doctors",
    _l("Doctors"),
    Doctor,
    "doctor",
    (
        Column(
            "email",
            email_of(Doctor, "email"),
            _l("Email; a doctor with this email is updated, otherwise one is created."),
            "ana.martinez@clinica.example.com",
            required=True,
            needed=True,
        ),
        Column(
            "first_name",
            text_of(Doctor, "first_name"),
            _l("First name(s)."),
            "Ana",
            required=True,
            needed=True,
        ),
        Column(
            "last_name",
            text_of(Doctor, "last_name"),
            _l("Last name(s)."),
            "Martínez",
            required=True,
            needed=True,
        ),
        Column(
            "specialty",
            code_list_of(Specialty),
            _l(
                "One or more of: %(codes)s, separated by ';'. They replace the doctor's "
                "specialties; a new doctor without any gets GENERAL_PRACTICE.",
                codes=", ".join(Specialty.codes()),
            ),
            "RADIOLOGY",
            aliases=("specialties",),
        ),
        Column(
            "licence_number",
            text_of(Doctor, "licence_number"),
            _l("Professional licence number (unique)."),
            "CED-100201",
            aliases=("license_number", "licence", "license"),
        ),
        Column(
            "clinic",
            text_of(Clinic, "name", normalize_name),
            _l("Name of the clinic the doctor works at; the clinic must exist."),
            "Clínica Roma Norte",
            required=True,
            needed=True,
            aliases=("clinic_name",),
        ),
        Column(
            "active",
            yes_no,
            _l("yes or no (yes when empty)."),
            "yes",
        ),
        Column(
            "phones",
            phone_list,
            _l(
                "Phone numbers separated by ';', each optionally preceded by its kind "
                "(%(kinds)s) and a colon; they are added to the doctor's numbers.",
                kinds=", ".join(PhoneKind.codes()),
            ),
            "MOBILE:55 1234 5678;OFFICE:(55) 5208-1001",
            aliases=("phone",),
        ),
        Column(
            "qualification",
            text_of(Doctor, "qualification"),
            _l("Degree and certification (optional)."),
            "MD, board-certified radiologist",
        ),
        Column(
            "practising_since",
            year,
            _l("The year the doctor started practising (optional)."),
            "2008",
        ),
        Column(
            "languages",
            normalize_language_list,
            _l("Languages spoken: codes or names separated by ';' (optional)."),
            "es;en",
            aliases=("languages_spoken",),
        ),
        Column("bio_en", text_of(Doctor, "bio_en"), _l("Biography in English (optional)."), ""),
        Column("bio_es", text_of(Doctor, "bio_es"), _l("Biography in Spanish (optional)."), ""),
        Column("bio_fr", text_of(Doctor, "bio_fr"), _l("Biography in French (optional)."), ""),
    ),
)

PATIENTS = Kind(
    "patients",
    _l("Patients"),
    Patient,
    "patient",
    (
        Column(
            "id",
            text_of(Patient, "mrn"),
            _l(
                "The patient's record number in the system the file comes from (MRN); a "
                "patient with this number is updated, otherwise one is created. Empty: the "
                "patient is found by email, or created with the next number of the sequence."
            ),
            "1",
            aliases=("mrn", "record_number"),
        ),
        Column(
            "first_name",
            text_of(Patient, "first_name"),
            _l("First name(s)."),
            "Jose",
            required=True,
            needed=True,
        ),
        Column(
            "last_name",
            text_of(Patient, "last_name"),
            _l("Last name(s)."),
            "Villalobos",
            required=True,
            needed=True,
        ),
        Column(
            "birth_date",
            birth_date,
            _l("Birth date as YYYY-MM-DD, not before 1900 and not in the future."),
            "1955-04-10",
            required=True,
            needed=True,
        ),
        Column(
            "email",
            email_of(Patient, "email"),
            _l("Email (unique); used to find the patient when the id column is empty."),
            "pepe@ejemplo.com",
        ),
        Column(
            "clinic",
            text_of(Clinic, "name", normalize_name),
            _l("Name of the patient's clinic (optional); the clinic must exist."),
            "Clínica Roma Norte",
            aliases=("clinic_name",),
        ),
        Column(
            "referring_doctor",
            email_of(Doctor, "email"),
            _l(
                "Email of the referring doctor (optional); the doctor must exist. They become "
                "the active referring doctor of the patient's care team."
            ),
            "ana.martinez@clinica.example.com",
            aliases=("referring_doctor_email", "doctor_email"),
        ),
        Column(
            "sex",
            code_of(AdministrativeSex),
            _l(
                "Administrative sex, one of: %(codes)s (UNKNOWN when empty).",
                codes=", ".join(AdministrativeSex.codes()),
            ),
            "MALE",
            aliases=("gender", "administrative_sex"),
        ),
        Column(
            "phones",
            phone_list,
            _l(
                "Phone numbers separated by ';', each optionally preceded by its kind "
                "(%(kinds)s) and a colon; they are added to the patient's numbers.",
                kinds=", ".join(PhoneKind.codes()),
            ),
            "MOBILE:55 1234 5678",
            aliases=("phone",),
        ),
        Column(
            "street", text_of(Patient, "street"), _l("Street and number."), "Calle 5 de Mayo 12"
        ),
        Column("city", text_of(Patient, "city", normalize_name), _l("City."), "Puebla"),
        Column("state", text_of(Patient, "state", normalize_name), _l("State."), "Puebla"),
        Column(
            "postal_code",
            text_of(Patient, "postal_code", postal_code),
            _l("Postal code."),
            "72000",
            aliases=("zip", "zip_code"),
        ),
        Column(
            "country",
            normalize_country,
            _l("Country: its two-letter code (MX) or its name."),
            "MX",
        ),
        Column(
            "preferred_language",
            normalize_language,
            _l("Preferred language: its code (es) or its name."),
            "es",
            aliases=("language",),
        ),
        Column(
            "emergency_contact_name",
            text_of(Patient, "emergency_contact_name", normalize_name),
            _l("Emergency contact: name."),
            "María Villalobos",
        ),
        Column(
            "emergency_contact_relation",
            text_of(Patient, "emergency_contact_relation"),
            _l("Emergency contact: relation to the patient."),
            "daughter",
        ),
        Column(
            "emergency_contact_phone",
            phone,
            _l("Emergency contact: phone, with or without country code."),
            "55 8765 4321",
        ),
        Column("allergies", text_of(Patient, "allergies"), _l("Allergies, in words."), ""),
        Column(
            "contrast_allergy",
            yes_no,
            _l("Allergic to contrast agents: yes or no (no when empty for a new patient)."),
            "no",
        ),
        Column(
            "active",
            yes_no,
            _l("yes or no (yes when empty); inactive patients are hidden from lists."),
            "yes",
        ),
    ),
    one_of=("id", "email"),
)

STUDIES = Kind(
    "studies",
    _l("Studies"),
    Study,
    "study",
    (
        Column(
            "patient_id",
            text_of(Patient, "mrn"),
            _l("The patient's record number (the id column of the patients file)."),
            "1",
            required=True,
            needed=True,
            aliases=("mrn", "patient_mrn"),
        ),
        Column(
            "urgency_level",
            code_of(Urgency),
            _l("One of: %(codes)s.", codes=", ".join(Urgency.codes())),
            "HIGH",
            required=True,
            needed=True,
            aliases=("urgency",),
        ),
        Column(
            "type",
            code_of(StudyType),
            _l("One of: %(codes)s.", codes=", ".join(StudyType.codes())),
            "XRAY",
            required=True,
            needed=True,
            aliases=("study_type",),
        ),
        Column(
            "body_part",
            text_of(Study, "body_part", normalize_body_part),
            _l("Body part code: letters, digits and underscores (spaces become underscores)."),
            "STOMACH",
            required=True,
            needed=True,
        ),
        Column("description", text_of(Study, "description"), _l("Findings."), "NO FINDINGS"),
        Column(
            "study_date",
            any_date,
            _l("Date of the study as YYYY-MM-DD (today when empty for a new study)."),
            "2026-01-15",
            aliases=("date",),
        ),
        Column(
            "accession_number",
            text_of(Study, "accession_number"),
            _l(
                "Accession number (optional, unique): a study with this number is updated. "
                "Without it, a row identical to a study the patient already has is left as it is."
            ),
            "ACC-000123",
            aliases=("accession",),
        ),
        Column(
            "ordering_doctor",
            email_of(Doctor, "email"),
            _l("Email of the ordering doctor (optional); the doctor must exist."),
            "ana.martinez@clinica.example.com",
            aliases=("ordering_doctor_email",),
        ),
        Column(
            "status",
            code_of(StudyStatus),
            _l(
                "Where the study is (optional): one of %(codes)s; PERFORMED when empty. A new "
                "study cannot be CANCELLED or REPORTED (a reason, a signed report); an existing "
                "one moves only by check-in, start, completion or no-show, other moves are made "
                "on its page.",
                codes=", ".join(StudyStatus.codes()),
            ),
            "PERFORMED",
        ),
    ),
)

KINDS: dict[str, Kind] = {k.name: k for k in (CLINICS, DOCTORS, PATIENTS, STUDIES)}


COMMENT_PREFIX = "# "


def template_rows(kind: Kind) -> list[list[str]]:
    """The downloadable template: the header, a comment line per column, one example row.

    Rows whose first cell starts with ``"# "`` are comments: the importer skips them.
    """
    rows = [[c.name for c in kind.columns]]
    for c in kind.columns:
        need = _("required") if c.needed else _("optional")
        rows.append([f"{COMMENT_PREFIX}{c.name}: {need}. {c.help}"])
    rows.append([c.example for c in kind.columns])
    return rows
