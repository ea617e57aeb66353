"""Streamed CSV and XLSX exports from Core SELECTs: spreadsheet-safe, audited at the end."""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import queue
import re
import threading
import traceback
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from flask import Response
from sqlalchemy import String, case, func, literal, type_coerce
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import ColumnElement

from backoffice.extensions import db

log = logging.getLogger("backoffice.export")

FORMATS = ("csv", "xlsx")
MIME_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
UTF8_BOM = "\ufeff"

# OWASP CSV injection: a spreadsheet evaluates a cell that starts with one of these.
DANGEROUS_FIRST_CHARACTERS = ("=", "+", "-", "@", "\t", "\r")
QUOTE_PREFIX = "'"

# Rows fetched per round trip: large enough to amortise the round trip, small enough that
# memory does not depend on the size of the export.
BATCH_ROWS = 5000
# An export reads every row of its cursor: plan for the whole result, not for its first tenth
# (PostgreSQL's default for cursors, which picks nested loops of index look-ups: 5.7 s instead
# of 2.7 s for the 450,000 HIGH studies). Scoped to the export's own transaction.
POSTGRES_EXPORT_SETTINGS: tuple[str, ...] = ("SET LOCAL cursor_tuple_fraction = 1.0",)
# Batches read ahead while the current one is written (see ``prefetched``).
PREFETCH_BATCHES = 4
# Excel's sheet size (1,048,576 rows, one of them the header): longer exports go on to a new
# sheet instead of being cut.
XLSX_MAX_DATA_ROWS = 1_048_575

TEXT, DATE, DATETIME, NUMBER, BOOLEAN = "text", "date", "datetime", "number", "boolean"

_XML_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def neutralize(value: Any) -> Any:
    """The OWASP rule for one cell: text starting with a formula character gets a leading quote.

    The bulk upload reads a cell made of a quote followed by one of these characters back to the
    text after the quote, so an exported file uploaded again changes nothing.
    """
    if isinstance(value, str) and value.startswith(DANGEROUS_FIRST_CHARACTERS):
        return QUOTE_PREFIX + value
    return value


def neutralized_sql(expr: ColumnElement) -> ColumnElement:
    """``neutralize`` as a SQL expression, so the database applies it while it reads the rows.

    Same rule as ``neutralize`` (a test checks both on the same values); doing it in SQL keeps
    the Python loop of a million-row export down to the csv module's C code.
    """
    first = func.substr(expr, 1, 1)
    return case(
        (first.in_(DANGEROUS_FIRST_CHARACTERS), literal(QUOTE_PREFIX, String).concat(expr)),
        else_=expr,
    )


def iso_date_sql(expr: ColumnElement, dialect: str) -> ColumnElement:
    """A DATE column as its ISO text, whatever the server's DateStyle."""
    if dialect == "postgresql":
        return func.to_char(expr, "YYYY-MM-DD")
    # SQLite stores dates as ISO text already.
    return type_coerce(expr, String())


def iso_datetime_sql(expr: ColumnElement, dialect: str) -> ColumnElement:
    """A UTC timestamp as ISO 8601 text (``2026-11-24T03:34:34Z``)."""
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", expr), 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
    return func.strftime("%Y-%m-%dT%H:%M:%SZ", expr)


@dataclass(frozen=True)
class ExportColumn:
    """One column of an export: its header, its SQL expression and what kind of value it holds."""

    name: str
    expr: ColumnElement
    kind: str = TEXT

    def for_csv(self, dialect: str) -> ColumnElement:
        """The value as the CSV file holds it, computed by the database."""
        if self.kind == TEXT:
            # Read as plain text: codes stay codes and no per-row conversion runs in Python.
            return neutralized_sql(type_coerce(self.expr, String()))
        if self.kind == DATE:
            return iso_date_sql(self.expr, dialect)
        if self.kind == DATETIME:
            return iso_datetime_sql(self.expr, dialect)
        return self.expr

    def for_xlsx(self) -> ColumnElement:
        """The value as the XLSX file holds it: typed (dates are dates), converted in Python."""
        return self.expr


@dataclass
class ExportRequest:
    """What to export: the entity, its columns, how to build the SELECT, what the audit says.

    ``select_for`` receives the column expressions (already adapted to the format) and returns
    the SELECT with the list's joins, filters and ORDER BY.
    """

    entity: str
    file_stem: str
    columns: Sequence[ExportColumn]
    select_for: Callable[[list[ColumnElement]], Any]
    details: dict[str, Any] = field(default_factory=dict)
    #: the engine the rows are read from and the audit entry written to (set by export_response)
    bind: Any = None
    #: who exports, captured while the request is alive (an audit ``Actor``)
    actor: Any = None

    def header_row(self) -> list[str]:
        return [c.name for c in self.columns]


