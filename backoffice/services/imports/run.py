"""Bulk CSV import of clinics, doctors, patients and studies: one service for page, command, tests.

``run_import`` reads a file as people make it (see ``reader``), checks every cell with the
rules in ``backoffice.validation``, stages the valid rows in a temporary table and lets the
database find existing records and conflicts with a few set-based statements (``plan``).
A preview (``dry_run``) rolls everything back; a commit writes all or nothing (or skips the
rejected rows when asked), records an ``ImportBatch`` and the audit entries, and commits once.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import Any

from flask import current_app, has_app_context
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from backoffice.extensions import db
from backoffice.i18n import _
from backoffice.models import AuditEntry, ImportBatch, utcnow
from backoffice.services.audit import append_entries, current_actor, make_entry
from backoffice.services.imports.kinds import KINDS, Column, Kind
from backoffice.services.imports.plan import CHUNK, PLANS, PROBLEMS, Db, Plan
from backoffice.services.imports.reader import (
    NEUTRALISED_FIRST,
    CsvRows,
    FileInfo,
    FileRefused,
    inspect_file,
)
from backoffice.validation import RuleError

log = logging.getLogger("backoffice.import")

Progress = Callable[[str, int, int], None]
PREVIEW_ROWS = 10
PROBLEM_ROWS = 200
AUDIT_CHUNK = 2000


@dataclass
class ImportReport:
    """What an import did or would do; the same for the page, the command and the tests."""

    kind: str
    file_name: str
    dry_run: bool = True
    skip_invalid: bool = False
    sha256: str = ""
    size: int = 0
    encoding: str = ""
    delimiter: str = ""
    rows_total: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    problems_total: int = 0
    problems: list[dict[str, Any]] = field(default_factory=list)
    unknown_columns: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    sample: list[dict[str, Any]] = field(default_factory=list)
    outcome: str = "previewed"  # previewed, committed, rejected, refused, changed, failed
    message: str = ""
    batch_id: int | None = None
    started_at: str = ""
    seconds: float = 0.0

    @property
    def counts(self) -> dict[str, int]:
        return {
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
        }

    @property
    def written(self) -> bool:
        return self.outcome == "committed"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImportReport:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def summary(self) -> str:
        """One line: what happened to the rows."""
        if self.outcome == "refused":
            return self.message
        verb = _("would be") if self.dry_run else ""
        parts = _(
            "%(total)d rows: %(created)d created, %(updated)d updated, %(unchanged)d unchanged, "
            "%(rejected)d rejected.",
            total=self.rows_total,
            **self.counts,
        )
        if verb:
            parts = _(
                "Preview of %(file)s, nothing written yet: %(parts)s",
                file=self.file_name,
                parts=parts,
            )
        else:
            parts = f"{self.file_name}: {parts}"
        return parts

    def text_lines(self, problem_limit: int = 50) -> list[str]:
        """The report as the command prints it (the page shows the same facts)."""
        lines = [self.summary()]
        if self.outcome != "refused" and self.message:
            lines.append(self.message)
        if self.unknown_columns:
            lines.append(
                _(
                    "Columns not used (ignored): %(names)s.",
                    names=", ".join(self.unknown_columns),
                )
            )
        for p in self.problems[:problem_limit]:
            lines.append(_("line %(line)d: %(message)s", line=p["line"], message=p["message"]))
        more = self.problems_total - min(len(self.problems), problem_limit)
        if more > 0:
            lines.append(_("... and %(n)d more problems.", n=more))
        return lines


class _Header:
    """Which column of the file feeds which field; refuses a header that cannot work."""

    def __init__(self, kind: Kind, header: list[str], raw_header: list[str]) -> None:
        self.kind = kind
        self.width = len(header)
        index: dict[str, int] = {}
        used: dict[str, str] = {}
        unknown: list[str] = []
        problems: list[str] = []
        for i, name in enumerate(header):
            if not name:
                continue
            column = _column_for(kind, name)
            if column is None:
                unknown.append(raw_header[i])
                continue
            if column.name in index:
                problems.append(
                    _(
                        "The columns '%(a)s' and '%(b)s' both give %(name)s; keep one.",
                        a=used[column.name],
                        b=raw_header[i],
                        name=column.name,
                    )
                )
                continue
            index[column.name] = i
            used[column.name] = raw_header[i]
        missing = [c.name for c in kind.columns if c.required and c.name not in index]
        if missing:
            problems.insert(
                0,
                _(
                    "Required columns are missing: %(names)s. The first line of the file must "
                    "name the columns (download the template to see them).",
                    names=", ".join(missing),
                ),
            )
        if kind.one_of and not any(n in index for n in kind.one_of):
            problems.append(
                _(
                    "The file needs at least one of these columns: %(names)s.",
                    names=", ".join(kind.one_of),
                )
            )
        if problems:
            raise FileRefused(" ".join(problems))
        self.unknown = unknown
        self.present = set(index)
        self.slots: list[tuple[int | None, Column]] = [(index.get(c.name), c) for c in kind.columns]


def _column_for(kind: Kind, name: str) -> Column | None:
    for column in kind.columns:
        if name == column.name or name in column.aliases:
            return column
    return None


def _problem_text(column: str, exc: Exception) -> str:
    text = str(exc)
    if text.startswith(("'", "is ")):
        return f"{column} {text}"
    return f"{column}: {text}"


def neutralise_cell(value: str) -> str:
    """Cells a spreadsheet would run as formulas get a leading quote (the importer removes it)."""
    return "'" + value if value[:1] in NEUTRALISED_FIRST else value


class _Run:
    """One import in progress: the file, its rows, the staging tables, the report."""

    def __init__(
        self,
        path: Path,
        kind: Kind,
        report: ImportReport,
        progress: Progress | None,
        max_rows: int,
    ) -> None:
        self.path = path
        self.kind = kind
        self.report = report
        self.progress = progress or (lambda phase, done, total: None)
        self.max_rows = max_rows
        self.seq = 0
        self.problem_buffer: list[tuple] = []
        self.db = Db(db.session.connection())
        self.plan: Plan | None = None
        self.info: FileInfo | None = None
        self._ids: dict[int, tuple[int, int]] = {}  # line -> (record id, version) of updates

    # -- problems -------------------------------------------------------------------------
    def add_problem(self, line: int, column: str | None, value: Any, message: str) -> None:
        self.seq += 1
        self.problem_buffer.append(
            (self.seq, line, column, None if value is None else str(value), message)
        )
        if len(self.problem_buffer) >= CHUNK:
            self.flush_problems()

    def flush_problems(self) -> None:
        self.db.load(PROBLEMS, ("seq", "line", "col", "value", "message"), self.problem_buffer)
        self.problem_buffer = []

    # -- reading --------------------------------------------------------------------------
    def read(self, info: FileInfo) -> None:
        self.info = info
        report = self.report
        with CsvRows(self.path, info) as rows:
            if not rows.header:
                raise FileRefused(_("The file is empty."))
            header = _Header(self.kind, rows.header, rows.raw_header)
            report.unknown_columns = header.unknown
            report.columns = [c.name for c in self.kind.columns if c.name in header.present]
            plan = PLANS[self.kind.name](self.db, self.kind, header.present, self.add_problem)
            self.plan = plan
            plan.create_tables()
            self._stage_rows(rows, header, plan, info.size)
        self.flush_problems()
        if report.rows_total == 0:
            raise FileRefused(_("The file has a header line but no rows."))
        plan.after_load()

    def _stage_rows(self, rows: CsvRows, header: _Header, plan: Plan, size: int) -> None:
        # Only the columns the file has are read; the others stay None.
        slots = [
            (pos + 1, idx, c.parse, c)
            for pos, (idx, c) in enumerate(header.slots)
            if idx is not None
        ]
        absent = [None] * len(header.slots)
        width = header.width
        phones_at = plan.phones_position()  # doctors and patients: numbers staged apart
        one_of = [pos for pos, _idx, _parse, c in slots if c.name in self.kind.one_of]
        staged: list[tuple] = []
        phones: list[tuple] = []
        total = 0
        add_problem = self.add_problem
        restore = NEUTRALISED_FIRST
        for line, cells in rows:
            total += 1
            if total > self.max_rows:
                raise FileRefused(
                    _(
                        "The file has more than %(limit)s rows, the most one import takes. "
                        "Split it into smaller files.",
                        limit=f"{self.max_rows:,}",
                    )
                )
            n = len(cells)
            values = [line, *absent]
            ok = True
            for pos, idx, parse, column in slots:
                raw = cells[idx] if idx < n else ""
                value = None
                if raw:
                    if raw[0] == "'" and raw[1:2] in restore:
                        raw = raw[1:]  # an export neutralised this cell: read it back
                    try:
                        value = parse(raw)
                    except RuleError as exc:
                        ok = False
                        add_problem(line, column.name, raw.strip(), _problem_text(column.name, exc))
                        continue
                if value is None:
                    if column.needed:
                        ok = False
                        add_problem(
                            line,
                            column.name,
                            "",
                            _("%(column)s is empty; a value is needed.", column=column.name),
                        )
                    continue
                values[pos] = value
            if n > width and "".join(cells[width:]).strip():
                ok = False
                add_problem(
                    line,
                    None,
                    None,
                    _(
                        "this line has %(n)d values but the header has %(width)d columns (a "
                        "value with a comma or semicolon that is not in quotes?).",
                        n=n,
                        width=width,
                    ),
                )
            if one_of and ok and all(values[pos] is None for pos in one_of):
                ok = False
                add_problem(
                    line,
                    None,
                    None,
                    _(
                        "a patient needs an id (record number) or an email so that the next "
                        "upload finds them again: both are empty."
                    ),
                )
            if not ok:
                continue
            if phones_at is not None:
                numbers = values[phones_at] or []
                values[phones_at] = ";".join(f"{k}:{num}" for k, num in numbers) or None
                phones.extend((line, pos, num, k) for pos, (k, num) in enumerate(numbers))
            staged.append(tuple(values))
            if len(staged) >= CHUNK:
                plan.load(staged, phones)
                staged, phones = [], []
            if total % CHUNK == 0:
                self.progress("reading", rows.bytes_read, size)
        plan.load(staged, phones)
        self.report.rows_total = total
        self.progress("reading", size, size)

    # -- checking -------------------------------------------------------------------------
    def analyse(self, since: datetime | None) -> None:
        plan = self.plan
        assert plan is not None
        steps = 5
        self.progress("checking", 0, steps)
        plan.match()
        self.progress("checking", 1, steps)
        plan.check()
        self.progress("checking", 3, steps)
        if since is not None:
            plan.flag_changed_since(since, self._changed_message())
        self.flush_problems()
        plan.mark_bad()
        self.progress("checking", 4, steps)
        report = self.report
        counts = plan.counts()
        report.created = counts["created"]
        report.updated = counts["updated"]
        report.unchanged = counts["unchanged"]
        report.rejected = (
            self.db.scalar(f"SELECT count(DISTINCT line) FROM {PROBLEMS}") or 0  # noqa: S608
        )
        report.problems_total = self.db.scalar(f"SELECT count(*) FROM {PROBLEMS}") or 0  # noqa: S608
        report.problems = [
            {"line": r[0], "column": r[1], "value": r[2], "message": r[3]}
            for r in self.db.run(
                f"SELECT line, col, value, message FROM {PROBLEMS} "  # noqa: S608
                "ORDER BY line, seq LIMIT :n",
                n=PROBLEM_ROWS,
            ).all()
        ]
        report.sample = self._sample()
        self.progress("checking", steps, steps)

    def _changed_message(self) -> Callable[[int], str]:
        entity = self.kind.entity
        asked = 0

        def describe(target_id: int) -> str:
            nonlocal asked
            asked += 1
            last = None
            if asked <= 20:  # who and when for the first ones; the rest say the same thing
                last = db.session.execute(
                    select(AuditEntry.actor_label, AuditEntry.at)
                    .where(AuditEntry.entity == entity, AuditEntry.entity_id == str(target_id))
                    .order_by(AuditEntry.id.desc())
                    .limit(1)
                ).first()
            if last is not None:
                return _(
                    "this record was changed by %(who)s at %(when)s, after your preview: it was "
                    "not overwritten. Preview the file again to see the change.",
                    who=last[0] or _("another user"),
                    when=last[1].strftime("%Y-%m-%d %H:%M UTC"),
                )
            return _(
                "this record was changed after your preview: it was not overwritten. Preview "
                "the file again to see the change."
            )

        return describe

    def _sample(self) -> list[dict[str, Any]]:
        plan = self.plan
        assert plan is not None
        names = [c.name for c in self.kind.columns]
        present = set(self.report.columns)
        out = []
        updated_lines = []
        for row in plan.sample(PREVIEW_ROWS):
            values = {
                name: _display(v)
                for name, v in zip(names, row[2:], strict=False)
                if name in present
            }
            out.append(
                {"line": row[0], "action": row[1] or "create", "values": values, "changes": {}}
            )
            if row[1] == "update":
                updated_lines.append(row[0])
        if updated_lines:
            by_line = {s["line"]: s for s in out}
            for line, changes in self._changes(updated_lines):
                by_line[line]["changes"] = changes
        return out

    def _changes(self, lines: list[int] | None = None) -> Iterator[tuple[int, dict[str, list]]]:
        """(line, {field: [old, new]}) of rows that update a record; also fills ``_ids``."""
        plan = self.plan
        assert plan is not None
        fields = plan.written_fields()
        sql = plan.old_values_sql()
        if lines is not None:
            sql = sql.replace(
                "ORDER BY s.line",
                f"AND s.line IN ({', '.join(str(int(n)) for n in lines)}) ORDER BY s.line",
            )
        for chunk in self.db.stream(sql):
            # What is not a column of the table (phones, a doctor's specialties).
            extra = plan.extra_changes([(r[0], r[1]) for r in chunk])
            for row in chunk:
                changes: dict[str, list] = {}
                for i, f in enumerate(fields):
                    old, new = _plain(f.column, row[3 + 2 * i]), _plain(f.column, row[4 + 2 * i])
                    if new is None and f.keep_when_empty:
                        continue
                    if old != new:
                        changes[f.column] = [old, new]
                changes.update(extra.get(row[0], {}))
                self._ids[row[0]] = (row[1], row[2])
                yield row[0], changes

    # -- writing --------------------------------------------------------------------------
    def write(self, batch_id: int) -> None:
        plan = self.plan
        assert plan is not None
        report = self.report
        now = utcnow()
        self.progress("writing", 0, 4)
        created = plan.insert_created(batch_id, now)
        if created != report.created:
            raise _ConcurrentChange()
        self.progress("writing", 1, 4)
        actor = current_actor()
        entity = self.kind.entity
        self._ids = {}
        with tempfile.TemporaryFile("w+", encoding="utf-8") as spool:
            # Old values are read before the update; the entries are appended after it, just
            # before the commit, because appending locks the head of the audit chain.
            n_entries = 0
            for line, changes in self._changes():
                record_id, version = self._ids.pop(line)
                spool.write(
                    json.dumps(
                        [record_id, version + 1, line, changes], default=str, ensure_ascii=False
                    )
                    + "\n"
                )
                n_entries += 1
            updated = plan.update_changed(now)
            if updated != report.updated:
                raise _ConcurrentChange()
            self.progress("writing", 2, 4)
            plan.after_writes(batch_id, now)
            self.progress("writing", 3, 4)
            spool.seek(0)
            done = 0
            while True:
                entries = []
                for raw in spool:
                    record_id, version, line, changes = json.loads(raw)
                    entries.append(
                        make_entry(
                            "UPDATE",
                            entity,
                            record_id,
                            changes=changes,
                            details={"version": version, "line": line},
                            batch_id=batch_id,
                            actor=actor,
                        )
                    )
                    if len(entries) >= AUDIT_CHUNK:
                        break
                if not entries:
                    break
                append_entries(self.db.conn, entries)
                done += len(entries)
                self.progress("auditing", done, n_entries)
        self.progress("writing", 4, 4)

    def write_rejected(self, out: Path) -> None:
        """The rejected rows as they are in the file, with an ``error`` column added."""
        assert self.info is not None
        messages = _grouped_messages(self.db)
        current = next(messages, None)
        with (
            CsvRows(self.path, self.info) as rows,
            out.open("w", newline="", encoding="utf-8-sig") as fh,
        ):
            writer = csv.writer(fh)
            writer.writerow([neutralise_cell(c) for c in rows.raw_header] + ["error"])
            for line, cells in rows:
                while current is not None and current[0] < line:
                    current = next(messages, None)
                if current is None:
                    break
                if current[0] == line:
                    writer.writerow(
                        [neutralise_cell(c) for c in cells] + [neutralise_cell(current[1])]
                    )


class _ConcurrentChange(Exception):
    """Records changed while the import was writing; nothing is committed."""


def _grouped_messages(dbx: Db) -> Iterator[tuple[int, str]]:
    line = None
    parts: list[str] = []
    for chunk in dbx.stream(f"SELECT line, message FROM {PROBLEMS} ORDER BY line, seq"):  # noqa: S608
        for row_line, message in chunk:
            if row_line != line and line is not None:
                yield line, "; ".join(parts)
                parts = []
            line = row_line
            parts.append(message)
    if line is not None:
        yield line, "; ".join(parts)


_BOOL_COLUMNS = {"active", "is_primary", "contrast_allergy"}


def _plain(column: str, value: Any) -> Any:
    """One form of a value on both engines (dates as ISO text, booleans as booleans)."""
    if value is None:
        return None
    if column in _BOOL_COLUMNS:
        return bool(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    return value


def _display(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return _("yes") if value else _("no")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _config(name: str, default: Any) -> Any:
    return current_app.config.get(name, default) if has_app_context() else default


def run_import(
    path: str | Path,
    kind: str,
    *,
    file_name: str | None = None,
    dry_run: bool = True,
    skip_invalid: bool = False,
    since: datetime | None = None,
    expected: dict[str, int] | None = None,
    progress: Progress | None = None,
    rejected_path: str | Path | None = None,
) -> ImportReport:
    """Preview (``dry_run``) or import a CSV file of ``kind``; see the module docstring.

    ``since`` (the preview's time) makes records edited after it problems instead of being
    overwritten; ``expected`` (the preview's counts) stops a commit whose counts have changed.
    The session must have no pending work: the import commits or rolls back all of it.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown import kind {kind!r}")
    path = Path(path)
    report = ImportReport(
        kind=kind,
        file_name=file_name or path.name,
        dry_run=dry_run,
        skip_invalid=skip_invalid,
        started_at=utcnow().isoformat(),
    )
    started = time.monotonic()
    run: _Run | None = None
    try:
        info = inspect_file(path, _config("MAX_CONTENT_LENGTH", None))
        report.sha256, report.size = info.sha256, info.size
        report.encoding, report.delimiter = info.encoding, info.delimiter
        if not dry_run:
            # The batch is on record (as running) before the work starts, in a transaction of
            # its own: admins see it, and the rows written later point to a committed row
            # (PostgreSQL checks that reference faster than one to a row of the same
            # transaction: about 3 s less per million rows).
            report.batch_id = _open_batch(report)
        run = _Run(path, KINDS[kind], report, progress, _config("IMPORT_MAX_ROWS", 1_000_000))
        run.read(info)
        run.analyse(since)
        if rejected_path is not None and report.rejected:
            run.write_rejected(Path(rejected_path))
        if dry_run:
            report.outcome = "previewed"
            report.message = _preview_message(report)
            _finish(run, commit=False)
        elif expected is not None and {k: expected.get(k) for k in report.counts} != report.counts:
            report.outcome = "changed"
            report.message = _(
                "The data changed since your preview (now: %(now)s). Nothing was written: check "
                "the new preview below and confirm again.",
                now=_counts_text(report.counts),
            )
            _finish(run, commit=False)
        elif report.rejected and not skip_invalid:
            report.outcome = "rejected"
            report.message = _(
                "Nothing was imported: %(n)d rows have problems (all or nothing). Fix those rows "
                "and upload the file again, or choose to import the valid rows and skip the "
                "rejected ones.",
                n=report.rejected,
            )
            _finish(run, commit=False)
        else:
            assert report.batch_id is not None
            run.write(report.batch_id)
            report.outcome = "committed"
            report.message = _committed_message(report)
            _close_batch(run.db.conn, report)
            _finish(run, commit=True)
    except FileRefused as exc:
        report.outcome = "refused"
        report.message = exc.message
        _finish(run, commit=False)
    except (_ConcurrentChange, IntegrityError):
        report.outcome = "failed"
        report.message = _(
            "Other changes to the same records were made while the file was being imported; "
            "nothing was written. Preview the file again."
        )
        _finish(run, commit=False)
    except Exception as exc:  # noqa: BLE001 - reported as a failed import, logged without values
        log.error(
            "import of %s failed: %s\n%s",
            kind,
            type(exc).__name__,
            "".join(traceback.format_tb(exc.__traceback__)),
        )
        report.outcome = "failed"
        report.message = _("The import failed because of an unexpected error; nothing was written.")
        _finish(run, commit=False)
    report.seconds = round(time.monotonic() - started, 3)
    if not dry_run and report.outcome != "committed":
        _record_unwritten(report)
    log.info(
        "import %s %s: %s rows, %s created, %s updated, %s unchanged, %s rejected in %.2fs",
        kind,
        report.outcome,
        report.rows_total,
        report.created,
        report.updated,
        report.unchanged,
        report.rejected,
        report.seconds,
    )
    return report


def _finish(run: _Run | None, commit: bool) -> None:
    if run is not None:
        try:
            run.db.close()  # no COPY left in flight
        except Exception:  # noqa: BLE001 - a failed COPY is rolled back below with the rest
            commit = False
    if run is not None and run.plan is not None and commit:
        run.plan.drop_tables()
    if commit:
        db.session.commit()
    else:
        db.session.rollback()  # the staging tables go with it


def _counts_text(counts: dict[str, int]) -> str:
    return _(
        "%(created)d created, %(updated)d updated, %(unchanged)d unchanged, %(rejected)d rejected",
        **counts,
    )


def _preview_message(report: ImportReport) -> str:
    if report.rejected:
        return _(
            "%(n)d rows have problems. Fix them and upload the file again, or confirm to import "
            "the valid rows and skip the rejected ones.",
            n=report.rejected,
        )
    return _("No problems found. Confirm to import.")


def _committed_message(report: ImportReport) -> str:
    text = _("Imported: %(counts)s.", counts=_counts_text(report.counts))
    if report.rejected:
        text += " " + _("The %(n)d rejected rows were skipped.", n=report.rejected)
    return text


def _batch_values(report: ImportReport) -> dict[str, Any]:
    actor = current_actor()
    return {
        "kind": report.kind,
        "file_name": report.file_name[:255],
        "file_sha256": report.sha256 or "",
        "file_size": report.size,
        "user_id": actor.user_id,
        "actor_label": actor.label,
        "mode": "skip_invalid" if report.skip_invalid else "all_or_nothing",
        "rows_total": report.rows_total,
        "rows_created": report.created,
        "rows_updated": report.updated,
        "rows_unchanged": report.unchanged,
        "rows_rejected": report.rejected,
        "message": (report.message or "")[:500] or None,
        "created_at": utcnow(),
    }


def _open_batch(report: ImportReport) -> int:
    values = _batch_values(report) | {"status": "running"}
    result = db.session.connection().execute(insert(ImportBatch.__table__).values(**values))
    batch_id = int(result.inserted_primary_key[0])
    db.session.commit()
    return batch_id


def _close_batch(conn: Any, report: ImportReport) -> None:
    values = _batch_values(report)
    values.pop("created_at")
    conn.execute(
        update(ImportBatch.__table__)
        .where(ImportBatch.__table__.c.id == report.batch_id)
        .values(**values, status=report.outcome, finished_at=utcnow())
    )
    append_entries(conn, [_import_event(report)])


def _import_event(report: ImportReport) -> dict[str, Any]:
    return make_entry(
        "IMPORT",
        "import_batch",
        report.batch_id,
        details={
            "kind": report.kind,
            "file_name": report.file_name,
            "sha256": report.sha256,
            "outcome": report.outcome,
            "mode": "skip_invalid" if report.skip_invalid else "all_or_nothing",
            "rows": report.rows_total,
            **report.counts,
        },
        batch_id=report.batch_id,
    )


def _record_unwritten(report: ImportReport) -> None:
    """An import that wrote nothing is still a batch (who tried what, and why it stopped)."""
    with contextlib.suppress(Exception):
        conn = db.session.connection()
        if report.batch_id is None:  # refused before the batch was opened
            values = _batch_values(report) | {"status": report.outcome, "finished_at": utcnow()}
            result = conn.execute(insert(ImportBatch.__table__).values(**values))
            report.batch_id = int(result.inserted_primary_key[0])
            append_entries(conn, [_import_event(report)])
        else:
            _close_batch(conn, report)
        db.session.commit()
        return
    db.session.rollback()
    log.error("could not record the import batch of a %s import", report.kind)


def import_settings() -> dict[str, Any]:
    """The limits an import works within (shown on the page)."""
    return {
        "max_bytes": _config("MAX_CONTENT_LENGTH", None),
        "max_rows": _config("IMPORT_MAX_ROWS", 1_000_000),
    }
