"""Undo from the audit trail: restore a deleted record (a doctor with its phones and specialties,
a patient with their phones and care team) or revert one update. Both are audited themselves and
refused, with a reason, when they cannot apply cleanly."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import Date, DateTime, inspect, select
from sqlalchemy.exc import IntegrityError

from backoffice.extensions import db
from backoffice.i18n import _
from backoffice.models import (
    AuditEntry,
    CareTeamMember,
    Clinic,
    Doctor,
    DoctorPhone,
    Patient,
    PatientPhone,
    User,
    clinic_holding_name,
)
from backoffice.services.audit import ENTITY_MODELS, audit_as, jsonable


class RestoreError(Exception):
    """The restore or revert cannot be applied; the message says why."""


# The rows deleted with a record that come back with it: (entity, model, owner collection).
RESTORED_CHILDREN: dict[type, tuple[tuple[str, type, str], ...]] = {
    Doctor: (("doctor_phone", DoctorPhone, "phones"),),
    Patient: (
        ("patient_phone", PatientPhone, "phones"),
        ("care_team_member", CareTeamMember, "care_team"),
    ),
}


def _column_value(model: type, key: str, value: Any) -> Any:
    """Turn a recorded JSON value back into the column's Python value."""
    if value is None:
        return None
    column = inspect(model).columns.get(key)
    if column is None:
        return value
    sql_type = getattr(column.type, "impl", column.type)  # UTCDateTime is a TypeDecorator
    if isinstance(sql_type, DateTime) and isinstance(value, str):
        return datetime.fromisoformat(value)
    if isinstance(sql_type, Date) and isinstance(value, str):
        return date.fromisoformat(value)
    return value


def _unique_conflict(model: type, values: dict[str, Any], exclude_id: Any = None) -> str | None:
    """Name the first unique field whose value another row already holds (a clinic's name
    whatever its case or accents)."""
    if model is Clinic and clinic_holding_name(values.get("name"), exclude_id) is not None:
        return "name"
    for column in inspect(model).columns:
        if not column.unique or column.key not in values or values[column.key] is None:
            continue
        query = select(model.id).where(column == values[column.key])
        if exclude_id is not None:
            query = query.where(model.id != exclude_id)
        if db.session.scalar(query) is not None:
            return column.key
    return None


def _missing_reference(model: type, values: dict[str, Any]) -> str | None:
    """Name the first record the values point to that no longer exists ("clinic #3")."""
    for column in inspect(model).columns:
        if not column.foreign_keys or values.get(column.key) is None:
            continue
        target = next(iter(column.foreign_keys)).column
        found = db.session.execute(select(target).where(target == values[column.key])).first()
        if found is None:
            return f"{target.table.name} #{values[column.key]}"
    return None


def _load_entry(entry_id: int, action: str) -> AuditEntry:
    entry = db.session.get(AuditEntry, entry_id)
    if entry is None or entry.action != action or entry.entity not in ENTITY_MODELS:
        raise RestoreError(_("This entry cannot be used for that."))
    return entry


