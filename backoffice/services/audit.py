"""The audit trail: who saw and changed what, field by field, in the same transaction.

Three ways in:
- ORM changes to audited models are recorded by a session hook (``after_flush``): whatever the
  door (admin form, inline phone row, bulk action, command, import), a change is recorded in the
  transaction that makes it, so a rolled-back change leaves no entry and a committed one always
  has its entry.
- ``record_event`` records reads, exports, imports and security events.
- ``append_entries`` writes prepared entries in bulk (the importer's updated rows).

Entries are chained: each ``entry_hash`` is SHA-256 over the previous hash and the entry's
canonical content. ``verify_chain`` walks the chain and names the first entry that does not fit.

A doctor's phones are part of the doctor as its form edits them: a ``before_flush`` hook gives
the doctor a new version when only its phones change, and phone entries carry that version, so
the edit form's conflict check (``entries_since_version``) sees and lists them. Phones removed
from the list (delete-orphan) are recorded too, through a mapper ``after_delete`` hook.
``AUDIT_ENABLED`` (default True) exists for bench/bench_audit.py only.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from flask import current_app, g, has_app_context, has_request_context, request
from sqlalchemy import Integer, bindparam, event, func, insert, inspect, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, object_session
from sqlalchemy.orm.attributes import NO_VALUE

from backoffice.extensions import db
from backoffice.models import (
    AuditEntry,
    AuditHead,
    CareTeamMember,
    Clinic,
    Doctor,
    DoctorPhone,
    Patient,
    PatientPhone,
    Report,
    ReportAddendum,
    Study,
    User,
    utcnow,
)

GENESIS_HASH = "0" * 64

# Entities and the fields that never enter an entry (secrets, counters, bookkeeping).
AUDITED: dict[type, str] = {
    Clinic: "clinic",
    Doctor: "doctor",
    DoctorPhone: "doctor_phone",
    Patient: "patient",
    PatientPhone: "patient_phone",
    CareTeamMember: "care_team_member",
    Study: "study",
    User: "user",
    Report: "report",
    ReportAddendum: "report_addendum",
}
# Records edited as part of another (inline rows): (owner entity, owner relationship). Their
# entries name the owner as parent and carry the owner's version; a change to them is a change
# to the owner, which gets a new version (see ``_bump_owner_versions``).
CHILDREN: dict[type, tuple[str, str]] = {
    DoctorPhone: ("doctor", "doctor"),
    PatientPhone: ("patient", "patient"),
    CareTeamMember: ("patient", "patient"),
}
# The owners' collections of such rows (a doctor's specialties are recorded as a field of the
# doctor: see ``_collection_fields``).
OWNED_COLLECTIONS: dict[type, tuple[str, ...]] = {
    Doctor: ("phones", "specialty_rows"),
    Patient: ("phones", "care_team"),
}
NEVER_RECORDED = {
    "name_key",  # derived from the name by the database
    "password_hash",
    "session_token",
    "failed_login_count",
    "failed_login_window_start",
    "locked_until",
    "updated_at",
    "created_at",
    "version",
    "last_login_at",
}
# Reading these fields is noise; the user row changes at every login.
SILENT_UPDATES = {
    User: {
        "last_login_at",
        "failed_login_count",
        "failed_login_window_start",
        "locked_until",
        "session_token",
    }
}

ENTITY_MODELS: dict[str, type] = {v: k for k, v in AUDITED.items()}
# Records that carry a version number (the edit forms' conflict check).
VERSIONED = (Clinic, Doctor, Patient, Study, CareTeamMember, Report)


# --------------------------------------------------------------------------- who is acting


@dataclass
class Actor:
    """Who an entry is attributed to: a user in a request, or the operator of a command."""

    user_id: int | None = None
    label: str | None = None
    ip: str | None = None
    request_id: str | None = None


_command_actor: contextvars.ContextVar[Actor | None] = contextvars.ContextVar(
    "audit_command_actor", default=None
)


def request_id() -> str:
    """The request's id: a well-formed incoming X-Request-ID, else a new one."""
    if not has_request_context():
        return ""
    if "request_id" not in g:
        incoming = request.headers.get("X-Request-ID", "")
        ok = 8 <= len(incoming) <= 64 and all(c.isalnum() or c in "-_" for c in incoming)
        g.request_id = incoming if ok else uuid.uuid4().hex
    return g.request_id


