"""Demo data: a few clinics and doctors, the reference patients and studies, and generated ones.

Idempotent: every record has a natural key (clinic name, doctor email, patient MRN, study
accession number), and a record that exists is left alone, so running it twice adds nothing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import select

from backoffice.extensions import db
from backoffice.models import (
    AdministrativeSex,
    CareTeamMember,
    CareTeamRole,
    CareTeamStatus,
    Clinic,
    Doctor,
    DoctorPhone,
    Patient,
    PatientPhone,
    PhoneKind,
    Report,
    ReportAddendum,
    Role,
    RoleName,
    Specialty,
    Study,
    StudyEvent,
    StudyStatus,
    StudyType,
    Urgency,
    User,
    utcnow,
)

DATA_DIR = Path(__file__).resolve().parent.parent / "data"

CLINICS = [
    ("Clínica Roma Norte", "Av. Álvaro Obregón 121", "Ciudad de México", "+52 55 5208 1000"),
    ("Hospital del Valle", "Av. Insurgentes Sur 3700", "Ciudad de México", "+52 55 5424 7200"),
    ("Centro Médico Guadalajara", "Av. Chapultepec 480", "Guadalajara", "+52 33 3641 2200"),
    ("Clínica Monterrey San Pedro", "Calz. del Valle 220", "Monterrey", "+52 81 8368 4400"),
]

DOCTORS = [
    # first, last, email, specialty, licence, clinic index, phones
    (
        "Ana",
        "Martínez",
        "ana.martinez@clinica.example.com",
        Specialty.RADIOLOGY,
        "CED-100201",
        0,
        [("MOBILE", "55 1234 5678"), ("OFFICE", "(55) 5208-1001")],
    ),
    (
        "Luis",
        "Hernández",
        "luis.hernandez@clinica.example.com",
        Specialty.GENERAL_PRACTICE,
        "CED-100202",
        0,
        [("MOBILE", "+52 55 8765 4321")],
    ),
    (
        "María José",
        "Núñez",
        "mj.nunez@hospital.example.com",
        Specialty.GYNECOLOGY,
        "CED-100203",
        1,
        [("OFFICE", "55 5424 7201"), ("MOBILE", "55 3322 1100"), ("FAX", "55 5424 7299")],
    ),
    (
        "Carlos",
        "Peña",
        "carlos.pena@hospital.example.com",
        Specialty.ONCOLOGY,
        "CED-100204",
        1,
        [("MOBILE", "55 4455 6677")],
    ),
    (
        "Sofía",
        "Ramírez",
        "sofia.ramirez@cmg.example.com",
        Specialty.CARDIOLOGY,
        "CED-100205",
        2,
        [("OFFICE", "33 3641 2201"), ("MOBILE", "33 1122 3344")],
    ),
    (
        "Jorge",
        "Treviño",
        "jorge.trevino@sanpedro.example.com",
        Specialty.RADIOLOGY,
        "CED-100206",
        3,
        [("MOBILE", "81 1234 9876")],
    ),
]

# Specialties beyond the first, qualification, practising since, languages, biographies.
DOCTOR_PROFILES = {
    "ana.martinez@clinica.example.com": (
        [Specialty.ONCOLOGY],
        "Médica radióloga, certificada por el Consejo Mexicano de Radiología",
        2006,
        "es,en",
        "Radiologist with twenty years in breast and oncologic imaging.",
        "Radióloga con veinte años en imagen mamaria y oncológica.",
        None,
    ),
    "luis.hernandez@clinica.example.com": (
        [Specialty.INTERNAL_MEDICINE],
        "Médico cirujano, UNAM",
        2012,
        "es",
        "Family doctor; refers patients for imaging and follows them up.",
        None,
        None,
    ),
    "mj.nunez@hospital.example.com": (
        [],
        "Ginecóloga y obstetra",
        1998,
        "es,fr",
        "Gynecologist and obstetrician.",
        "Ginecóloga y obstetra.",
        "Gynécologue et obstétricienne.",
    ),
    "sofia.ramirez@cmg.example.com": ([], "Cardióloga", 2015, "es,en", None, None, None),
}

FIRST_NAMES = [
    "José",
    "María",
    "Juan",
    "Guadalupe",
    "Francisco",
    "Fernanda",
    "Alejandro",
    "Ximena",
    "Miguel",
    "Valeria",
    "Ricardo",
    "Daniela",
    "Eduardo",
    "Camila",
    "Héctor",
    "Renata",
    "Iván",
    "Paola",
    "Óscar",
    "Lucía",
]
LAST_NAMES = [
    "García",
    "Hernández",
    "López",
    "Martínez",
    "González",
    "Pérez",
    "Rodríguez",
    "Sánchez",
    "Ramírez",
    "Cruz",
    "Flores",
    "Gómez",
    "Morales",
    "Vázquez",
    "Jiménez",
    "Reyes",
    "Díaz",
    "Torres",
    "Gutiérrez",
    "Ruiz",
    "Mendoza",
    "Aguilar",
    "Ortiz",
    "Castillo",
    "Muñoz",
]
BODY_PARTS = {
    StudyType.XRAY: ["CHEST", "HAND", "KNEE", "SPINE", "STOMACH", "NECK"],
    StudyType.MAMMOGRAM: ["BREASTS"],
    StudyType.CT: ["HEAD", "ABDOMEN", "CHEST"],
    StudyType.MRI: ["BRAIN", "KNEE", "SPINE"],
    StudyType.ULTRASOUND: ["ABDOMEN", "PELVIS", "THYROID", "NECK"],
    StudyType.PET: ["WHOLE_BODY"],
}
DESCRIPTIONS = [
    "NO FINDINGS",
    "FOLLOW-UP IN 6 MONTHS",
    "NORMAL",
    "SMALL NODULE, BENIGN",
    "COMPARE WITH PRIOR STUDY",
    "MILD INFLAMMATION",
    "FRACTURE RULED OUT",
]

ALLERGIES = [
    "Penicilina",
    "Sulfas",
    "Medio de contraste yodado",
    "Látex",
    "Ácido acetilsalicílico",
    "Mariscos",
]
# Generated patients' administrative sex, from their first name.
SEX_BY_NAME = {
    name: AdministrativeSex.FEMALE
    for name in (
        "María",
        "Guadalupe",
        "Fernanda",
        "Ximena",
        "Valeria",
        "Daniela",
        "Camila",
        "Renata",
        "Paola",
        "Lucía",
    )
} | {
    name: AdministrativeSex.MALE
    for name in (
        "José",
        "Juan",
        "Francisco",
        "Alejandro",
        "Miguel",
        "Ricardo",
        "Eduardo",
        "Héctor",
        "Iván",
        "Óscar",
    )
}

DEMO_USERS = [
    ("admin@backoffice.example.com", "Demo Admin", RoleName.ADMIN),
    ("manager@backoffice.example.com", "Demo Manager", RoleName.MANAGER),
    ("operator@backoffice.example.com", "Demo Operator", RoleName.OPERATOR),
    ("support@backoffice.example.com", "Demo Support", RoleName.SUPPORT),
    ("doctor@backoffice.example.com", "Dra. Ana Martínez", RoleName.DOCTOR),
]
# The demo doctor is Dr. Ana Martínez (a radiologist): she ordered the reference studies and
# reports about half of the generated ones.
DEMO_DOCTOR_EMAIL = "ana.martinez@clinica.example.com"
# The doctors who report studies (the radiologists of DOCTORS).
REPORTING_DOCTORS = ("ana.martinez@clinica.example.com", "jorge.trevino@sanpedro.example.com")
CANCEL_REASONS = [
    "Patient asked to move the appointment",
    "Order withdrawn by the referring doctor",
    "Duplicate order",
    "Contrast allergy found at check-in",
]
FINDINGS = {
    "NO FINDINGS": ("No abnormality is seen.", "Normal study.", None),
    "NORMAL": ("The structures examined are within normal limits.", "Normal study.", None),
    "FOLLOW-UP IN 6 MONTHS": (
        "A small indeterminate area is seen; no other abnormality.",
        "Indeterminate finding, most likely benign.",
        "Follow-up study in 6 months.",
    ),
    "SMALL NODULE, BENIGN": (
        "A 4 mm well-defined nodule with benign features.",
        "Small benign-appearing nodule.",
        "No further imaging needed unless symptoms change.",
    ),
    "COMPARE WITH PRIOR STUDY": (
        "Findings are unchanged compared with the prior study.",
        "Stable appearance.",
        None,
    ),
    "MILD INFLAMMATION": (
        "Mild soft-tissue thickening consistent with inflammation.",
        "Mild inflammatory changes.",
        "Clinical correlation.",
    ),
    "FRACTURE RULED OUT": ("No fracture or dislocation.", "No fracture.", None),
}


@dataclass
class SeedReport:
    created: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, n: int = 1) -> None:
        self.created[kind] = self.created.get(kind, 0) + n

    def total(self) -> int:
        return sum(self.created.values())


def ensure_roles() -> dict[RoleName, Role]:
    """The four roles exist (the migration creates them; this covers create_all databases)."""
    existing = {r.name: r for r in db.session.scalars(select(Role))}
    for name in RoleName:
        if name not in existing:
            existing[name] = Role(name=name)
            db.session.add(existing[name])
    db.session.flush()
    return existing


def seed_demo(
    *,
    patients: int = 150,
    studies: int = 400,
    demo_password: str | None = None,
    today: date | None = None,
) -> SeedReport:
    """Load the demo set; returns what was created. The caller commits."""
    report = SeedReport()
    today = today or date.today()
    rng = random.Random(2026)

    clinics = _seed_clinics(report)
    doctors = _seed_doctors(report, clinics)
    _seed_reference_data(report, doctors, clinics, today)
    _seed_generated(report, rng, doctors, clinics, patients, studies, today)
    if demo_password:
        seed_demo_users(report, demo_password)
    db.session.flush()
    return report


# --------------------------------------------------------------------------- a study's life


def _zone() -> ZoneInfo:
    from flask import current_app

    return ZoneInfo(current_app.config["BABEL_DEFAULT_TIMEZONE"])


def _local(day: date, hour: int, minute: int = 0) -> datetime:
    """A wall time of the clinics' zone on ``day``, in UTC."""
    return datetime.combine(day, time(hour, minute), tzinfo=_zone()).astimezone(UTC)