def file_name(file_stem: str, fmt: str, today: date | None = None) -> str:
    """``patients-2026-11-24.csv``: the entity and the day of the export."""
    return f"{file_stem}-{(today or date.today()).isoformat()}.{fmt}"


# --------------------------------------------------------------------------- reading rows


@contextlib.contextmanager
def export_connection(bind: Engine | Connection) -> Iterator[Connection]:
    """A connection of the export's own, opened and closed by the streaming generator.

    The body is sent after the view has returned and Flask has torn the app context down
    (FLASK_ADMIN_NOTES trap 1), so the generator needs no Flask context at all: it holds the
    engine captured by the view. The test suite binds the app to one connection, rolled back
    after each test; the export then reads through that connection.
    """
    if isinstance(bind, Connection):
        yield bind
        return
    with bind.connect() as conn:
        yield conn


def iter_batches(
    bind: Engine | Connection, statement: Any, batch_rows: int | None = None
) -> Iterator[Sequence[Any]]:
    """Rows of ``statement`` in batches, from a server-side cursor where the database has one.

    From a PostgreSQL engine the next batches are fetched by a helper thread while the current
    one is written (see ``prefetched``).
    """
    size = batch_rows or BATCH_ROWS
    if isinstance(bind, Engine) and bind.dialect.name == "postgresql":
        return prefetched(lambda: fetch_batches(bind, statement, size))
    return fetch_batches(bind, statement, size)


def fetch_batches(bind: Engine | Connection, statement: Any, size: int) -> Iterator[Sequence[Any]]:
    """The rows of ``statement``, ``size`` at a time, on a connection opened and closed here."""
    with export_connection(bind) as conn:
        if isinstance(bind, Engine) and conn.dialect.name == "postgresql":
            for setting in POSTGRES_EXPORT_SETTINGS:
                conn.exec_driver_sql(setting)
        # PostgreSQL: a named (server-side) cursor, rows arrive batch by batch while the query
        # runs. SQLite has no such cursor, but its cursor steps through the result as it is read.
        result = conn.execute(
            statement, execution_options={"stream_results": True, "yield_per": size}
        )
        try:
            if isinstance(bind, Engine) and conn.dialect.name == "postgresql":
                # The export's values need no conversion (text, numbers, dates as psycopg2
                # makes them): the driver's tuples go straight to the writer, which saves a
                # third of the CPU of a million-row export. The first row, which SQLAlchemy has
                # read ahead, is taken through it; the cursor goes on from there.
                head = result.fetchmany(1)
                if head:
                    yield [tuple(head[0])]
                cursor = result.cursor
                while batch := cursor.fetchmany(size):
                    yield batch
            else:
                yield from result.partitions(size)
        finally:
            result.close()


_DONE = object()


def prefetched(
    source: Callable[[], Iterator[Sequence[Any]]], depth: int = PREFETCH_BATCHES
) -> Iterator[Sequence[Any]]:
    """The batches of ``source()``, read ahead by a helper thread into a short queue.

    The database works out and sends the next batches while this thread formats the current
    one (psycopg2 lets go of the GIL while it waits on the server), so an export takes about
    the longer of the two instead of their sum. At most ``depth`` batches wait in memory. The
    helper's connection is its own; an error there is raised here; closing this generator
    (the client went away) stops the helper, which then closes its cursor and connection.
    """
    batches: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                batches.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            rows = source()
            try:
                for batch in rows:
                    if not put(batch):
                        return
            finally:
                close = getattr(rows, "close", None)
                if close is not None:
                    close()  # the cursor and the connection, in the thread that opened them
            put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed over to the consuming thread
            put(exc)

    helper = threading.Thread(target=produce, name="export-prefetch", daemon=True)
    helper.start()
    try:
        while True:
            item = batches.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        # A helper still waiting on the server finishes on its own and closes its connection.
        helper.join(timeout=5)


# --------------------------------------------------------------------------- the audit


