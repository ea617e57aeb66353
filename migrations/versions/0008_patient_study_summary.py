"""Each patient's most urgent rank and latest study date, kept by triggers on study

Revision ID: 0008_patient_study_summary
Revises: 0007_search_key_prefix

The patient–study listing sorted by "highest urgency" or "most recent study" computed an aggregate
per patient over their studies: 36 s and 1.5 s for the first page at a million patients. The
table ``patient_study_summary`` holds those two keys, one row per patient with at least one study
(none for a patient without), indexed in the listing's two orders.

The database keeps it right, whatever writes the studies (the ORM, the importer's set-based SQL,
a restore, plain SQL):

- PostgreSQL: one statement-level trigger per event, with transition tables (PostgreSQL allows
  them on single-event triggers only). Inserted studies are merged into the patients' rows
  (LEAST rank, GREATEST date: no study is read, and the upsert takes the latest committed row,
  so concurrent inserts for one patient cannot lose each other). A delete, or an update that
  changes a study's patient, urgency or date, recomputes the old patients' rows from their
  studies after locking those rows, so that the recompute sees what a concurrent transaction
  committed to them; a patient with no study left loses the row. TRUNCATE empties it.
- SQLite: row-level triggers doing the same for one row (one writer at a time: no locking).

SQLite rebuilds a table in Alembic's batch mode and loses its triggers: a later migration that
rebuilds ``study`` on SQLite must create these triggers again (``create_sqlite_triggers``).
"""

from alembic import op
import sqlalchemy as sa

revision = "0008_patient_study_summary"
down_revision = "0007_search_key_prefix"
branch_labels = None
depends_on = None


def rank(column: str) -> str:
    """Urgency.rank in SQL (HIGH 0, MID 1, LOW 2), as the listing's ``urgency_rank``."""
    return f"(CASE {column} WHEN 'HIGH' THEN 0 WHEN 'MID' THEN 1 WHEN 'LOW' THEN 2 ELSE 3 END)"


# --------------------------------------------------------------------------- PostgreSQL

# Inserted (or changed) studies can only lower a patient's rank or raise their date: merged
# into the row, without reading the patient's other studies. Rows that do not change are not
# written. Sorted by patient id so that concurrent writers lock rows in the same order.
PG_MERGE = f"""
    INSERT INTO patient_study_summary AS s (patient_id, top_rank, latest_date)
    SELECT patient_id, min({rank("urgency")}), max(study_date)
    FROM %(source)s
    GROUP BY patient_id
    ORDER BY patient_id
    ON CONFLICT (patient_id) DO UPDATE
    SET top_rank = LEAST(s.top_rank, EXCLUDED.top_rank),
        latest_date = GREATEST(s.latest_date, EXCLUDED.latest_date)
    WHERE EXCLUDED.top_rank < s.top_rank OR EXCLUDED.latest_date > s.latest_date;
"""

# The patients ``stale`` (a SELECT of patient ids) names, recomputed from their studies. Their
# rows are locked first: a transaction that changed one of them has then committed, and the
# statements after the lock (each with a fresh snapshot) read its studies too.
PG_RECOMPUTE = f"""
    PERFORM 1 FROM patient_study_summary s
    WHERE s.patient_id IN (%(stale)s)
    ORDER BY s.patient_id
    FOR UPDATE;
    INSERT INTO patient_study_summary AS s (patient_id, top_rank, latest_date)
    SELECT st.patient_id, min({rank("st.urgency")}), max(st.study_date)
    FROM study st
    WHERE st.patient_id IN (%(stale)s)
    GROUP BY st.patient_id
    ORDER BY st.patient_id
    ON CONFLICT (patient_id) DO UPDATE
    SET top_rank = EXCLUDED.top_rank, latest_date = EXCLUDED.latest_date
    WHERE (s.top_rank, s.latest_date) IS DISTINCT FROM (EXCLUDED.top_rank, EXCLUDED.latest_date);
    DELETE FROM patient_study_summary s
    WHERE s.patient_id IN (%(stale)s)
    AND NOT EXISTS (SELECT 1 FROM study st WHERE st.patient_id = s.patient_id);
"""

PG_FUNCTIONS = {
    "patient_study_summary_on_insert": PG_MERGE % {"source": "new_studies"},
    "patient_study_summary_on_delete": (
        PG_RECOMPUTE % {"stale": "SELECT patient_id FROM old_studies"}
    ),
    # Only the studies whose patient, urgency or date changed: new values merged, the old
    # patients recomputed (a study moved to another patient changes both).
    "patient_study_summary_on_update": (
        PG_MERGE
        % {
            "source": "(SELECT n.* FROM new_studies n LEFT JOIN old_studies o ON o.id = n.id"
            " WHERE o.id IS NULL OR (o.patient_id, o.urgency, o.study_date)"
            " IS DISTINCT FROM (n.patient_id, n.urgency, n.study_date)) AS changed"
        }
        + PG_RECOMPUTE
        % {
            "stale": "SELECT o.patient_id FROM old_studies o"
            " LEFT JOIN new_studies n ON n.id = o.id"
            " WHERE n.id IS NULL OR (o.patient_id, o.urgency, o.study_date)"
            " IS DISTINCT FROM (n.patient_id, n.urgency, n.study_date)"
        }
    ),
    "patient_study_summary_on_truncate": "TRUNCATE patient_study_summary;",
}