def _status_for(rng: random.Random, when: date, today: date) -> StudyStatus:
    """A status that fits a study's date: the day's work today, reports for the older ones."""
    age = (today - when).days
    s = StudyStatus
    if age <= 0:
        return rng.choices(
            [s.ORDERED, s.SCHEDULED, s.ARRIVED, s.IN_PROGRESS, s.PERFORMED], [2, 4, 3, 2, 3]
        )[0]
    if age <= 7:
        # the coming days' appointments (moved forward by _live), orders to book, recent work
        return rng.choices(
            [s.SCHEDULED, s.ORDERED, s.PERFORMED, s.REPORTED, s.NO_SHOW, s.CANCELLED],
            [4, 2, 3, 3, 1, 1],
        )[0]
    return rng.choices([s.REPORTED, s.PERFORMED, s.CANCELLED, s.NO_SHOW], [80, 6, 7, 7])[0]


def _live(
    study: Study,
    status: StudyStatus,
    rng: random.Random,
    today: date,
    reporter: Doctor | None,
    report: SeedReport,
) -> None:
    """Give a seeded study the times, events and report of the life that led to ``status``.

    Written as the data of the past, not through the workflow service (which stamps "now").
    """
    from backoffice.services.audit import current_actor
    from backoffice.services.reports import signature

    now = utcnow()
    s = StudyStatus
    if status == s.SCHEDULED and study.study_date <= today:
        study.study_date = today + timedelta(days=rng.randrange(0, 8))  # upcoming
    day = study.study_date
    appointment = _local(day, rng.randrange(8, 18), rng.choice((0, 15, 30, 45)))
    reached = {s.ARRIVED: 1, s.IN_PROGRESS: 2, s.PERFORMED: 3, s.REPORTED: 4}.get(status, 0)
    if reached and appointment > now:  # the patient came: the appointment was earlier today
        appointment = now - timedelta(minutes=rng.randrange(60 * reached, 60 * reached + 90))
    ordered = appointment - timedelta(days=rng.randrange(1, 10), hours=rng.randrange(0, 6))
    steps: list[tuple[str, StudyStatus, datetime]] = [("order", s.ORDERED, ordered)]
    study.ordered_at = ordered
    study.reporting_doctor = reporter
    if status != s.ORDERED and not (status == s.CANCELLED and rng.random() < 0.3):
        study.scheduled_for = appointment
        steps.append(("schedule", s.SCHEDULED, ordered + timedelta(hours=rng.randrange(1, 20))))
    flow = [
        (
            "check_in",
            s.ARRIVED,
            "arrived_at",
            appointment + timedelta(minutes=rng.randrange(-10, 20)),
        ),
        ("start", s.IN_PROGRESS, "started_at", None),
        ("complete", s.PERFORMED, "performed_at", None),
        ("report", s.REPORTED, "reported_at", None),
    ]
    last = flow[0][3]
    for i, (code, target, column, moment) in enumerate(flow[:reached]):
        if moment is None:
            gap = (
                timedelta(hours=rng.randrange(2, 30))
                if code == "report"
                else timedelta(minutes=rng.randrange(10, 45))
            )
            moment = last + gap
        moment = min(moment, now - timedelta(minutes=5 * (reached - i)))
        setattr(study, column, moment)
        steps.append((code, target, moment))
        last = moment
    if study.performed_at is not None:  # the day it was performed, in the clinics' zone
        study.study_date = study.performed_at.astimezone(_zone()).date()
    if status == s.CANCELLED:
        study.cancelled_at = min(ordered + timedelta(hours=rng.randrange(2, 48)), now)
        study.cancel_reason = rng.choice(CANCEL_REASONS)
        steps.append(("cancel", s.CANCELLED, study.cancelled_at))
    if status == s.NO_SHOW:
        study.no_show_at = min(appointment + timedelta(minutes=30), now)
        steps.append(("no_show", s.NO_SHOW, study.no_show_at))
    study.status = status
    actor = current_actor().label
    previous = None
    for code, target, moment in steps:
        study.events.append(
            StudyEvent(
                transition=code,
                from_status=previous,
                to_status=target,
                at=moment,
                actor_label=actor,
                reason=study.cancel_reason if code == "cancel" else None,
                scheduled_for=study.scheduled_for if code == "schedule" else None,
            )
        )
        previous = target
    if reporter is None or status not in (s.PERFORMED, s.REPORTED):
        return
    findings, impression, recommendation = FINDINGS.get(
        study.description or "", ("No abnormality is seen.", "Normal study.", None)
    )
    if status == s.PERFORMED and rng.random() < 0.5:
        # a draft in progress
        db.session.add(Report(study=study, number=1, findings=findings, author_id=reporter.id))
        report.add("reports")
    elif status == s.REPORTED:
        signed = Report(
            study=study,
            number=1,
            findings=findings,
            impression=impression,
            recommendation=recommendation,
            author_id=reporter.id,
            signed_at=study.reported_at,
            signed_as=signature(reporter),
        )
        db.session.add(signed)
        report.add("reports")
        if rng.random() < 0.05:
            db.session.flush()  # an addendum is added to a signed report (a trigger checks)
            db.session.add(
                ReportAddendum(
                    report=signed,
                    text="Correction: the study was compared with the prior one; no change.",
                    author_id=reporter.id,
                    signed_at=min(study.reported_at + timedelta(hours=3), now),
                    signed_as=signature(reporter),
                )
            )