def current_actor() -> Actor:
    actor = _command_actor.get()
    if actor is not None:
        return actor
    if has_request_context():
        from flask_login import current_user

        user_id = None
        label = None
        if getattr(current_user, "is_authenticated", False):
            user_id = current_user.id
            label = current_user.email
        return Actor(user_id=user_id, label=label, ip=request.remote_addr, request_id=request_id())
    return Actor(label="system")


@contextlib.contextmanager
def acting_as(label: str, user_id: int | None = None) -> Iterator[Actor]:
    """Attribute everything recorded inside the block to a command's operator."""
    actor = Actor(user_id=user_id, label=label, request_id=uuid.uuid4().hex)
    token = _command_actor.set(actor)
    try:
        yield actor
    finally:
        _command_actor.reset(token)


# --------------------------------------------------------------------------- values


def jsonable(value: Any) -> Any:
    """Values as they go into an entry: codes for enums, ISO strings for dates."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal | float):
        return str(value)
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return str(value)


def snapshot(obj: Any) -> dict[str, Any]:
    """Every recorded column of a row (used for creates, deletes and restores)."""
    mapper = inspect(type(obj))
    out = {}
    for attr in mapper.column_attrs:
        if attr.key in NEVER_RECORDED or attr.key == "id":
            continue
        out[attr.key] = jsonable(getattr(obj, attr.key))
    if isinstance(obj, User):
        out["roles"] = sorted(jsonable(r.name) for r in obj.roles)
    if isinstance(obj, Doctor):
        out["specialties"] = sorted(jsonable(s) for s in obj.specialties)
    return out


def _collection_fields(obj: Any, state: Any) -> dict[str, list[Any]]:
    """Changes to collections recorded as fields of their record (a doctor's specialties)."""
    if not isinstance(obj, Doctor):
        return {}
    hist = state.attrs["specialty_rows"].history
    if not hist.has_changes():
        return {}
    new = sorted(jsonable(row.specialty) for row in obj.specialty_rows)
    added = {jsonable(row.specialty) for row in hist.added}
    removed = {jsonable(row.specialty) for row in hist.deleted}
    old = sorted((set(new) - added) | removed)
    return {"specialties": [old, new]} if old != new else {}


def _diff(obj: Any) -> dict[str, list[Any]]:
    """Changed recorded fields of a dirty object: {field: [old, new]}."""
    state = inspect(obj)
    changes: dict[str, list[Any]] = {}
    silent = SILENT_UPDATES.get(type(obj), set())
    for attr in state.mapper.column_attrs:
        key = attr.key
        if key in NEVER_RECORDED and key != "password_hash":
            continue
        hist = state.attrs[key].history
        if not hist.has_changes():
            continue
        if key in silent:
            continue
        old = hist.deleted[0] if hist.deleted else None
        new = hist.added[0] if hist.added else None
        if old is NO_VALUE:
            old = None
        if key == "password_hash":
            changes["password"] = ["(hidden)", "(changed)"]
            continue
        if jsonable(old) != jsonable(new):
            changes[key] = [jsonable(old), jsonable(new)]
    if isinstance(obj, User):
        hist = state.attrs["roles"].history
        if hist.has_changes():
            new_roles = sorted(jsonable(r.name) for r in obj.roles)
            old_roles = sorted(
                set(new_roles) - {jsonable(r.name) for r in hist.added}
                | {jsonable(r.name) for r in hist.deleted}
            )
            if old_roles != new_roles:
                changes["roles"] = [old_roles, new_roles]
    changes.update(_collection_fields(obj, state))
    return changes


def _owner_id(obj: Any) -> Any:
    _entity, relation = CHILDREN[type(obj)]
    owner = getattr(obj, relation)
    if owner is not None and owner.id is not None:
        return owner.id
    return getattr(obj, f"{relation}_id")


def _parent(obj: Any) -> tuple[str | None, str | None]:
    # A report and its addenda are part of the study's record: its history shows them (their
    # entries carry the report's own version, not the study's).
    if isinstance(obj, Report):
        return "study", None if obj.study_id is None else str(obj.study_id)
    if isinstance(obj, ReportAddendum):
        report = obj.report
        return "study", None if report is None else str(report.study_id)
    if type(obj) in CHILDREN:
        owner_id = _owner_id(obj)
        return CHILDREN[type(obj)][0], None if owner_id is None else str(owner_id)
    return None, None


def _owner_of(session: Session, child: Any) -> Any:
    """The record a child row belongs (or belonged) to, without loading anything new."""
    entity, relation = CHILDREN[type(child)]
    owner = getattr(child, relation)
    if owner is not None:
        return owner
    owner_id = getattr(child, f"{relation}_id")
    if owner_id is None:
        return None
    return session.identity_map.get(session.identity_key(ENTITY_MODELS[entity], owner_id))


def _version_details(session: Session, obj: Any, extra: dict[str, Any] | None) -> dict | None:
    """An entry's details with the version the change produced: a child row's entry carries its
    owner's version (a doctor's phones are part of the doctor as a form edits it), and a child
    with a version of its own (a care-team link) that one too, as ``record_version``."""
    details = dict(extra or {})
    owner = _owner_of(session, obj) if type(obj) in CHILDREN else obj
    if isinstance(owner, VERSIONED) and owner.version is not None:
        details["version"] = owner.version
    if owner is not obj and isinstance(obj, VERSIONED) and obj.version is not None:
        details["record_version"] = obj.version
    return details or None


# --------------------------------------------------------------------------- the chain


def canonical(entry: dict[str, Any]) -> str:
    """The hashed content of an entry: every field but the id and the hashes, in one form."""
    content = {
        "at": entry["at"].isoformat() if isinstance(entry["at"], datetime) else entry["at"],
        "actor_id": entry.get("actor_id"),
        "actor_label": entry.get("actor_label"),
        "action": entry["action"],
        "entity": entry.get("entity"),
        "entity_id": entry.get("entity_id"),
        "parent_entity": entry.get("parent_entity"),
        "parent_id": entry.get("parent_id"),
        "changes": entry.get("changes"),
        "details": entry.get("details"),
        "ip": entry.get("ip"),
        "request_id": entry.get("request_id"),
        "batch_id": entry.get("batch_id"),
    }
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev_hash: str, entry: dict[str, Any]) -> str:
    return hashlib.sha256((prev_hash + "\n" + canonical(entry)).encode("utf-8")).hexdigest()


