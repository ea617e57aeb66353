"""Import batches, for admins: who imported which file, when, and what it did. Read-only."""

from __future__ import annotations

from flask_admin.contrib.sqla.filters import DateTimeBetweenFilter, FilterEqual, FilterLike

from backoffice.admin_views.base import ReadOnlyModelView
from backoffice.auth.permissions import Perm, can
from backoffice.i18n import _l
from backoffice.models import ImportBatch
from backoffice.services.imports import KINDS

AUDIT = Perm.AUDIT


class ImportBatchView(ReadOnlyModelView):
    """Batches are written by the importer only; no endpoint creates, edits or deletes one."""

    column_list = (
        "created_at",
        "actor_label",
        "kind",
        "file_name",
        "status",
        "mode",
        "rows_total",
        "rows_created",
        "rows_updated",
        "rows_unchanged",
        "rows_rejected",
    )
    column_details_list = (
        "id",
        "created_at",
        "finished_at",
        "user_id",
        "actor_label",
        "kind",
        "file_name",
        "file_size",
        "file_sha256",
        "status",
        "mode",
        "rows_total",
        "rows_created",
        "rows_updated",
        "rows_unchanged",
        "rows_rejected",
        "message",
    )
    column_default_sort = ("id", True)
    column_sortable_list = ("created_at", "kind", "status", "rows_total")
    column_searchable_list = ("file_name", "file_sha256", "actor_label")
    column_filters = (
        FilterEqual(
            ImportBatch.kind,
            _l("Kind"),
            options=[(k, k) for k in KINDS],
        ),
        FilterEqual(
            ImportBatch.status,
            _l("Outcome"),
            options=[(s, s) for s in ("committed", "rejected", "refused", "changed", "failed")],
        ),
        FilterLike(ImportBatch.actor_label, _l("User")),
        DateTimeBetweenFilter(ImportBatch.created_at, _l("When")),
    )
    column_labels = {
        "created_at": _l("When"),
        "finished_at": _l("Finished"),
        "user_id": _l("User id"),
        "actor_label": _l("Who"),
        "kind": _l("Kind"),
        "file_name": _l("File"),
        "file_size": _l("Bytes"),
        "file_sha256": _l("SHA-256"),
        "status": _l("Outcome"),
        "mode": _l("Mode"),
        "rows_total": _l("Rows"),
        "rows_created": _l("Created"),
        "rows_updated": _l("Updated"),
        "rows_unchanged": _l("Unchanged"),
        "rows_rejected": _l("Rejected"),
        "message": _l("Message"),
    }

    def is_visible(self) -> bool:
        return can(AUDIT)
