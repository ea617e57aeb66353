"""The patient–study listing and list totals: few queries per page, shared with the export."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import date
from typing import Any

from markupsafe import Markup
from sqlalchemy import (
    Integer,
    and_,
    case,
    exists,
    func,
    literal,
    or_,
    select,
    text,
)
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnElement

from backoffice.extensions import db
from backoffice.models import Clinic, Doctor, Patient, Study, StudyType, Urgency
from backoffice.services.export import DATE, NUMBER, ExportColumn, ExportRequest
from backoffice.services.search import word_matches

PAGE_SIZES = (10, 25, 50, 100)
DEFAULT_PAGE_SIZE = 25
SORTS = ("name", "recent", "urgency")

# Totals: an exact COUNT(*) over a million rows costs more than the page it is shown on.
# Without filters a large table's total is the planner's estimate; with filters, counting stops
# at COUNT_CAP and the page says "10,000+".
COUNT_CAP = 10_000
ESTIMATE_FROM = 100_000
# From this many skipped rows on, a page reads its ids first (an index-only scan on PostgreSQL)
# and then the rows for those ids, instead of reading and dropping every skipped row.
IDS_FIRST_FROM = 1_000


def is_postgresql() -> bool:
    return db.session.get_bind().dialect.name == "postgresql"


@contextlib.contextmanager
def matches_first(searching: bool) -> Iterator[None]:
    """Make PostgreSQL read a search's matches through the trigram indexes, then sort them.

    Its estimate of ``ILIKE '%term%'`` is a guess (1 % of the rows): with a LIMIT it prefers to
    walk the name index in order, testing every row, which takes seconds when the matches sort
    late. Without plain index scans for this statement it takes the trigram bitmap and sorts the
    matches (a few milliseconds for a few thousand). Scoped to the statements inside the block.
    """
    if not (searching and is_postgresql()):
        yield
        return
    db.session.execute(text("SET LOCAL enable_indexscan = off"))
    try:
        yield
    finally:
        db.session.execute(text("SET LOCAL enable_indexscan TO DEFAULT"))


# --------------------------------------------------------------------------- totals


class ListCount(int):
    """A list total that knows whether it is exact, an estimate, or "more than the cap"."""

    estimated: bool = False
    capped: bool = False

    def __new__(cls, value: int, estimated: bool = False, capped: bool = False) -> ListCount:
        obj = super().__new__(cls, value)
        obj.estimated = estimated
        obj.capped = capped
        return obj

    def label(self) -> str:
        if self.capped:
            return f"{COUNT_CAP:,}+"
        if self.estimated:
            return f"≈{int(self):,}"
        return f"{int(self):,}"

    def __str__(self) -> str:
        return self.label()

    def __html__(self) -> Markup:
        return Markup.escape(self.label())


def estimated_rows(table_name: str) -> int | None:
    """PostgreSQL's own estimate of a table's rows (as its planner computes it), else None."""
    bind = db.session.get_bind()
    if bind.dialect.name != "postgresql":
        return None
    value = db.session.execute(
        text(
            "SELECT CASE WHEN c.reltuples < 0 THEN NULL"
            " WHEN c.relpages = 0 THEN 0"
            " ELSE (c.reltuples / c.relpages)"
            " * (pg_relation_size(c.oid) / current_setting('block_size')::int) END"
            " FROM pg_class c WHERE c.oid = CAST(:name AS regclass)"
        ),
        {"name": table_name},
    ).scalar()
    return None if value is None else int(value)


def table_total(table_name: str, exact: Any) -> ListCount:
    """The total of an unfiltered list: the estimate for a large table, else ``exact()``."""
    estimate = estimated_rows(table_name)
    if estimate is not None and estimate >= ESTIMATE_FROM:
        return ListCount(estimate, estimated=True)
    return ListCount(exact())


def capped_total(id_select: Any) -> ListCount:
    """Count the rows of ``id_select`` (a SELECT of one key column), stopping past COUNT_CAP."""
    sub = id_select.limit(COUNT_CAP + 1).subquery()
    value = db.session.execute(select(func.count()).select_from(sub)).scalar_one()
    if value > COUNT_CAP:
        return ListCount(COUNT_CAP, capped=True)
    return ListCount(value)


# --------------------------------------------------------------------------- the query


def _parse_date(raw: str | None) -> date | None:
    try:
        return date.fromisoformat(raw) if raw else None
    except ValueError:
        return None


def _parse_int(raw: str | None) -> int | None:
    try:
        return int(raw) if raw not in (None, "") else None
    except ValueError:
        return None


def _truthy(raw: str | None) -> bool:
    return (raw or "").lower() in {"1", "y", "yes", "on", "true"}


@dataclass(frozen=True)
class ListingQuery:
    """Everything that decides which patients and studies the listing shows, from the URL."""

    search: str = ""
    urgency: str | None = None
    study_type: str | None = None
    body_part: str | None = None
    date_from: date | None = None
    date_to: date | None = None
    clinic_id: int | None = None
    doctor_id: int | None = None
    only_high: bool = False
    without_studies: bool = False
    sort: str = "name"
    page: int = 0
    page_size: int = DEFAULT_PAGE_SIZE
    ignored: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> ListingQuery:
        """Read the query string; a value that makes no sense is dropped, named in ``ignored``."""
        ignored: list[str] = []

        def code(name: str, allowed: Sequence[str]) -> str | None:
            raw = (args.get(name) or "").strip().upper()
            if raw and raw not in allowed:
                ignored.append(name)
                return None
            return raw or None

        def day(name: str) -> date | None:
            raw = (args.get(name) or "").strip()
            value = _parse_date(raw)
            if raw and value is None:
                ignored.append(name)
            return value

        def number(name: str) -> int | None:
            raw = (args.get(name) or "").strip()
            value = _parse_int(raw)
            if raw and value is None:
                ignored.append(name)
            return value

        sort = args.get("sort") or "name"
        if sort not in SORTS:
            ignored.append("sort")
            sort = "name"
        page_size = _parse_int(args.get("page_size")) or DEFAULT_PAGE_SIZE
        if page_size not in PAGE_SIZES:
            ignored.append("page_size")
            page_size = DEFAULT_PAGE_SIZE
        page = max(_parse_int(args.get("page")) or 0, 0)
        body_part = (args.get("body_part") or "").strip().upper() or None
        return cls(
            search=" ".join((args.get("search") or "").split()),
            urgency=code("urgency", Urgency.codes()),
            study_type=code("type", StudyType.codes()),
            body_part=body_part,
            date_from=day("date_from"),
            date_to=day("date_to"),
            clinic_id=number("clinic"),
            doctor_id=number("doctor"),
            only_high=_truthy(args.get("only_high")),
            without_studies=_truthy(args.get("without_studies")),
            sort=sort,
            page=page,
            page_size=page_size,
            ignored=tuple(ignored),
        )

    def to_args(self, **changes: Any) -> dict[str, str]:
        """The query string for this state (with ``changes``), without default values."""
        state = replace(self, **changes) if changes else self
        out = {
            "search": state.search,
            "urgency": state.urgency,
            "type": state.study_type,
            "body_part": state.body_part,
            "date_from": state.date_from.isoformat() if state.date_from else None,
            "date_to": state.date_to.isoformat() if state.date_to else None,
            "clinic": state.clinic_id,
            "doctor": state.doctor_id,
            "only_high": "1" if state.only_high else None,
            "without_studies": "1" if state.without_studies else None,
            "sort": state.sort if state.sort != "name" else None,
            "page": state.page or None,
            "page_size": state.page_size if state.page_size != DEFAULT_PAGE_SIZE else None,
        }
        return {k: str(v) for k, v in out.items() if v not in (None, "")}

    @property
    def has_study_filters(self) -> bool:
        return bool(
            self.urgency or self.study_type or self.body_part or self.date_from or self.date_to
        )

    @property
    def is_filtered(self) -> bool:
        return bool(
            self.search
            or self.has_study_filters
            or self.clinic_id
            or self.doctor_id
            or self.only_high
            or self.without_studies
        )

    def audit_filters(self) -> dict[str, Any]:
        """The filters as the audit entry records them (defaults left out)."""
        data = asdict(self)
        for key in ("search", "sort", "page", "page_size", "ignored"):
            data.pop(key, None)
        return {
            k: (v.isoformat() if isinstance(v, date) else v)
            for k, v in data.items()
            if v not in (None, False, "")
        }


# The search: every word matches a name anywhere, or the MRN or email from its start.
SEARCHED = (
    (Patient.first_name, False),
    (Patient.last_name, False),
    (Patient.email, True),
    (Patient.mrn, True),
)


# Most urgent first: the rank of a study's urgency code (HIGH 0, MID 1, LOW 2).
def urgency_rank(column: ColumnElement) -> ColumnElement:
    return case({code.value: code.rank for code in Urgency}, value=column, else_=len(Urgency))


def _study_conditions(q: ListingQuery, study: Any) -> list[ColumnElement]:
    conditions: list[ColumnElement] = []
    if q.urgency:
        conditions.append(study.urgency == q.urgency)
    if q.study_type:
        conditions.append(study.study_type == q.study_type)
    if q.body_part:
        conditions.append(study.body_part == q.body_part)
    if q.date_from:
        conditions.append(study.study_date >= q.date_from)
    if q.date_to:
        conditions.append(study.study_date <= q.date_to)
    return conditions


def _patient_conditions(q: ListingQuery) -> list[ColumnElement]:
    conditions: list[ColumnElement] = []
    for word in q.search.split():
        clauses = [
            clause
            for column, prefix in SEARCHED
            if (clause := word_matches(column, word, prefix)) is not None
        ]
        if clauses:
            conditions.append(or_(*clauses))
    if q.clinic_id:
        conditions.append(Patient.clinic_id == q.clinic_id)
    if q.doctor_id:
        conditions.append(Patient.referring_doctor_id == q.doctor_id)
    if q.has_study_filters:
        s = aliased(Study)
        conditions.append(exists().where(s.patient_id == Patient.id, *_study_conditions(q, s)))
    if q.only_high:
        s = aliased(Study)
        conditions.append(exists().where(s.patient_id == Patient.id, s.urgency == Urgency.HIGH))
    if q.without_studies:
        s = aliased(Study)
        conditions.append(~exists().where(s.patient_id == Patient.id))
    return conditions


@dataclass(frozen=True)
class PatientOrder:
    """How the listing orders patients: its sort keys, each ascending or descending."""

    keys: tuple[tuple[ColumnElement, bool], ...]  # (expression, descending)

    def order_by(self, columns: Sequence[Any] | None = None) -> list[ColumnElement]:
        """ORDER BY clauses over the keys, or over ``columns`` holding the same values."""
        exprs = columns if columns is not None else [expr for expr, _ in self.keys]
        return [
            expr.desc().nulls_last() if descending else expr.asc().nulls_last()
            for expr, (_, descending) in zip(exprs, self.keys, strict=True)
        ]


def _patient_order(q: ListingQuery) -> PatientOrder:
    by_name = ((Patient.last_name, False), (Patient.first_name, False), (Patient.id, False))
    if q.sort == "name":
        return PatientOrder(by_name)
    # Only the studies the listing shows count for "most recent" and "most urgent". A subquery
    # per patient is evaluated for the matching patients only (a filtered listing stays fast);
    # the latest date comes from ix_study_patient_date alone. Unfiltered, at a million
    # patients, these two sorts take seconds (see the benchmark).
    s = aliased(Study)
    latest = (
        select(func.max(s.study_date))
        .where(s.patient_id == Patient.id, *_study_conditions(q, s))
        .scalar_subquery()
    )
    if q.sort == "recent":
        return PatientOrder(((latest, True), *by_name))
    s2 = aliased(Study)
    top = (
        select(func.min(urgency_rank(s2.urgency)))
        .where(s2.patient_id == Patient.id, *_study_conditions(q, s2))
        .scalar_subquery()
    )
    return PatientOrder(((top, False), (latest, True), *by_name))


def _study_order(study: Any) -> list[ColumnElement]:
    return [urgency_rank(study.urgency), study.study_date.desc(), study.id.desc()]


# --------------------------------------------------------------------------- the page


def age_on(birth_date: date | None, on: date | None = None) -> int | None:
    """Age in whole years on a given day (today by default); the same rule as ``Patient.age``."""
    if birth_date is None:
        return None
    on = on or date.today()
    years = on.year - birth_date.year
    if (on.month, on.day) < (birth_date.month, birth_date.day):
        years -= 1
    return years


@dataclass
class ListedStudy:
    id: int
    urgency: Urgency
    study_type: StudyType
    body_part: str
    description: str | None
    study_date: date
    ordering_doctor_id: int | None
    ordering_doctor: str | None


@dataclass
class ListedPatient:
    id: int
    mrn: str | None
    first_name: str
    last_name: str
    birth_date: date
    email: str | None
    referring_doctor_id: int | None
    referring_doctor: str | None
    clinic_id: int | None
    clinic: str | None
    studies: list[ListedStudy] = field(default_factory=list)

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()

    @property
    def age(self) -> int | None:
        return age_on(self.birth_date)


@dataclass
class ListingPage:
    query: ListingQuery
    patients: list[ListedPatient]
    total: ListCount

    @property
    def num_pages(self) -> int:
        return max(1, -(-int(self.total) // self.query.page_size))

    @property
    def has_next(self) -> bool:
        # An estimated or capped total may be short of the truth: a full page means "go on".
        full = len(self.patients) == self.query.page_size
        return full and (self.query.page + 1 < self.num_pages or not self._exact)

    @property
    def _exact(self) -> bool:
        return not (self.total.estimated or self.total.capped)

    @property
    def first_row(self) -> int:
        return self.query.page * self.query.page_size + 1 if self.patients else 0

    @property
    def last_row(self) -> int:
        return self.query.page * self.query.page_size + len(self.patients)


def _doctor_name(first: str | None, last: str | None) -> str | None:
    if first is None and last is None:
        return None
    return "Dr. " + " ".join(p for p in (first, last) if p)


def listing_total(q: ListingQuery) -> ListCount:
    if not q.is_filtered:
        return table_total(
            Patient.__tablename__,
            lambda: db.session.execute(select(func.count()).select_from(Patient)).scalar_one(),
        )
    return capped_total(select(Patient.id).where(*_patient_conditions(q)))


def listing_page(q: ListingQuery) -> ListingPage:
    """One page of patients with their studies: the same statements whatever the page holds.

    The page of patients (with referring doctor and clinic joined), their studies in one
    ``WHERE patient_id IN (...)``, and the total (an estimate or a capped count); a search on
    PostgreSQL adds the two settings of ``matches_first``.
    """
    with matches_first(bool(q.search)):
        if q.search:
            # A search reads all its matches to sort them: the page counts them on the way.
            patients, counted = _page_patients(q, count_matches=True)
            if counted is not None:
                total = ListCount(counted)
            else:
                total = listing_total(q) if q.page else ListCount(0)
        else:
            total = listing_total(q)
            patients, _ = _page_patients(q)
    if patients:
        _attach_studies(q, patients)
    return ListingPage(query=q, patients=patients, total=total)


def _page_patients(
    q: ListingQuery, count_matches: bool = False
) -> tuple[list[ListedPatient], int | None]:
    """The page's patients and, with ``count_matches``, the number of all matching patients."""
    ref = aliased(Doctor)
    conditions = _patient_conditions(q)
    order = _patient_order(q)
    # The page's ids with their sort keys, so that the details are put in order without
    # computing the keys again.
    keys = [expr.label(f"key{i}") for i, (expr, _) in enumerate(order.keys)]
    columns: list[Any] = [Patient.id.label("page_id"), *keys]
    if count_matches:
        columns.append(func.count().over().label("matches"))
    page_ids = (
        select(*columns)
        .where(*conditions)
        .order_by(*order.order_by())
        .limit(q.page_size)
        .offset(q.page * q.page_size)
    )
    # The page's ids come from a narrow scan (a deep page skips index entries, not whole
    # rows); the details are joined for those ids only.
    ids_cte = page_ids.cte("page_ids")
    rows = db.session.execute(
        select(
            Patient.id,
            Patient.mrn,
            Patient.first_name,
            Patient.last_name,
            Patient.birth_date,
            Patient.email,
            Patient.referring_doctor_id,
            ref.first_name,
            ref.last_name,
            Patient.clinic_id,
            Clinic.name,
            ids_cte.c.matches if count_matches else literal(None),
        )
        .join(ids_cte, ids_cte.c.page_id == Patient.id)
        .outerjoin(ref, ref.id == Patient.referring_doctor_id)
        .outerjoin(Clinic, Clinic.id == Patient.clinic_id)
        .order_by(*order.order_by([ids_cte.c[f"key{i}"] for i in range(len(order.keys))]))
    ).all()
    patients = [
        ListedPatient(
            id=r[0],
            mrn=r[1],
            first_name=r[2],
            last_name=r[3],
            birth_date=r[4],
            email=r[5],
            referring_doctor_id=r[6],
            referring_doctor=_doctor_name(r[7], r[8]),
            clinic_id=r[9],
            clinic=r[10],
        )
        for r in rows
    ]
    return patients, (rows[0][11] if rows and count_matches else None)