def restore_deleted(entry_id: int) -> Any:
    """Recreate a deleted record with its id and recorded values (and a doctor's phones)."""
    entry = _load_entry(entry_id, "DELETE")
    model = ENTITY_MODELS[entry.entity]
    if model is User:
        raise RestoreError(_("Users are deactivated, not deleted: there is nothing to restore."))
    if entry.entity == "doctor_phone":
        raise RestoreError(_("Restore the doctor this phone belonged to instead."))
    if entry.entity == "patient_phone":
        raise RestoreError(_("Restore the patient this phone belonged to instead."))
    if db.session.get(model, int(entry.entity_id)) is not None:
        raise RestoreError(_("This record exists again: there is nothing to restore."))
    values = {
        k: _column_value(model, k, v[0])
        for k, v in (entry.changes or {}).items()
        if k in inspect(model).columns
    }
    values.pop("import_batch_id", None)
    clash = _unique_conflict(model, values)
    if clash:
        raise RestoreError(
            _(
                "It cannot be restored: another record already has the same %(field)s.",
                field=clash,
            )
        )
    missing = _missing_reference(model, values)
    if missing:
        raise RestoreError(
            _(
                "It cannot be restored: %(record)s, which it belongs to, no longer exists. "
                "Restore that first.",
                record=missing,
            )
        )
    obj = model(id=int(entry.entity_id), **values)
    if model is Doctor and (entry.changes or {}).get("specialties"):
        obj.specialties = entry.changes["specialties"][0] or []
    for child_entity, child_model, collection in RESTORED_CHILDREN.get(model, ()):
        child_entries = db.session.scalars(
            select(AuditEntry)
            .where(
                AuditEntry.entity == child_entity,
                AuditEntry.action == "DELETE",
                AuditEntry.parent_entity == entry.entity,
                AuditEntry.parent_id == entry.entity_id,
                AuditEntry.request_id == entry.request_id,
            )
            .order_by(AuditEntry.id)
        ).all()
        owner_key = f"{entry.entity}_id"
        for child in child_entries:
            recorded = {
                k: _column_value(child_model, k, v[0])
                for k, v in (child.changes or {}).items()
                if k in inspect(child_model).columns and k not in (owner_key, "import_batch_id")
            }
            if _missing_reference(child_model, recorded):
                continue  # a care-team doctor deleted since: the link cannot come back
            getattr(obj, collection).append(child_model(**recorded))
    with audit_as("RESTORE", {"restored_from_entry": entry.id}):
        db.session.add(obj)
        try:
            db.session.flush()
        except IntegrityError:
            db.session.rollback()
            raise RestoreError(
                _("It cannot be restored: it conflicts with a record that exists now.")
            ) from None
    return obj


# A study's life moves by its steps (backoffice/services/workflow), each checked and recorded:
# an update that changed one of these is not undone by writing the old values back.
WORKFLOW_FIELDS = frozenset(
    {
        "status",
        "ordered_at",
        "scheduled_for",
        "arrived_at",
        "started_at",
        "performed_at",
        "reported_at",
        "cancelled_at",
        "cancel_reason",
        "no_show_at",
    }
)


def _refuse_workflow_revert(obj: Any, changes: dict[str, Any]) -> None:
    from backoffice.models import Report, Study, StudyStatus

    if isinstance(obj, Study) and WORKFLOW_FIELDS & set(changes):
        raise RestoreError(
            _("A change of the study's status is undone by its steps, not by a revert.")
        )
    if isinstance(obj, Study) and obj.status == StudyStatus.REPORTED:
        raise RestoreError(
            _("The study is reported: it cannot be changed (an administrator can reopen it).")
        )
    if isinstance(obj, Report) and obj.is_signed:
        raise RestoreError(_("A signed report cannot be changed; corrections are addenda."))


def revert_update(entry_id: int) -> Any:
    """Put back the old values of one update, if the fields still hold what it wrote."""
    entry = _load_entry(entry_id, "UPDATE")
    model = ENTITY_MODELS[entry.entity]
    obj = db.session.get(model, int(entry.entity_id))
    if obj is None:
        raise RestoreError(_("The record no longer exists: restore it first."))
    changes = entry.changes or {}
    if "password" in changes:
        raise RestoreError(_("A password change cannot be reverted; set a new password."))
    if "roles" in changes or model is User:
        raise RestoreError(_("Change the user's roles and status in the Users page."))
    _refuse_workflow_revert(obj, changes)
    columns = inspect(model).columns
    changed_since = [
        k for k, (_old, new) in changes.items() if k in columns and jsonable(getattr(obj, k)) != new
    ]
    if changed_since:
        raise RestoreError(
            _(
                "It cannot be reverted: %(fields)s changed again since this entry.",
                fields=", ".join(sorted(changed_since)),
            )
        )
    old_values = {k: _column_value(model, k, v[0]) for k, v in changes.items() if k in columns}
    clash = _unique_conflict(model, old_values, exclude_id=obj.id)
    if clash:
        raise RestoreError(
            _(
                "It cannot be reverted: another record now has the same %(field)s.",
                field=clash,
            )
        )
    missing = _missing_reference(model, old_values)
    if missing:
        raise RestoreError(
            _(
                "It cannot be reverted: %(record)s, which it pointed to, no longer exists.",
                record=missing,
            )
        )
    with audit_as("REVERT", {"reverts_entry": entry.id}):
        for key, value in old_values.items():
            setattr(obj, key, value)
        try:
            db.session.flush()
        except IntegrityError:
            db.session.rollback()
            message = _("It cannot be reverted: it conflicts with current data.")
            raise RestoreError(message) from None
    return obj
