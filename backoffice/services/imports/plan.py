"""The database side of an import: staging tables, matching by key, checks, and set-based writes.

Validated rows go to a temporary staging table (COPY on PostgreSQL, executemany on SQLite);
everything after that is a handful of statements over the whole table: existing records are found
with joins, never row by row, and created and updated rows are written with INSERT ... SELECT and
UPDATE ... FROM. The same statements run on both engines.
"""

# SQL here is built from table and column names that are constants of this module; every
# value is a bound parameter.
# ruff: noqa: S608

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import date
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection

from backoffice.i18n import _
from backoffice.models import Specialty
from backoffice.models.base import UTCDateTime
from backoffice.services.imports.kinds import Kind

STAGE = "import_stage"
PHONES = "import_stage_phone"
PROBLEMS = "import_problem"
CHUNK = 5000


class Db:
    """The import's connection, with the few differences between engines in one place."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.pg = conn.dialect.name == "postgresql"
        self.ne = "IS DISTINCT FROM" if self.pg else "IS NOT"
        self.eq = "IS NOT DISTINCT FROM" if self.pg else "IS"
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future | None = None

    def drain(self) -> None:
        """Wait for the COPY in flight (and raise what it raised)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def close(self) -> None:
        try:
            self.drain()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def run(self, sql: str, **params: Any) -> Any:
        self.drain()
        stmt = text(sql)
        typed = [bindparam(k, type_=UTCDateTime()) for k in params if k in ("now", "since")]
        if typed:
            stmt = stmt.bindparams(*typed)
        return self.conn.execute(stmt, params)

    def scalar(self, sql: str, **params: Any) -> Any:
        return self.run(sql, **params).scalar()

    def stream(self, sql: str, **params: Any) -> Iterator[Sequence[Any]]:
        """Rows in chunks, without holding the whole result (a server-side cursor on PG)."""
        self.drain()
        stmt = text(sql)
        typed = [bindparam(k, type_=UTCDateTime()) for k in params if k in ("now", "since")]
        if typed:
            stmt = stmt.bindparams(*typed)
        result = self.conn.execute(
            stmt, params, execution_options={"stream_results": True, "yield_per": CHUNK}
        )
        yield from result.partitions(CHUNK)

    def load(
        self, table: str, columns: Sequence[str], rows: list[tuple], background: bool = False
    ) -> None:
        """Append rows to a staging table: COPY on PostgreSQL, executemany on SQLite.

        With ``background`` the COPY runs in a helper thread while the caller checks the next
        rows (PostgreSQL ingests one chunk while Python reads the next: two cores, both busy).
        One COPY at a time; every other statement waits for it (``drain``).
        """
        if not rows:
            return
        if self.pg:
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerows(rows)
            buf.seek(0)
            sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)"
            self.drain()
            if background:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(1, thread_name_prefix="import-copy")
                self._pending = self._pool.submit(self._copy, sql, buf)
            else:
                self._copy(sql, buf)
        else:
            marks = ", ".join("?" for _c in columns)
            self.conn.exec_driver_sql(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                rows,
            )

    def _copy(self, sql: str, buf: io.StringIO) -> None:
        cursor = self.conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.copy_expert(sql, buf, size=1 << 20)
        finally:
            cursor.close()

    def date_type(self) -> str:
        return "DATE" if self.pg else "TEXT"

    def bool_type(self) -> str:
        return "BOOLEAN" if self.pg else "INTEGER"


class Field:
    """A model column written from the stage: how it is compared, updated and defaulted."""

    def __init__(
        self,
        column: str,
        stage: str,
        *,
        keep_when_empty: bool = False,
        default: str | None = None,
        present: bool = True,
    ) -> None:
        self.column = column
        self.stage = stage
        self.keep_when_empty = keep_when_empty
        self.default = default
        self.present = present


ProblemSink = Callable[[int, str | None, Any, str], None]