def _attach_studies(q: ListingQuery, patients: list[ListedPatient]) -> None:
    """The page's studies in one statement (``WHERE patient_id IN (...)``), most urgent first."""
    by_id = {p.id: p for p in patients}
    ordering = aliased(Doctor)
    study_rows = db.session.execute(
        select(
            Study.patient_id,
            Study.id,
            Study.urgency,
            Study.study_type,
            Study.body_part,
            Study.description,
            Study.study_date,
            Study.ordering_doctor_id,
            ordering.first_name,
            ordering.last_name,
        )
        .outerjoin(ordering, ordering.id == Study.ordering_doctor_id)
        .where(Study.patient_id.in_(list(by_id)), *_study_conditions(q, Study))
        .order_by(Study.patient_id, *_study_order(Study))
    ).all()
    for r in study_rows:
        by_id[r[0]].studies.append(
            ListedStudy(
                id=r[1],
                urgency=r[2],
                study_type=r[3],
                body_part=r[4],
                description=r[5],
                study_date=r[6],
                ordering_doctor_id=r[7],
                ordering_doctor=_doctor_name(r[8], r[9]),
            )
        )


def filter_choices() -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """Clinics and doctors for the filter drop-downs (two small, constant queries)."""
    clinics = db.session.execute(select(Clinic.id, Clinic.name).order_by(Clinic.name)).all()
    doctors = db.session.execute(
        select(Doctor.id, Doctor.last_name, Doctor.first_name).order_by(
            Doctor.last_name, Doctor.first_name, Doctor.id
        )
    ).all()
    return (
        [(c.id, c.name) for c in clinics],
        [(d.id, f"{d.last_name}, {d.first_name}") for d in doctors],
    )


