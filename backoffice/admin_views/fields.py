"""Form fields of the admin views: codes people pick by name (countries, languages, several
specialties), enum selects with labels, related-record boxes that refuse a record that does not
exist and the look-up behind them (searched like the lists), and form-layout rules."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import Enum
from typing import Any

from flask_admin.contrib.sqla.ajax import QueryAjaxModelLoader
from flask_admin.contrib.sqla.fields import QuerySelectField
from flask_admin.contrib.sqla.form import AdminModelConverter, InlineModelConverter
from flask_admin.form import Select2Field, rules
from flask_admin.form.widgets import Select2Widget
from flask_admin.model.fields import AjaxSelectField
from flask_admin.model.form import converts
from markupsafe import Markup
from sqlalchemy import or_
from wtforms import SelectMultipleField
from wtforms import validators as wtf_validators
from wtforms.validators import ValidationError

from backoffice.admin_views.arguments import parse_record_id
from backoffice.i18n import _
from backoffice.models import LabeledEnum
from backoffice.services.search import bounded_search, word_matches

Choices = Callable[[], Iterable[tuple[str, Any]]]


class CodeSelectField(Select2Field):
    """One code, chosen by its name in the reader's language (the choices are built when the
    form is, so each request gets its own language)."""

    def __init__(
        self, label: Any = None, validators: Any = None, choices: Choices = list, **kwargs: Any
    ) -> None:
        kwargs.setdefault("allow_blank", True)
        kwargs.setdefault("coerce", lambda v: v or None)
        super().__init__(label, validators, choices=choices, **kwargs)

    def pre_validate(self, form: Any) -> None:
        if self.data is None:
            return
        if self.data not in {code for code, _label in self.choices or ()}:
            raise ValidationError(_("Choose one of the listed values."))


class CodeListField(SelectMultipleField):
    """Several codes, chosen by name; ``data`` is a list of codes in the order of the choices.

    ``to_model`` turns the list into what the model attribute takes (a comma-separated text for
    a doctor's languages, the list itself for their specialties); ``from_model`` the reverse.
    """

    widget = Select2Widget(multiple=True)

    def __init__(
        self,
        label: Any = None,
        validators: Any = None,
        choices: Choices = list,
        to_model: Callable[[list[str]], Any] = list,
        from_model: Callable[[Any], list[str]] = list,
        **kwargs: Any,
    ) -> None:
        super().__init__(label, validators, choices=choices, **kwargs)
        self.to_model = to_model
        self.from_model = from_model

    def process_data(self, value: Any) -> None:
        self.data = [str(v) for v in self.from_model(value)] if value else []

    def process_formdata(self, valuelist: list[str]) -> None:
        self.data = [v for v in valuelist if v and v != "__None"]

    def pre_validate(self, form: Any) -> None:
        allowed = {code for code, _label in self.choices or ()}
        unknown = [v for v in self.data or () if v not in allowed]
        if unknown:
            raise ValidationError(
                _("Not one of the listed values: %(values)s.", values=", ".join(unknown))
            )

    def populate_obj(self, obj: Any, name: str) -> None:
        order = [code for code, _label in self.choices or ()]
        codes = sorted(set(self.data or ()), key=lambda c: order.index(c) if c in order else 0)
        setattr(obj, name, self.to_model(codes))


class RenderedByHiddenTag(rules.BaseRule):
    """Form-rule entry for hidden fields (the opened version): ``form.hidden_tag()`` already
    renders them; naming them here tells Flask-Admin they are not forgotten."""

    def __init__(self, *names: str) -> None:
        super().__init__()
        self.names = list(names)

    @property
    def visible_fields(self) -> list[str]:
        return self.names

    def __call__(self, form: Any, form_opts: Any = None, field_args: Any = None) -> str:
        return ""


class FieldRow(rules.NestedRule):
    """Form-rule: fields side by side on wide screens (a Bootstrap form row), stacked on a
    phone. ``FieldRow("city", "state")`` inside a ``rules.FieldSet``."""

    def __init__(self, *fields: str) -> None:
        super().__init__(list(fields), separator="")

    def __call__(self, form: Any, form_opts: Any = None, field_args: Any = None) -> Markup:
        cells = Markup("").join(
            Markup('<div class="col-md">{}</div>').format(rule(form, form_opts, field_args or {}))
            for rule in self.rules
        )
        return Markup('<div class="form-row">{}</div>').format(cells)


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
        # A model may keep records out of look-ups (inactive patients): ``lookup_criteria``.
        criteria = getattr(self.model, "lookup_criteria", None)
        if criteria is not None:
            query = query.filter(criteria())
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


class SearchingInlineConverter(InlineModelConverter):
    """Inline rows (a patient's care team) whose related-record boxes use the same look-up as
    the forms' (``SearchAjaxLoader``: bounded searches, ids checked) instead of Flask-Admin's
    own, which passes a typed id to the database as it comes."""

    def process_ajax_refs(self, info: Any) -> dict[Any, Any]:
        refs = getattr(info, "form_ajax_refs", None) or {}
        loaders = {}
        for name, options in refs.items():
            if isinstance(options, dict):
                related = getattr(info.model, name).prop.mapper.class_
                label = f"{info.model.__name__.lower()}-{name}"
                options = SearchAjaxLoader(label, self.session, related, **options)
            loaders[name] = options
        info.form_ajax_refs = loaders
        return super().process_ajax_refs(info)


CHECKED: dict[type, type] = {
    AjaxSelectField: CheckedAjaxSelectField,
    QuerySelectField: CheckedQuerySelectField,
}
