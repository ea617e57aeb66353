"""Admin-only management of back-office users: roles, activation, password resets."""

from __future__ import annotations

from typing import Any

from flask import flash
from flask_admin.actions import action
from flask_admin.contrib.sqla.filters import BooleanEqualFilter
from markupsafe import Markup, escape
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select
from wtforms import PasswordField
from wtforms.validators import Optional, ValidationError
from wtforms.widgets import CheckboxInput, ListWidget

from backoffice.admin_views.base import SecuredModelView
from backoffice.admin_views.formatters import relation_link
from backoffice.auth.permissions import Perm, can
from backoffice.extensions import db
from backoffice.i18n import _, _l, ngettext
from backoffice.models import RoleName, User
from backoffice.services.users import (
    UserError,
    check_admin_remains,
    check_doctor_link,
    set_active,
    set_password,
    validate_new_password,
)
from backoffice.validation import normalize_email

MANAGE = Perm.MANAGE_USERS


def _new_password_rule(form: Any, field: Any) -> None:
    if not field.data:
        return
    try:
        validate_new_password(field.data, (form.email.data, form.display_name.data))
    except UserError as exc:
        raise ValidationError(str(exc)) from None


def _roles(view: Any, context: Any, model: User, name: str) -> Markup:
    return Markup(" ").join(
        Markup('<span class="badge badge-info">{}</span>').format(escape(str(r)))
        for r in model.roles
    )


class UserView(SecuredModelView):
    endpoint_permissions = {
        "index_view": MANAGE,
        "details_view": MANAGE,
        "create_view": MANAGE,
        "edit_view": MANAGE,
        "ajax_lookup": MANAGE,
    }
    action_permissions = {"deactivate": MANAGE, "reactivate": MANAGE}
    menu_permission = MANAGE

    column_list = (
        "email",
        "display_name",
        "roles",
        "doctor",
        "active",
        "last_login_at",
        "created_at",
    )
    column_details_list = (
        "email",
        "display_name",
        "roles",
        "doctor",
        "active",
        "locale",
        "last_login_at",
        "locked_until",
        "created_at",
        "updated_at",
    )
    column_default_sort = [("email", False), ("id", False)]
    column_searchable_list = ("email", "display_name")
    column_filters = (BooleanEqualFilter(User.active, _l("Active")),)
    column_labels = {
        "email": _l("Email"),
        "display_name": _l("Name"),
        "roles": _l("Roles"),
        "doctor": _l("Doctor record"),
        "active": _l("Active"),
        "locale": _l("Language"),
        "last_login_at": _l("Last login"),
        "locked_until": _l("Locked until"),
        "created_at": _l("Created"),
        "updated_at": _l("Updated"),
        "new_password": _l("New password"),
    }
    column_formatters = {"roles": _roles, "doctor": relation_link("doctor", "doctor")}
    column_formatters_detail = column_formatters
    form_columns = ("email", "display_name", "roles", "doctor", "active", "new_password")
    form_extra_fields = {
        "new_password": PasswordField(
            _l("New password"),
            validators=[Optional(), _new_password_rule],
            description=_l(
                "Required for a new user. Leave empty to keep the current password. "
                "At least 12 characters; a passphrase is easiest to remember."
            ),
        )
    }
    form_args = {
        "email": {"filters": [normalize_email]},
        "roles": {"widget": ListWidget(prefix_label=False), "option_widget": CheckboxInput()},
        "doctor": {
            "description": _l(
                "For a user of the doctor role: the doctor they are. They see the studies that "
                "doctor ordered or is to report, and those studies' patients."
            )
        },
    }
    form_ajax_refs = {
        "doctor": {
            "fields": ("last_name", "first_name", "email"),
            "order_by": "last_name",
            "page_size": 20,
            "placeholder": _l("Type the doctor's name or email"),
        }
    }
    form_widget_args = {"new_password": {"autocomplete": "new-password"}}

    @property
    def can_create(self) -> bool:  # type: ignore[override]
        return can(MANAGE)

    @property
    def can_edit(self) -> bool:  # type: ignore[override]
        return can(MANAGE)

    @property
    def can_delete(self) -> bool:  # type: ignore[override]
        return False  # users are deactivated, never deleted: history keeps pointing at them

    def on_model_change(self, form: Any, model: User, is_created: bool) -> None:
        if is_created and not form.new_password.data:
            raise UserError(_("A new user needs an initial password."))
        check_admin_remains(
            model, will_be_active=bool(model.active), will_be_admin=model.has_role(RoleName.ADMIN)
        )
        check_doctor_link(model, model.doctor.id if model.doctor is not None else None)
        # populate_obj copied the typed password onto the model as a plain attribute: drop it.
        vars(model).pop("new_password", None)
        if form.new_password.data:
            # the service's rule: a reset also ends the user's other sessions and lifts a lockout
            set_password(model, form.new_password.data)
        elif not is_created:
            history = sa_inspect(model).attrs.active.history
            if history.deleted and history.deleted[0] and not model.active:
                model.rotate_session_token()

    def _set_active_many(self, ids: list[str], active: bool) -> None:
        users = db.session.scalars(select(User).where(User.id.in_([int(i) for i in ids]))).all()
        try:
            for user in users:
                set_active(user, active)
            db.session.commit()
        except UserError as exc:
            db.session.rollback()
            flash(str(exc), "error")
            return
        count = len(users)
        if active:
            flash(ngettext("%(num)d user reactivated.", "%(num)d users reactivated.", count))
        else:
            flash(ngettext("%(num)d user deactivated.", "%(num)d users deactivated.", count))

    @action("deactivate", _l("Deactivate"), _l("Deactivate the selected users?"))
    def action_deactivate(self, ids: list[str]) -> None:
        self._set_active_many(ids, False)

    @action("reactivate", _l("Reactivate"), _l("Reactivate the selected users?"))
    def action_reactivate(self, ids: list[str]) -> None:
        self._set_active_many(ids, True)
