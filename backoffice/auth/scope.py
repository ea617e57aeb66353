"""The record scope: which patients and studies a user may reach, as one rule at the query level.

Roles say what a user may do (``permissions.py``); the scope says to which records. A doctor
(the role) reaches the studies they ordered or are assigned to report, and those studies'
patients; the other roles reach every record. The rule is written once, per scoped entity
(``SCOPED``: studies, patients and what belongs to them, such as a patient's phones and care
team, a study's events and report), and applied where every door ends:

- every ORM SELECT, through a ``do_orm_execute`` session event that adds
  ``with_loader_criteria`` for each scoped entity (aliases, joins, subqueries, relationship
  loads and counts included): lists, their counts, details, edit, ajax look-ups, the listing,
  the dashboard, history;
- ``Session.get`` of a record already in the identity map (it answers without SQL): checked
  by ``get_check`` (see ``backoffice.extensions.Session``);
- Core SELECTs run on a connection of their own (exports): ``scoped_statement`` adds the same
  criteria to the statement itself;
- plain-SQL shortcuts that cannot carry the rule (PostgreSQL's row estimates, the per-patient
  study summary) ask ``current_scope().restricted`` and take the exact, scoped path instead.

Outside a request, nothing is in scope until the code says so: a command opens the scope with
``unscoped(reason)``, which is recorded in the audit trail (``SCOPE_LIFTED``). A query of a
scoped entity without a scope raises ``ScopeRequired`` instead of answering.

Extending the rule (clinics, care teams): a ``Scope`` grows a field that its ``key`` carries,
and ``studies_in`` / ``patients_in`` OR it in; an entity that belongs to a study or a patient
registers its rule in ``SCOPED`` and ``criteria_for`` (``tests/test_scope.py`` fails for a model
with such a key that does not).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from flask import Flask, g, has_request_context
from sqlalchemy import event, false, or_, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import ORMExecuteState, Session, with_loader_criteria
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.util import find_tables

from backoffice.models import (
    CareTeamMember,
    Patient,
    PatientPhone,
    PatientStudySummary,
    Report,
    ReportAddendum,
    RoleName,
    Study,
    StudyEvent,
)
from backoffice.validation import whole_number

log = logging.getLogger("backoffice.scope")

#: roles that reach every record (issue 16 narrows them to their clinics)
UNRESTRICTED_ROLES = frozenset(
    {RoleName.ADMIN, RoleName.MANAGER, RoleName.OPERATOR, RoleName.SUPPORT}
)

STUDY = Study.__table__
REPORT = Report.__table__


class ScopeRequired(RuntimeError):
    """A scoped entity was queried outside a request without ``unscoped`` around it."""


@dataclass(frozen=True)
class Scope:
    """What a user may reach: everything, or the records of some doctors."""

    everything: bool = False
    doctor_ids: frozenset[int] = field(default_factory=frozenset)
    #: no scope was set at all (outside a request): queries of scoped entities raise
    missing: bool = False

    @property
    def restricted(self) -> bool:
        return not self.everything

    @property
    def key(self) -> tuple[int, ...]:
        """The scope as plain values, the rules' argument (issue 16 adds the clinics)."""
        return tuple(sorted(self.doctor_ids))

    @cached_property
    def criteria(self) -> tuple[Any, ...]:
        """The loader criteria that narrow an ORM statement to this scope (``criteria_for``)."""
        return () if self.everything else criteria_for(self.key)

    def study_clause(self, study: Any) -> ColumnElement:
        """The studies in scope, for ``study`` (the model, an alias or the table)."""
        return ~false() if self.everything else studies_in(study, self.key)

    def patient_clause(self, patient: Any) -> ColumnElement:
        return ~false() if self.everything else patients_in(patient, self.key)


EVERYTHING = Scope(everything=True)
NOTHING = Scope()
MISSING = Scope(missing=True)


# --------------------------------------------------------------------------- the rules

Key = tuple[int, ...]


def studies_in(study: Any, key: Key) -> ColumnElement:
    """The studies a scope reaches: those its doctors ordered or are to report."""
    doctor_ids = key
    columns = getattr(study, "c", study)  # a Table's columns are under .c
    parts = []
    if doctor_ids:
        parts.append(columns.ordering_doctor_id.in_(doctor_ids))
        parts.append(columns.reporting_doctor_id.in_(doctor_ids))
    return or_(*parts) if parts else false()


def study_ids_in(key: Key) -> Any:
    return select(STUDY.c.id).where(studies_in(STUDY, key))


def patient_ids_in(key: Key) -> Any:
    """The patients of the studies a scope reaches."""
    return select(STUDY.c.patient_id).where(studies_in(STUDY, key))


