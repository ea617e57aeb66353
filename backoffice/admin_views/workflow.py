"""A study's moves in the admin: the buttons of its page and the bulk actions of the studies list.

Both call the workflow service (backoffice/services/workflow) as the commands and the importer
do. A button posts the version of the study the user saw, the bulk actions the version of each
row of the list: a study changed since is refused as a stale edit is. The buttons are a macro
(``admin/workflow/_moves.html``) that any page listing studies can show.
"""

from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, request
from flask_admin import expose
from flask_admin.actions import action
from flask_login import current_user
from sqlalchemy import select

from backoffice.auth.permissions import Perm, can
from backoffice.extensions import db
from backoffice.i18n import _, _l
from backoffice.models import Study
from backoffice.security import is_same_site_path
from backoffice.services.workflow import (
    BULK,
    BY_CODE,
    NotPermitted,
    WorkflowError,
    available_to,
    bulk_move,
    make_move,
    parse_local_time,
)
from backoffice.validation import whole_number

# Who may reach the move endpoints at all; each move checks its own permission as well.
MOVE_PERMISSIONS = tuple(dict.fromkeys(t.permission for t in BY_CODE.values() if not t.by_report))
WORKFLOW_ENDPOINTS: dict[str, Perm | tuple[Perm, ...]] = {
    "transition_view": tuple(p for p in MOVE_PERMISSIONS if p is not Perm.ORDER),
    "bulk_move_view": tuple(dict.fromkeys(t.permission for t in BULK)),
}


def parse_versions(raw: str | None) -> dict[int, int]:
    """``"12:3,13:1"`` (each row's id and version, as the list rendered them) as a dict."""
    versions: dict[int, int] = {}
    for part in (raw or "").split(","):
        study_id, _sep, version = part.strip().partition(":")
        key, number = whole_number(study_id), whole_number(version)
        if key is not None and number is not None:
            versions[key] = number
    return versions


