"""Secured base views: every admin page inherits its access rule and error handling from here.

A view declares which permission each of its endpoints needs (``endpoint_permissions``);
an endpoint it does not declare is for admins only, so a forgotten declaration closes a page
instead of opening it.
"""

from __future__ import annotations

import logging
import traceback
from datetime import date, datetime
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask_admin import BaseView, expose
from flask_admin.contrib.sqla import ModelView
from flask_admin.contrib.sqla.ajax import QueryAjaxModelLoader
from flask_admin.contrib.sqla.typefmt import DEFAULT_FORMATTERS
from flask_babel import format_date, format_datetime
from flask_login import current_user
from flask_wtf import FlaskForm
from markupsafe import Markup
from sqlalchemy import or_
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm.exc import StaleDataError
from wtforms import HiddenField

from backoffice.admin_views.arguments import bounded_page, filter_value_usable, parse_record_id
from backoffice.admin_views.export import ExportMixin
from backoffice.admin_views.fields import (
    BackofficeModelConverter,
    SearchAjaxLoader,
    SearchingInlineConverter,
)
from backoffice.admin_views.record_flow import RecordFlowMixin
from backoffice.auth.permissions import Perm, can
from backoffice.database import is_timeout, is_unavailable
from backoffice.extensions import db
from backoffice.i18n import _
from backoffice.models import DeletionRefused, LabeledEnum
from backoffice.security import forget_unsafe_return_address
from backoffice.services.search import bounded_search, word_matches
from backoffice.services.users import UserError
from backoffice.validation import RuleError, whole_number

log = logging.getLogger("backoffice.admin")

# What each Flask-Admin model endpoint needs. ``action_view`` is checked per action.
MODEL_ENDPOINT_PERMISSIONS: dict[str, Perm | tuple[Perm, ...]] = {
    "index_view": Perm.VIEW,
    "details_view": Perm.VIEW,
    "create_view": Perm.CREATE,
    "edit_view": Perm.EDIT,
    "delete_view": Perm.DELETE,
    "ajax_lookup": (Perm.CREATE, Perm.EDIT),
    "ajax_update": Perm.EDIT,
    "export": Perm.EXPORT,
    "history_view": Perm.VIEW,
}