# --------------------------------------------------------------------------- the export


def _age_sql(birth_date: ColumnElement, dialect: str) -> ColumnElement:
    if dialect == "postgresql":
        return func.date_part("year", func.age(func.current_date(), birth_date)).cast(Integer)
    # SQLite: years between the dates, minus one if this year's birthday is still to come.
    now = func.date("now", "localtime")
    return (
        func.cast(func.strftime("%Y", now), Integer)
        - func.cast(func.strftime("%Y", birth_date), Integer)
        - (func.strftime("%m-%d", now) < func.strftime("%m-%d", birth_date)).cast(Integer)
    )


def listing_export(q: ListingQuery, dialect: str) -> ExportRequest:
    """The listing as a file: one row per study shown, with its patient's columns.

    A patient without a study shown gets one row with empty study columns. Same filters,
    search and order as the page, every page.
    """
    ref = aliased(Doctor)
    ordering = aliased(Doctor)
    study = aliased(Study)
    columns = [
        ExportColumn("mrn", Patient.mrn),
        ExportColumn("first_name", Patient.first_name),
        ExportColumn("last_name", Patient.last_name),
        ExportColumn("birth_date", Patient.birth_date, DATE),
        ExportColumn("age", _age_sql(Patient.birth_date, dialect), NUMBER),
        ExportColumn("email", Patient.email),
        ExportColumn(
            "referring_doctor", func.nullif(func.trim(ref.first_name + " " + ref.last_name), "")
        ),
        ExportColumn("clinic", Clinic.name),
        ExportColumn("urgency", study.urgency),
        ExportColumn("type", study.study_type),
        ExportColumn("body_part", study.body_part),
        ExportColumn("description", study.description),
        ExportColumn("study_date", study.study_date, DATE),
        ExportColumn(
            "ordering_doctor",
            func.nullif(func.trim(ordering.first_name + " " + ordering.last_name), ""),
        ),
        ExportColumn("accession_number", study.accession_number),
    ]
    conditions = _patient_conditions(q)
    study_on = and_(study.patient_id == Patient.id, *_study_conditions(q, study))
    patient_order = _patient_order(q)
    order = [*patient_order.order_by(), *_study_order(study)]

    def select_for(exprs: list[ColumnElement]) -> Any:
        return (
            select(*exprs)
            .select_from(Patient)
            .outerjoin(ref, ref.id == Patient.referring_doctor_id)
            .outerjoin(Clinic, Clinic.id == Patient.clinic_id)
            .outerjoin(study, study_on)
            .outerjoin(ordering, ordering.id == study.ordering_doctor_id)
            .where(*conditions)
            .order_by(*order)
        )

    return ExportRequest(
        entity="patient_studies",
        file_stem="patient-studies",
        columns=columns,
        select_for=select_for,
        details={"filters": q.audit_filters(), "search": q.search or None, "sort": q.sort},
    )
