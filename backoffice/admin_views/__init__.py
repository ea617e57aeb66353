"""Builds the Flask-Admin site: one ``Admin`` and its views per app (FLASK_ADMIN_NOTES trap 6)."""

from __future__ import annotations

from flask import Flask
from flask_admin import Admin
from flask_admin.theme import Bootstrap4Theme

from backoffice.admin_views.clinic import ClinicView
from backoffice.admin_views.dashboard import DashboardView
from backoffice.admin_views.doctor import DoctorView
from backoffice.admin_views.patient import PatientView
from backoffice.admin_views.study import StudyView
from backoffice.extensions import db
from backoffice.i18n import _l
from backoffice.security import csp_nonce


def init_admin(app: Flask) -> Admin:
    admin = Admin(
        app,
        name=app.config["BACKOFFICE_NAME"],
        theme=Bootstrap4Theme(swatch="flatly", fluid=True),
        index_view=DashboardView(name=_l("Dashboard"), url="/admin", endpoint="admin"),
        csp_nonce_generator=csp_nonce,
    )
    records = _l("Records")
    admin.add_view(
        ClinicView(_model("Clinic"), db, name=_l("Clinics"), category=records, endpoint="clinic")
    )
    admin.add_view(
        DoctorView(_model("Doctor"), db, name=_l("Doctors"), category=records, endpoint="doctor")
    )
    admin.add_view(
        PatientView(
            _model("Patient"), db, name=_l("Patients"), category=records, endpoint="patient"
        )
    )
    admin.add_view(
        StudyView(_model("Study"), db, name=_l("Studies"), category=records, endpoint="study")
    )
    return admin


def _model(name: str) -> type:
    from backoffice import models

    return getattr(models, name)