class SecureForm(FlaskForm):
    """Base of every admin form: Flask-WTF's CSRF token, the same scheme as the rest of the app.

    Like Flask-Admin's own ``BaseForm`` it remembers the edited object in ``_obj``: the
    ``Unique`` validator needs it to tell "this record" from "another record" on edit.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._obj = kwargs.get("obj", args[1] if len(args) > 1 else None)
        super().__init__(*args, **kwargs)


def login_redirect() -> Any:
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


class SecuredViewMixin:
    """Access control shared by model views and custom pages."""

    endpoint_permissions: dict[str, Perm | tuple[Perm, ...]] = {}
    action_permissions: dict[str, Perm] = {}
    #: permission needed to see the view in the menu
    menu_permission: Perm | tuple[Perm, ...] | None = None

    def is_accessible(self) -> bool:
        if not (current_user.is_authenticated and current_user.is_active):
            return False
        return can(self.menu_permission)

    def permission_for(self, endpoint: str) -> Perm | tuple[Perm, ...] | None:
        return self.endpoint_permissions.get(endpoint)

    def _handle_view(self, name: str, **kwargs: Any) -> Any:
        # Before anything reads it: Flask-Admin follows ``url`` after saves and deletes.
        forget_unsafe_return_address()
        if not current_user.is_authenticated:
            return login_redirect()
        if not current_user.is_active:
            abort(403)
        if not current_user.roles:
            return render_template("errors/no_role.html"), 403
        if name == "action_view":
            action = request.form.get("action", "")
            declared = self.endpoint_permissions.get(name)
            if declared is not None and not can(declared):
                abort(403)
            if request.method != "POST" or not can(self.action_permissions.get(action)):
                abort(403)
        elif not can(self.permission_for(name)):
            abort(403)
        return None


def _enum_label(view: Any, value: LabeledEnum, name: str | None = None) -> str:
    return value.label


def _locale_datetime(view: Any, value: datetime, name: str | None = None) -> str:
    return format_datetime(value, "short")


def _locale_date(view: Any, value: date, name: str | None = None) -> str:
    return format_date(value, "medium")


def _bool_icon(view: Any, value: bool, name: str | None = None) -> Markup:
    """Flask-Admin's check icon, with a tooltip in the user's language ("Activo: Sí")."""
    icon = "fa-check-circle" if value else "fa-minus-circle"
    glyph = "ok-circle" if value else "minus-sign"
    label = view.get_column_name(name) if name else ""
    state = _("Yes") if value else _("No")
    return Markup('<span class="fa {} glyphicon glyphicon-{} icon-{}" title="{}"></span>').format(
        icon, glyph, glyph, f"{label}: {state}" if label else state
    )


# Codes shown as translated labels, dates in the user's locale (datetime before date: it is one).
TYPE_FORMATTERS = {
    LabeledEnum: _enum_label,
    datetime: _locale_datetime,
    date: _locale_date,
    **DEFAULT_FORMATTERS,
    bool: _bool_icon,
}


class SecuredModelView(SecuredViewMixin, RecordFlowMixin, ExportMixin, ModelView):
    """Base of every model view: roles, CSRF, stable sorting, errors that leak nothing, and
    saves that land back on the record, named (``RecordFlowMixin``)."""

    endpoint_permissions = MODEL_ENDPOINT_PERMISSIONS
    action_permissions = {"delete": Perm.DELETE}
    menu_permission = Perm.VIEW

    form_base_class = SecureForm
    model_form_converter = BackofficeModelConverter
    inline_model_form_converter = SearchingInlineConverter
    column_type_formatters = TYPE_FORMATTERS
    column_type_formatters_detail = TYPE_FORMATTERS

    page_size = 25
    can_set_page_size = True
    page_size_options = (10, 25, 50, 100)
    can_view_details = True
    details_modal = False
    edit_modal = False
    create_modal = False
    fast_mass_delete = False  # the bulk delete must go through the same checks as a single one
    list_template = "admin/model/backoffice_list.html"
    details_template = "admin/model/backoffice_details.html"

    # Per-request permissions: buttons follow the role matrix, the endpoints enforce it.
    @property
    def can_create(self) -> bool:  # type: ignore[override]
        return can(Perm.CREATE)

    @property
    def can_edit(self) -> bool:  # type: ignore[override]
        return can(Perm.EDIT)

    @property
    def can_delete(self) -> bool:  # type: ignore[override]
        return can(Perm.DELETE)

    @property
    def can_export(self) -> bool:  # type: ignore[override]
        return can(Perm.EXPORT)

    #: searchable columns matched from the start of their value (record numbers, emails);
    #: the others match anywhere (see backoffice/services/search.py)
    column_search_prefix: tuple[str, ...] = ()

    def _apply_search(
        self, query: Any, count_query: Any, joins: dict, count_joins: dict, search: str
    ) -> tuple[Any, Any, dict, dict]:
        """Every word must match one searchable column, as Flask-Admin's own search, but
        with LIKE's wildcards taken literally and keys matched from their start."""
        for word in search.split():
            clauses, count_clauses = [], []
            for field, path in self._search_fields or []:
                query, joins, alias = self._apply_path_joins(query, joins, path, inner_join=False)
                clause = self._search_clause(
                    field if alias is None else getattr(alias, field.key), word
                )
                if clause is not None:
                    clauses.append(clause)
                if count_query is not None:
                    count_query, count_joins, count_alias = self._apply_path_joins(
                        count_query, count_joins, path, inner_join=False
                    )
                    column = field if count_alias is None else getattr(count_alias, field.key)
                    clause = self._search_clause(column, word)
                    if clause is not None:
                        count_clauses.append(clause)
            if clauses:
                query = query.filter(or_(*clauses))
            if count_query is not None and count_clauses:
                count_query = count_query.filter(or_(*count_clauses))
        return query, count_query, joins, count_joins

    # -- the list's arguments, read defensively (see admin_views/arguments.py) -------------
    def _get_list_extra_args(self) -> Any:
        """Page, search and filters as the list and its export use them: the page within
        bounds, the search within its words and characters (said on the list page)."""
        args = super()._get_list_extra_args()
        searched = bounded_search(args.search)
        if searched.cut and request.endpoint == f"{self.endpoint}.index_view":
            flash(searched.message(), "warning")
        return args.clone(page=bounded_page(args.page), search=searched.text or None)

    def _get_list_filter_args(self) -> list[Any] | None:
        """The filters of the address that can be used; each one that cannot is named in a
        message and left out (Flask-Admin's own check lets an unknown enum code through)."""
        if not self._filters:
            return None
        filters = []
        for arg, value in request.args.items():
            if not arg.startswith("flt") or "_" not in arg:
                continue
            pos, key = arg[3:].split("_", 1)
            if key not in self._filter_args:
                continue
            idx, flt = self._filter_args[key]
            if filter_value_usable(flt, value):
                filters.append((pos, (idx, str(flt.name), value)))
            elif request.endpoint == f"{self.endpoint}.index_view":
                shown = value if len(value) <= 40 else value[:40] + "…"
                flash(
                    _(
                        "The filter “%(filter)s” cannot use the value “%(value)s”: it was "
                        "left out.",
                        filter=flt.name,
                        value=shown,
                    ),
                    "error",
                )
        return [v[1] for v in sorted(filters, key=lambda n: n[0])]

    def handle_action(self, return_view: str | None = None) -> Any:
        """A bulk action on the ticked records; a selection that holds something other than a
        record id is refused whole."""
        ids = request.form.getlist("rowid")
        if any(parse_record_id(self.model, raw) is None for raw in ids):
            flash(
                _("The selection holds something that is not a record: nothing was done."), "error"
            )
            return redirect(self.get_url(".index_view"))
        return super().handle_action(return_view)

    def _create_ajax_loader(self, name: str, options: dict[str, Any]) -> QueryAjaxModelLoader:
        attr = getattr(self.model, name)
        return SearchAjaxLoader(name, self.session, attr.prop.mapper.class_, **options)

    def _search_clause(self, column: Any, word: str) -> Any:
        return word_matches(column, word, prefix=column.key in self.column_search_prefix)

    #: record who opens a record's details or edit page (patient data)
    audit_reads = False
    #: the entity name used in the audit trail (the table name)
    audit_entity: str | None = None

    def get_one(self, id: Any) -> Any:
        """Load one record; opening a patient's or study's page is recorded in the audit trail.

        An id that cannot be a key (``abc``, 21 digits), a record that does not exist, or one
        that the user's record scope does not reach (backoffice/auth/scope.py) answers 404 on
        every page that opens one (details, edit, delete, inline update): they cannot be told
        apart.
        """
        key = parse_record_id(self.model, id)
        obj = super().get_one(str(key)) if key is not None else None
        if obj is None:
            abort(404)
        if self.audit_reads and request.method == "GET":
            from backoffice.services.audit import record_event

            page = (
                "edit"
                if request.endpoint and request.endpoint.endswith("edit_view")
                else ("details")
            )
            record_event("VIEW", self._entity_name(), obj.id, details={"page": page})
            db.session.commit()
        if hasattr(obj, "version") and "_version_at_load" not in vars(obj):
            # what the edit form's opened version is compared with, even after an earlier flush
            # in the same save (a doctor's removed phones) has bumped the version
            obj._version_at_load = obj.version
        return obj

    def _entity_name(self) -> str:
        """The entity name entries use ("user" for the user_account table)."""
        from backoffice.services.audit import AUDITED

        return self.audit_entity or AUDITED.get(self.model) or self.model.__tablename__

    # -- optimistic locking: the edit form carries the version the user opened ----------
    def scaffold_form(self) -> Any:
        form_class = super().scaffold_form()
        if hasattr(self.model, "version"):
            form_class.opened_version = HiddenField()
        return form_class

    def on_form_prefill(self, form: Any, id: Any) -> None:
        super().on_form_prefill(form, id)
        if hasattr(form, "opened_version") and request.method == "GET":
            obj = self.get_one(id) if not hasattr(form, "_obj") or form._obj is None else form._obj
            form.opened_version.data = obj.version if obj is not None else ""

    def update_model(self, form: Any, model: Any) -> bool:
        if not hasattr(form, "opened_version"):
            return super().update_model(form, model)
        opened = (form.opened_version.data or "").strip()
        current = vars(model).get("_version_at_load", model.version)
        if opened.isdecimal() and int(opened) != current:
            # The re-rendered form keeps the old version: saving it again conflicts again.
            flash(self._conflict_message(model, int(opened)), "error")
            db.session.rollback()  # whatever this save flushed already (removed phones) goes
            return False
        # Not a column: kept out of populate_obj, and put back so that a form re-rendered after
        # a failed save still carries the version that was opened.
        field = form._fields.pop("opened_version")
        try:
            return super().update_model(form, model)
        finally:
            form._fields["opened_version"] = field

    def _conflict_message(self, model: Any, opened: int) -> Markup:
        from backoffice.services.audit import entries_since_version

        entries = entries_since_version(self._entity_name(), model.id, opened)
        last = entries[-1] if entries else None
        who = (last.actor_label if last else None) or _("another user")
        when = format_datetime(last.at) if last else ""
        # A child's changes (a doctor's phone) are named after the child; its link to the
        # parent is left out.
        changes = Markup("").join(
            Markup("<li><code>{}{}</code>: {} &rarr; {}</li>").format(
                f"{entry.entity} #{entry.entity_id} " if entry.parent_entity else "",
                field,
                _show(old),
                _show(new),
            )
            for entry in entries
            for field, (old, new) in sorted((entry.changes or {}).items())
            if field != f"{entry.parent_entity}_id"
        )
        return Markup(
            '<div class="edit-conflict"><strong>{}</strong> {}<ul class="mb-1">{}</ul>{}</div>'
        ).format(
            _(
                "This record was changed by %(name)s at %(time)s since you opened it.",
                name=who,
                time=when,
            ),
            _("Their changes:"),
            changes,
            _("Nothing of yours was saved. Reload the record and make your change again."),
        )

    # -- history ---------------------------------------------------------------------------
    @expose("/history/")
    def history_view(self) -> Any:
        from backoffice.auth.scope import current_scope
        from backoffice.services.audit import history, iter_entries

        key = parse_record_id(self.model, request.args.get("id", ""))
        obj = super().get_one(str(key)) if key is not None else None
        # A deleted record's history stays readable, for those who reach every record.
        if key is None or (obj is None and current_scope().restricted):
            abort(404)
        include_reads = can(Perm.AUDIT)
        entries = history(self._entity_name(), key, include_reads=include_reads)
        return self.render(
            "admin/model/history.html",
            record=obj,
            record_id=key,
            entries=list(iter_entries(entries)),
            include_reads=include_reads,
        )

    def _handle_view(self, name: str, **kwargs: Any) -> Any:
        if current_user.is_authenticated and current_user.is_active and current_user.roles:
            self._refuse_records_out_of_scope()
        return super()._handle_view(name, **kwargs)

    def _refuse_records_out_of_scope(self) -> None:
        """A request naming a record the user's scope does not reach answers 404, whatever the
        endpoint and before the role is checked: the record is, for this user, not there."""
        from backoffice.auth.scope import SCOPED, current_scope, is_visible

        if self.model not in SCOPED or current_scope().everything:
            return
        named = [
            *request.args.getlist("id"),
            *request.form.getlist("id"),
            *request.form.getlist("rowid"),
            *request.form.getlist("list_form_pk"),
        ]
        for raw in named:
            if whole_number(raw) is not None and not is_visible(self.model, raw):
                abort(404)

    def is_action_allowed(self, name: str) -> bool:
        return can(self.action_permissions.get(name)) and super().is_action_allowed(name)

    def handle_view_exception(self, exc: Exception) -> bool:
        """Show the user what went wrong in words, never the SQL, the values or a traceback."""
        locked = isinstance(exc, OperationalError) and "database is locked" in str(exc.orig)
        if (is_unavailable(exc) or is_timeout(exc)) and not locked:
            # Not "could not be saved because of an unexpected error" on a form that then
            # fails to render: the app's 503 page ("temporarily unavailable", "took too long").
            raise exc
        # Roll back first: building the message reads the user's locale, which needs a usable
        # session (Flask-Admin rolls back only after this method returns).
        db.session.rollback()
        if isinstance(exc, DeletionRefused):
            flash(exc.message, "error")
            return True
        if isinstance(exc, RuleError | UserError):
            flash(str(exc), "error")
            return True
        if isinstance(exc, StaleDataError):
            flash(
                _(
                    "This record was changed by someone else since you opened it. "
                    "Reload it and make your change again."
                ),
                "error",
            )
            return True
        if locked:
            # SQLite (the embedded default) has one writer at a time: a save that meets another
            # one is refused whole rather than waited for (PostgreSQL waits).
            flash(
                _(
                    "Another change was being saved at the same moment, so nothing of yours "
                    "was saved. Save again."
                ),
                "error",
            )
            return True
        if isinstance(exc, IntegrityError):
            field = integrity_error_field(exc)
            if field:
                flash(
                    _(
                        "This change conflicts with another record: the value of '%(field)s' "
                        "must be unique.",
                        field=field,
                    ),
                    "error",
                )
            else:
                flash(_("This change conflicts with other records and was not saved."), "error")
            log.warning("integrity error in %s: %s", self.endpoint, integrity_error_constraint(exc))
            return True
        # Anything else: log where it happened (frames only: the message may hold values).
        log.error(
            "unexpected %s in %s\n%s",
            type(exc).__name__,
            self.endpoint,
            "".join(traceback.format_tb(exc.__traceback__)),
        )
        flash(_("The change could not be saved because of an unexpected error."), "error")
        return True


