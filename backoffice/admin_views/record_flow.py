"""After a save, the user is back on the record, told in words which record was saved.

Flask-Admin flashes "Record was successfully created." and returns to the list. Every model
view here (through ``SecuredModelView``) instead lands on the saved record's page (or on the
record page the user came from, such as the patient chart they added a study from) with
"Saved Jose Villalobos (MRN 1)"; a deletion says "Deleted ..."; a refused save says what to do.
A create form can also be opened with a related record already chosen
(``/admin/study/new/?patient=42``: the chart's "add a study for this patient").
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import g, request, session
from flask_admin import expose
from flask_admin.babel import gettext as admin_gettext
from flask_admin.babel import ngettext as admin_ngettext
from flask_admin.contrib.sqla.fields import QuerySelectField
from flask_admin.model.fields import AjaxSelectField
from flask_babel import format_date

from backoffice.i18n import _


def record_label(model: Any) -> str:
    """How a record is named to a person: its ``__str__``, except where that shows codes."""
    from backoffice.models import Study

    if isinstance(model, Study):
        parts = [
            model.study_type.label if model.study_type is not None else "",
            (model.body_part or "").replace("_", " ").lower(),
            format_date(model.study_date, "medium") if model.study_date else "",
        ]
        text = " ".join(p for p in parts if p)
        return f"{text} · {model.patient}" if model.patient is not None else text
    return str(model)


def _record_page(target: str | None) -> str | None:
    """``target`` when it is a record page of this site (``.../details/?id=N``), else None."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/admin/"):
        return None
    return target if parts.path.endswith("/details/") else None


class RecordFlowMixin:
    """Saved-record messages, the way back to the record, and create forms pre-filled."""

    def record_label(self, model: Any) -> str:
        return record_label(model)

    # -- where a save leads -----------------------------------------------------------------
    def get_save_return_url(self, model: Any, is_created: bool = False) -> str:
        back = _record_page(request.args.get("url"))
        return back or self.get_url(".details_view", id=self.get_pk_value(model))  # type: ignore[attr-defined]

    def after_model_change(self, form: Any, model: Any, is_created: bool) -> None:
        super().after_model_change(form, model, is_created)  # type: ignore[misc]
        g.saved_record_label = self.record_label(model)

    def on_model_delete(self, model: Any) -> None:
        super().on_model_delete(model)  # type: ignore[misc]
        g.deleted_record_label = self.record_label(model)

    @expose("/new/", methods=("GET", "POST"))
    def create_view(self) -> Any:
        response = super().create_view()  # type: ignore[misc]
        self._reword_messages()
        return response

    @expose("/edit/", methods=("GET", "POST"))
    def edit_view(self) -> Any:
        response = super().edit_view()  # type: ignore[misc]
        self._reword_messages()
        return response

    @expose("/delete/", methods=("POST",))
    def delete_view(self) -> Any:
        response = super().delete_view()  # type: ignore[misc]
        self._reword_messages()
        return response

    def _reword_messages(self) -> None:
        """Replace Flask-Admin's generic messages, already flashed, with ones naming the record."""
        flashes = session.get("_flashes")
        if not flashes:
            return
        saved = g.get("saved_record_label")
        deleted = g.get("deleted_record_label")
        replacements = {
            admin_gettext("Record was successfully created."): (
                _("Saved %(record)s.", record=saved) if saved else None
            ),
            admin_gettext("Record was successfully saved."): (
                _("Saved %(record)s.", record=saved) if saved else None
            ),
            admin_ngettext(
                "Record was successfully deleted.",
                "%(count)s records were successfully deleted.",
                1,
                count=1,
            ): (_("Deleted %(record)s.", record=deleted) if deleted else None),
            admin_gettext("Failed to create record."): _(
                "Nothing was saved: correct the fields marked below and save again."
            ),
            admin_gettext("Failed to save record."): _(
                "Nothing was saved: correct the fields marked below and save again."
            ),
        }
        changed = False
        out = []
        for category, message in flashes:
            new = replacements.get(str(message))
            if new is not None:
                message, changed = new, True
            out.append((category, message))
        if changed:
            session["_flashes"] = out

    # -- create forms opened with a related record chosen -------------------------------------
    def create_form(self, obj: Any = None) -> Any:
        form = super().create_form(obj)  # type: ignore[misc]
        if request.method == "GET":
            self.prefill_relations(form)
        return form

    def prefill_relations(self, form: Any) -> None:
        """``?patient=42`` chooses patient 42 in a create form's "patient" box (ids only; an id
        that is not a record the box could offer is ignored)."""
        for name, raw in request.args.items():
            field = getattr(form, name, None)
            if field is None or not raw.isdigit() or name in ("url", "id"):
                continue
            if isinstance(field, AjaxSelectField):
                record = field.loader.get_one(int(raw))
            elif isinstance(field, QuerySelectField) and hasattr(field.query_factory(), "filter"):
                record = field.query_factory().filter_by(id=int(raw)).first()
            else:
                continue
            if record is not None:
                field.data = record
