"""Form fields of the admin views: enum selects with labels, related-record boxes that refuse a
record that does not exist, and the look-up behind them, searched like the lists."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any

from flask_admin.contrib.sqla.ajax import QueryAjaxModelLoader
from flask_admin.contrib.sqla.fields import QuerySelectField
from flask_admin.contrib.sqla.form import AdminModelConverter
from flask_admin.form import Select2Field
from flask_admin.model.fields import AjaxSelectField
from flask_admin.model.form import converts
from sqlalchemy import or_
from wtforms import validators as wtf_validators
from wtforms.validators import ValidationError

from backoffice.admin_views.arguments import parse_record_id
from backoffice.i18n import _
from backoffice.models import LabeledEnum
from backoffice.services.search import bounded_search, word_matches


def rule_validator(rule: Callable[[Any], Any]) -> Callable[[Any, Any], None]:
    """A form validator from a rule of backoffice/validation.py: its message beside the field."""

    def validate(form: Any, field: Any) -> None:
        try:
            rule(field.data)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None

    return validate


#: the most rows one look-up may skip and return (select2 asks page by page as people scroll)
MAX_LOOKUP_OFFSET = 10_000
MAX_LOOKUP_ROWS = 100


class SearchAjaxLoader(QueryAjaxModelLoader):
    """The look-up behind a form's related-record box, searched like the lists.

    Every word must match one of ``fields`` (Flask-Admin's own loader looks for the whole
    typed text in one field), the ``prefix`` fields from their start (see
    backoffice/services/search.py), in a stable order. The typed text is bounded as every
    search is (``bounded_search``), and so are the offset and the page size it asks for.
    """

    def __init__(self, name: str, session: Any, model: Any, **options: Any) -> None:
        super().__init__(name, session, model, **options)
        self.prefix = frozenset(options.get("prefix", ()))

    def get_one(self, pk: Any) -> Any:
        """The record of ``pk``; None for one that does not exist or cannot be a key."""
        key = parse_record_id(self.model, pk)
        return None if key is None else super().get_one(key)

    def get_list(self, term: str | None, offset: int | None = 0, limit: int | None = 10) -> Any:
        query = self.get_query()
        for word in bounded_search(term).text.split():
            clauses = [
                clause
                for field in self._cached_fields
                if (clause := word_matches(field, word, prefix=field.key in self.prefix))
                is not None
            ]
            if clauses:
                query = query.filter(or_(*clauses))
        order = [self.order_by] if self.order_by else []
        pk = getattr(self.model, self.pk)
        offset = max(0, min(offset or 0, MAX_LOOKUP_OFFSET))
        limit = max(1, min(limit or 10, MAX_LOOKUP_ROWS))
        return query.order_by(*order, pk).offset(offset).limit(limit).all()


def _unknown_record(value: Any) -> ValidationError:
    shown = str(value)
    shown = shown if len(shown) <= 40 else shown[:40] + "…"
    return ValidationError(
        _(
            "“%(value)s” is not a record that can be chosen here (it may have been deleted): "
            "choose one from the list.",
            value=shown,
        )
    )


class RefusesUnknownRecords:
    """A related-record field that refuses an id that is no record it can choose.

    Flask-Admin's own select and look-up fields drop an unknown id without a word when the
    relation is optional (a patient's clinic), and the record is saved without it.
    """

    def process_formdata(self, valuelist: Any) -> None:
        self._typed = valuelist[0] if valuelist else None
        super().process_formdata(valuelist)  # type: ignore[misc]

    def pre_validate(self, form: Any) -> None:
        typed = getattr(self, "_typed", None)
        if typed not in (None, "", "__None") and self.data is None:  # type: ignore[attr-defined]
            raise _unknown_record(typed)
        super().pre_validate(form)  # type: ignore[misc]


class CheckedAjaxSelectField(RefusesUnknownRecords, AjaxSelectField):
    """A related-record box with a select2 look-up (see RefusesUnknownRecords)."""


class CheckedQuerySelectField(RefusesUnknownRecords, QuerySelectField):
    """A related-record drop-down (see RefusesUnknownRecords)."""


class BackofficeModelConverter(AdminModelConverter):
    """Enum columns become select boxes that show translated labels but submit codes; related
    records are chosen in boxes that refuse records that do not exist."""

    @converts("sqlalchemy.sql.sqltypes.Enum")
    def convert_enum(self, column: Any, field_args: dict, **extra: Any) -> Select2Field:
        enum_cls = getattr(column.type, "enum_class", None)
        if not (enum_cls and issubclass(enum_cls, LabeledEnum)):
            return super().convert_enum(column, field_args, **extra)
        choices = enum_cls.choices()  # lazy labels: the form class is built once, at start-up
        field_args["choices"] = choices
        field_args["coerce"] = lambda v: v.value if isinstance(v, Enum) else (v or None)
        if column.nullable:
            field_args["allow_blank"] = True
            field_args["validators"].append(wtf_validators.Optional())
        else:
            field_args["validators"].append(wtf_validators.InputRequired())
        field_args["validators"].append(
            wtf_validators.AnyOf([c for c, _label in choices] + ([None] if column.nullable else []))
        )
        return Select2Field(**field_args)

    def _model_select_field(
        self, prop: Any, multiple: Any, remote_model: Any, **kwargs: Any
    ) -> Any:
        # An unbound field (the form class is built once): swap the class it will be made of.
        field = super()._model_select_field(prop, multiple, remote_model, **kwargs)
        field.field_class = CHECKED.get(field.field_class, field.field_class)
        return field


CHECKED: dict[type, type] = {
    AjaxSelectField: CheckedAjaxSelectField,
    QuerySelectField: CheckedQuerySelectField,
}