PG_TRIGGERS = {
    "patient_study_summary_insert": (
        "AFTER INSERT ON study REFERENCING NEW TABLE AS new_studies FOR EACH STATEMENT",
        "patient_study_summary_on_insert",
    ),
    "patient_study_summary_update": (
        "AFTER UPDATE ON study REFERENCING OLD TABLE AS old_studies NEW TABLE AS new_studies "
        "FOR EACH STATEMENT",
        "patient_study_summary_on_update",
    ),
    "patient_study_summary_delete": (
        "AFTER DELETE ON study REFERENCING OLD TABLE AS old_studies FOR EACH STATEMENT",
        "patient_study_summary_on_delete",
    ),
    "patient_study_summary_truncate": (
        "AFTER TRUNCATE ON study FOR EACH STATEMENT",
        "patient_study_summary_on_truncate",
    ),
}


def create_pg_triggers():
    for name, body in PG_FUNCTIONS.items():
        op.execute(
            f"CREATE FUNCTION {name}() RETURNS trigger AS $$\nBEGIN\n{body}\n"
            "    RETURN NULL;\nEND;\n$$ LANGUAGE plpgsql;"
        )
    for name, (when, function) in PG_TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} {when} EXECUTE FUNCTION {function}()")


def drop_pg_triggers():
    for name in PG_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON study")
    for name in PG_FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {name}()")


# --------------------------------------------------------------------------- SQLite

# The given patients' rows recomputed from their studies (none left: no row).
SQLITE_RECOMPUTE = f"""
    DELETE FROM patient_study_summary WHERE patient_id IN (%(ids)s);
    INSERT INTO patient_study_summary (patient_id, top_rank, latest_date)
    SELECT patient_id, min({rank("urgency")}), max(study_date)
    FROM study WHERE patient_id IN (%(ids)s)
    GROUP BY patient_id;
"""

SQLITE_TRIGGERS = {
    "patient_study_summary_insert": (
        "AFTER INSERT ON study",
        f"""
    INSERT INTO patient_study_summary (patient_id, top_rank, latest_date)
    VALUES (NEW.patient_id, {rank("NEW.urgency")}, NEW.study_date)
    ON CONFLICT (patient_id) DO UPDATE
    SET top_rank = min(top_rank, excluded.top_rank),
        latest_date = max(latest_date, excluded.latest_date);
""",
    ),
    "patient_study_summary_update": (
        "AFTER UPDATE OF patient_id, urgency, study_date ON study",
        SQLITE_RECOMPUTE % {"ids": "OLD.patient_id, NEW.patient_id"},
    ),
    "patient_study_summary_delete": (
        "AFTER DELETE ON study",
        SQLITE_RECOMPUTE % {"ids": "OLD.patient_id"},
    ),
}


def create_sqlite_triggers():
    for name, (when, body) in SQLITE_TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} {when} FOR EACH ROW\nBEGIN\n{body}\nEND")


def drop_sqlite_triggers():
    for name in SQLITE_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")


# --------------------------------------------------------------------------- the migration


def upgrade():
    op.create_table(
        "patient_study_summary",
        sa.Column("patient_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("top_rank", sa.SmallInteger(), nullable=False),
        sa.Column("latest_date", sa.Date(), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["patient.id"],
            name=op.f("fk_patient_study_summary_patient_id_patient"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("patient_id", name=op.f("pk_patient_study_summary")),
    )
    # The triggers first: creating them locks study against writes until this transaction
    # commits (PostgreSQL), so no study written meanwhile escapes both them and the backfill.
    if op.get_bind().dialect.name == "postgresql":
        create_pg_triggers()
    else:
        create_sqlite_triggers()
    op.execute(
        "INSERT INTO patient_study_summary (patient_id, top_rank, latest_date) "
        f"SELECT patient_id, min({rank('urgency')}), max(study_date) FROM study "
        "GROUP BY patient_id"
    )
    # Built after the rows are in (faster than kept up row by row).
    op.create_index(
        "ix_patient_study_summary_urgency",
        "patient_study_summary",
        ["top_rank", sa.text("latest_date DESC"), "patient_id"],
        unique=False,
    )
    op.create_index(
        "ix_patient_study_summary_recent",
        "patient_study_summary",
        [sa.text("latest_date DESC"), "patient_id"],
        unique=False,
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ANALYZE patient_study_summary")


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        drop_pg_triggers()
    else:
        drop_sqlite_triggers()
    op.drop_index("ix_patient_study_summary_recent", table_name="patient_study_summary")
    op.drop_index("ix_patient_study_summary_urgency", table_name="patient_study_summary")
    op.drop_table("patient_study_summary")