class Plan:
    """The SQL of one kind; subclasses say how rows are keyed and which references resolve."""

    kind: Kind
    table: str
    extra_stage: tuple[tuple[str, str], ...] = ()  # resolved ids and the like

    def __init__(self, db: Db, kind: Kind, present: set[str], add_problem: ProblemSink) -> None:
        self.db = db
        self.kind = kind
        self.present = present
        self.add_problem = add_problem
        self.stage_columns = ["line"] + [f"c_{c.name}" for c in kind.columns]

    # -- tables -------------------------------------------------------------------------
    def column_type(self, name: str) -> str:
        if name in ("birth_date", "study_date"):
            return self.db.date_type()
        if name in ("active", "contrast_allergy"):
            return self.db.bool_type()
        if name == "practising_since":
            return "INTEGER"
        return "TEXT"

    def create_tables(self) -> None:
        self.drop_tables()
        temp = "TEMPORARY"
        cols = ", ".join(f"c_{c.name} {self.column_type(c.name)}" for c in self.kind.columns)
        extra = "".join(f", {name} {sqltype}" for name, sqltype in self.extra_stage)
        # No index on PostgreSQL: every statement reads the whole table anyway, and updates
        # then leave no index to maintain. SQLite's rowid is the line number (free).
        line = "line INTEGER" if self.db.pg else "line INTEGER PRIMARY KEY"
        self.db.run(
            f"CREATE {temp} TABLE {STAGE} ({line}, {cols}{extra}, "
            "target_id INTEGER, old_version INTEGER, action VARCHAR(8), "
            "bad INTEGER NOT NULL DEFAULT 0)"
        )
        self.db.run(
            f"CREATE {temp} TABLE {PROBLEMS} (seq INTEGER, line INTEGER, col TEXT, "
            "value TEXT, message TEXT)"
        )
        self.db.run(f"CREATE INDEX ix_{PROBLEMS}_line ON {PROBLEMS} (line)")

    def drop_tables(self) -> None:
        for table in (STAGE, PHONES, PROBLEMS):
            self.db.run(f"DROP TABLE IF EXISTS {table}")

    def load(self, rows: list[tuple], extra: list[tuple] | None = None) -> None:
        self.db.load(STAGE, self.stage_columns, rows, background=True)

    def after_load(self) -> None:
        if self.db.pg:
            # Sorts and hashes over a million staged rows stay in memory (this transaction only).
            self.db.run("SET LOCAL work_mem = '256MB'")
            # New rows' trigram entries wait in each GIN index's pending list and are merged
            # into the index when it fills up, sorted, in work_mem: fewer, larger merges (a
            # fifth less time for 100,000 patients than the 4 MB default).
            self.db.run("SET LOCAL gin_pending_list_limit = '64MB'")
            # Temporary tables get no automatic statistics; the joins need row counts. A small
            # sample is enough for that and keeps ANALYZE cheap on a million rows.
            self.db.run("SET LOCAL default_statistics_target = 10")
            self.db.run(f"ANALYZE {STAGE}")
            self.db.run("RESET default_statistics_target")

    # -- checks ---------------------------------------------------------------------------
    def flag(self, sql: str, column: str | None, message: Callable[..., str], **params: Any) -> int:
        """Each row of ``sql`` (line, value, *more) becomes a problem on that line."""
        n = 0
        for chunk in self.db.stream(sql, **params):
            for row in chunk:
                self.add_problem(row[0], column, row[1], message(*row[1:]))
                n += 1
        return n

    def any_duplicates(self, key: Sequence[str], where: str) -> bool:
        cols = ", ".join(key)
        return (
            self.db.scalar(
                f"SELECT 1 FROM {STAGE} WHERE {where} GROUP BY {cols} HAVING count(*) > 1 LIMIT 1"
            )
            is not None
        )

    def flag_duplicates(self, stage_expr: str, column: str, label: str | None = None) -> None:
        """Two rows of the file with the same key are both refused: which one is right?"""
        if not self.any_duplicates([stage_expr], f"{stage_expr} IS NOT NULL"):
            return
        self.flag(
            self.duplicates_sql([stage_expr], f"{stage_expr} IS NOT NULL", stage_expr),
            column,
            lambda value, first, n: _(
                "%(column)s '%(value)s' is on %(n)d lines of this file (first on line "
                "%(first)d): a record may appear only once.",
                column=label or column,
                value=value,
                n=n,
                first=first,
            ),
        )

    @staticmethod
    def duplicates_sql(key: Sequence[str], where: str, shown: str) -> str:
        """(line, shown value, first line, count) of rows sharing ``key`` (NULLs equal)."""
        return (
            f"SELECT line, v, first_line, n FROM (SELECT line, {shown} AS v, "
            f"min(line) OVER w AS first_line, count(*) OVER w AS n FROM {STAGE} "
            f"WHERE {where} WINDOW w AS (PARTITION BY {', '.join(key)})) x "
            "WHERE n > 1 ORDER BY line"
        )

    def resolve(
        self,
        target_col: str,
        stage_col: str,
        table: str,
        key: str,
        column: str,
        message: Callable[[Any], str],
    ) -> None:
        """Fill an id from a name (clinic name, doctor email, patient MRN); unknown ones are
        problems naming the missing key."""
        self.db.run(
            f"UPDATE {STAGE} SET {target_col} = t.id FROM {table} t "
            f"WHERE t.{key} = {STAGE}.{stage_col}"
        )
        self.flag(
            f"SELECT line, {stage_col} FROM {STAGE} WHERE {stage_col} IS NOT NULL "
            f"AND {target_col} IS NULL ORDER BY line",
            column,
            message,
        )

    def fields(self) -> list[Field]:
        raise NotImplementedError

    def written_fields(self) -> list[Field]:
        return [f for f in self.fields() if f.present]

    def match(self) -> None:
        raise NotImplementedError

    def check(self) -> None:
        """Kind-specific checks that need the database (references, unique values)."""

    def changed_sql(self) -> str:
        """True when a staged row differs from its record ``t`` in a column the file has."""
        db = self.db
        differs = [
            (
                f"({STAGE}.{f.stage} IS NOT NULL AND {STAGE}.{f.stage} {db.ne} t.{f.column})"
                if f.keep_when_empty
                else f"{STAGE}.{f.stage} {db.ne} t.{f.column}"
            )
            for f in self.written_fields()
        ] + self.extra_differences()
        return " OR ".join(differs) or "1 = 0"

    def match_by(self, source: str, condition: str) -> None:
        """Give unmatched rows the record ``t`` found by ``condition``, and say whether the row
        would change it; rows left without a record are created (action NULL)."""
        self.db.run(
            f"UPDATE {STAGE} SET target_id = t.id, old_version = t.version, "
            f"action = CASE WHEN ({self.changed_sql()}) THEN 'update' ELSE 'same' END "
            f"FROM {source} WHERE {STAGE}.target_id IS NULL AND {condition}"
        )

    def extra_differences(self) -> list[str]:
        return []

    def flag_changed_since(self, since: Any, describe: Callable[[int], str]) -> None:
        """Records edited after the preview are reported, never overwritten."""
        self.flag(
            f"SELECT s.line, s.target_id FROM {STAGE} s JOIN {self.table} t "
            f"ON t.id = s.target_id WHERE t.updated_at > :since ORDER BY s.line",
            None,
            describe,
            since=since,
        )

    def mark_bad(self) -> None:
        self.db.run(f"UPDATE {STAGE} SET bad = 1 WHERE line IN (SELECT line FROM {PROBLEMS})")

    def counts(self) -> dict[str, int]:
        rows = self.db.run(
            f"SELECT action, count(*) FROM {STAGE} WHERE bad = 0 GROUP BY action"
        ).all()
        found = {action: n for action, n in rows}
        return {
            "created": found.get(None, 0),
            "updated": found.get("update", 0),
            "unchanged": found.get("same", 0),
        }

    # -- writes ---------------------------------------------------------------------------
    def insert_created(self, batch_id: int, now: Any) -> int:
        fields = self.written_fields() + self.create_only_fields()
        extra = self.created_extra()
        cols = ", ".join([f.column for f in fields] + [c for c, _sql in extra])
        values = ", ".join(
            [f"COALESCE(s.{f.stage}, {f.default})" if f.default else f"s.{f.stage}" for f in fields]
            + [sql for _c, sql in extra]
        )
        result = self.db.run(
            f"INSERT INTO {self.table} ({cols}, import_batch_id, version, created_at, "
            f"updated_at) SELECT {values}, :batch, 1, :now, :now FROM {STAGE} s "
            "WHERE s.action IS NULL AND s.bad = 0 ORDER BY s.line",  # ids follow the file
            batch=batch_id,
            now=now,
        )
        return result.rowcount

    def created_extra(self) -> list[tuple[str, str]]:
        """(column, SQL over the stage row ``s``) that new records get besides their fields."""
        return []

    def updated_extra(self) -> list[str]:
        """``column = SQL`` that updated records get besides their fields (``:now`` bound)."""
        return []

    def create_only_fields(self) -> list[Field]:
        """Columns a new record needs although the file does not have them (defaults)."""
        return [
            Field(f.column, f.stage, default=f.default)
            for f in self.fields()
            if not f.present and f.default
        ]

    def old_values_sql(self) -> str:
        """(line, id, version, then old and new value of each written field) of updated rows."""
        pairs = ", ".join(f"t.{f.column}, s.{f.stage}" for f in self.written_fields())
        return (
            f"SELECT s.line, t.id, t.version, {pairs} FROM {STAGE} s "
            f"JOIN {self.table} t ON t.id = s.target_id "
            "WHERE s.action = 'update' AND s.bad = 0 ORDER BY s.line"
        )

    def update_changed(self, now: Any) -> int:
        sets = ", ".join(
            f"{f.column} = COALESCE(s.{f.stage}, {self.table}.{f.column})"
            if f.keep_when_empty
            else f"{f.column} = s.{f.stage}"
            for f in self.written_fields()
        )
        sets = ", ".join([sets, *self.updated_extra()])
        result = self.db.run(
            f"UPDATE {self.table} SET {sets}, version = {self.table}.version + 1, "
            f"updated_at = :now FROM {STAGE} s WHERE {self.table}.id = s.target_id "
            f"AND s.action = 'update' AND s.bad = 0 AND {self.table}.version = s.old_version",
            now=now,
        )
        return result.rowcount

    def after_writes(self, batch_id: int, now: Any) -> None:
        """Writes that follow the main ones (a doctor's phones)."""

    def phones_position(self) -> int | None:
        """Where a staged row holds its phone numbers (None: the kind has no phones)."""
        return None

    def extra_changes(self, rows: Sequence[tuple[int, int]]) -> dict[int, dict[str, list]]:
        """{line: {field: [old, new]}} of updated rows for what is not a column of the table
        (a doctor's phones and specialties), for their audit entries; ``rows`` are
        (line, record id) pairs."""
        return {}

    def sample(self, limit: int) -> list[tuple]:
        cols = ", ".join(self.stage_columns[1:])
        return self.db.run(
            f"SELECT line, action, {cols} FROM {STAGE} WHERE bad = 0 ORDER BY line LIMIT :n",
            n=limit,
        ).all()

    def resolve_clinic(self) -> None:
        """Doctor and patient rows name their clinic: find it by name, or reject the row."""
        self.resolve(
            "clinic_id",
            "c_clinic",
            "clinic",
            "name",
            "clinic",
            lambda name: _(
                "clinic '%(name)s' does not exist: add the clinic first, or check its name.",
                name=name,
            ),
        )