def _seed_clinics(report: SeedReport) -> list[Clinic]:
    out = []
    for name, address, city, phone in CLINICS:
        clinic = db.session.scalar(select(Clinic).where(Clinic.name == name))
        if clinic is None:
            clinic = Clinic(name=name, address=address, city=city, phone=phone)
            db.session.add(clinic)
            report.add("clinics")
        out.append(clinic)
    db.session.flush()
    return out


def _seed_doctors(report: SeedReport, clinics: list[Clinic]) -> list[Doctor]:
    out = []
    for first, last, email, specialty, licence, clinic_ix, phones in DOCTORS:
        doctor = db.session.scalar(select(Doctor).where(Doctor.email == email))
        if doctor is None:
            more, qualification, since, languages, bio_en, bio_es, bio_fr = DOCTOR_PROFILES.get(
                email, ([], None, None, None, None, None, None)
            )
            doctor = Doctor(
                first_name=first,
                last_name=last,
                email=email,
                licence_number=licence,
                clinic=clinics[clinic_ix],
                qualification=qualification,
                practising_since=since,
                languages=languages,
                bio_en=bio_en,
                bio_es=bio_es,
                bio_fr=bio_fr,
            )
            doctor.specialties = [specialty, *more]
            for i, (kind, number) in enumerate(phones):
                doctor.phones.append(
                    DoctorPhone(number=number, kind=PhoneKind(kind), is_primary=(i == 0))
                )
            db.session.add(doctor)
            report.add("doctors")
            report.add("phones", len(phones))
        out.append(doctor)
    db.session.flush()
    return out


