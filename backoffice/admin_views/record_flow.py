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

from flask import flash, g, has_request_context, request, session
from flask_admin.babel import gettext as admin_gettext
from flask_admin.babel import ngettext as admin_ngettext
from flask_admin.contrib.sqla.fields import QuerySelectField
from flask_admin.model.fields import AjaxSelectField
from flask_babel import format_date

from backoffice.i18n import _


def record_label(model: Any) -> str:
    """How a record is named to a person: its ``__str__``, except where that shows codes."""
    from backoffice.models import Study, User

    if isinstance(model, User):
        return f"{model.display_name} ({model.email})"
    if isinstance(model, Study):
        what = " ".join(
            part
            for part in (
                model.study_type.label if model.study_type is not None else "",
                (model.body_part or "").replace("_", " ").lower(),
            )
            if part
        )
        when = format_date(model.study_date, "medium") if model.study_date else ""
        text = " · ".join(part for part in (what, when) if part)
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


def _replacements() -> dict[str, str | None]:
    saved = g.get("saved_record_label")
    deleted = g.get("deleted_record_label")
    refused = _("Nothing was saved: correct the fields marked below and save again.")
    return {
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
        admin_gettext("Failed to create record."): refused,
        admin_gettext("Failed to save record."): refused,
    }


def reword_admin_message(sender: Any, message: str, category: str, **extra: Any) -> None:
    """``message_flashed`` receiver: Flask-Admin's generic message, just flashed, becomes one
    that names the record (the labels were noted by the view's hooks before the flash)."""
    if not has_request_context():
        return
    new = _replacements().get(str(message))
    flashes = session.get("_flashes")
    if new is None or not flashes or flashes[-1] != (category, message):
        return
    session["_flashes"] = [*flashes[:-1], (category, new)]


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
                # What the person filling the form must know about it (a patient's allergies).
                for alert in getattr(record, "form_alerts", list)():
                    flash(alert, "warning")