def today_literal() -> str:
    return f"'{date.today().isoformat()}'"


class ClinicPlan(Plan):
    table = "clinic"

    def fields(self) -> list[Field]:
        p = self.present
        return [
            Field("name", "c_name"),
            Field("address", "c_address", present="address" in p),
            Field("city", "c_city", present="city" in p),
            Field("phone", "c_phone", present="phone" in p),
        ]

    def match(self) -> None:
        self.flag_duplicates("c_name", "name")
        self.match_by("clinic t", f"t.name = {STAGE}.c_name")


class PhonesMixin:
    """Kinds whose rows carry phone numbers (doctors, patients): a staging table of their
    numbers, added to the record's own (never removed by an import), the first one primary
    when the record has none."""

    phone_table: str
    owner_key: str

    def create_tables(self) -> None:
        super().create_tables()  # type: ignore[misc]
        self.db.run(  # type: ignore[attr-defined]
            f"CREATE TEMPORARY TABLE {PHONES} (line INTEGER, position INTEGER, "
            "number TEXT, kind TEXT)"
        )

    def load(self, rows: list[tuple], extra: list[tuple] | None = None) -> None:
        super().load(rows)  # type: ignore[misc]
        self.db.load(  # type: ignore[attr-defined]
            PHONES, ("line", "position", "number", "kind"), extra or [], background=True
        )

    def after_load(self) -> None:
        super().after_load()  # type: ignore[misc]
        self.db.run(f"CREATE INDEX ix_{PHONES}_line ON {PHONES} (line)")  # type: ignore[attr-defined]
        if self.db.pg:  # type: ignore[attr-defined]
            self.db.run(f"ANALYZE {PHONES}")  # type: ignore[attr-defined]

    def phones_position(self) -> int | None:
        names = [c.name for c in self.kind.columns]  # type: ignore[attr-defined]
        return names.index("phones") + 1 if "phones" in names else None

    def phone_differences(self) -> str:
        # A number the record does not have yet makes the row an update.
        return (
            f"EXISTS (SELECT 1 FROM {PHONES} ph WHERE ph.line = {STAGE}.line AND NOT EXISTS "
            f"(SELECT 1 FROM {self.phone_table} dp WHERE dp.{self.owner_key} = t.id "
            "AND dp.number = ph.number))"
        )

    def insert_phones(self) -> None:
        db = self.db  # type: ignore[attr-defined]
        table, key = self.phone_table, self.owner_key
        primary = "ph.position = 0" if db.pg else "(ph.position = 0)"
        db.run(
            f"INSERT INTO {table} ({key}, number, kind, is_primary) "
            f"SELECT s.target_id, ph.number, ph.kind, {primary} AND NOT EXISTS "
            f"(SELECT 1 FROM {table} p WHERE p.{key} = s.target_id AND p.is_primary) "
            f"FROM {PHONES} ph JOIN {STAGE} s ON s.line = ph.line "
            "WHERE s.bad = 0 AND (s.action IS NULL OR s.action = 'update') AND NOT EXISTS "
            f"(SELECT 1 FROM {table} p WHERE p.{key} = s.target_id "
            "AND p.number = ph.number) ORDER BY s.line, ph.position"
        )

    def extra_changes(self, rows: Sequence[tuple[int, int]]) -> dict[int, dict[str, list]]:
        if "phones" not in self.present:  # type: ignore[attr-defined]
            return {}
        old = self.old_phones(record for _line, record in rows)
        new = self.file_phones(line for line, _record in rows)
        out: dict[int, dict[str, list]] = {}
        for line, record in rows:
            before = old.get(record, [])
            after = sorted(set(before) | set(new.get(line, [])))
            if after != before:
                out[line] = {"phones": [before, after]}
        return out

    def old_phones(self, owner_ids: Iterable[int]) -> dict[int, list[str]]:
        ids = list(owner_ids)
        out: dict[int, list[str]] = {i: [] for i in ids}
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            rows = self.db.conn.execute(  # type: ignore[attr-defined]
                text(
                    f"SELECT {self.owner_key}, number FROM {self.phone_table} "
                    f"WHERE {self.owner_key} IN :ids"
                )
                .bindparams(bindparam("ids", expanding=True))
                .params(ids=part)
            ).all()
            for owner_id, number in rows:
                out[owner_id].append(number)
        return {k: sorted(v) for k, v in out.items()}

    def file_phones(self, lines: Iterable[int]) -> dict[int, list[str]]:
        lines = list(lines)
        out: dict[int, list[str]] = {line: [] for line in lines}
        for start in range(0, len(lines), 500):
            part = lines[start : start + 500]
            rows = self.db.conn.execute(  # type: ignore[attr-defined]
                text(f"SELECT line, number FROM {PHONES} WHERE line IN :lines")
                .bindparams(bindparam("lines", expanding=True))
                .params(lines=part)
            ).all()
            for line, number in rows:
                out[line].append(number)
        return out