def _read_reference(name: str) -> list[dict[str, str]]:
    """The reference file read by the bulk importer's reader (one CSV reader in the project)."""
    from backoffice.services.imports import read_dicts

    return read_dicts(DATA_DIR / name)


# The reference patients' chart details (the file has only names, birth dates and emails).
REFERENCE_CHARTS = {
    "1": {
        "sex": AdministrativeSex.MALE,
        "street": "Calle Durango 214",
        "city": "Ciudad de México",
        "state": "Ciudad de México",
        "postal_code": "06700",
        "country": "MX",
        "preferred_language": "es",
        "emergency_contact_name": "María Villalobos",
        "emergency_contact_relation": "hija",
        "emergency_contact_phone": "55 3344 5566",
        "allergies": "Penicilina (urticaria). Medio de contraste yodado (reacción en 2019).",
        "contrast_allergy": True,
        "phones": [("MOBILE", "55 1987 6543"), ("HOME", "55 5264 1020")],
    },
    "2": {
        "sex": AdministrativeSex.FEMALE,
        "city": "Ciudad de México",
        "state": "Ciudad de México",
        "country": "MX",
        "preferred_language": "es",
        "phones": [("MOBILE", "55 2468 1357")],
    },
    "3": {
        "sex": AdministrativeSex.FEMALE,
        "city": "Guadalajara",
        "state": "Jalisco",
        "country": "MX",
        "preferred_language": "en",
        "allergies": "Látex",
        "phones": [("MOBILE", "33 1357 2468")],
    },
    "4": {"sex": AdministrativeSex.MALE, "city": "Monterrey", "state": "Nuevo León"},
}


