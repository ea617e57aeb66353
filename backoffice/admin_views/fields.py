"""Form fields for codes people pick by name: countries, languages, several specialties."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flask_admin.form import Select2Field, rules
from flask_admin.form.widgets import Select2Widget
from markupsafe import Markup
from wtforms import SelectMultipleField
from wtforms.validators import ValidationError

from backoffice.i18n import _

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
