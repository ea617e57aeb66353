"""Bulk upload page: choose a kind, upload a CSV file, read the preview, confirm, see the result."""

from __future__ import annotations

import csv
import io
from typing import Any

from flask import Response, abort, flash, jsonify, redirect, request, send_file, url_for
from flask_admin import expose
from flask_babel import get_locale
from flask_login import current_user

from backoffice.admin_views.base import SecuredBaseView
from backoffice.auth.permissions import Perm, can
from backoffice.i18n import _, _l
from backoffice.services import imports
from backoffice.services.audit import request_id
from backoffice.services.imports import KINDS, import_settings, template_rows

UPLOAD = Perm.UPLOAD
PHASES = {
    "queued": _l("Waiting for a worker"),
    "running": _l("Starting"),
    "reading": _l("Reading and checking the rows"),
    "checking": _l("Comparing with the records already stored"),
    "writing": _l("Writing"),
    "auditing": _l("Recording the changes in the audit trail"),
    "done": _l("Done"),
    "failed": _l("Failed"),
}
ACTIVE = ("queued", "running")
# An upload's state, as the list of recent uploads shows it.
STATES = {
    "uploaded": _l("Uploaded"),
    "queued": _l("Waiting"),
    "running": _l("In progress"),
    "previewed": _l("Previewed, not imported yet"),
    "rejected": _l("Rows rejected"),
    "refused": _l("File refused"),
    "failed": _l("Failed"),
    "committed": _l("Imported"),
}


class BulkUploadView(SecuredBaseView):
    """Every step is for the roles that may upload (admins and operators)."""

    endpoint_permissions = {
        "index": UPLOAD,
        "upload": UPLOAD,
        "status": UPLOAD,
        "confirm": UPLOAD,
        "discard": UPLOAD,
        "progress": UPLOAD,
        "rejected": UPLOAD,
        "template": UPLOAD,
    }
    menu_permission = UPLOAD

    def is_visible(self) -> bool:
        return can(UPLOAD)

    def _upload_or_404(self, token: str) -> imports.Upload:
        upload = imports.get_upload(current_user.id, token)
        if upload is None:
            abort(404)
        return upload

    @expose("/")
    def index(self) -> Any:
        return self.render(
            "admin/bulk_upload/index.html",
            kinds=KINDS,
            token=imports.new_token(),
            uploads=imports.list_uploads(current_user.id)[:10],
            settings=import_settings(),
            queued=imports.queue_configured(),
            states=STATES,
        )

    @expose("/upload", methods=("POST",))
    def upload(self) -> Any:
        kind = request.form.get("kind", "")
        file = request.files.get("file")
        if kind not in KINDS:
            flash(_("Choose what the file holds."), "error")
            return redirect(url_for(".index"))
        if file is None or not file.filename:
            flash(_("Choose a CSV file to upload."), "error")
            return redirect(url_for(".index"))
        upload = imports.save_upload(
            current_user.id, file.stream, file.filename, kind, request.form.get("token")
        )
        imports.start(upload, "preview", _actor())
        return redirect(url_for(".status", token=upload.token))

    @expose("/<token>/")
    def status(self, token: str) -> Any:
        upload = self._upload_or_404(token)
        report = upload.report
        return self.render(
            "admin/bulk_upload/status.html",
            upload=upload,
            report=report,
            kind=KINDS[upload.meta["kind"]],
            active=upload.state in ACTIVE,
            can_confirm=upload.state in ("previewed", "rejected") and upload.file.exists(),
            phases=PHASES,
            can_see_batches=can(Perm.AUDIT),
        )

    @expose("/<token>/confirm", methods=("POST",))
    def confirm(self, token: str) -> Any:
        upload = self._upload_or_404(token)
        if upload.state not in ("previewed", "rejected") or not upload.file.exists():
            flash(_("This file cannot be imported now: see its state below."), "error")
            return redirect(url_for(".status", token=token))
        skip = request.form.get("skip_invalid") in ("1", "y", "on", "true")
        imports.start(upload, "commit", _actor(), skip_invalid=skip)
        return redirect(url_for(".status", token=token))

    @expose("/<token>/discard", methods=("POST",))
    def discard(self, token: str) -> Any:
        upload = self._upload_or_404(token)
        if upload.state in ACTIVE:
            flash(_("The file is being processed; it can be removed when the job ends."), "error")
            return redirect(url_for(".status", token=token))
        imports.remove_upload(upload)
        flash(_("The uploaded file was removed."), "success")
        return redirect(url_for(".index"))

    @expose("/<token>/progress")
    def progress(self, token: str) -> Any:
        upload = imports.get_upload(current_user.id, token)
        if upload is None:
            # The upload may still be on its way (the page asks while it sends the file).
            return jsonify(state="uploading", percent=None, label=str(_("Uploading")))
        info = upload.progress()
        phase = info.get("phase") or upload.state
        done, total = info.get("done") or 0, info.get("total") or 0
        percent = round(100 * done / total) if total else None
        return jsonify(
            state=upload.state,
            phase=phase,
            done=done,
            total=total,
            percent=percent,
            label=str(PHASES.get(phase, phase)),
            url=url_for(".status", token=token),
        )

    @expose("/<token>/rejected.csv")
    def rejected(self, token: str) -> Any:
        upload = self._upload_or_404(token)
        path = upload.rejected_file
        if not path.is_file():
            abort(404)
        name = upload.meta["file_name"].rsplit(".", 1)[0] + "-rejected.csv"
        return send_file(path, mimetype="text/csv", as_attachment=True, download_name=_safe(name))

    @expose("/template/<kind>.csv")
    def template(self, kind: str) -> Any:
        if kind not in KINDS:
            abort(404)
        buf = io.StringIO()
        buf.write("\ufeff")  # Excel reads UTF-8 with a BOM
        csv.writer(buf).writerows(template_rows(KINDS[kind]))
        return Response(
            buf.getvalue(),
            mimetype="text/csv",
            headers={"Content-Disposition": _attachment(f"{kind}-template.csv")},
        )


def _safe(name: str) -> str:
    return "".join(c for c in name if c.isalnum() or c in "-_.") or "file.csv"


def _attachment(name: str) -> str:
    return f'attachment; filename="{_safe(name)}"'


def _actor() -> dict[str, Any]:
    return {
        "user_id": current_user.id,
        "label": current_user.email,
        "ip": request.remote_addr,
        "request_id": request_id(),
        "locale": str(get_locale() or "en"),  # the report's language, also in a worker
    }
