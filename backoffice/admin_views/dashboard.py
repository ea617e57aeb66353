"""The admin home page: where things stand, at a glance."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from flask_admin import AdminIndexView, expose
from sqlalchemy import func, select

from backoffice.admin_views.base import SecuredViewMixin
from backoffice.auth.permissions import Perm
from backoffice.extensions import db
from backoffice.models import Clinic, Doctor, Patient, Study, Urgency


def key_figures(today: date | None = None) -> dict[str, int]:
    """Counts shown on the dashboard, from one aggregate query per table."""
    today = today or date.today()
    week_start = today - timedelta(days=today.weekday())
    month_start = today.replace(day=1)
    last_7 = today - timedelta(days=6)
    studies = db.session.execute(
        select(
            func.count().filter(Study.study_date >= week_start),
            func.count().filter(Study.study_date >= month_start),
            func.count().filter(Study.study_date >= last_7, Study.urgency == Urgency.HIGH),
            func.count(),
        ).where(Study.study_date <= today)
    ).one()
    return {
        "patients": db.session.scalar(select(func.count()).select_from(Patient)) or 0,
        "studies_week": studies[0],
        "studies_month": studies[1],
        "high_last_7_days": studies[2],
        "studies_total": studies[3],
        "doctors": db.session.scalar(select(func.count()).select_from(Doctor)) or 0,
        "clinics": db.session.scalar(select(func.count()).select_from(Clinic)) or 0,
    }


class DashboardView(SecuredViewMixin, AdminIndexView):
    endpoint_permissions = {"index": Perm.VIEW}
    menu_permission = Perm.VIEW

    @expose("/")
    def index(self) -> Any:
        return self.render("admin/dashboard.html", figures=key_figures(), today=date.today())