class DoctorPlan(PhonesMixin, Plan):
    table = "doctor"
    extra_stage = (("clinic_id", "INTEGER"),)
    phone_table = "doctor_phone"
    owner_key = "doctor_id"

    def fields(self) -> list[Field]:
        p = self.present
        return [
            Field("email", "c_email"),
            Field("first_name", "c_first_name"),
            Field("last_name", "c_last_name"),
            Field("licence_number", "c_licence_number", present="licence_number" in p),
            Field("clinic_id", "clinic_id"),
            Field(
                "active",
                "c_active",
                keep_when_empty=True,
                default="TRUE" if self.db.pg else "1",
                present="active" in p,
            ),
            *(
                Field(name, f"c_{name}", present=name in p)
                for name in (
                    "qualification",
                    "practising_since",
                    "languages",
                    "bio_en",
                    "bio_es",
                    "bio_fr",
                )
            ),
        ]

    def match(self) -> None:
        self.flag_duplicates("c_email", "email")
        if "licence_number" in self.present:
            self.flag_duplicates("c_licence_number", "licence_number")
        self.resolve_clinic()
        self.match_by("doctor t", f"t.email = {STAGE}.c_email")

    def check(self) -> None:
        if "licence_number" in self.present:
            self.flag(
                f"SELECT s.line, s.c_licence_number FROM {STAGE} s JOIN doctor t "
                "ON t.licence_number = s.c_licence_number "
                "WHERE s.target_id IS NULL OR t.id <> s.target_id ORDER BY s.line",
                "licence_number",
                lambda value: _(
                    "licence_number '%(value)s' already belongs to another doctor.", value=value
                ),
            )

    # A specialty cell holds the doctor's codes, sorted and joined by ";" (kinds.code_list_of);
    # "in the cell" is a LIKE on ";cell;" (codes hold no ";" or "%").
    _IN_CELL = f"(';' || {STAGE}.c_specialty || ';') LIKE ('%;' || ds.specialty || ';%')"

    def extra_differences(self) -> list[str]:
        differences = [self.phone_differences()]
        if "specialty" in self.present:
            cell = f"{STAGE}.c_specialty"
            codes_in_cell = f"(length({cell}) - length(replace({cell}, ';', '')) + 1)"
            differences.append(
                f"({cell} IS NOT NULL AND ("
                "(SELECT count(*) FROM doctor_specialty ds WHERE ds.doctor_id = t.id) "
                f"<> {codes_in_cell} OR EXISTS (SELECT 1 FROM doctor_specialty ds "
                f"WHERE ds.doctor_id = t.id AND NOT {self._IN_CELL})))"
            )
        return differences

    def after_writes(self, batch_id: int, now: Any) -> None:
        db = self.db
        db.run(
            f"UPDATE {STAGE} SET target_id = t.id FROM doctor t "
            f"WHERE {STAGE}.action IS NULL AND {STAGE}.bad = 0 AND t.email = {STAGE}.c_email"
        )
        self.insert_phones()
        written = f"{STAGE}.bad = 0 AND ({STAGE}.action IS NULL OR {STAGE}.action = 'update')"
        if "specialty" in self.present:
            # The cell's codes replace the doctor's: the others go, the missing ones come.
            db.run(
                "DELETE FROM doctor_specialty WHERE EXISTS (SELECT 1 FROM "
                f"{STAGE} WHERE {STAGE}.target_id = doctor_specialty.doctor_id AND {written} "
                f"AND {STAGE}.c_specialty IS NOT NULL AND NOT "
                + self._IN_CELL.replace("ds.specialty", "doctor_specialty.specialty")
                + ")"
            )
            for code in Specialty.codes():
                db.run(
                    "INSERT INTO doctor_specialty (doctor_id, specialty) "
                    f"SELECT {STAGE}.target_id, :code FROM {STAGE} WHERE {written} "
                    f"AND (';' || {STAGE}.c_specialty || ';') LIKE :pattern AND NOT EXISTS "
                    "(SELECT 1 FROM doctor_specialty ds WHERE ds.doctor_id = "
                    f"{STAGE}.target_id AND ds.specialty = :code)",
                    code=code,
                    pattern=f"%;{code};%",
                )
        # A new doctor without a specialty is a general practitioner, as before.
        empty = f"{STAGE}.c_specialty IS NULL" if "specialty" in self.present else "1 = 1"
        db.run(
            "INSERT INTO doctor_specialty (doctor_id, specialty) "
            f"SELECT {STAGE}.target_id, 'GENERAL_PRACTICE' FROM {STAGE} WHERE {STAGE}.bad = 0 "
            f"AND {STAGE}.action IS NULL AND {empty} AND NOT EXISTS (SELECT 1 FROM "
            f"doctor_specialty ds WHERE ds.doctor_id = {STAGE}.target_id)"
        )

    def extra_changes(self, rows: Sequence[tuple[int, int]]) -> dict[int, dict[str, list]]:
        out = super().extra_changes(rows)
        if "specialty" not in self.present or not rows:
            return out
        ids = [record for _line, record in rows]
        lines = [line for line, _record in rows]
        old: dict[int, list[str]] = {i: [] for i in ids}
        cells: dict[int, str | None] = {}
        for start in range(0, len(ids), 500):
            for doctor_id, code in self.db.conn.execute(
                text("SELECT doctor_id, specialty FROM doctor_specialty WHERE doctor_id IN :ids")
                .bindparams(bindparam("ids", expanding=True))
                .params(ids=ids[start : start + 500])
            ).all():
                old[doctor_id].append(code)
            for line, cell in self.db.conn.execute(
                text(f"SELECT line, c_specialty FROM {STAGE} WHERE line IN :lines")
                .bindparams(bindparam("lines", expanding=True))
                .params(lines=lines[start : start + 500])
            ).all():
                cells[line] = cell
        for line, record in rows:
            cell = cells.get(line)
            if not cell:
                continue
            before, after = sorted(old.get(record, [])), sorted(cell.split(";"))
            if before != after:
                out.setdefault(line, {})["specialties"] = [before, after]
        return out


