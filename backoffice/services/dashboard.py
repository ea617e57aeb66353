"""Dashboard figures: a handful of aggregate queries, each served by an index.

The charts cover the last 12 weeks, so their queries read a date range of ``study`` through
``ix_study_study_date`` instead of scanning millions of rows; totals of large tables come from
PostgreSQL's statistics when an exact count would cost more than the page.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta

from sqlalchemy import func, select, text

from backoffice.extensions import db
from backoffice.models import Clinic, Doctor, ImportBatch, Patient, Study, StudyType, Urgency

CHART_WEEKS = 12
EXACT_COUNT_LIMIT = 200_000


@dataclass
class Total:
    value: int
    approximate: bool = False


@dataclass
class WeekBar:
    start: date
    end: date
    counts: dict[Urgency, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def table_total(model: type) -> Total:
    """Exact row count, or PostgreSQL's estimate when the table is large (the estimate counts
    every row: a user whose record scope reaches only some gets the exact, scoped count)."""
    from backoffice.auth.scope import SCOPED, current_scope

    estimable = model not in SCOPED or current_scope().everything
    if estimable and db.session.get_bind().dialect.name == "postgresql":
        estimate = db.session.execute(
            text("SELECT reltuples::bigint FROM pg_class WHERE oid = CAST(:t AS regclass)"),
            {"t": model.__tablename__},
        ).scalar()
        if estimate is not None and estimate > EXACT_COUNT_LIMIT:
            return Total(int(estimate), approximate=True)
    return Total(db.session.scalar(select(func.count()).select_from(model)) or 0)


def week_start(day: date) -> date:
    return day - timedelta(days=day.weekday())


def key_figures(today: date) -> dict[str, Total]:
    """Counts on the dashboard cards."""
    this_week = week_start(today)
    month_start = today.replace(day=1)
    last_7 = today - timedelta(days=6)
    since = min(this_week, month_start, last_7)
    week, month, high = db.session.execute(
        select(
            func.count().filter(Study.study_date >= this_week),
            func.count().filter(Study.study_date >= month_start),
            func.count().filter(Study.study_date >= last_7, Study.urgency == Urgency.HIGH),
        ).where(Study.study_date >= since, Study.study_date <= today)
    ).one()
    return {
        "patients": table_total(Patient),
        "studies_week": Total(week),
        "studies_month": Total(month),
        "high_last_7_days": Total(high),
        "doctors": table_total(Doctor),
        "clinics": table_total(Clinic),
    }


def weekly_by_urgency(today: date, weeks: int = CHART_WEEKS) -> list[WeekBar]:
    """Studies per week (Monday to Sunday) for the last ``weeks`` weeks, split by urgency."""
    first = week_start(today) - timedelta(weeks=weeks - 1)
    bars = [
        WeekBar(first + timedelta(weeks=i), first + timedelta(weeks=i, days=6))
        for i in range(weeks)
    ]
    rows = db.session.execute(
        select(Study.study_date, Study.urgency, func.count())
        .where(Study.study_date >= first, Study.study_date <= today)
        .group_by(Study.study_date, Study.urgency)
    ).all()
    per_week: dict[int, dict[Urgency, int]] = defaultdict(lambda: defaultdict(int))
    for day, urgency, n in rows:
        per_week[(day - first).days // 7][Urgency(urgency)] += n
    for i, bar in enumerate(bars):
        bar.counts = {u: per_week[i].get(u, 0) for u in Urgency}
    return bars


def by_type(since: date, today: date) -> list[tuple[StudyType, int]]:
    rows = dict(
        db.session.execute(
            select(Study.study_type, func.count())
            .where(Study.study_date >= since, Study.study_date <= today)
            .group_by(Study.study_type)
        ).all()
    )
    return sorted(((StudyType(t), n) for t, n in rows.items()), key=lambda r: (-r[1], r[0].value))


def by_clinic(since: date, today: date, limit: int = 10) -> list[tuple[int | None, str, int]]:
    """The clinics with the most studies (through the patient's clinic), biggest first.

    Counted per clinic id first (``count(*)`` reads only the covering date index and the
    patients' clinic ids), then the names of the top clinics are looked up."""
    count = func.count()
    top = db.session.execute(
        select(Patient.clinic_id, count)
        .select_from(Study)
        .join(Patient, Patient.id == Study.patient_id)
        .where(Study.study_date >= since, Study.study_date <= today)
        .where(Patient.clinic_id.is_not(None))
        .group_by(Patient.clinic_id)
        .order_by(count.desc(), Patient.clinic_id)
        .limit(limit)
    ).all()
    names = dict(
        db.session.execute(
            select(Clinic.id, Clinic.name).where(Clinic.id.in_([cid for cid, _n in top]))
        ).all()
    )
    return sorted(((cid, names.get(cid, "?"), n) for cid, n in top), key=lambda r: (-r[2], r[1]))


def recent_batches(user_id: int | None, all_users: bool, limit: int = 5) -> list[ImportBatch]:
    query = select(ImportBatch).order_by(ImportBatch.id.desc()).limit(limit)
    if not all_users:
        query = query.where(ImportBatch.user_id == user_id)
    return list(db.session.scalars(query))
