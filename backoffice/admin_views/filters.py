"""List filters shared by several views, and links to a list with filters set."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flask import current_app, url_for
from flask_admin.babel import lazy_gettext
from flask_admin.contrib.sqla.filters import BaseSQLAFilter
from sqlalchemy import exists, false, literal, select, true

from backoffice.extensions import db
from backoffice.i18n import _l


class LazyOptions:
    """Filter options built when the list renders, in the reader's language (Flask-Admin builds
    its filter menu once, at start-up, and would otherwise freeze them)."""

    def __init__(self, build: Callable[[], Iterable[tuple[str, Any]]]) -> None:
        self.build = build

    def __iter__(self):  # noqa: ANN204
        return iter([(str(code), str(label)) for code, label in self.build()])

    def __bool__(self) -> bool:
        return True


class CodeInListFilter(BaseSQLAFilter):
    """Records whose comma-separated codes include one code (a doctor who speaks French)."""

    def apply(self, query: Any, value: Any, alias: Any = None) -> Any:
        column = self.get_column(alias)
        return query.filter(
            (literal(",") + column + literal(",")).like(f"%,{value},%")  # codes have no , or %
        )

    def operation(self) -> Any:
        return lazy_gettext("equals")

    def validate(self, value: Any) -> bool:
        return str(value) in {code for code, _label in self.options or ()}


class HasChildFilter(BaseSQLAFilter):
    """Records with a child row holding a code (a doctor with the specialty Radiology)."""

    def __init__(self, column: Any, name: Any, child_column: Any, owner_key: Any, **kwargs: Any):
        super().__init__(column, name, **kwargs)
        self.child_column = child_column
        self.owner_key = owner_key

    def apply(self, query: Any, value: Any, alias: Any = None) -> Any:
        owner = self.get_column(alias)
        return query.filter(
            exists(select(1).where(self.owner_key == owner, self.child_column == value))
        )

    def operation(self) -> Any:
        return lazy_gettext("equals")

    def validate(self, value: Any) -> bool:
        return str(value) in {code for code, _label in self.options or ()}


class IdEqualFilter(BaseSQLAFilter):
    """A related record chosen by id (the care-team list of one doctor); the options are the
    records' names, read when the list renders."""

    def apply(self, query: Any, value: Any, alias: Any = None) -> Any:
        return query.filter(self.get_column(alias) == int(value))

    def operation(self) -> Any:
        return lazy_gettext("equals")

    def validate(self, value: Any) -> bool:
        return str(value).isdigit() and len(str(value)) < 12


def record_options(model: type, order: Any, label: Callable[[Any], str] = str) -> LazyOptions:
    def build() -> list[tuple[str, str]]:
        rows = db.session.scalars(select(model).order_by(*order)).all()
        return [(str(r.id), label(r)) for r in rows]

    return LazyOptions(build)


class ActiveFilter(BaseSQLAFilter):
    """Active records only, inactive only, or all of them; lists apply "active" by default."""

    ACTIVE, INACTIVE, ALL = "active", "inactive", "all"

    def __init__(self, column: Any, name: Any = _l("Status"), **kwargs: Any) -> None:
        options = LazyOptions(
            lambda: [
                (self.ACTIVE, _l("Active only")),
                (self.INACTIVE, _l("Inactive only")),
                (self.ALL, _l("Active and inactive")),
            ]
        )
        super().__init__(column, name, options=options, **kwargs)

    def apply(self, query: Any, value: Any, alias: Any = None) -> Any:
        column = self.get_column(alias)
        if value == self.ACTIVE:
            return query.filter(column == true())
        if value == self.INACTIVE:
            return query.filter(column == false())
        return query

    def operation(self) -> Any:
        return lazy_gettext("equals")

    def validate(self, value: Any) -> bool:
        return value in (self.ACTIVE, self.INACTIVE, self.ALL)


def model_view(endpoint: str) -> Any:
    """The admin view registered under ``endpoint``."""
    for admin in current_app.extensions.get("admin", []):
        for view in admin._views:
            if getattr(view, "endpoint", None) == endpoint:
                return view
    raise LookupError(endpoint)


def filtered_list_url(endpoint: str, filters: Iterable[tuple[Any, Any]], **args: Any) -> str:
    """A link to a model list with filters set: ``[(filter object, value), ...]``."""
    view = model_view(endpoint)
    for position, (flt, value) in enumerate(filters):
        index = next(i for i, f in enumerate(view._filters) if f is flt)
        args[f"flt{position}_{view.get_filter_arg(index, flt)}"] = value
    return url_for(f"{endpoint}.index_view", **args)