def _normalise_at(at: datetime) -> datetime:
    # Microseconds survive both backends; hashing the stored form keeps verify exact.
    from datetime import UTC

    return at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)


# The head is taken (a row lock on PostgreSQL, the write lock on SQLite) and its last hash read
# in one round trip: RETURNING gives the row after the update, whose last_hash is unchanged.
# The statements are built once; a save pays only for executing them.
_HEAD = AuditHead.__table__
_BUMP_HEAD = (
    update(_HEAD)
    .where(_HEAD.c.id == 1)
    .values(entries=_HEAD.c.entries + bindparam("added", type_=Integer))
)
_TAKE_HEAD = _BUMP_HEAD.returning(_HEAD.c.last_hash)
_READ_HEAD = select(_HEAD.c.last_hash).where(_HEAD.c.id == 1)
_MOVE_HEAD = update(_HEAD).where(_HEAD.c.id == 1).values(last_hash=bindparam("new_hash"))
_INSERT_ENTRIES = insert(AuditEntry.__table__)


def append_entries(connection: Any, entries: Sequence[dict[str, Any]]) -> int:
    """Insert prepared entries at the end of the chain, in the caller's transaction.

    Locks the head row first, so concurrent transactions chain one after the other; call it
    as late as possible in a long transaction (the importer calls it just before committing).
    """
    if not entries:
        return 0
    if connection.dialect.update_returning:
        prev = connection.execute(_TAKE_HEAD, {"added": len(entries)}).scalar_one()
    else:  # an SQLite older than 3.35
        connection.execute(_BUMP_HEAD, {"added": len(entries)})
        prev = connection.execute(_READ_HEAD).scalar_one()
    rows = []
    for entry in entries:
        row = dict(entry)
        row["at"] = _normalise_at(row.get("at") or utcnow())
        row["prev_hash"] = prev
        row["entry_hash"] = chain_hash(prev, row)
        prev = row["entry_hash"]
        rows.append(row)
    connection.execute(_INSERT_ENTRIES, rows)
    connection.execute(_MOVE_HEAD, {"new_hash": prev})
    return len(rows)