def patients_in(patient: Any, key: Key) -> ColumnElement:
    return patient.id.in_(patient_ids_in(key))


# The rule of each scoped entity: the rows of ``model`` (or an alias of it) a scope reaches.
SCOPED: dict[type, Callable[[Any, Key], ColumnElement]] = {
    Study: studies_in,
    Patient: patients_in,
    PatientPhone: lambda m, key: m.patient_id.in_(patient_ids_in(key)),
    CareTeamMember: lambda m, key: m.patient_id.in_(patient_ids_in(key)),
    PatientStudySummary: lambda m, key: m.patient_id.in_(patient_ids_in(key)),
    StudyEvent: lambda m, key: m.study_id.in_(study_ids_in(key)),
    Report: lambda m, key: m.study_id.in_(study_ids_in(key)),
    ReportAddendum: lambda m, key: m.report_id.in_(
        select(REPORT.c.id).where(REPORT.c.study_id.in_(study_ids_in(key)))
    ),
}


def criteria_for(key: Key) -> tuple[Any, ...]:
    """``SCOPED`` as loader criteria: one for each entity.

    Lambdas, so that each rule is applied to whatever alias of its entity a statement holds
    (``patient_1`` in a join): the ORM calls them with the entity or the alias. Each is written
    out on its own line: the statement cache knows a lambda by its code, so one lambda made in
    a loop would serve every entity the rule of the first. They close over ``key`` only (plain
    integers, bound as parameters; the rules are module globals). ``tests/test_scope.py``
    checks that they cover ``SCOPED``.
    """

    def on(model: type, where: Any) -> Any:
        return with_loader_criteria(model, where, include_aliases=True)

    if not key:
        # Nothing in reach (a doctor user with no Doctor record; a user being loaded): a
        # criterion without columns, which no alias needs adapting to.
        return tuple(on(model, false()) for model in SCOPED)
    return (
        on(Study, lambda cls: SCOPED[Study](cls, key)),
        on(Patient, lambda cls: SCOPED[Patient](cls, key)),
        on(PatientPhone, lambda cls: SCOPED[PatientPhone](cls, key)),
        on(CareTeamMember, lambda cls: SCOPED[CareTeamMember](cls, key)),
        on(PatientStudySummary, lambda cls: SCOPED[PatientStudySummary](cls, key)),
        on(StudyEvent, lambda cls: SCOPED[StudyEvent](cls, key)),
        on(Report, lambda cls: SCOPED[Report](cls, key)),
        on(ReportAddendum, lambda cls: SCOPED[ReportAddendum](cls, key)),
    )


def scope_for_user(user: Any) -> Scope:
    """The scope of a user: the union of their roles' (a doctor who is also an operator
    reaches everything); a doctor user without a linked Doctor record reaches nothing."""
    if user is None or not getattr(user, "is_authenticated", False):
        return NOTHING
    if not getattr(user, "is_active", False):
        return NOTHING
    roles = user.role_names
    if roles & UNRESTRICTED_ROLES:
        return EVERYTHING
    if RoleName.DOCTOR in roles and user.doctor_id is not None:
        return Scope(doctor_ids=frozenset({user.doctor_id}))
    return NOTHING


# --------------------------------------------------------------------------- the current scope

_override: contextvars.ContextVar[Scope | None] = contextvars.ContextVar(
    "record_scope_override", default=None
)
_G_SCOPE = "record_scope"
_G_RESOLVING = "record_scope_resolving"


def current_scope() -> Scope:
    """The scope in force: an explicit one (``unscoped``), else the logged-in user's."""
    override = _override.get()
    if override is not None:
        return override
    if not has_request_context():
        return MISSING
    scope = g.get(_G_SCOPE)
    if scope is not None:
        return scope
    if g.get(_G_RESOLVING):
        # Loading the user (their row, their roles) is itself a query: nothing is in scope
        # until it is done, and it reads no scoped entity.
        return NOTHING
    from flask_login import current_user

    setattr(g, _G_RESOLVING, True)
    try:
        scope = scope_for_user(current_user._get_current_object())
    finally:
        setattr(g, _G_RESOLVING, False)
    setattr(g, _G_SCOPE, scope)
    return scope


def _forget_request_scope(*_args: Any, **_kwargs: Any) -> None:
    """A login or logout in the middle of a request changes whose scope it is."""
    if has_request_context():
        g.pop(_G_SCOPE, None)


