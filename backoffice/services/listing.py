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
    Select,
    and_,
    case,
    exists,
    false,
    func,
    literal,
    null,
    or_,
    select,
    text,
    union_all,
)
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnElement

from backoffice.extensions import db
from backoffice.models import (
    Clinic,
    Doctor,
    Patient,
    PatientStudySummary,
    Study,
    StudyStatus,
    StudyType,
    Urgency,
)
from backoffice.models.patient import age_on
from backoffice.services.export import DATE, NUMBER, ExportColumn, ExportRequest
from backoffice.services.search import SearchText, bounded_search, word_matches

PAGE_SIZES = (10, 25, 50, 100)
#: the deepest page anyone can ask for, and the longest code a filter takes
MAX_PAGE = 1_000_000
MAX_CODE_CHARS = 200
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
def _local_setting(active: bool, name: str, value: str) -> Iterator[None]:
    """A PostgreSQL setting for the statements inside the block only (this transaction)."""
    if not (active and is_postgresql()):
        yield
        return
    db.session.execute(text(f"SET LOCAL {name} = {value}"))
    try:
        yield
    finally:
        db.session.execute(text(f"SET LOCAL {name} TO DEFAULT"))


def matches_first(searching: bool) -> contextlib.AbstractContextManager[None]:
    """Make PostgreSQL read a search's matches through the trigram indexes, then sort them.

    Its estimate of ``ILIKE '%term%'`` is a guess (1 % of the rows): with a LIMIT it prefers to
    walk the name index in order, testing every row, which takes seconds when the matches sort
    late. Without plain index scans for this statement it takes the trigram bitmap and sorts the
    matches (a few milliseconds for a few thousand). Scoped to the statements inside the block.
    """
    return _local_setting(searching, "enable_indexscan", "off")


def one_process(active: bool) -> contextlib.AbstractContextManager[None]:
    """Keep PostgreSQL from starting parallel workers for the statements inside the block.

    The summary's page (``_summary_page_ids``) compares its keys with values the statement
    reads itself (the page's first keys, counts), unknown when it is planned: PostgreSQL then
    expects a third of the index and starts workers, which takes 20-50 ms on their own for a
    page that one process serves in 20-40 ms. Scoped to the statements inside the block.
    """
    return _local_setting(active, "max_parallel_workers_per_gather", "0")


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
    """The total of an unfiltered list: the estimate for a large table, else ``exact()``.

    The estimate counts every row of the table: a user whose record scope reaches only some
    (backoffice/auth/scope.py) gets ``exact()``, which goes through the scope.
    """
    from backoffice.auth.scope import current_scope

    if current_scope().restricted:
        return ListCount(exact())
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


def _parse_int(raw: str | None, limit: int = 2**31 - 1) -> int | None:
    """A whole number from the address, or None when there is none or it is out of bounds."""
    text = (raw or "").strip()
    if not text or not (text.isascii() and text.lstrip("-").isdigit()) or len(text) > 12:
        return None
    value = int(text)
    return value if -limit <= value <= limit else None


def _truthy(raw: str | None) -> bool:
    return (raw or "").lower() in {"1", "y", "yes", "on", "true"}