class StudyWorkflowMixin:
    """The endpoints and bulk actions that move studies (mixed into ``StudyView``)."""

    action_permissions = {"delete": Perm.DELETE, **{t.code: t.permission for t in BULK}}

    def get_actions_list(self) -> tuple[list[Any], dict[Any, Any]]:
        """The bulk actions in the order of a study's life, deleting last."""
        actions, confirmations = super().get_actions_list()  # type: ignore[misc]
        order = [t.code for t in BULK] + ["delete"]
        actions.sort(key=lambda a: order.index(a[0]) if a[0] in order else len(order))
        return actions, confirmations

    # -- what the study's page shows ---------------------------------------------------------
    def moves_for(self, study: Study) -> list[Any]:
        """The moves the current user may make on ``study`` now (the buttons)."""
        return available_to(current_user, study.status)

    @staticmethod
    def row_versions(rows: list[Study]) -> str:
        """The id and version of each row of a list page, for the bulk actions' form."""
        return ",".join(f"{row.id}:{row.version}" for row in rows)

    def _back_url(self) -> str:
        """Where a bulk move's pages lead back: the list the user came from, if it is ours."""
        target = request.form.get("url", "") or request.form.get("next", "")
        return target if is_same_site_path(target) else self.get_url(".index_view")  # type: ignore[attr-defined]

    def _back(self, study_id: int | None = None) -> Any:
        target = request.form.get("next", "")
        if is_same_site_path(target):
            return redirect(target)
        if study_id is not None:
            return redirect(self.get_url(".details_view", id=study_id))  # type: ignore[attr-defined]
        return redirect(self.get_url(".index_view"))  # type: ignore[attr-defined]

    # -- one study: a button of its page ---------------------------------------------------
    @expose("/transition/", methods=("POST",))
    def transition_view(self) -> Any:
        raw_id = request.form.get("id", "")
        move = BY_CODE.get(request.form.get("transition", ""))
        raw_version = request.form.get("version", "")
        if whole_number(raw_id) is None or move is None or whole_number(raw_version) is None:
            abort(400)
        if not can(move.permission) or move.by_report:
            abort(403)
        study = self.get_one(raw_id)  # type: ignore[attr-defined]  # 404 out of reach
        try:
            scheduled_for = parse_local_time(request.form.get("scheduled_for"))
            make_move(
                study,
                move.code,
                user=current_user,
                expected_version=int(raw_version),
                reason=request.form.get("reason"),
                scheduled_for=scheduled_for,
            )
            db.session.commit()
        except NotPermitted:
            db.session.rollback()
            abort(403)
        except WorkflowError as exc:
            db.session.rollback()
            flash(exc.message, "error")
            return self._back(int(raw_id))
        flash(_("%(study)s: %(status)s.", study=str(study), status=study.status.label), "success")
        return self._back(study.id)

    # -- several studies: the bulk actions of the list -------------------------------------
    def _bulk(self, code: str, ids: list[str]) -> Any:
        move = BY_CODE[code]
        versions = parse_versions(request.form.get("row_versions"))
        if move.needs_reason or move.needs_time:
            studies = self._selected(ids)
            return self.render(  # type: ignore[attr-defined]
                "admin/study/bulk_move.html",
                move=move,
                studies=studies,
                versions=",".join(f"{s.id}:{versions[s.id]}" for s in studies if s.id in versions),
                back_url=self._back_url(),
            )
        return self._run_bulk(code, ids, versions)

    def _selected(self, ids: list[str]) -> list[Study]:
        wanted = [n for i in ids if (n := whole_number(i)) is not None]
        query = select(Study).where(Study.id.in_(wanted)).order_by(Study.id)
        return list(db.session.scalars(query))

    def _run_bulk(self, code: str, ids: list[str], versions: dict[int, int], **inputs: Any) -> Any:
        move = BY_CODE[code]
        try:
            outcomes = bulk_move(ids, code, user=current_user, versions=versions, **inputs)
            db.session.commit()
        except NotPermitted:
            db.session.rollback()
            abort(403)
        except WorkflowError as exc:
            db.session.rollback()
            flash(exc.message, "error")
            return self._back()
        done = sum(1 for o in outcomes if o.done)
        return self.render(  # type: ignore[attr-defined]
            "admin/study/bulk_result.html",
            move=move,
            outcomes=outcomes,
            done=done,
            back_url=self._back_url(),
        )

    @expose("/bulk/", methods=("POST",))
    def bulk_move_view(self) -> Any:
        """The second step of a bulk move that asks for something (a reason, a time)."""
        move = BY_CODE.get(request.form.get("transition", ""))
        if move is None or not move.bulk:
            abort(400)
        if not can(move.permission):
            abort(403)
        ids = request.form.getlist("rowid")
        versions = parse_versions(request.form.get("row_versions"))
        try:
            scheduled_for = parse_local_time(request.form.get("scheduled_for"))
        except WorkflowError as exc:
            flash(exc.message, "error")
            return self._back()
        return self._run_bulk(
            move.code,
            ids,
            versions,
            reason=request.form.get("reason"),
            scheduled_for=scheduled_for,
        )

    @action("schedule", _l("Schedule the studies…"))
    def action_schedule(self, ids: list[str]) -> Any:
        return self._bulk("schedule", ids)

    @action("check_in", _l("Check in"), _l("Check in the selected studies?"))
    def action_check_in(self, ids: list[str]) -> Any:
        return self._bulk("check_in", ids)

    @action("start", _l("Start"), _l("Start the selected studies?"))
    def action_start(self, ids: list[str]) -> Any:
        return self._bulk("start", ids)

    @action("complete", _l("Complete"), _l("Mark the selected studies as performed?"))
    def action_complete(self, ids: list[str]) -> Any:
        return self._bulk("complete", ids)

    @action("no_show", _l("Mark as no-show"), _l("Mark the selected studies as no-show?"))
    def action_no_show(self, ids: list[str]) -> Any:
        return self._bulk("no_show", ids)

    @action("cancel", _l("Cancel the studies…"))
    def action_cancel(self, ids: list[str]) -> Any:
        return self._bulk("cancel", ids)