class ReadOnlyModelView(SecuredModelView):
    """Records only the application writes (audit entries, import batches): admins read them,
    and no endpoint creates, edits, deletes or exports one, whoever asks."""

    endpoint_permissions = {
        "index_view": Perm.AUDIT,
        "details_view": Perm.AUDIT,
        "create_view": Perm.NOBODY,
        "edit_view": Perm.NOBODY,
        "delete_view": Perm.NOBODY,
        "action_view": Perm.NOBODY,
        "ajax_update": Perm.NOBODY,
        "ajax_lookup": Perm.NOBODY,
        "history_view": Perm.NOBODY,
        "export": Perm.NOBODY,
    }
    action_permissions: dict = {}
    menu_permission = Perm.AUDIT

    @property
    def can_create(self) -> bool:  # type: ignore[override]
        return False

    @property
    def can_edit(self) -> bool:  # type: ignore[override]
        return False

    @property
    def can_delete(self) -> bool:  # type: ignore[override]
        return False

    @property
    def can_export(self) -> bool:  # type: ignore[override]
        return False

    def get_one(self, id: Any) -> Any:
        """By id, without the VIEW entry record pages write (reading the log is not a read of
        patient data)."""
        key = parse_record_id(self.model, id)
        return None if key is None else db.session.get(self.model, key)