class PatientPlan(PhonesMixin, Plan):
    table = "patient"
    extra_stage = (("clinic_id", "INTEGER"), ("doctor_id", "INTEGER"), ("mrn_given", "INTEGER"))
    phone_table = "patient_phone"
    owner_key = "patient_id"
    # Plain text columns: an empty cell (in a file that has the column) empties the field.
    TEXT_FIELDS = (
        "street",
        "city",
        "state",
        "postal_code",
        "country",
        "preferred_language",
        "emergency_contact_name",
        "emergency_contact_relation",
        "emergency_contact_phone",
        "allergies",
    )

    def fields(self) -> list[Field]:
        p = self.present
        true_, false_ = ("TRUE", "FALSE") if self.db.pg else ("1", "0")
        return [
            Field("mrn", "c_id", keep_when_empty=True, present="id" in p),
            Field("first_name", "c_first_name"),
            Field("last_name", "c_last_name"),
            Field("birth_date", "c_birth_date"),
            Field("email", "c_email", present="email" in p),
            Field("clinic_id", "clinic_id", present="clinic" in p),
            Field("referring_doctor_id", "doctor_id", present="referring_doctor" in p),
            Field("sex", "c_sex", keep_when_empty=True, default="'UNKNOWN'", present="sex" in p),
            *(Field(name, f"c_{name}", present=name in p) for name in self.TEXT_FIELDS),
            Field(
                "contrast_allergy",
                "c_contrast_allergy",
                keep_when_empty=True,
                default=false_,
                present="contrast_allergy" in p,
            ),
            Field("active", "c_active", keep_when_empty=True, default=true_, present="active" in p),
        ]

    def create_only_fields(self) -> list[Field]:
        # Every new patient has an MRN: the file's, or the next of the sequence (see
        # ``insert_created``), even when the file has no id column at all.
        extra = [] if "id" in self.present else [Field("mrn", "c_id")]
        return super().create_only_fields() + extra

    def extra_differences(self) -> list[str]:
        return [self.phone_differences()]

    def insert_created(self, batch_id: int, now: Any) -> int:
        self.assign_record_numbers()
        return super().insert_created(batch_id, now)

    def assign_record_numbers(self) -> None:
        """New rows without an MRN get the sequence's next numbers, in file order; a number
        whose MRN a patient or another row of the file already holds is skipped."""
        from backoffice.services.record_numbers import (
            MAX_ROUNDS,
            MRN_SEQUENCE,
            format_sql,
            mrn_format,
            reserve,
        )

        db = self.db
        needing = "action IS NULL AND bad = 0 AND c_id IS NULL"
        prefix, digits = mrn_format()
        for _round in range(MAX_ROUNDS):
            count = db.scalar(f"SELECT count(*) FROM {STAGE} WHERE {needing}")
            if not count:
                return
            if db.pg:
                numbers = (
                    f"SELECT line, nextval('{MRN_SEQUENCE}') AS n FROM "
                    f"(SELECT line FROM {STAGE} WHERE {needing} ORDER BY line) o"
                )
                given = format_sql("x.n", "postgresql")
                params: dict[str, Any] = {}
            else:
                first = reserve(db.conn, count)[0]
                numbers = (
                    f"SELECT line, row_number() OVER (ORDER BY line) AS rn FROM {STAGE} "
                    f"WHERE {needing}"
                )
                given = format_sql("(:first - 1 + x.rn)", "sqlite")
                params = {"first": first}
            db.run(
                f"UPDATE {STAGE} SET c_id = {given}, mrn_given = 1 FROM ({numbers}) x "
                f"WHERE x.line = {STAGE}.line",
                mrn_prefix=prefix,
                mrn_digits=digits,
                **params,
            )
            db.run(
                f"UPDATE {STAGE} SET c_id = NULL WHERE mrn_given = 1 AND (EXISTS (SELECT 1 "
                f"FROM patient t WHERE t.mrn = {STAGE}.c_id) OR EXISTS (SELECT 1 FROM {STAGE} o "
                f"WHERE o.c_id = {STAGE}.c_id AND o.line <> {STAGE}.line))"
            )
        raise RuntimeError("the MRN sequence keeps meeting numbers already in use")

    def after_writes(self, batch_id: int, now: Any) -> None:
        if not ({"phones", "referring_doctor"} & self.present):
            return
        db = self.db
        # The created rows' ids, by the MRN every one of them now has.
        db.run(
            f"UPDATE {STAGE} SET target_id = t.id FROM patient t "
            f"WHERE {STAGE}.action IS NULL AND {STAGE}.bad = 0 AND t.mrn = {STAGE}.c_id"
        )
        if "phones" in self.present:
            self.insert_phones()
        if "referring_doctor" in self.present:
            self.sync_referring_links(batch_id, now)

    def sync_referring_links(self, batch_id: int, now: Any) -> None:
        """The file's referring doctor becomes the active REFERRING link of the care team (as
        ``services.care_team`` does for the ORM): other active REFERRING links end today."""
        from backoffice.services.audit import append_entries, make_entry

        db = self.db
        today = date.today()
        written = "s.bad = 0 AND (s.action IS NULL OR s.action = 'update')"
        ended = db.run(
            f"SELECT c.id, c.patient_id, c.version, c.until FROM care_team_member c "
            f"JOIN {STAGE} s ON s.target_id = c.patient_id WHERE {written} "
            "AND c.role = 'REFERRING' AND c.status = 'ACTIVE' "
            "AND (s.doctor_id IS NULL OR c.doctor_id <> s.doctor_id) ORDER BY c.id"
        ).all()
        for start in range(0, len(ended), 500):
            part = ended[start : start + 500]
            self.db.conn.execute(
                text(
                    "UPDATE care_team_member SET status = 'INACTIVE', "
                    "until = COALESCE(until, :today), version = version + 1, updated_at = :now "
                    "WHERE id IN :ids"
                ).bindparams(
                    bindparam("ids", expanding=True), bindparam("now", type_=UTCDateTime())
                ),
                {"ids": [row[0] for row in part], "today": today, "now": now},
            )
            append_entries(
                self.db.conn,
                [
                    make_entry(
                        "UPDATE",
                        "care_team_member",
                        row[0],
                        changes={
                            "status": ["ACTIVE", "INACTIVE"],
                            **({"until": [None, today]} if row[3] is None else {}),
                        },
                        details={"record_version": row[2] + 1},
                        parent=("patient", str(row[1])),
                        batch_id=batch_id,
                    )
                    for row in part
                ],
            )
        db.run(
            "INSERT INTO care_team_member (patient_id, doctor_id, role, status, since, "
            "import_batch_id, created_at, updated_at, version) "
            f"SELECT s.target_id, s.doctor_id, 'REFERRING', 'ACTIVE', :today, :batch, :now, :now, "
            f"1 FROM {STAGE} s WHERE {written} AND s.doctor_id IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM care_team_member c WHERE c.patient_id = s.target_id "
            "AND c.role = 'REFERRING' AND c.status = 'ACTIVE' AND c.doctor_id = s.doctor_id) "
            "ORDER BY s.line",
            today=today,
            batch=batch_id,
            now=now,
        )

    def match(self) -> None:
        if "id" in self.present:
            self.flag_duplicates("c_id", "id")
        if "email" in self.present:
            self.flag_duplicates("c_email", "email")
        if "clinic" in self.present:
            self.resolve_clinic()
        if "referring_doctor" in self.present:
            self.resolve(
                "doctor_id",
                "c_referring_doctor",
                "doctor",
                "email",
                "referring_doctor",
                lambda email: _(
                    "referring_doctor: no doctor has the email '%(email)s'.", email=email
                ),
            )
        # By record number first; else by email, when one side has no record number.
        if "id" in self.present:
            self.match_by("patient t", f"{STAGE}.c_id IS NOT NULL AND t.mrn = {STAGE}.c_id")
        if "email" in self.present:
            no_mrn = f"AND ({STAGE}.c_id IS NULL OR t.mrn IS NULL)" if "id" in self.present else ""
            self.match_by(
                "patient t",
                f"{STAGE}.c_email IS NOT NULL AND t.email = {STAGE}.c_email {no_mrn}",
            )

    def check(self) -> None:
        if "email" in self.present:
            self.flag(
                f"SELECT s.line, s.c_email, t.mrn FROM {STAGE} s JOIN patient t "
                "ON t.email = s.c_email WHERE s.target_id IS NULL OR t.id <> s.target_id "
                "ORDER BY s.line",
                "email",
                lambda email, mrn: (
                    _(
                        "email '%(email)s' already belongs to another patient (record number "
                        "%(mrn)s).",
                        email=email,
                        mrn=mrn,
                    )
                    if mrn
                    else _("email '%(email)s' already belongs to another patient.", email=email)
                ),
            )