def make_entry(
    action: str,
    entity: str | None = None,
    entity_id: Any = None,
    *,
    changes: dict[str, Any] | None = None,
    details: dict[str, Any] | None = None,
    parent: tuple[str | None, str | None] = (None, None),
    batch_id: int | None = None,
    actor: Actor | None = None,
) -> dict[str, Any]:
    actor = actor or current_actor()
    return {
        "at": utcnow(),
        "actor_id": actor.user_id,
        "actor_label": actor.label,
        "action": action,
        "entity": entity,
        "entity_id": None if entity_id is None else str(entity_id),
        "parent_entity": parent[0],
        "parent_id": parent[1],
        "changes": jsonable(changes) if changes else None,
        "details": jsonable(details) if details else None,
        "ip": actor.ip,
        "request_id": actor.request_id,
        "batch_id": batch_id,
    }


def record_event(
    action: str,
    entity: str | None = None,
    entity_id: Any = None,
    *,
    details: dict[str, Any] | None = None,
    changes: dict[str, Any] | None = None,
    batch_id: int | None = None,
    session: Session | None = None,
) -> None:
    """Record a read, export, import or security event in the session's current transaction.

    The caller commits (or it is committed with the change it describes)."""
    session = session or db.session
    append_entries(
        session.connection(),
        [
            make_entry(
                action, entity, entity_id, details=details, changes=changes, batch_id=batch_id
            )
        ],
    )


# --------------------------------------------------------------------------- the ORM hook


def _action_override(session: Session) -> tuple[str | None, dict[str, Any] | None]:
    return session.info.get("audit_action"), session.info.get("audit_details")


@contextlib.contextmanager
def audit_as(
    action: str, details: dict[str, Any] | None = None, session: Session | None = None
) -> Iterator[None]:
    """Record the ORM changes made inside the block under another action (RESTORE, REVERT)."""
    session = session or db.session
    previous = session.info.get("audit_action"), session.info.get("audit_details")
    session.info["audit_action"], session.info["audit_details"] = action, details
    try:
        yield
    finally:
        session.info["audit_action"], session.info["audit_details"] = previous


def _collect(session: Session) -> list[dict[str, Any]]:
    override, extra = _action_override(session)
    batch_id = session.info.get("import_batch_id")
    entries: list[dict[str, Any]] = []
    actor = current_actor()
    for obj in session.new:
        entity = AUDITED.get(type(obj))
        if entity:
            entries.append(
                make_entry(
                    override or "CREATE",
                    entity,
                    obj.id,
                    changes={k: [None, v] for k, v in snapshot(obj).items()},
                    details=_version_details(session, obj, extra),
                    parent=_parent(obj),
                    batch_id=batch_id,
                    actor=actor,
                )
            )
    for obj in session.dirty:
        entity = AUDITED.get(type(obj))
        if not entity or not session.is_modified(obj, include_collections=True):
            continue
        changes = _diff(obj)
        if not changes:
            continue
        entries.append(
            make_entry(
                override or "UPDATE",
                entity,
                obj.id,
                changes=changes,
                details=_version_details(session, obj, extra),
                parent=_parent(obj),
                batch_id=batch_id,
                actor=actor,
            )
        )
    # Rows the flush deleted on its own (a phone removed from its doctor's list: delete-orphan)
    # are not in session.deleted; the mapper hook below remembered them.
    flushed = [o for o in session.info.pop(FLUSHED_DELETES, ()) if o not in session.deleted]
    for obj in list(session.deleted) + flushed:
        entity = AUDITED.get(type(obj))
        if entity:
            entries.append(
                make_entry(
                    override or "DELETE",
                    entity,
                    obj.id,
                    changes={k: [v, None] for k, v in snapshot(obj).items()},
                    details=(
                        _version_details(session, obj, extra)
                        if type(obj) in CHILDREN
                        else extra or None
                    ),
                    parent=_parent(obj),
                    batch_id=batch_id,
                    actor=actor,
                )
            )
    return entries


