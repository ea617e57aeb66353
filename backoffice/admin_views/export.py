"""Model-view exports streamed from the list's own query, and list totals that stay cheap."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flask import abort
from flask_admin import expose
from sqlalchemy import Boolean, Date, DateTime, Integer, Numeric, func
from sqlalchemy.orm import QueryableAttribute, aliased, joinedload
from sqlalchemy.sql.elements import ColumnElement

from backoffice.extensions import db
from backoffice.services.export import (
    BOOLEAN,
    DATE,
    DATETIME,
    NUMBER,
    TEXT,
    ExportColumn,
    ExportRequest,
    export_response,
)
from backoffice.services.listing import (
    IDS_FIRST_FROM,
    ListCount,
    capped_total,
    matches_first,
    table_total,
)

# An export column: (header, source) or (header, source, kind). The source is a model
# attribute, a (relationship, attribute of the related model) pair read through an outer join,
# or a callable taking the dialect name and returning a SQL expression.
ExportSpec = tuple[Any, ...]


def _kind_of(expr: Any) -> str:
    sql_type = getattr(expr, "type", None)
    if isinstance(sql_type, Boolean):
        return BOOLEAN
    if isinstance(sql_type, DateTime):
        return DATETIME
    if isinstance(sql_type, Date):
        return DATE
    if isinstance(sql_type, Integer | Numeric):
        return NUMBER
    if sql_type is not None and type(sql_type).__name__ == "UTCDateTime":
        return DATETIME
    return TEXT


class ExportMixin:
    """CSV and XLSX exports of exactly what the list shows, streamed; fast list totals.

    The export endpoint replaces Flask-Admin's (which loads every row as an object before the
    first byte and breaks on lazy relationships once the app context is gone, see
    FLASK_ADMIN_NOTES traps 1 and 2): it builds the list's query from the same search, filters
    and sort (``list_query``, also used by the list page), selects the export columns from it as
    a Core SELECT and streams that from a connection of its own.
    """

    export_types: Sequence[str] = ("csv", "xlsx")
    #: the export's columns (see ``ExportSpec``); empty: the list's plain columns
    export_columns: Sequence[ExportSpec] = ()
    #: first part of the file name (``patients`` → ``patients-2026-11-24.csv``)
    export_file_stem: str | None = None

    # ------------------------------------------------------------------ the list's query

    def list_query(
        self, sort_column: Any, sort_desc: bool, search: str | None, filters: Any
    ) -> Any:
        """The list's rows, searched, filtered and sorted as Flask-Admin's ``get_list`` does.

        The primary key ends the ORDER BY, so that rows with equal sort values keep one order
        from page to page and from the list to its export.
        """
        joins: dict = {}
        count_joins: dict = {}
        query = self.get_query()  # type: ignore[attr-defined]
        if self._search_supported and search:  # type: ignore[attr-defined]
            query, _, joins, _ = self._apply_search(  # type: ignore[attr-defined]
                query, None, joins, count_joins, search
            )
        if filters and self._filters:  # type: ignore[attr-defined]
            query, _, joins, _ = self._apply_filters(  # type: ignore[attr-defined]
                query, None, joins, count_joins, filters
            )
        query, joins = self._apply_sorting(  # type: ignore[attr-defined]
            query, joins, sort_column, sort_desc
        )
        return query.order_by(*self._primary_key_columns())

    def _primary_key_columns(self) -> list[Any]:
        return list(self.model.__mapper__.primary_key)  # type: ignore[attr-defined]

    def list_total(self, query: Any, filtered: bool) -> ListCount:
        """The list's total: an estimate for a large unfiltered table, else a count capped at
        COUNT_CAP (an exact COUNT(*) over a million rows costs more than the page itself)."""
        if not filtered:
            return table_total(
                self.model.__tablename__,  # type: ignore[attr-defined]
                lambda: self.get_count_query().scalar(),  # type: ignore[attr-defined]
            )
        return capped_total(query.with_entities(*self._primary_key_columns()).order_by(None))

    def get_list(  # type: ignore[override]
        self,
        page: int | None,
        sort_column: Any,
        sort_desc: bool,
        search: str | None,
        filters: Any,
        execute: bool = True,
        page_size: int | None = None,
    ) -> tuple[int | None, Any]:
        query = self.list_query(sort_column, sort_desc, search, filters)
        searching = bool(search and self._search_supported)  # type: ignore[attr-defined]
        count = None
        if page_size is None:
            page_size = self.page_size  # type: ignore[attr-defined]
        skipped = (page or 0) * (page_size or 0)
        with matches_first(searching):
            if searching and execute and page_size:
                return self._searched_page(query, page or 0, page_size)
            if not self.simple_list_pager:  # type: ignore[attr-defined]
                filtered = searching or bool(filters and self._filters)  # type: ignore[attr-defined]
                count = self.list_total(query, filtered)
            if execute and page_size and skipped >= IDS_FIRST_FROM:
                return count, self._page_by_ids(query, page or 0, page_size)
            for relation in self._auto_joins:  # type: ignore[attr-defined]
                query = query.options(joinedload(relation))
            query = self._apply_pagination(query, page, page_size)  # type: ignore[attr-defined]
            if execute:
                query = query.all()
        return count, query

    def _searched_page(self, query: Any, page: int, page_size: int) -> tuple[int | None, list[Any]]:
        """A searched page with its total: the search reads every match to sort them (see
        ``matches_first``), so the same statement counts them (``count(*) OVER ()``).

        That statement selects the ids alone: the related records are joined for the page's
        rows only, not for every match (19,000 wide rows spilled the sort to disk).
        """
        pk = self._primary_key_columns()
        if len(pk) != 1:
            rows = self._apply_pagination(  # type: ignore[attr-defined]
                query.add_columns(func.count().over().label("list_total")), page, page_size
            ).all()
            data = [row[0] for row in rows]
        else:
            counted = query.with_entities(pk[0], func.count().over().label("list_total"))
            rows = counted.limit(page_size).offset(page * page_size).all()
            data = self._rows_by_ids([row[0] for row in rows])
        if self.simple_list_pager:  # type: ignore[attr-defined]
            return None, data
        if rows:
            return ListCount(rows[0][1]), data
        return (self.list_total(query, True) if page else ListCount(0)), data

    def _page_by_ids(self, query: Any, page: int, page_size: int) -> list[Any]:
        """A deep page: its ids first (read from an index alone where one covers the sort),
        then its rows, in the ids' order."""
        pk = self._primary_key_columns()
        if len(pk) != 1:
            return self._apply_pagination(query, page, page_size).all()  # type: ignore[attr-defined]
        ids = [
            row[0] for row in query.with_entities(pk[0]).limit(page_size).offset(page * page_size)
        ]
        return self._rows_by_ids(ids)

    def _rows_by_ids(self, ids: list[Any]) -> list[Any]:
        """The records of ``ids`` with the list's related records, in the order of ``ids``."""
        if not ids:
            return []
        pk = self._primary_key_columns()
        rows = self.get_query().filter(pk[0].in_(ids))  # type: ignore[attr-defined]
        for relation in self._auto_joins:  # type: ignore[attr-defined]
            rows = rows.options(joinedload(relation))
        position = {value: index for index, value in enumerate(ids)}
        key = pk[0].key
        return sorted(rows.all(), key=lambda obj: position[getattr(obj, key)])

    # ------------------------------------------------------------------ the export

    def _default_export_specs(self) -> list[ExportSpec]:
        """The list's columns that are plain columns of the model (no relations, no HTML)."""
        specs: list[ExportSpec] = []
        for name, _label in self._list_columns:  # type: ignore[attr-defined]
            attr = getattr(self.model, name, None)  # type: ignore[attr-defined]
            if isinstance(attr, QueryableAttribute) and hasattr(attr.property, "columns"):
                specs.append((name, attr))
        return specs

    def export_column_list(self, query: Any, dialect: str) -> tuple[Any, list[ExportColumn]]:
        """Resolve the export columns against the list's query (adding the joins they need)."""
        columns: list[ExportColumn] = []
        for spec in self.export_columns or self._default_export_specs():
            name, source = spec[0], spec[1]
            kind = spec[2] if len(spec) > 2 else None
            if isinstance(source, tuple):
                relation, attr = source
                # An alias of its own: the list may already join that table for a filter or
                # a sort, and the export must not change which rows the list selects.
                alias = aliased(attr.class_)
                query = query.outerjoin(alias, relation.of_type(alias))
                expr = getattr(alias, attr.key)
            elif isinstance(source, QueryableAttribute | ColumnElement):
                expr = source
            elif callable(source):
                expr = source(dialect)
            else:
                raise TypeError(f"export column {name!r}: unsupported source {source!r}")
            columns.append(ExportColumn(name, expr, kind or _kind_of(expr)))
        return query, columns

    def export_audit_details(self, view_args: Any, sort_column: Any) -> dict[str, Any]:
        filters = []
        for idx, _name, value in view_args.filters or []:
            flt = self._filters[idx]  # type: ignore[attr-defined]
            filters.append(
                {"filter": str(flt.name), "operation": str(flt.operation()), "value": value}
            )
        sort = None
        if sort_column is not None:
            sort = f"-{sort_column}" if view_args.sort_desc else str(sort_column)
        return {"filters": filters, "search": view_args.search or None, "sort": sort}

    def export_request(self) -> ExportRequest:
        """The export of the list as the request's search, filters and sort select it."""
        view_args = self._get_list_extra_args()  # type: ignore[attr-defined]
        column = self._get_column_by_idx(view_args.sort)  # type: ignore[attr-defined]
        sort_column = column[0] if column is not None else None
        query = self.list_query(
            sort_column, view_args.sort_desc, view_args.search, view_args.filters
        )
        dialect = db.engine.dialect.name
        query, columns = self.export_column_list(query, dialect)
        final_query = query

        def select_for(exprs: list[ColumnElement]) -> Any:
            return final_query.with_entities(*exprs).statement

        endpoint = self.endpoint  # type: ignore[attr-defined]
        return ExportRequest(
            entity=endpoint,
            file_stem=self.export_file_stem or f"{endpoint}s",
            columns=columns,
            select_for=select_for,
            details=self.export_audit_details(view_args, sort_column),
        )

    @expose("/export/<export_type>/")
    def export(self, export_type: str) -> Any:
        """Stream the list as CSV or XLSX (the endpoint's permission is checked before this)."""
        # The role check already ran (``endpoint_permissions``); this one keeps a view that
        # turns ``can_export`` off closed even if its endpoint map says otherwise.
        if not self.can_export:  # type: ignore[attr-defined]
            abort(403)
        if export_type not in self.export_types:
            abort(404)
        return export_response(self.export_request(), export_type)
