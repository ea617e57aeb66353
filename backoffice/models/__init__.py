"""Every model, re-exported so ``from backoffice.models import Patient`` works everywhere."""

from backoffice.models.audit import AuditEntry, AuditHead, ImportBatch
from backoffice.models.base import LabeledEnum, utcnow
from backoffice.models.clinic import Clinic
from backoffice.models.doctor import Doctor, DoctorPhone, PhoneKind, Specialty
from backoffice.models.integrity import DeletionRefused, register_integrity_guards
from backoffice.models.patient import Patient
from backoffice.models.study import Study, StudyType, Urgency
from backoffice.models.user import Role, RoleName, User

__all__ = [
    "AuditEntry",
    "AuditHead",
    "ImportBatch",
    "Clinic",
    "DeletionRefused",
    "Doctor",
    "DoctorPhone",
    "LabeledEnum",
    "Patient",
    "PhoneKind",
    "Role",
    "RoleName",
    "Specialty",
    "Study",
    "StudyType",
    "Urgency",
    "User",
    "register_integrity_guards",
    "utcnow",
]