def _audit_enabled(session: Session) -> bool:
    # AUDIT_ENABLED (default True) exists for bench/bench_audit.py only, to measure what the
    # trail costs; no environment variable sets it and no deployment may turn it off.
    return not has_app_context() or current_app.config.get("AUDIT_ENABLED", True)


def _after_flush(session: Session, flush_context: Any) -> None:
    if not _audit_enabled(session):
        session.info.pop(FLUSHED_DELETES, None)
        return
    entries = _collect(session)
    if entries:
        append_entries(session.connection(), entries)


def _bump_owner_versions(session: Session) -> None:
    """A change to a doctor's phones (or specialties), or to a patient's phones or care team, is
    a change to the doctor or patient: it gets a new version.

    Without it, a save that touches only the phones leaves the version as it was, and a form
    opened before it would pass the conflict check and put the old phone rows back.
    """
    owners: list[Any] = []
    for obj in session.dirty:
        collections = OWNED_COLLECTIONS.get(type(obj), ())
        state = inspect(obj)
        if any(state.attrs[name].history.has_changes() for name in collections):
            owners.append(obj)
        elif type(obj) in CHILDREN and session.is_modified(obj):
            owners.append(_owner_of(session, obj))
    for obj in list(session.new) + list(session.deleted):
        if type(obj) in CHILDREN:
            owners.append(_owner_of(session, obj))
    for owner in owners:
        state = inspect(owner) if owner is not None else None
        if state is not None and state.persistent and owner not in session.deleted:
            owner.updated_at = utcnow()  # an UPDATE of the row, which bumps its version


FLUSHED_DELETES = "audit_flushed_deletes"


def _remember_delete(mapper: Any, connection: Any, target: Any) -> None:
    session = object_session(target)
    if session is not None:
        session.info.setdefault(FLUSHED_DELETES, []).append(target)


def _before_flush(session: Session, flush_context: Any, instances: Any) -> None:
    session.info[FLUSHED_DELETES] = []  # nothing left over from a flush that failed
    _bump_owner_versions(session)


def register_audit_hooks(session_cls: type[Session] | Any = Session) -> None:
    if not event.contains(session_cls, "before_flush", _before_flush):
        event.listen(session_cls, "before_flush", _before_flush)
    if not event.contains(session_cls, "after_flush", _after_flush):
        event.listen(session_cls, "after_flush", _after_flush)
    for model in AUDITED:
        if not event.contains(model, "after_delete", _remember_delete):
            event.listen(model, "after_delete", _remember_delete)


# --------------------------------------------------------------------------- reading it back


@dataclass
class ChainReport:
    ok: bool
    checked: int
    first_bad_id: int | None = None
    reason: str | None = None
    problems: list[str] = field(default_factory=list)


def verify_chain(bind: Any, batch_size: int = 5000) -> ChainReport:
    """Walk the chain in id order; report the first entry altered, removed or out of place.

    What is checked is one consistent state of the trail, while others keep appending to it:
    the head (how many entries, the last hash) is read first, and exactly that many entries are
    walked, the oldest first (an entry appended later has a larger id: ids are taken under the
    head's lock). From an engine the walk is also one snapshot (a read-only REPEATABLE READ
    transaction on PostgreSQL; SQLite's read transaction is one already). Reading the head last,
    in its own statement, saw entries the walk had not, and reported the end of the chain
    broken about once in four runs while people worked.
    """
    if isinstance(bind, Connection):
        return _walk_chain(bind, batch_size, snapshot=False)
    with bind.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
        with conn.begin():
            return _walk_chain(conn, batch_size, snapshot=True)