def _chart_details(patient: Patient, details: dict) -> None:
    details = dict(details)
    for i, (kind, number) in enumerate(details.pop("phones", [])):
        patient.phones.append(PatientPhone(number=number, kind=kind, is_primary=(i == 0)))
    for key, value in details.items():
        setattr(patient, key, value)


def _seed_reference_data(
    report: SeedReport, doctors: list[Doctor], clinics: list[Clinic], today: date
) -> None:
    """The four example patients and four example studies, as our users send them."""
    by_mrn: dict[str, Patient] = {}
    for i, row in enumerate(_read_reference("patients.csv")):
        mrn = row["id"]
        patient = db.session.scalar(select(Patient).where(Patient.mrn == mrn))
        if patient is None:
            patient = Patient(
                mrn=mrn,
                first_name=row["first_name"],
                last_name=row["last_name"],
                birth_date=date.fromisoformat(row["birth_date"]),
                email=row["email"],
                referring_doctor=doctors[i % len(doctors)],
                clinic=clinics[i % len(clinics)],
            )
            _chart_details(patient, REFERENCE_CHARTS.get(mrn, {}))
            if mrn == "1":  # a fuller care team on the first reference chart
                patient.care_team.append(
                    CareTeamMember(
                        doctor=doctors[0],
                        role=CareTeamRole.REPORTING,
                        status=CareTeamStatus.ACTIVE,
                        since=today - timedelta(days=90),
                        reason="Lectura de estudios de seguimiento",
                    )
                )
                patient.care_team.append(
                    CareTeamMember(
                        doctor=doctors[3],
                        role=CareTeamRole.SPECIALIST,
                        status=CareTeamStatus.COMPLETED,
                        since=today - timedelta(days=400),
                        until=today - timedelta(days=120),
                        reason="Valoración oncológica",
                    )
                )
            db.session.add(patient)
            report.add("patients")
        by_mrn[mrn] = patient
    db.session.flush()
    for i, row in enumerate(_read_reference("studies.csv")):
        patient = by_mrn[row["patient_id"]]
        accession = f"REF-{i + 1:04d}"
        if db.session.scalar(select(Study.id).where(Study.accession_number == accession)):
            continue
        day = today - timedelta(days=i)
        # Performed, waiting for the demo doctor's report (she ordered them too).
        study = Study(
            patient=patient,
            urgency=row["urgency_level"],
            body_part=row["body_part"],
            description=row["description"],
            study_type=row["type"],
            study_date=day,
            ordering_doctor=doctors[0],
            reporting_doctor=doctors[0],
            accession_number=accession,
        )
        db.session.add(study)
        _live(study, StudyStatus.PERFORMED, random.Random(i), day, None, report)
        study.reporting_doctor = doctors[0]
        report.add("studies")


