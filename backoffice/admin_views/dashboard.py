"""The admin home page: where things stand, at a glance."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from flask import url_for
from flask_admin import AdminIndexView, expose
from flask_babel import format_date, format_number
from flask_login import current_user

from backoffice.admin_views import charts
from backoffice.admin_views.base import SecuredViewMixin
from backoffice.auth.permissions import Perm, can
from backoffice.i18n import _
from backoffice.models import Urgency
from backoffice.services import dashboard as figures


def study_list_url(admin: Any, **filters: str) -> str:
    """A link to the studies list with Flask-Admin filters set (urgency, type, date, clinic)."""
    from backoffice.admin_views.study import (
        CLINIC_FILTER,
        DATE_FILTER,
        TYPE_FILTER,
        URGENCY_FILTER,
    )

    view = next(v for v in admin._views if getattr(v, "endpoint", None) == "study")
    wanted = {
        "urgency": URGENCY_FILTER,
        "type": TYPE_FILTER,
        "dates": DATE_FILTER,
        "clinic": CLINIC_FILTER,
    }
    args = {}
    for position, (key, value) in enumerate(filters.items()):
        flt = wanted[key]
        index = next(i for i, f in enumerate(view._filters) if f is flt)
        args[f"flt{position}_{view.get_filter_arg(index, flt)}"] = value
    return url_for("study.index_view", **args)


def _range(start: date, end: date) -> str:
    return f"{start.isoformat()} to {end.isoformat()}"


class DashboardView(SecuredViewMixin, AdminIndexView):
    endpoint_permissions = {"index": Perm.VIEW}
    menu_permission = Perm.VIEW

    @expose("/")
    def index(self) -> Any:
        today = date.today()
        weeks = figures.weekly_by_urgency(today)
        since = weeks[0].start
        period = _range(since, today)
        legend = [(u.label, charts.URGENCY_COLOURS[u.value]) for u in Urgency]
        weekly = charts.stacked_columns(
            [
                charts.Column(
                    label=format_date(w.start, "d MMM"),
                    tooltip=_("Week of %(day)s", day=format_date(w.start, "medium")),
                    segments=[
                        charts.Segment(
                            u.label,
                            w.counts[u],
                            charts.URGENCY_COLOURS[u.value],
                            study_list_url(
                                self.admin, urgency=u.value, dates=_range(w.start, w.end)
                            ),
                        )
                        for u in (Urgency.LOW, Urgency.MID, Urgency.HIGH)
                    ],
                )
                for w in weeks
            ],
            legend,
            _("Studies per week, by urgency"),
            "chart-weekly",
        )
        by_type = charts.horizontal_bars(
            [
                (t.label, n, study_list_url(self.admin, type=t.value, dates=period))
                for t, n in figures.by_type(since, today)
            ],
            _("Studies by type"),
            "chart-types",
        )
        by_clinic = charts.horizontal_bars(
            [
                (name, n, study_list_url(self.admin, clinic=str(cid), dates=period))
                for cid, name, n in figures.by_clinic(since, today)
            ],
            _("Studies by clinic"),
            "chart-clinics",
            colour="#18bc9c",
        )
        batches = []
        if can(Perm.UPLOAD):
            batches = figures.recent_batches(current_user.id, all_users=can(Perm.AUDIT))
        key = figures.key_figures(today)
        last_7 = _range(today - timedelta(days=6), today)
        cards = [
            (_("Patients"), key["patients"], url_for("patient.index_view"), "patients"),
            (
                _("Studies this week"),
                key["studies_week"],
                study_list_url(self.admin, dates=_range(figures.week_start(today), today)),
                "studies-week",
            ),
            (
                _("Studies this month"),
                key["studies_month"],
                study_list_url(self.admin, dates=_range(today.replace(day=1), today)),
                "studies-month",
            ),
            (
                _("HIGH urgency, last 7 days"),
                key["high_last_7_days"],
                study_list_url(self.admin, urgency="HIGH", dates=last_7),
                "high-7-days",
            ),
            (_("Doctors"), key["doctors"], url_for("doctor.index_view"), "doctors"),
            (_("Clinics"), key["clinics"], url_for("clinic.index_view"), "clinics"),
        ]
        return self.render(
            "admin/dashboard.html",
            cards=cards,
            format_number=format_number,
            weekly=weekly,
            by_type=by_type,
            by_clinic=by_clinic,
            period_start=since,
            today=today,
            batches=batches,
        )