def integrity_error_constraint(exc: IntegrityError) -> str:
    """The name of the violated constraint (or column), without any value."""
    orig = getattr(exc, "orig", None)
    diag = getattr(orig, "diag", None)
    if diag is not None and getattr(diag, "constraint_name", None):
        return str(diag.constraint_name)
    text = str(orig) if orig is not None else ""
    # SQLite: "UNIQUE constraint failed: patient.email"
    if "constraint failed:" in text:
        return text.split("constraint failed:", 1)[1].strip()
    return "unknown"


# Columns the database derives from another one: a clash on them is a clash on that one.
DERIVED_COLUMNS = {"name_key": "name"}


def integrity_error_field(exc: IntegrityError) -> str | None:
    """Best guess at the column a unique violation is about (the last column of a composite
    key: for (doctor_id, number) it is the number that clashed)."""
    field = _integrity_error_column(exc)
    return DERIVED_COLUMNS.get(field, field) if field else None


def _integrity_error_column(exc: IntegrityError) -> str | None:
    name = integrity_error_constraint(exc)
    if "." in name:  # SQLite: "doctor_phone.doctor_id, doctor_phone.number" -> last column
        return name.split(",")[-1].strip().split(".", 1)[1]
    if name.startswith("uq_"):
        for table in sorted(db.metadata.tables.values(), key=lambda t: -len(t.name)):
            prefix = f"uq_{table.name}_"
            if name.startswith(prefix):
                rest = name[len(prefix) :]
                columns = [c.name for c in table.columns if rest.endswith(c.name)]
                return max(columns, key=len) if columns else rest
    return None


class SecuredBaseView(SecuredViewMixin, BaseView):
    """Base of custom admin pages; endpoints not declared in ``endpoint_permissions`` are
    admin-only."""


def _show(value: Any) -> Markup:
    if value is None or value == "":
        return Markup('<span class="text-muted">&empty;</span>')
    return Markup("<code>{}</code>").format(value)