def _seed_generated(
    report: SeedReport,
    rng: random.Random,
    doctors: list[Doctor],
    clinics: list[Clinic],
    n_patients: int,
    n_studies: int,
    today: date,
) -> None:
    existing_mrns = set(db.session.scalars(select(Patient.mrn).where(Patient.mrn.like("DEMO-%"))))
    patients: list[Patient] = []
    for i in range(n_patients):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        birth = date(1935, 1, 1) + timedelta(days=rng.randrange(0, 365 * 85))
        mrn = f"DEMO-{i + 1:05d}"
        clinic = rng.choice(clinics)
        referring = rng.choice(doctors)
        if mrn in existing_mrns:
            patients.append(None)  # type: ignore[arg-type]
            continue
        patient = Patient(
            mrn=mrn,
            first_name=first,
            last_name=last,
            birth_date=birth,
            sex=SEX_BY_NAME.get(first, AdministrativeSex.UNKNOWN),
            email=f"paciente{i + 1:05d}@correo.example.com",
            clinic=clinic,
            city=clinic.city,
            country="MX",
            preferred_language="es",
            referring_doctor=referring,
            active=rng.random() > 0.03,
        )
        area = {"Guadalajara": "33", "Monterrey": "81"}.get(clinic.city or "", "55")
        number = f"{area} {rng.randrange(1000, 10000)} {rng.randrange(1000, 10000)}"
        patient.phones.append(PatientPhone(number=number, kind="MOBILE", is_primary=True))
        if rng.random() < 0.15:
            patient.allergies = rng.choice(ALLERGIES)
            patient.contrast_allergy = "contraste" in patient.allergies
        db.session.add(patient)
        patients.append(patient)
        report.add("patients")
    db.session.flush()
    existing_acc = set(
        db.session.scalars(
            select(Study.accession_number).where(Study.accession_number.like("DEMO-%"))
        )
    )
    ids = {
        p.mrn: p.id
        for p in db.session.execute(
            select(Patient.mrn, Patient.id).where(Patient.mrn.like("DEMO-%"))
        )
    }
    life = random.Random(2027)  # its own sequence: the studies themselves stay as they were
    reporters = [d for d in doctors if d.email in REPORTING_DOCTORS]
    for j in range(n_studies):
        mrn = f"DEMO-{rng.randrange(n_patients) + 1:05d}" if n_patients else None
        study_type = rng.choice(list(BODY_PARTS))
        body_part = rng.choice(BODY_PARTS[study_type])
        urgency = rng.choices(list(Urgency), weights=[2, 3, 5])[0]
        when = today - timedelta(days=int(rng.expovariate(1 / 30)) % 120)
        description = rng.choice(DESCRIPTIONS)
        doctor = rng.choice(doctors)
        accession = f"DEMO-S{j + 1:06d}"
        if accession in existing_acc or mrn is None:
            continue
        study = Study(
            patient_id=ids[mrn],
            urgency=urgency,
            body_part=body_part,
            description=description,
            study_type=study_type,
            study_date=when,
            ordering_doctor=doctor,
            accession_number=accession,
        )
        db.session.add(study)
        status = _status_for(life, when, today)
        unassigned = status == StudyStatus.ORDERED and life.random() < 0.5
        reporter = None if unassigned or not reporters else life.choice(reporters)
        _live(study, status, life, today, reporter, report)
        report.add("studies")


def seed_demo_users(report: SeedReport, password: str) -> list[tuple[str, str]]:
    """One demo user per role (development only); returns (email, role) pairs."""
    roles = ensure_roles()
    out = []
    for email, name, role in DEMO_USERS:
        user = db.session.scalar(select(User).where(User.email == email))
        if user is None:
            user = User(email=email, display_name=name, roles=[roles[role]])
            if role == RoleName.DOCTOR:
                user.doctor = db.session.scalar(
                    select(Doctor).where(Doctor.email == DEMO_DOCTOR_EMAIL)
                )
            user.set_password(password)
            db.session.add(user)
            report.add("users")
        out.append((email, role.value))
    return out
