"""Builds the Flask-Admin site: one ``Admin`` and its views per app (FLASK_ADMIN_NOTES trap 6)."""

from __future__ import annotations

from pathlib import Path

from flask import Flask, message_flashed
from flask_admin import Admin
from flask_admin.theme import Bootstrap4Theme

from backoffice.admin_views.audit import AuditLogView
from backoffice.admin_views.bulk_upload import BulkUploadView
from backoffice.admin_views.care_team import CareTeamView
from backoffice.admin_views.clinic import ClinicView
from backoffice.admin_views.dashboard import DashboardView
from backoffice.admin_views.doctor import DoctorView
from backoffice.admin_views.import_batch import ImportBatchView
from backoffice.admin_views.listing import PatientStudiesView
from backoffice.admin_views.patient import PatientView
from backoffice.admin_views.record_flow import reword_admin_message
from backoffice.admin_views.study import StudyView
from backoffice.admin_views.user import UserView
from backoffice.extensions import db
from backoffice.i18n import _l
from backoffice.models import (
    AuditEntry,
    CareTeamMember,
    Clinic,
    Doctor,
    ImportBatch,
    Patient,
    Study,
    User,
)
from backoffice.security import csp_nonce


def init_admin(app: Flask) -> Admin:
    from backoffice.admin_views.formatters import status_badge

    app.jinja_env.globals["status_badge"] = status_badge
    # Flask-Admin's "Record was successfully saved." becomes "Saved <the record>." (record_flow).
    message_flashed.connect(reword_admin_message, app)
    admin = Admin(
        app,
        name=app.config["BACKOFFICE_NAME"],
        theme=Bootstrap4Theme(swatch="cerulean", fluid=True),
        index_view=DashboardView(name=_l("Dashboard"), url="/admin", endpoint="admin"),
        csp_nonce_generator=csp_nonce,
        # Our "admin" catalogs fill in what Flask-Admin's compiled ones lack (see their header).
        translations_path=str(Path(__file__).resolve().parent.parent / "translations"),
    )
    records = _l("Records")
    admin.add_view(ClinicView(Clinic, db, name=_l("Clinics"), category=records, endpoint="clinic"))
    admin.add_view(DoctorView(Doctor, db, name=_l("Doctors"), category=records, endpoint="doctor"))
    admin.add_view(
        PatientView(Patient, db, name=_l("Patients"), category=records, endpoint="patient")
    )
    admin.add_view(StudyView(Study, db, name=_l("Studies"), category=records, endpoint="study"))
    admin.add_view(
        CareTeamView(
            CareTeamMember,
            db,
            name=_l("Care teams"),
            category=records,
            endpoint="care_team",
            url="/admin/care-team",
        )
    )
    admin.add_view(
        PatientStudiesView(
            name=_l("Patients & studies"), endpoint="patient_studies", url="/admin/patient-studies"
        )
    )
    admin.add_view(
        BulkUploadView(name=_l("Bulk upload"), endpoint="bulk_upload", url="/admin/bulk-upload")
    )
    admin.add_view(
        UserView(User, db, name=_l("Users"), category=_l("Administration"), endpoint="user")
    )
    admin.add_view(
        AuditLogView(
            AuditEntry,
            db,
            name=_l("Audit log"),
            category=_l("Administration"),
            endpoint="audit",
            url="/admin/audit",
        )
    )
    admin.add_view(
        ImportBatchView(
            ImportBatch,
            db,
            name=_l("Import batches"),
            category=_l("Administration"),
            endpoint="import_batch",
            url="/admin/import_batch",
        )
    )
    return admin