def _walk_chain(connection: Connection, batch_size: int, snapshot: bool) -> ChainReport:
    """The walk; in one ``snapshot`` an entry past the head was not appended by the app."""
    table = AuditEntry.__table__
    head = connection.execute(select(AuditHead.__table__)).mappings().first()
    recorded = head["entries"] if head is not None else None
    prev = GENESIS_HASH
    checked = 0
    last_id = 0
    while recorded is None or checked < recorded:
        size = batch_size if recorded is None else min(batch_size, recorded - checked)
        rows = (
            connection.execute(
                select(table).where(table.c.id > last_id).order_by(table.c.id).limit(size)
            )
            .mappings()
            .all()
        )
        if not rows:
            break
        for row in rows:
            entry = dict(row)
            entry["at"] = _normalise_at(entry["at"])
            if entry["prev_hash"] != prev:
                return ChainReport(
                    False,
                    checked,
                    entry["id"],
                    "does not follow the entry before it (an entry was removed or inserted)",
                )
            if chain_hash(prev, entry) != entry["entry_hash"]:
                return ChainReport(
                    False,
                    checked,
                    entry["id"],
                    "its content does not match its hash (it was altered)",
                )
            prev = entry["entry_hash"]
            checked += 1
            last_id = entry["id"]
    if head is not None and (head["last_hash"] != prev or recorded != checked):
        return ChainReport(
            False,
            checked,
            None,
            "the chain ends before its recorded head (entries were removed from the end)",
        )
    if snapshot and connection.execute(select(table.c.id).where(table.c.id > last_id)).first():
        after = connection.execute(select(func.min(table.c.id)).where(table.c.id > last_id))
        return ChainReport(
            False,
            checked,
            after.scalar(),
            "it comes after the recorded head (it was not appended by the application)",
        )
    return ChainReport(True, checked)


def history(entity: str, entity_id: Any, include_reads: bool, limit: int = 500) -> list[AuditEntry]:
    """Entries about a record (and its children, e.g. a doctor's phones), newest first."""
    key = str(entity_id)
    query = select(AuditEntry).where(
        ((AuditEntry.entity == entity) & (AuditEntry.entity_id == key))
        | ((AuditEntry.parent_entity == entity) & (AuditEntry.parent_id == key))
    )
    if not include_reads:
        query = query.where(AuditEntry.action.notin_(("VIEW", "EXPORT", "EXPORT_END")))
    return list(db.session.scalars(query.order_by(AuditEntry.id.desc()).limit(limit)))


def entries_since_version(entity: str, entity_id: Any, version: int) -> list[AuditEntry]:
    """Changes made to a record (and its children, a doctor's phones) after the version a user
    opened, oldest first."""
    key = str(entity_id)
    rows = db.session.scalars(
        select(AuditEntry)
        .where(
            (
                (AuditEntry.entity == entity)
                & (AuditEntry.entity_id == key)
                & AuditEntry.action.in_(
                    ("UPDATE", "TRANSITION", "REVERT", "RESTORE", "IMPORT_UPDATE")
                )
            )
            | (
                # children whose entries carry the owner's version (``CHILDREN``: phones, care
                # team links; a study's report has a version of its own)
                (AuditEntry.parent_entity == entity)
                & (AuditEntry.parent_id == key)
                & AuditEntry.entity.in_([AUDITED[model] for model in CHILDREN])
                & AuditEntry.action.in_(("CREATE", "UPDATE", "DELETE", "REVERT", "RESTORE"))
            )
        )
        .order_by(AuditEntry.id)
    ).all()

    def produced(e: AuditEntry) -> int:
        # An entry about the record itself carries its own version; a child row's entry about
        # its owner carries the owner's (a care-team link edited on its own page has both).
        details = e.details or {}
        if e.entity == entity and "record_version" in details:
            return details["record_version"]
        return details.get("version", 0)

    return [e for e in rows if produced(e) > version]


def iter_entries(entries: Iterable[AuditEntry]) -> Iterator[tuple[AuditEntry, list[tuple]]]:
    for e in entries:
        diff = [(k, v[0], v[1]) for k, v in sorted((e.changes or {}).items())]
        yield e, diff