def record_export(request: ExportRequest, fmt: str, rows: int, complete: bool) -> None:
    """Record the export in its own short transaction, once the row count is known.

    ``record_event`` needs the request's session, gone by now: the entry is made for the actor
    captured by the view and appended to the chain on a connection of its own.
    """
    from backoffice.services.audit import append_entries, make_entry

    details = {**request.details, "format": fmt, "rows": rows}
    if not complete:
        details["complete"] = False
    entry = make_entry("EXPORT", request.entity, details=details, actor=request.actor)
    try:
        if isinstance(request.bind, Connection):
            with request.bind.begin_nested():
                append_entries(request.bind, [entry])
        else:
            with request.bind.begin() as conn:
                append_entries(conn, [entry])
    except Exception as exc:  # noqa: BLE001 - the download is already sent; say so in the log
        log.error(
            "export of %s: the audit entry could not be written: %s\n%s",
            request.entity,
            type(exc).__name__,
            "".join(traceback.format_tb(exc.__traceback__)),
        )


def _log_failure(request: ExportRequest, fmt: str, rows: int, exc: BaseException) -> None:
    # The exception message may quote a value: log its type and frames only.
    log.error(
        "export of %s as %s failed after %d rows: %s\n%s",
        request.entity,
        fmt,
        rows,
        type(exc).__name__,
        "".join(traceback.format_tb(exc.__traceback__)),
    )


def failure_message(rows: int) -> str:
    return (
        f"EXPORT FAILED after {rows} rows: this file is incomplete. "
        "Export again, or ask an administrator if it keeps failing."
    )


# --------------------------------------------------------------------------- CSV


def stream_csv(request: ExportRequest, statement: Any) -> Iterator[bytes]:
    """The CSV file, chunk by chunk: BOM and header first, then one chunk per batch of rows.

    RFC 4180 (the csv module's ``excel`` dialect: minimal quoting, doubled quotes, CRLF),
    UTF-8 with a BOM so that Excel reads accents, ISO dates, codes as stored, formula
    characters neutralised. A failure ends the file with an error line instead of a short file
    that looks complete; the audit entry is written at the end, whatever happened.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def take() -> bytes:
        data = buffer.getvalue().encode("utf-8")
        buffer.seek(0)
        buffer.truncate()
        return data

    writer.writerow(request.header_row())
    yield (UTF8_BOM + buffer.getvalue()).encode("utf-8")
    buffer.seek(0)
    buffer.truncate()

    rows = 0
    complete = False
    try:
        with contextlib.closing(iter_batches(request.bind, statement)) as batches:
            for batch in batches:
                writer.writerows(batch)
                rows += len(batch)
                yield take()
        complete = True
    except GeneratorExit:
        raise  # the client went away: nothing more can be sent (the audit still says so)
    except Exception as exc:  # noqa: BLE001 - reported in the file itself, see failure_message
        _log_failure(request, "csv", rows, exc)
        writer.writerow([failure_message(rows)])
        yield take()
    finally:
        record_export(request, "csv", rows, complete)


# --------------------------------------------------------------------------- XLSX


class _Sink(io.RawIOBase):
    """A write-only, non-seekable file that hands what was written to the response."""

    def __init__(self) -> None:
        super().__init__()
        self._chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._chunks.append(bytes(data))
        return len(data)

    def drain(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


def _xlsx_value(value: Any, kind: str, cell_factory: Callable[[Any], Any]) -> Any:
    """A value as an XLSX cell: text stays text (never a formula), dates are dates."""
    if value is None:
        return None
    if kind == TEXT:
        text = str(value)
        if _XML_ILLEGAL.search(text):
            # XML cannot hold these control characters; a visible mark beats a broken file.
            text = _XML_ILLEGAL.sub("\ufffd", text)
        if text.startswith("="):
            # openpyxl would store "=..." as a formula; a cell typed as text never runs.
            cell = cell_factory(text)
            cell.data_type = "s"
            return cell
        return text
    if kind == DATETIME and isinstance(value, datetime) and value.tzinfo is not None:
        # Excel has no time zones: the UTC wall time, as the header says.
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


class _XlsxStream:
    """openpyxl's write-only workbook, with each sheet's XML written straight into the zip.

    openpyxl writes a write-only sheet to a temporary file and copies it into the archive when
    the workbook is saved, so nothing could be sent before the last row. Here the sheet's XML
    goes into a zip entry opened for streaming on a non-seekable sink, and the response sends
    whatever the sink holds after every batch; the remaining parts are written by openpyxl's own
    writer at the end (pinned openpyxl version: this relies on ``WorksheetWriter(ws, out=...)``).
    """

    def __init__(self, title: str, header: list[str]) -> None:
        from openpyxl import Workbook

        self.sink = _Sink()
        self.archive = zipfile.ZipFile(
            self.sink, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True
        )
        self.workbook = Workbook(write_only=True)
        self.title = title[:28] or "export"
        self.header = header
        self.sheet: Any = None
        self.entry: Any = None
        self.rows_in_sheet = 0
        self._new_sheet()

    def _new_sheet(self) -> None:
        from openpyxl.cell import WriteOnlyCell
        from openpyxl.worksheet._writer import WorksheetWriter

        self._close_sheet()
        index = len(self.workbook.worksheets) + 1
        title = self.title if index == 1 else f"{self.title} {index}"
        self.sheet = self.workbook.create_sheet(title)
        self.sheet.freeze_panes = "A2"
        self.entry = self.archive.open(f"xl/worksheets/sheet{index}.xml", "w", force_zip64=True)
        self.sheet._writer = WorksheetWriter(self.sheet, out=self.entry)
        self.sheet._writer.write_top()
        bold = []
        for name in self.header:
            cell = WriteOnlyCell(self.sheet, value=name)
            cell.font = _bold_font()
            bold.append(cell)
        self.sheet.append(bold)
        self.rows_in_sheet = 0

    def _cell(self, value: Any) -> Any:
        from openpyxl.cell import WriteOnlyCell

        return WriteOnlyCell(self.sheet, value=value)

    def append(self, values: Sequence[Any], kinds: Sequence[str]) -> None:
        if self.rows_in_sheet >= XLSX_MAX_DATA_ROWS:
            self._new_sheet()
        self.sheet.append(
            [_xlsx_value(v, k, self._cell) for v, k in zip(values, kinds, strict=True)]
        )
        self.rows_in_sheet += 1

    def append_message(self, text: str) -> None:
        if self.rows_in_sheet >= XLSX_MAX_DATA_ROWS:
            self._new_sheet()
        self.sheet.append([text])
        self.rows_in_sheet += 1

    def _close_sheet(self) -> None:
        if self.sheet is not None and not self.sheet.closed:
            self.sheet.close()
            self.entry.close()

    def finish(self) -> None:
        from openpyxl.writer.excel import ExcelWriter

        self._close_sheet()

        class _Writer(ExcelWriter):
            def write_worksheet(self, ws: Any) -> None:
                # The sheet's XML is in the archive already (see _new_sheet).
                from openpyxl.drawing.spreadsheet_drawing import SpreadsheetDrawing

                ws._drawing = SpreadsheetDrawing()
                ws._drawing.charts = ws._charts
                ws._drawing.images = ws._images
                ws._rels = ws._writer._rels
                self.manifest.append(ws)

        _Writer(self.workbook, self.archive).save()


def _bold_font() -> Any:
    from openpyxl.styles import Font

    return Font(bold=True)


def stream_xlsx(request: ExportRequest, statement: Any) -> Iterator[bytes]:
    """The XLSX file, streamed: the sheet is compressed and sent batch by batch.

    Text cells are typed as text (a spreadsheet never evaluates them), dates as dates, codes as
    stored. A failure ends the sheet with an error row; the audit entry is written at the end.
    """
    kinds = [c.kind for c in request.columns]
    xlsx = _XlsxStream(request.file_stem, request.header_row())
    yield xlsx.sink.drain()  # the zip's first bytes: the download starts at once
    rows = 0
    complete = False
    try:
        try:
            with contextlib.closing(iter_batches(request.bind, statement)) as batches:
                for batch in batches:
                    for row in batch:
                        xlsx.append(row, kinds)
                    rows += len(batch)
                    yield xlsx.sink.drain()
            complete = True
        except GeneratorExit:
            raise
        except Exception as exc:  # noqa: BLE001 - reported in the file itself
            _log_failure(request, "xlsx", rows, exc)
            xlsx.append_message(failure_message(rows))
        xlsx.finish()
        yield xlsx.sink.drain()
    finally:
        record_export(request, "xlsx", rows, complete)


# --------------------------------------------------------------------------- the response


def export_response(request: ExportRequest, fmt: str) -> Response:
    """A streamed download of ``request`` as ``fmt`` (csv or xlsx)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}")
    from backoffice.services.audit import current_actor

    request.bind = db.engine
    request.actor = current_actor()
    dialect = request.bind.dialect.name
    # The SELECT is built here, while the request is alive; the generator only runs it.
    if fmt == "csv":
        statement = request.select_for([c.for_csv(dialect) for c in request.columns])
        body = stream_csv(request, statement)
    else:
        statement = request.select_for([c.for_xlsx() for c in request.columns])
        body = stream_xlsx(request, statement)
    name = file_name(request.file_stem, fmt)
    response = Response(body, mimetype=MIME_TYPES[fmt])
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    # Proxies must pass the chunks on as they come instead of collecting the whole file.
    response.headers["X-Accel-Buffering"] = "no"
    return response