@contextlib.contextmanager
def using_scope(scope: Scope) -> Iterator[Scope]:
    """Run the block in ``scope`` (a job working for a user runs in that user's scope).

    Not a way to widen anyone's reach: use ``unscoped``, which is recorded.
    """
    token = _override.set(scope)
    try:
        yield scope
    finally:
        _override.reset(token)


@contextlib.contextmanager
def unscoped(reason: str) -> Iterator[Scope]:
    """Every record is in scope inside the block; recorded in the audit trail with the reason
    and whoever is acting (a command's ``--operator``, or the logged-in user).

    The entry is written in a short transaction of its own before the block runs: call it
    before the block's own writes (it takes the head of the audit chain for a moment).
    """
    _record_lift(reason)
    with using_scope(EVERYTHING) as scope:
        yield scope


def _record_lift(reason: str) -> None:
    from backoffice.extensions import db
    from backoffice.services.audit import append_entries, make_entry

    entry = make_entry("SCOPE_LIFTED", details={"reason": reason})
    bind = db.engine
    if isinstance(bind, Connection):  # the test suite binds the app to one connection
        with bind.begin_nested():
            append_entries(bind, [entry])
    else:
        with bind.begin() as conn:
            append_entries(conn, [entry])
    log.info("record scope lifted: %s", reason)


# --------------------------------------------------------------------------- the doors


SCOPED_TABLES = frozenset(model.__table__ for model in SCOPED)


def _scope_statement(state: ORMExecuteState) -> None:
    """``do_orm_execute``: every ORM SELECT gets the scope's criteria. A plain Core SELECT of a
    scoped table (built from ``Table`` columns) cannot carry them: under a restricted scope it
    is refused rather than answered."""
    if not state.is_select or state.is_column_load:
        return
    scope = current_scope()
    if scope.everything:
        return
    if not state.is_orm_statement:
        if SCOPED_TABLES.intersection(find_tables(state.statement, include_joins=True)):
            raise ScopeRequired(
                "a Core SELECT of patients or studies under a record scope: build it from the "
                "models (or run it through scoped_statement)"
            )
        return
    if scope.missing and any(m.class_ in SCOPED for m in state.all_mappers):
        raise ScopeRequired(
            "patients and studies were queried outside a request without a scope: "
            "wrap the work in backoffice.auth.scope.unscoped(reason)"
        )
    state.statement = state.statement.options(*scope.criteria)


def scoped_statement(statement: Any) -> Any:
    """A Core SELECT built from the models, narrowed to the current scope (for statements run
    on a connection of their own, which no session event sees: exports)."""
    scope = current_scope()
    if scope.everything:
        return statement
    if scope.missing:
        raise ScopeRequired("an export ran outside a request without a scope")
    return statement.options(*scope.criteria)


def get_check(session: Session, obj: Any) -> bool:
    """May ``session.get`` return ``obj``? It may have come from the identity map without SQL;
    a scoped entity is then looked up again, through the rule."""
    model = type(obj)
    if model not in SCOPED:
        return True
    scope = current_scope()
    if scope.everything:
        return True
    if scope.missing:
        raise ScopeRequired(f"{model.__name__} was looked up outside a request without a scope")
    pk = _primary_key(model)
    found = session.execute(select(pk).where(pk == getattr(obj, pk.key))).first()
    return found is not None


def _primary_key(model: type) -> Any:
    """The model's primary key as its ORM attribute: a statement of the table's own column is
    plain Core, which the session event cannot narrow (and refuses, see ``_scope_statement``)."""
    return getattr(model, model.__mapper__.primary_key[0].key)


def is_visible(model: type, record_id: Any) -> bool:
    """Whether a record of ``model`` with this id exists and is in scope."""
    from backoffice.extensions import db

    key = whole_number(record_id, maximum=2**63 - 1)
    if key is None:
        return False
    pk = _primary_key(model)
    return db.session.execute(select(pk).where(pk == key)).first() is not None


def register_scope(app: Flask) -> None:
    """Put the rule on every session and every request of ``app`` (idempotent)."""
    from flask_login import user_logged_in, user_logged_out

    from backoffice.extensions import Session as BackofficeSession

    if not event.contains(Session, "do_orm_execute", _scope_statement):
        event.listen(Session, "do_orm_execute", _scope_statement)
    if get_check not in BackofficeSession.get_checks:
        BackofficeSession.get_checks.append(get_check)
    user_logged_in.connect(_forget_request_scope, app)
    user_logged_out.connect(_forget_request_scope, app)

    @app.before_request
    def _no_scope_carried_over() -> None:
        # A request starts from its user's scope, never from one left in this thread's context.
        _override.set(None)
        g.pop(_G_SCOPE, None)