@dataclass(frozen=True)
class ListingQuery:
    """Everything that decides which patients and studies the listing shows, from the URL."""

    search: str = ""
    status: str | None = None
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
    #: the typed search held more words or characters than a search uses (see bounded_search)
    search_cut: bool = field(default=False, compare=False)

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
        page = min(max(_parse_int(args.get("page")) or 0, 0), MAX_PAGE)
        body_part = (args.get("body_part") or "").strip().upper() or None
        if body_part and len(body_part) > MAX_CODE_CHARS:
            ignored.append("body_part")
            body_part = None
        searched = bounded_search(args.get("search"))
        return cls(
            search=searched.text,
            search_cut=searched.cut,
            status=code("status", StudyStatus.codes()),
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
            "status": state.status,
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

    def search_message(self) -> str | None:
        """What the page says when the typed search was cut to its bounds."""
        return SearchText(self.search, self.search_cut).message() if self.search_cut else None

    @property
    def has_study_filters(self) -> bool:
        return bool(
            self.status
            or self.urgency
            or self.study_type
            or self.body_part
            or self.date_from
            or self.date_to
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
    if q.status:
        conditions.append(study.status == q.status)
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


def _patient_conditions(q: ListingQuery, study_presence: bool = True) -> list[ColumnElement]:
    """The patient-level conditions; without ``study_presence``, "with a HIGH study" and
    "without studies" are left to the caller (the summary's page says them its own way)."""
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
    # Whatever the study filters, "with a HIGH study" and "without studies" look at all the
    # patient's studies: the summary says it in one row (a rank of 0; no row). It holds every
    # study of the patient: for a user who reaches only some, the studies themselves are read.
    whole = summary_is_in_scope()
    if q.only_high and study_presence:
        if whole:
            high = exists().where(
                PatientStudySummary.patient_id == Patient.id,
                PatientStudySummary.top_rank == Urgency.HIGH.rank,
            )
        else:
            s = aliased(Study)
            high = exists().where(s.patient_id == Patient.id, s.urgency == Urgency.HIGH)
        conditions.append(high)
    if q.without_studies and study_presence:
        if whole:
            conditions.append(~exists().where(PatientStudySummary.patient_id == Patient.id))
        else:
            s = aliased(Study)
            conditions.append(~exists().where(s.patient_id == Patient.id))
    return conditions


def summary_is_in_scope() -> bool:
    """Whether the per-patient study summary may be read: it is made of every study of each
    patient, so only for users whose record scope reaches every study."""
    from backoffice.auth.scope import current_scope

    return current_scope().everything


SUMMARY = PatientStudySummary.__table__


@dataclass(frozen=True)
class PatientOrder:
    """How the listing orders patients: its sort keys, each ascending or descending.

    With ``summary`` set, the keys read the patients' study summary (patient_study_summary),
    which a statement joins to the patients with ``outerjoin`` (no row: no studies).
    """

    keys: tuple[tuple[ColumnElement, bool], ...]  # (expression, descending)
    summary: bool = False
    #: a per-patient selectable the keys read, with its join condition (outer-joined)
    joined: tuple[Any, ColumnElement] | None = None

    def order_by(self, columns: Sequence[Any] | None = None) -> list[ColumnElement]:
        """ORDER BY clauses over the keys, or over ``columns`` holding the same values."""
        exprs = columns if columns is not None else [expr for expr, _ in self.keys]
        return [
            expr.desc().nulls_last() if descending else expr.asc().nulls_last()
            for expr, (_, descending) in zip(exprs, self.keys, strict=True)
        ]

    def outerjoin(self, stmt: Select) -> Select:
        """``stmt`` (selecting from the patients) with what the keys read joined."""
        if self.joined is not None:
            return stmt.outerjoin(*self.joined)
        if not self.summary:
            return stmt
        return stmt.outerjoin(PatientStudySummary, PatientStudySummary.patient_id == Patient.id)


BY_NAME = ((Patient.last_name, False), (Patient.first_name, False), (Patient.id, False))


def _patient_order(q: ListingQuery) -> PatientOrder:
    if q.sort == "name":
        return PatientOrder(BY_NAME)
    if q.has_study_filters:
        return _shown_studies_order(q)
    if q.without_studies:
        return PatientOrder(BY_NAME)  # no key to compare: the name decides
    if not summary_is_in_scope():
        # The keys of the studies the user reaches, per patient (the summary has them all).
        return _shown_studies_order(q, grouped=False)
    # Every study counts: the keys are kept per patient by the database (migration 0008), read
    # in order from an index instead of computed for every patient (seconds at a million).
    latest_date = (PatientStudySummary.latest_date, True)
    if q.sort == "recent":
        return PatientOrder((latest_date, *BY_NAME), summary=True)
    return PatientOrder(
        ((PatientStudySummary.top_rank, False), latest_date, *BY_NAME), summary=True
    )


def _shown_studies_order(q: ListingQuery, grouped: bool | None = None) -> PatientOrder:
    """The order by the studies the listing shows (a study filter is set).

    When a search, a clinic or a doctor narrows the patients: a subquery per key, evaluated
    for those patients only; the latest date comes from ix_study_patient_date alone. Without
    a study filter they give the summary's order: tests/test_study_summary.py compares the two.
    Otherwise the shown studies are grouped by patient once and joined: one pass over them
    instead of two look-ups for each of hundreds of thousands of patients (3.6 s -> 1 s for
    "urgency HIGH, most urgent first" at a million patients). ``grouped`` forces one way.
    """
    if grouped is None:
        grouped = not (q.search or q.clinic_id or q.doctor_id)
    if grouped:
        g = aliased(Study)
        shown = (
            select(
                g.patient_id.label("patient_id"),
                func.min(urgency_rank(g.urgency)).label("top_rank"),
                func.max(g.study_date).label("latest_date"),
            )
            .where(*_study_conditions(q, g))
            .group_by(g.patient_id)
            .subquery("shown_studies")
        )
        latest_shown = (shown.c.latest_date, True)
        by = (
            (latest_shown, *BY_NAME)
            if q.sort == "recent"
            else ((shown.c.top_rank, False), latest_shown, *BY_NAME)
        )
        return PatientOrder(by, joined=(shown, shown.c.patient_id == Patient.id))
    s = aliased(Study)
    latest = (
        select(func.max(s.study_date))
        .where(s.patient_id == Patient.id, *_study_conditions(q, s))
        .scalar_subquery()
    )
    if q.sort == "recent":
        return PatientOrder(((latest, True), *BY_NAME))
    s2 = aliased(Study)
    top = (
        select(func.min(urgency_rank(s2.urgency)))
        .where(s2.patient_id == Patient.id, *_study_conditions(q, s2))
        .scalar_subquery()
    )
    return PatientOrder(((top, False), (latest, True), *BY_NAME))


def _summary_page_ids(q: ListingQuery, order: PatientOrder) -> Select:
    """The page's patient ids and sort keys in the summary's order, read from its indexes.

    The patients with studies come first, in the order of one of the summary's indexes (equal
    keys in name order); those without (NULL keys) follow in name order. Sorted NULLS LAST, a
    LEFT JOIN of the summary is sorted whole (0.4 s at a million patients, whatever the page).
    So the page is taken from the patients with studies and, only when they do not fill it,
    from the others (their ``LIMIT`` is 0 otherwise: nothing read), past those of them that
    earlier pages showed (counted only then). Without conditions on the patients, the rows
    before a deep page are skipped in the summary's index alone (``_skip_in_summary``).
    """
    limit, offset = q.page_size, q.page * q.page_size
    conditions = _patient_conditions(q, study_presence=False)
    # Plain ASC / DESC: the order the indexes have (these keys hold no NULL).
    in_order = [expr.desc() if descending else expr for expr, descending in order.keys]
    # The summary's keys are NULL for the patients without studies (typed as its columns).
    from_summary = [getattr(expr, "table", None) is SUMMARY for expr, _ in order.keys]
    keys = [expr.label(f"key{i}") for i, (expr, _) in enumerate(order.keys)]
    null_keys = [
        null().cast(expr.type).label(f"key{i}") if summary else keys[i]
        for i, ((expr, _), summary) in enumerate(zip(order.keys, from_summary, strict=True))
    ]
    # "With a HIGH study" is a rank of 0 (the first side reads only those) and holds for no
    # patient without studies (the second side reads nothing).
    with_studies = [*conditions]
    if q.only_high:
        with_studies.append(PatientStudySummary.top_rank == Urgency.HIGH.rank)
    without_studies = [
        *conditions,
        false() if q.only_high else ~exists().where(PatientStudySummary.patient_id == Patient.id),
    ]

    def patients_with_studies(*columns: Any) -> Select:
        return (
            select(*columns)
            .join_from(Patient, PatientStudySummary, PatientStudySummary.patient_id == Patient.id)
            .where(*with_studies)
        )

    first_rows = patients_with_studies(Patient.id.label("page_id"), *keys).order_by(*in_order)
    if conditions:
        # The rows before the page are read (with their patients) to be skipped.
        first = first_rows.limit(limit).offset(offset).cte("with_studies")
    else:
        # Nothing to know of the patients: skipped from the summary's index alone.
        summary_keys = [
            key for key, summary in zip(order.keys, from_summary, strict=True) if summary
        ]
        from_start, still_to_skip = _skip_in_summary(summary_keys, with_studies, offset)
        first = first_rows.where(from_start).limit(limit).offset(still_to_skip).cte("with_studies")
    taken = select(func.count()).select_from(first).scalar_subquery()
    # Nothing read from the first side: the page starts among the patients without studies,
    # past those that earlier pages showed. (Every summary row has its patient: without
    # conditions on them, the summary is counted alone.)
    if conditions:
        with_studies_count = patients_with_studies(func.count())
    else:
        with_studies_count = select(func.count()).select_from(SUMMARY).where(*with_studies)
    skipped = offset - with_studies_count.scalar_subquery()
    rest = (
        select(Patient.id.label("page_id"), *null_keys)
        .where(*without_studies)
        .order_by(*(k for k, summary in zip(in_order, from_summary, strict=True) if not summary))
        .limit(limit - taken)
        .offset(case((taken > 0, 0), else_=skipped))
        .subquery("without_studies")
    )
    return union_all(select(*first.c), select(*rest.c))


def _skip_in_summary(
    keys: Sequence[tuple[ColumnElement, bool]], conditions: Sequence[ColumnElement], offset: int
) -> tuple[ColumnElement, ColumnElement]:
    """Skip ``offset`` rows in the summary's order reading its index alone, not the patients.

    Patients with equal keys are in name order, so only the rows of the page's first keys need
    their patients: those keys are read at ``offset`` in the index, the rows with earlier keys
    are counted there (one range per key). Returns the condition "keys at or after the page's
    first" and the rows still to skip among them. A page past the end has no first keys: the
    condition holds for no row.
    """
    start = (
        select(*(expr for expr, _ in keys))
        .where(*conditions)
        .order_by(*(expr.desc() if descending else expr for expr, descending in keys))
        .offset(offset)
        .limit(1)
        .cte("page_start")
    )
    first = [select(column).scalar_subquery() for column in start.c]

    def before(i: int) -> ColumnElement:
        """Keys before the first ones: equal up to key ``i``, which comes earlier."""
        expr, descending = keys[i]
        earlier = expr > first[i] if descending else expr < first[i]
        return and_(*(keys[j][0] == first[j] for j in range(i)), earlier)

    counted = [
        select(func.count()).select_from(SUMMARY).where(*conditions, before(i)).scalar_subquery()
        for i in range(len(keys))
    ]
    expr, descending = keys[0]
    # Read from the first key on in the index, skipping there the rows before the first ones.
    from_start = and_(
        expr <= first[0] if descending else expr >= first[0],
        *(~before(i) for i in range(1, len(keys))),
    )
    return from_start, offset - sum(counted[1:], counted[0])


def _study_order(study: Any) -> list[ColumnElement]:
    return [urgency_rank(study.urgency), study.study_date.desc(), study.id.desc()]


# --------------------------------------------------------------------------- the page


@dataclass
class ListedStudy:
    id: int
    status: StudyStatus
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
    summary_page = order.summary and not count_matches
    if summary_page:
        page_ids = _summary_page_ids(q, order)
    else:
        # A search reads and sorts all its matches anyway (see ``matches_first``).
        keys = [expr.label(f"key{i}") for i, (expr, _) in enumerate(order.keys)]
        columns: list[Any] = [Patient.id.label("page_id"), *keys]
        if count_matches:
            columns.append(func.count().over().label("matches"))
        page_ids = (
            order.outerjoin(select(*columns).select_from(Patient))
            .where(*conditions)
            .order_by(*order.order_by())
            .limit(q.page_size)
            .offset(q.page * q.page_size)
        )
    # The page's ids come from a narrow scan (a deep page skips index entries, not whole
    # rows); the details are joined for those ids only.
    ids_cte = page_ids.cte("page_ids")
    with one_process(summary_page):
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
            Study.status,
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
                status=r[2],
                urgency=r[3],
                study_type=r[4],
                body_part=r[5],
                description=r[6],
                study_date=r[7],
                ordering_doctor_id=r[8],
                ordering_doctor=_doctor_name(r[9], r[10]),
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
        ExportColumn("status", study.status),
    ]
    conditions = _patient_conditions(q)
    study_on = and_(study.patient_id == Patient.id, *_study_conditions(q, study))
    patient_order = _patient_order(q)
    order = [*patient_order.order_by(), *_study_order(study)]

    def select_for(exprs: list[ColumnElement]) -> Any:
        return (
            patient_order.outerjoin(select(*exprs).select_from(Patient))
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
