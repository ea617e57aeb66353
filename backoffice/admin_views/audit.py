"""The audit log: read-only for everyone, admins only, with restore and revert from an entry."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import abort, flash, redirect, request
from flask_admin import expose
from flask_admin.contrib.sqla.filters import (
    DateTimeBetweenFilter,
    FilterEqual,
    FilterLike,
)
from flask_babel import to_utc
from markupsafe import Markup

from backoffice.admin_views.arguments import parse_record_id
from backoffice.admin_views.base import ReadOnlyModelView, _show
from backoffice.auth.permissions import Perm, can
from backoffice.extensions import db
from backoffice.i18n import _, _l
from backoffice.models import AuditEntry
from backoffice.services.audit import AUDITED

AUDIT = Perm.AUDIT


def _changes(view: Any, context: Any, model: AuditEntry, name: str) -> Markup:
    if not model.changes:
        return Markup("")
    return Markup('<ul class="list-unstyled mb-0">{}</ul>').format(
        Markup("").join(
            Markup("<li><code>{}</code>: {} &rarr; {}</li>").format(k, _show(v[0]), _show(v[1]))
            for k, v in sorted(model.changes.items())
        )
    )


def _details(view: Any, context: Any, model: AuditEntry, name: str) -> Markup:
    if not model.details:
        return Markup("")
    return Markup("<small>{}</small>").format(
        ", ".join(f"{k}={v}" for k, v in sorted(model.details.items()))
    )


class LocalDateTimeBetweenFilter(DateTimeBetweenFilter):
    """Times typed in the user's time zone, the one the list shows them in (stored in UTC)."""

    def clean(self, value: str) -> list[datetime]:
        return [to_utc(moment) for moment in super().clean(value)]


ACTIONS = (
    "CREATE",
    "UPDATE",
    "DELETE",
    "RESTORE",
    "REVERT",
    "TRANSITION",
    "SIGN",
    "SCOPE_LIFTED",
    "VIEW",
    "EXPORT",
    "EXPORT_END",
    "IMPORT",
    "LOGIN",
    "LOGOUT",
    "LOGIN_FAILED",
    "LOGIN_REFUSED_LOCKED",
    "ACCOUNT_LOCKED",
    "SESSION_EXPIRED",
)


class AuditLogView(ReadOnlyModelView):
    """Entries can be read and filtered; no endpoint creates, edits or deletes one."""

    endpoint_permissions = {
        **ReadOnlyModelView.endpoint_permissions,
        "restore_view": AUDIT,
        "revert_view": AUDIT,
    }
    audit_entity = "audit_log"
    details_template = "admin/audit/details.html"

    column_list = ("at", "actor_label", "action", "entity", "entity_id", "changes", "details", "ip")
    column_details_list = (
        "id",
        "at",
        "actor_id",
        "actor_label",
        "action",
        "entity",
        "entity_id",
        "parent_entity",
        "parent_id",
        "changes",
        "details",
        "ip",
        "request_id",
        "batch_id",
        "prev_hash",
        "entry_hash",
    )
    column_default_sort = ("id", True)
    column_sortable_list = ("at", "action", "entity")
    column_searchable_list = ("actor_label", "entity_id", "request_id")
    column_filters = (
        FilterEqual(AuditEntry.actor_id, _l("User id")),
        FilterLike(AuditEntry.actor_label, _l("User")),
        FilterEqual(
            AuditEntry.entity,
            _l("Entity"),
            # every audited entity (phones and care-team links included), from the one list
            options=[(e, e) for e in sorted(AUDITED.values())],
        ),
        FilterEqual(AuditEntry.entity_id, _l("Record id")),
        FilterEqual(AuditEntry.action, _l("Action"), options=[(a, a) for a in ACTIONS]),
        LocalDateTimeBetweenFilter(AuditEntry.at, _l("When")),
    )
    column_labels = {
        "at": _l("When"),
        "actor_id": _l("User id"),
        "actor_label": _l("Who"),
        "action": _l("Action"),
        "entity": _l("Entity"),
        "entity_id": _l("Record"),
        "parent_entity": _l("Parent entity"),
        "parent_id": _l("Parent record"),
        "changes": _l("Changes"),
        "details": _l("Details"),
        "ip": _l("Address"),
        "request_id": _l("Request id"),
        "batch_id": _l("Import batch"),
        "prev_hash": _l("Previous hash"),
        "entry_hash": _l("Hash"),
    }
    column_formatters = {"changes": _changes, "details": _details}
    column_formatters_detail = column_formatters
    can_set_page_size = True

    def _undo(self, kind: str) -> Any:
        from backoffice.services.restore import RestoreError, restore_deleted, revert_update

        entry_id = parse_record_id(AuditEntry, request.form.get("entry_id", ""))
        if entry_id is None:
            abort(400)
        try:
            obj = restore_deleted(entry_id) if kind == "restore" else revert_update(entry_id)
            db.session.commit()
        except RestoreError as exc:
            db.session.rollback()
            flash(str(exc), "error")
            return redirect(self.get_url(".details_view", id=entry_id))
        if kind == "restore":
            flash(_("Restored: %(record)s.", record=str(obj)), "success")
        else:
            flash(_("Reverted: %(record)s.", record=str(obj)), "success")
        return redirect(self.get_url(".details_view", id=entry_id))

    @expose("/restore/", methods=("POST",))
    def restore_view(self) -> Any:
        return self._undo("restore")

    @expose("/revert/", methods=("POST",))
    def revert_view(self) -> Any:
        return self._undo("revert")

    def is_visible(self) -> bool:
        return can(AUDIT)