class StudyPlan(Plan):
    table = "study"
    extra_stage = (("patient_id", "INTEGER"), ("doctor_id", "INTEGER"), ("old_status", "TEXT"))

    def fields(self) -> list[Field]:
        p = self.present
        return [
            Field("patient_id", "patient_id"),
            Field("urgency", "c_urgency_level"),
            Field("study_type", "c_type"),
            Field("body_part", "c_body_part"),
            Field("description", "c_description", present="description" in p),
            Field(
                "study_date",
                "c_study_date",
                keep_when_empty=True,
                default=today_literal(),
                present="study_date" in p,
            ),
            Field(
                "accession_number",
                "c_accession_number",
                keep_when_empty=True,
                present="accession_number" in p,
            ),
            Field("ordering_doctor_id", "doctor_id", present="ordering_doctor" in p),
            # A row without a status is a study that happened (the workflow's rules: below).
            Field(
                "status",
                "c_status",
                keep_when_empty=True,
                default="'PERFORMED'",
                present="status" in p,
            ),
        ]

    def identity(self, with_date: bool) -> str:
        desc = "COALESCE(t.description, '') = COALESCE(s.c_description, '')"
        if "description" not in self.present:
            desc = "1 = 1"
        cols = [
            "t.patient_id = s.patient_id",
            "t.study_type = s.c_type",
            "t.body_part = s.c_body_part",
            "t.urgency = s.c_urgency_level",
            desc,
        ]
        if with_date:
            cols.append("t.study_date = s.c_study_date")
        return " AND ".join(cols)

    def match(self) -> None:
        if "accession_number" in self.present:
            self.flag_duplicates("c_accession_number", "accession_number")
        self.resolve(
            "patient_id",
            "c_patient_id",
            "patient",
            "mrn",
            "patient_id",
            lambda mrn: _("patient_id '%(mrn)s': no patient has this record number.", mrn=mrn),
        )
        if "ordering_doctor" in self.present:
            self.resolve(
                "doctor_id",
                "c_ordering_doctor",
                "doctor",
                "email",
                "ordering_doctor",
                lambda email: _(
                    "ordering_doctor: no doctor has the email '%(email)s'.", email=email
                ),
            )
        # Rows without an accession number are keyed by what the study is: two identical rows
        # of one patient are the same study written twice.
        key = ["c_patient_id", "c_type", "c_body_part", "c_urgency_level"]
        key += [c for c in ("c_description", "c_study_date") if c[2:] in self.present]
        accession_empty = (
            "c_accession_number IS NULL" if "accession_number" in self.present else "1 = 1"
        )
        if self.any_duplicates(key, accession_empty):
            self.flag(
                self.duplicates_sql(key, accession_empty, "c_patient_id"),
                None,
                lambda mrn, first, n: _(
                    "the same study of patient '%(mrn)s' is on %(n)d lines of this file (first on "
                    "line %(first)d): a study may appear only once.",
                    mrn=mrn,
                    n=n,
                    first=first,
                ),
            )
        if "accession_number" in self.present:
            self.match_by(
                "study t",
                f"{STAGE}.c_accession_number IS NOT NULL "
                f"AND t.accession_number = {STAGE}.c_accession_number",
            )
        # Else the patient's identical study (the oldest when there are several); a row with an
        # accession number only takes a study that has none.
        for with_date in (True, False):
            if "study_date" in self.present:
                date_cond = f"s.c_study_date IS {'NOT ' if with_date else ''}NULL"
            elif with_date:
                continue
            else:
                date_cond = "1 = 1"
            acc = (
                "AND (s.c_accession_number IS NULL OR t.accession_number IS NULL)"
                if "accession_number" in self.present
                else ""
            )
            self.match_by(
                f"(SELECT s.line AS line, min(t.id) AS id FROM {STAGE} s "
                f"JOIN study t ON {self.identity(with_date)} "
                f"WHERE s.target_id IS NULL AND {date_cond} {acc} GROUP BY s.line) m "
                "JOIN study t ON t.id = m.id",
                f"m.line = {STAGE}.line",
            )

    # -- the workflow: the status of new rows, and the moves an upload may make -------------
    def _noon_utc(self, day: str) -> str:
        """Noon UTC of a day: the time of a step known only by its date (the same calendar
        day in every time zone from UTC-11 to UTC+11), as migration 0013 sets it."""
        if self.db.pg:
            return f"(CAST({day} AS DATE) + time '12:00') AT TIME ZONE 'UTC'"
        return f"({day} || ' 12:00:00.000000')"

    def created_extra(self) -> list[tuple[str, str]]:
        """A new study's step time, from its date, for the status it is uploaded in."""
        from backoffice.services.workflow import IMPORTABLE_STATUSES, STATUS_STAMPS

        noon = self._noon_utc(f"COALESCE(s.c_study_date, {today_literal()})")
        status = "COALESCE(s.c_status, 'PERFORMED')"
        return [
            (STATUS_STAMPS[code], f"CASE WHEN {status} = '{code.value}' THEN {noon} END")
            for code in IMPORTABLE_STATUSES
        ]

    def _moves(self) -> list[Any]:
        """The moves this upload may make on existing studies: those a file can make (nothing
        to type but the status) that the importing user's roles allow."""
        from backoffice.auth.permissions import roles_for
        from backoffice.services.audit import current_actor
        from backoffice.services.workflow import TRANSITIONS

        moves = [t for t in TRANSITIONS if t.importable]
        user_id = current_actor().user_id
        if user_id is None:  # a command: its operator runs the day
            return moves
        roles = {
            row[0]
            for row in self.db.run(
                "SELECT r.name FROM role r JOIN user_role ur ON ur.role_id = r.id "
                "WHERE ur.user_id = :user",
                user=user_id,
            ).all()
        }
        return [t for t in moves if roles & {r.value for r in roles_for(t.permission)}]

    def updated_extra(self) -> list[str]:
        if "status" not in self.present:
            return []
        return [
            f"{t.stamp} = CASE WHEN s.c_status = '{t.target.value}' AND study.status <> "
            f"'{t.target.value}' THEN :now ELSE study.{t.stamp} END"
            for t in self._moves()
        ]

    def check(self) -> None:
        from backoffice.models import StudyStatus
        from backoffice.services.workflow import IMPORTABLE_STATUSES

        self.db.run(
            f"UPDATE {STAGE} SET old_status = t.status FROM study t WHERE t.id = {STAGE}.target_id"
        )
        # What a signed report describes is not changed by an upload (a trigger refuses it too).
        self.flag(
            f"SELECT line, old_status FROM {STAGE} WHERE action = 'update' "
            "AND old_status = 'REPORTED' ORDER BY line",
            None,
            lambda status: _(
                "this study is reported: what its signed report describes cannot be changed by "
                "an upload (an administrator can reopen it)."
            ),
        )
        if "status" not in self.present:
            return
        importable = ", ".join(f"'{code.value}'" for code in IMPORTABLE_STATUSES)
        self.flag(
            f"SELECT line, c_status FROM {STAGE} WHERE target_id IS NULL AND c_status IS NOT NULL "
            f"AND c_status NOT IN ({importable}) ORDER BY line",
            "status",
            lambda status: _(
                "status %(status)s: a new study cannot be uploaded as %(label)s (a cancellation "
                "needs its reason, a report its signature); upload it as ORDERED or PERFORMED and "
                "continue on its page.",
                status=status,
                label=StudyStatus(status).label,
            ),
        )
        moves = self._moves()
        allowed = (
            " OR ".join(
                f"(old_status = '{source.value}' AND c_status = '{t.target.value}')"
                for t in moves
                for source in sorted(t.sources)
            )
            or "1 = 0"
        )
        self.flag(
            f"SELECT line, c_status, old_status FROM {STAGE} WHERE target_id IS NOT NULL "
            f"AND c_status IS NOT NULL AND c_status <> old_status AND old_status <> 'REPORTED' "
            f"AND NOT ({allowed}) ORDER BY line",
            "status",
            lambda status, old: self._move_refused(status, old, moves),
        )

    @staticmethod
    def _move_refused(status: str, old: str, moves: list[Any]) -> str:
        from backoffice.models import StudyStatus

        targets = [t.target.label for t in moves if t.allowed_from(old)]
        if targets:
            return _(
                "status %(status)s: the study is %(old)s; an upload can only move it to "
                "%(allowed)s. Other moves are made on the study's page.",
                status=status,
                old=StudyStatus(old).label,
                allowed=", ".join(str(t) for t in targets),
            )
        return _(
            "status %(status)s: the study is %(old)s, and an upload cannot move it from there. "
            "Moves are made on the study's page.",
            status=status,
            old=StudyStatus(old).label,
        )

    def after_writes(self, batch_id: int, now: Any) -> None:
        """Each status an upload changed is a step of the study, with its event."""
        if "status" not in self.present:
            return
        from backoffice.services.audit import current_actor

        moves = self._moves()
        which = " ".join(
            f"WHEN s.old_status = '{source.value}' AND s.c_status = '{t.target.value}' "
            f"THEN '{t.code}'"
            for t in moves
            for source in sorted(t.sources)
        )
        actor = current_actor()
        self.db.run(
            "INSERT INTO study_event (study_id, transition, from_status, to_status, at, user_id, "
            f"actor_label) SELECT s.target_id, CASE {which} ELSE 'import' END, s.old_status, "
            f"s.c_status, :now, :user, :label FROM {STAGE} s WHERE s.action = 'update' "
            "AND s.bad = 0 AND s.c_status IS NOT NULL AND s.c_status <> s.old_status "
            "ORDER BY s.line",
            now=now,
            user=actor.user_id,
            label=actor.label,
        )


PLANS: dict[str, type[Plan]] = {
    "clinics": ClinicPlan,
    "doctors": DoctorPlan,
    "patients": PatientPlan,
    "studies": StudyPlan,
}


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk
