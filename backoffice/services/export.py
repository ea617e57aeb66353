"""Streamed CSV and XLSX exports from Core SELECTs: spreadsheet-safe, audited before the first
byte (who, what, which filters: ``EXPORT``) and after the last (rows and outcome: ``EXPORT_END``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import queue
import re
import threading
import traceback
import uuid
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from flask import Response, current_app
from sqlalchemy import Integer, String, case, func, literal, type_coerce
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from backoffice.database import statement_time_limit
from backoffice.extensions import db

log = logging.getLogger("backoffice.export")

FORMATS = ("csv", "xlsx")
# Whole Content-Type values (given as ``content_type``: a ``mimetype`` gets a charset added).
MIME_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
UTF8_BOM = "\ufeff"

# OWASP CSV injection: a spreadsheet evaluates a cell that starts with one of these.
DANGEROUS_FIRST_CHARACTERS = ("=", "+", "-", "@", "\t", "\r")
QUOTE_PREFIX = "'"

# Rows fetched per round trip (rows per chunk handed on, from a COPY): large enough to amortise
# the round trip, small enough that memory does not depend on the size of the export.
BATCH_ROWS = 5000
# An export reads every row of its cursor: plan for the whole result, not for its first tenth
# (PostgreSQL's default for cursors, which picks nested loops of index look-ups: 5.7 s instead
# of 2.7 s for the 450,000 HIGH studies). Scoped to the export's own transaction.
POSTGRES_EXPORT_SETTINGS: tuple[str, ...] = ("SET LOCAL cursor_tuple_fraction = 1.0",)
# Batches read ahead while the current one is written (see ``read_ahead``).
PREFETCH_BATCHES = 4
# PostgreSQL writes the CSV itself (see ``copy_chunks``); the file is UTF-8 whatever the
# connection's client encoding.
COPY_OPTIONS = b"(FORMAT csv, ENCODING 'UTF8')"
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


class first_code_point(FunctionElement):  # noqa: N801 - named as the SQL function it is
    """The code point of a text's first character: ``ascii()`` on PostgreSQL (a UTF-8
    database gives the code point, not only ASCII), ``unicode()`` on SQLite."""

    type = Integer()
    inherit_cache = True


@compiles(first_code_point)
def _first_code_point(element: first_code_point, compiler: Any, **kw: Any) -> str:
    return f"unicode({compiler.process(element.clauses, **kw)})"


@compiles(first_code_point, "postgresql")
def _first_code_point_pg(element: first_code_point, compiler: Any, **kw: Any) -> str:
    return f"ascii({compiler.process(element.clauses, **kw)})"


def neutralized_sql(expr: ColumnElement) -> ColumnElement:
    """``neutralize`` as a SQL expression, so the database applies it while it reads the rows.

    Same rule as ``neutralize`` (a test checks both on the same values); doing it in SQL keeps
    the Python loop of a million-row export down to the csv module's C code.
    """
    # The first character's code point: a number compared with numbers costs a third of a
    # one-character substring compared with strings (0.5 s of a million-patient export).
    return case(
        (
            first_code_point(expr).in_([ord(c) for c in DANGEROUS_FIRST_CHARACTERS]),
            literal(QUOTE_PREFIX, String).concat(expr),
        ),
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

    def for_csv(self, dialect: str, copy: bool = False) -> ColumnElement:
        """The value as the CSV file holds it, computed by the database.

        ``copy``: for PostgreSQL's own CSV writer (``COPY ... TO STDOUT``), which quotes an
        empty string (``""``) and writes booleans as ``t``/``f`` where the csv module writes
        nothing and ``True``/``False``: the SQL gives what the csv module would write, so both
        ways make the same bytes.
        """
        if self.kind == TEXT:
            # Read as plain text: codes stay codes and no per-row conversion runs in Python.
            text = neutralized_sql(type_coerce(self.expr, String()))
            return type_coerce(func.nullif(text, ""), String()) if copy else text
        if self.kind == BOOLEAN and copy:
            return case((self.expr.is_(True), "True"), (self.expr.is_(False), "False"))
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
    #: the export's time limit per statement, in seconds (0: none; see backoffice/database.py)
    time_limit: float = 0
    #: names the export in its two audit entries (EXPORT, then EXPORT_END)
    export_id: str = field(default_factory=lambda: uuid.uuid4().hex)

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
    bind: Engine | Connection,
    statement: Any,
    batch_rows: int | None = None,
    time_limit: float = 0,
) -> Iterator[Sequence[Any]]:
    """Rows of ``statement`` in batches, from a server-side cursor where the database has one.

    From a PostgreSQL engine the next batches are fetched by a helper thread while the current
    one is written (see ``prefetched``).
    """
    size = batch_rows or BATCH_ROWS
    if isinstance(bind, Engine) and bind.dialect.name == "postgresql":
        return prefetched(lambda: fetch_batches(bind, statement, size, time_limit))
    return fetch_batches(bind, statement, size, time_limit)


def _export_settings(
    conn: Connection, own: bool, time_limit: float
) -> contextlib.AbstractContextManager[None]:
    """The export's settings on a connection of its ``own`` (one of the test suite's is left as
    it is): PostgreSQL plans for the whole result; the time limit, for the export's
    transaction only."""
    if not own:
        return contextlib.nullcontext()
    if conn.dialect.name == "postgresql":
        for setting in POSTGRES_EXPORT_SETTINGS:
            conn.exec_driver_sql(setting)
    return statement_time_limit(conn, time_limit)


def fetch_batches(
    bind: Engine | Connection, statement: Any, size: int, time_limit: float = 0
) -> Iterator[Sequence[Any]]:
    """The rows of ``statement``, ``size`` at a time, on a connection opened and closed here."""
    own = isinstance(bind, Engine)
    with export_connection(bind) as conn, _export_settings(conn, own, time_limit):
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


class ExportAbandoned(Exception):
    """Raised in a helper thread when the download it feeds has been closed."""


def read_ahead(
    produce: Callable[[Callable[[Any], None]], None], depth: int = PREFETCH_BATCHES
) -> Iterator[Any]:
    """What ``produce(hand_over)`` hands over, in order, made by a helper thread ahead of use.

    The database works out and sends the next rows while this thread sends the current ones
    (psycopg2 lets go of the GIL while it waits on the server), so an export takes about the
    longer of the two instead of their sum. At most ``depth`` items wait in memory:
    ``hand_over`` blocks while the queue is full. The helper's connection is its own; an error
    there is raised here; closing this generator (the client went away) makes ``hand_over``
    raise ``ExportAbandoned`` in the helper, which then stops and lets go of its connection.
    """
    items: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def hand_over(item: Any) -> None:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.2)
                return
            except queue.Full:
                continue
        raise ExportAbandoned

    def run() -> None:
        try:
            produce(hand_over)
            hand_over(_DONE)
        except ExportAbandoned:
            return
        except BaseException as exc:  # noqa: BLE001 - handed over to the consuming thread
            with contextlib.suppress(ExportAbandoned):
                hand_over(exc)

    helper = threading.Thread(target=run, name="export-read-ahead", daemon=True)
    helper.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        # A helper still waiting on the server stops at its next hand-over.
        helper.join(timeout=5)


def prefetched(
    source: Callable[[], Iterator[Sequence[Any]]], depth: int = PREFETCH_BATCHES
) -> Iterator[Sequence[Any]]:
    """The batches of ``source()``, read ahead by a helper thread (see ``read_ahead``).

    The source is closed in the helper, the thread that opened its cursor and connection.
    """

    def produce(hand_over: Callable[[Any], None]) -> None:
        batches = source()
        try:
            for batch in batches:
                hand_over(batch)
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    return read_ahead(produce, depth)


# --------------------------------------------------------------------------- CSV rows


def uses_copy(bind: Engine | Connection) -> bool:
    """Whether the database writes the CSV rows itself (PostgreSQL's COPY, through psycopg2)."""
    return bind.dialect.name == "postgresql" and bind.dialect.driver == "psycopg2"


def csv_chunks(
    bind: Engine | Connection,
    statement: Any,
    batch_rows: int | None = None,
    time_limit: float = 0,
) -> Iterator[tuple[bytes, int]]:
    """The CSV lines of the rows of ``statement`` (no header) as ``(bytes, rows)`` chunks.

    About ``batch_rows`` rows a chunk, in the csv module's ``excel`` dialect (minimal quoting,
    doubled quotes, CRLF), UTF-8. PostgreSQL writes them itself (``copy_chunks``, with the
    statement built by ``ExportColumn.for_csv(..., copy=True)``); elsewhere the csv module
    writes the rows it reads (``written_chunks``). Both make the same bytes for the same rows.
    """
    size = batch_rows or BATCH_ROWS
    if uses_copy(bind):
        return copy_chunks(bind, statement, size, time_limit)
    return written_chunks(bind, statement, size, time_limit)


def written_chunks(
    bind: Engine | Connection, statement: Any, size: int, time_limit: float = 0
) -> Iterator[tuple[bytes, int]]:
    """The rows of ``statement`` written by the csv module, a batch a chunk."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    with contextlib.closing(iter_batches(bind, statement, size, time_limit)) as batches:
        for batch in batches:
            writer.writerows(batch)
            data = buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
            yield data, len(batch)


def csv_line(values: Sequence[Any]) -> bytes:
    """One CSV line as the csv module writes it (the header, the failure line)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(values)
    return buffer.getvalue().encode("utf-8")


def crlf_rows(rows: Sequence[bytes]) -> bytes:
    """PostgreSQL's CSV rows (each ending with LF) with CRLF line ends, as the csv module ends
    them; a line break inside a quoted field stays as it is, as the csv module leaves it."""
    data = b"".join(rows)
    if data.count(b"\n") == len(rows):
        return data.replace(b"\n", b"\r\n")  # the row ends only: no field holds a line break
    # A field holding a line break is quoted, and the quotes inside a quoted field are doubled:
    # the pieces between quotes at even places are outside every field's quotes (UTF-8 has no
    # byte of a multi-byte character equal to a quote or a line feed).
    pieces = data.split(b'"')
    pieces[::2] = [piece.replace(b"\n", b"\r\n") for piece in pieces[::2]]
    return b'"'.join(pieces)


def copy_sql(statement: Any, dialect: Dialect, cursor: Any) -> bytes:
    """``COPY (statement) TO STDOUT`` as SQL text, bound values included.

    COPY takes no parameters: the statement is compiled for ``dialect`` with its IN lists
    expanded to one parameter per value (what ``render_postcompile`` does), each value goes
    through its type's bind processor (enums to their codes, ...) as it would at execution,
    and psycopg2 quotes them (``cursor.mogrify``). No value is ever formatted into the SQL here.
    """
    if dialect.paramstyle != "pyformat":
        raise ValueError(f"COPY needs psycopg2's pyformat parameters, not {dialect.paramstyle}")
    compiled = statement.compile(dialect=dialect)
    expanded = compiled.construct_expanded_state()
    unescaped = {escaped: name for name, escaped in compiled.escaped_bind_names.items()}
    expanded_keys = {key for keys in expanded.parameter_expansion.values() for key in keys}
    values: dict[str, Any] = {}
    for key, value in expanded.parameters.items():
        if key in expanded_keys:
            processor = expanded.processors.get(key)
        else:
            bind_type = compiled.binds[unescaped.get(key, key)].type
            processor = bind_type.dialect_impl(dialect).bind_processor(dialect)
        values[key] = value if processor is None else processor(value)
    # mogrify also turns the compiler's doubled percent signs back into single ones.
    select_sql = cursor.mogrify(expanded.statement, values)
    return b"COPY (" + select_sql + b") TO STDOUT WITH " + COPY_OPTIONS


class _CopyRows:
    """The file that psycopg2's ``copy_expert`` writes to: rows grouped into chunks.

    PostgreSQL sends a COPY's output one row a message and psycopg2 makes one ``write`` call a
    message, so rows are counted by calls and a chunk always ends at the end of a row.
    """

    def __init__(self, hand_over: Callable[[tuple[bytes, int]], None], size: int) -> None:
        self._hand_over = hand_over
        self._size = size
        self._rows: list[bytes] = []

    def write(self, data: bytes) -> None:
        rows = self._rows
        rows.append(data)
        if len(rows) >= self._size:
            self.flush()

    def flush(self) -> None:
        if self._rows:
            rows, self._rows = self._rows, []
            self._hand_over((crlf_rows(rows), len(rows)))


def copy_chunks(
    bind: Engine | Connection, statement: Any, size: int, time_limit: float = 0
) -> Iterator[tuple[bytes, int]]:
    """The rows of ``statement`` as PostgreSQL writes them (``COPY ... TO STDOUT``), in chunks.

    From an engine, a helper thread runs the COPY on a connection of its own and hands the
    chunks over through a short queue (``read_ahead``): memory stays flat whatever the size.
    """
    if isinstance(bind, Connection):
        return _copy_in_transaction(bind, statement, size)
    return read_ahead(
        lambda hand_over: _copy_from_engine(bind, statement, size, hand_over, time_limit)
    )


def _copy_from_engine(
    engine: Engine,
    statement: Any,
    size: int,
    hand_over: Callable[[Any], None],
    time_limit: float = 0,
) -> None:
    """The COPY on a connection of its own (in the helper thread of ``read_ahead``), in the
    transaction that carries the export's time limit."""
    with engine.connect() as conn:
        sink = _CopyRows(hand_over, size)
        try:
            with (
                statement_time_limit(conn, time_limit),
                contextlib.closing(conn.connection.cursor()) as cursor,
            ):
                cursor.copy_expert(copy_sql(statement, conn.dialect, cursor), sink)
        except BaseException as exc:
            # A COPY stopped half-way (the client went away and ``hand_over`` raised, or an
            # error) can leave the connection in copy mode, and the pool's rollback would then
            # read the rest of the export first (libpq eats it): the connection is dropped
            # instead, and the server stops as soon as it is gone.
            conn.invalidate()
            if not isinstance(exc, ExportAbandoned):
                sink.flush()  # the rows read before the error go out before the error line
            raise
        sink.flush()


def _copy_in_transaction(
    conn: Connection, statement: Any, size: int
) -> Iterator[tuple[bytes, int]]:
    """The COPY on the caller's connection, in its transaction (the test suite binds the app
    to one connection whose rows are not committed): run to the end before the first chunk is
    handed on, so that the connection is free again whenever the download stops."""
    chunks: list[tuple[bytes, int]] = []
    sink = _CopyRows(chunks.append, size)
    try:
        # A savepoint: a COPY that fails leaves the caller's transaction usable.
        with conn.begin_nested(), contextlib.closing(conn.connection.cursor()) as cursor:
            cursor.copy_expert(copy_sql(statement, conn.dialect, cursor), sink)
        sink.flush()
    except Exception:
        sink.flush()
        yield from chunks  # the rows read before the failure, then the failure
        raise
    yield from chunks


# --------------------------------------------------------------------------- the audit


COMPLETED, FAILED, INTERRUPTED = "completed", "failed", "interrupted"


def record_export_intent(request: ExportRequest, fmt: str) -> None:
    """The ``EXPORT`` entry, before the first byte leaves: who exports what, how filtered.

    Committed with the request's session: if it cannot be written (the database is down) the
    export does not start, so no file leaves without its entry.
    """
    from backoffice.services.audit import record_event

    details = {**request.details, "format": fmt, "export": request.export_id}
    record_event("EXPORT", request.entity, details=details)
    db.session.commit()


def record_export(request: ExportRequest, fmt: str, rows: int, outcome: str) -> None:
    """The ``EXPORT_END`` entry, in its own short transaction once the stream has ended: how
    many rows left, and whether the file is complete, failed or was cut off by the client.

    ``record_event`` needs the request's session, gone by now: the entry is made for the actor
    captured by the view and appended to the chain on a connection of its own. If the database
    is gone by then, the ``EXPORT`` entry written before the first byte still says that the
    export was made, without its outcome.
    """
    from backoffice.services.audit import append_entries, make_entry

    details = {"export": request.export_id, "format": fmt, "rows": rows, "outcome": outcome}
    entry = make_entry("EXPORT_END", request.entity, details=details, actor=request.actor)
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
    """The CSV file, chunk by chunk: BOM and header first, then the rows (``csv_chunks``).

    RFC 4180 (the csv module's ``excel`` dialect: minimal quoting, doubled quotes, CRLF),
    UTF-8 with a BOM so that Excel reads accents, ISO dates, codes as stored, formula
    characters neutralised. The first bytes leave before the query runs. A failure ends the
    file with an error line instead of a short file that looks complete; the audit entry is
    written at the end, whatever happened.
    """
    yield UTF8_BOM.encode("utf-8") + csv_line(request.header_row())
    rows = 0
    outcome = INTERRUPTED
    try:
        chunks = csv_chunks(request.bind, statement, time_limit=request.time_limit)
        with contextlib.closing(chunks):
            for data, count in chunks:
                rows += count
                yield data
        outcome = COMPLETED
    except GeneratorExit:
        raise  # the client went away: nothing more can be sent (the audit still says so)
    except Exception as exc:  # noqa: BLE001 - reported in the file itself, see failure_message
        outcome = FAILED
        _log_failure(request, "csv", rows, exc)
        yield csv_line([failure_message(rows)])
    finally:
        record_export(request, "csv", rows, outcome)


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
    outcome = INTERRUPTED
    try:
        try:
            batches = iter_batches(request.bind, statement, time_limit=request.time_limit)
            with contextlib.closing(batches):
                for batch in batches:
                    for row in batch:
                        xlsx.append(row, kinds)
                    rows += len(batch)
                    yield xlsx.sink.drain()
            outcome = COMPLETED
        except GeneratorExit:
            raise
        except Exception as exc:  # noqa: BLE001 - reported in the file itself
            outcome = FAILED
            _log_failure(request, "xlsx", rows, exc)
            xlsx.append_message(failure_message(rows))
        xlsx.finish()
        yield xlsx.sink.drain()
    finally:
        record_export(request, "xlsx", rows, outcome)


# --------------------------------------------------------------------------- the response


def export_response(request: ExportRequest, fmt: str) -> Response:
    """A streamed download of ``request`` as ``fmt`` (csv or xlsx)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}")
    from backoffice.auth.scope import scoped_statement
    from backoffice.services.audit import current_actor

    request.bind = db.engine
    request.actor = current_actor()
    request.time_limit = float(current_app.config.get("EXPORT_STATEMENT_TIMEOUT_SECONDS", 0))
    dialect = request.bind.dialect.name
    # The SELECT is built here, while the request is alive; the generator only runs it.
    # The rows are read on a connection of the export's own, which no session event sees: the
    # statement carries the user's record scope itself (backoffice/auth/scope.py).
    if fmt == "csv":
        copy = uses_copy(request.bind)
        columns = [c.for_csv(dialect, copy) for c in request.columns]
        statement = scoped_statement(request.select_for(columns))
        body = stream_csv(request, statement)
    else:
        statement = scoped_statement(request.select_for([c.for_xlsx() for c in request.columns]))
        body = stream_xlsx(request, statement)
    record_export_intent(request, fmt)  # before the first byte: no export goes unaudited
    name = file_name(request.file_stem, fmt)
    response = Response(body, content_type=MIME_TYPES[fmt])
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    # Proxies must pass the chunks on as they come instead of collecting the whole file.
    response.headers["X-Accel-Buffering"] = "no"
    return response
