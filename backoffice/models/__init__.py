"""Every model, re-exported so ``from backoffice.models import Patient`` works everywhere."""

from backoffice.models.audit import AuditEntry, AuditHead, ImportBatch
from backoffice.models.base import LabeledEnum, utcnow
from backoffice.models.care_team import CareTeamMember, CareTeamRole, CareTeamStatus
from backoffice.models.clinic import Clinic, clinic_holding_name
from backoffice.models.doctor import Doctor, DoctorPhone, DoctorSpecialty, PhoneKind, Specialty
from backoffice.models.integrity import DeletionRefused, register_integrity_guards
from backoffice.models.patient import AdministrativeSex, Patient, PatientPhone
from backoffice.models.record_counter import RecordCounter
from backoffice.models.report import Report, ReportAddendum
from backoffice.models.study import (
    CLINICAL_COLUMNS,
    Study,
    StudyEvent,
    StudyStatus,
    StudyType,
    Urgency,
)
from backoffice.models.study_summary import PatientStudySummary
from backoffice.models.user import Role, RoleName, User

__all__ = [
    "CLINICAL_COLUMNS",
    "AdministrativeSex",
    "AuditEntry",
    "AuditHead",
    "ImportBatch",
    "CareTeamMember",
    "CareTeamRole",
    "CareTeamStatus",
    "Clinic",
    "clinic_holding_name",
    "DeletionRefused",
    "Doctor",
    "DoctorPhone",
    "DoctorSpecialty",
    "LabeledEnum",
    "Patient",
    "PatientPhone",
    "PatientStudySummary",
    "PhoneKind",
    "RecordCounter",
    "Report",
    "ReportAddendum",
    "Role",
    "RoleName",
    "Specialty",
    "Study",
    "StudyEvent",
    "StudyStatus",
    "StudyType",
    "Urgency",
    "User",
    "register_integrity_guards",
    "utcnow",
]

# SQLite reuses the id of a deleted row unless the table is AUTOINCREMENT: the audit history of a
# deleted record and of a new one would mix, and a restore could not take its id back. Set here
# once for every audited table (migration 0005 does the same to existing SQLite databases).
for _model in (
    Clinic,
    Doctor,
    DoctorPhone,
    Patient,
    PatientPhone,
    CareTeamMember,
    Study,
    User,
    ImportBatch,
    Report,
    ReportAddendum,
):
    _model.__table__.dialect_options["sqlite"]["autoincrement"] = True
