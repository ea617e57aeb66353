"""Reports (findings, impression, recommendation), signed addenda, and each study's events

Revision ID: 0013b_reports
Revises: 0013_study_workflow

- ``study_event``: one row per step of a study's life (which move, from and to which status,
  when, by whom, why).
- ``report``: a study's report, a draft until its doctor signs it; ``report_addendum``: the
  signed corrections of a signed report.
- Triggers make what is signed read-only whatever writes to the database (the application
  refuses first; these are the floor under it):
  - a signed report cannot be updated or deleted; an addendum can be neither, and is added to
    signed reports only; neither table can be truncated (PostgreSQL);
  - while a study is REPORTED, the columns its report describes (patient, urgency, type, body
    part, description, date, accession number, ordering and reporting doctor) cannot change
    and the study cannot be deleted; its status may change (an admin reopens it).
  Each refusal is an integrity error naming the rule (``report_signed``, ``report_addendum``,
  ``study_reported``). A later migration that rebuilds ``study`` in SQLite's batch mode drops
  the study triggers and must create them again (``create_sqlite_study_triggers``).
"""

from alembic import op
import sqlalchemy as sa

revision = "0013b_reports"
down_revision = "0013_study_workflow"
branch_labels = None
depends_on = None

STATUSES = (
    "ORDERED",
    "SCHEDULED",
    "ARRIVED",
    "IN_PROGRESS",
    "PERFORMED",
    "REPORTED",
    "CANCELLED",
    "NO_SHOW",
)
# Keep in step with backoffice.models.study.CLINICAL_COLUMNS.
CLINICAL_COLUMNS = (
    "patient_id",
    "urgency",
    "study_type",
    "body_part",
    "description",
    "study_date",
    "accession_number",
    "ordering_doctor_id",
    "reporting_doctor_id",
)

MESSAGES = {
    "report_signed": "report_signed: a signed report cannot be changed or deleted; add an addendum",
    "report_addendum": "report_addendum: an addendum cannot be changed or deleted",
    "report_addendum_unsigned": "report_addendum: addenda are added to signed reports only",
    "study_reported": (
        "study_reported: a reported study cannot be changed or deleted; an admin can reopen it"
    ),
}


def _status(name):
    return sa.Enum(*STATUSES, name=name, native_enum=False, create_constraint=True, length=32)


# --------------------------------------------------------------------------- PostgreSQL

PG_FUNCTIONS = {
    "report_refuse_signed_change": f"RAISE EXCEPTION '{MESSAGES['report_signed']}' "
    "USING ERRCODE = 'restrict_violation', CONSTRAINT = 'report_signed';",
    "report_addendum_refuse_change": f"RAISE EXCEPTION '{MESSAGES['report_addendum']}' "
    "USING ERRCODE = 'restrict_violation', CONSTRAINT = 'report_addendum';",
    "report_addendum_needs_signed_report": (
        "IF NOT EXISTS (SELECT 1 FROM report r WHERE r.id = NEW.report_id "
        "AND r.signed_at IS NOT NULL) THEN "
        f"RAISE EXCEPTION '{MESSAGES['report_addendum_unsigned']}' "
        "USING ERRCODE = 'restrict_violation', CONSTRAINT = 'report_addendum'; END IF;"
    ),
    "study_refuse_reported_change": f"RAISE EXCEPTION '{MESSAGES['study_reported']}' "
    "USING ERRCODE = 'restrict_violation', CONSTRAINT = 'study_reported';",
}
_OLD = ", ".join(f"OLD.{c}" for c in CLINICAL_COLUMNS)
_NEW = ", ".join(f"NEW.{c}" for c in CLINICAL_COLUMNS)
PG_TRIGGERS = {
    ("report", "report_signed_read_only"): (
        "BEFORE UPDATE OR DELETE ON report FOR EACH ROW WHEN (OLD.signed_at IS NOT NULL)",
        "report_refuse_signed_change",
    ),
    ("report", "report_no_truncate"): (
        "BEFORE TRUNCATE ON report FOR EACH STATEMENT",
        "report_refuse_signed_change",
    ),
    ("report_addendum", "report_addendum_read_only"): (
        "BEFORE UPDATE OR DELETE ON report_addendum FOR EACH ROW",
        "report_addendum_refuse_change",
    ),
    ("report_addendum", "report_addendum_no_truncate"): (
        "BEFORE TRUNCATE ON report_addendum FOR EACH STATEMENT",
        "report_addendum_refuse_change",
    ),
    ("report_addendum", "report_addendum_signed_report"): (
        "BEFORE INSERT ON report_addendum FOR EACH ROW",
        "report_addendum_needs_signed_report",
    ),
    # The WHEN clause is evaluated without calling the function: an update of a study that is
    # not REPORTED (an import of a million) pays a comparison, nothing more.
    ("study", "study_reported_read_only"): (
        "BEFORE UPDATE ON study FOR EACH ROW WHEN (OLD.status = 'REPORTED' "
        f"AND ({_OLD}) IS DISTINCT FROM ({_NEW}))",
        "study_refuse_reported_change",
    ),
    ("study", "study_reported_no_delete"): (
        "BEFORE DELETE ON study FOR EACH ROW WHEN (OLD.status = 'REPORTED')",
        "study_refuse_reported_change",
    ),
}


def create_pg_triggers():
    for name, body in PG_FUNCTIONS.items():
        # A BEFORE row trigger that lets the row through returns it (NEW for inserts).
        op.execute(
            f"CREATE FUNCTION {name}() RETURNS trigger AS $$\nBEGIN\n{body}\n"
            "RETURN NEW;\nEND;\n$$ LANGUAGE plpgsql;"
        )
    for (table, name), (when, function) in PG_TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} {when} EXECUTE FUNCTION {function}()")


def drop_pg_triggers():
    for (table, name) in PG_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
    for name in PG_FUNCTIONS:
        op.execute(f"DROP FUNCTION IF EXISTS {name}()")


# --------------------------------------------------------------------------- SQLite


def _raise(key):
    return f"SELECT RAISE(ABORT, '{MESSAGES[key]}');"


_CHANGED = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in CLINICAL_COLUMNS)
SQLITE_REPORT_TRIGGERS = {
    "report_signed_no_update": (
        "BEFORE UPDATE ON report FOR EACH ROW WHEN OLD.signed_at IS NOT NULL",
        _raise("report_signed"),
    ),
    "report_signed_no_delete": (
        "BEFORE DELETE ON report FOR EACH ROW WHEN OLD.signed_at IS NOT NULL",
        _raise("report_signed"),
    ),
    "report_addendum_no_update": (
        "BEFORE UPDATE ON report_addendum FOR EACH ROW",
        _raise("report_addendum"),
    ),
    "report_addendum_no_delete": (
        "BEFORE DELETE ON report_addendum FOR EACH ROW",
        _raise("report_addendum"),
    ),
    "report_addendum_signed_report": (
        "BEFORE INSERT ON report_addendum FOR EACH ROW WHEN NOT EXISTS (SELECT 1 FROM report r "
        "WHERE r.id = NEW.report_id AND r.signed_at IS NOT NULL)",
        _raise("report_addendum_unsigned"),
    ),
}
SQLITE_STUDY_TRIGGERS = {
    "study_reported_read_only": (
        f"BEFORE UPDATE OF {', '.join(CLINICAL_COLUMNS)} ON study FOR EACH ROW "
        f"WHEN OLD.status = 'REPORTED' AND ({_CHANGED})",
        _raise("study_reported"),
    ),
    "study_reported_no_delete": (
        "BEFORE DELETE ON study FOR EACH ROW WHEN OLD.status = 'REPORTED'",
        _raise("study_reported"),
    ),
}


def _create_sqlite(triggers):
    for name, (when, body) in triggers.items():
        op.execute(f"CREATE TRIGGER {name} {when}\nBEGIN\n{body}\nEND")


def _drop_sqlite(triggers):
    for name in triggers:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")


def create_sqlite_study_triggers():
    _drop_sqlite(SQLITE_STUDY_TRIGGERS)
    _create_sqlite(SQLITE_STUDY_TRIGGERS)


# --------------------------------------------------------------------------- the migration


def upgrade():
    op.create_table(
        "study_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("transition", sa.String(length=16), nullable=False),
        sa.Column("from_status", _status("study_event_from"), nullable=True),
        sa.Column("to_status", _status("study_event_to"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("actor_label", sa.String(length=254), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["study_id"], ["study.id"], name=op.f("fk_study_event_study_id_study"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user_account.id"], name=op.f("fk_study_event_user_id_user_account"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_study_event")),
    )
    op.create_index("ix_study_event_study_at", "study_event", ["study_id", "at"], unique=False)
    op.create_index(op.f("ix_study_event_user_id"), "study_event", ["user_id"], unique=False)

    op.create_table(
        "report",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("findings", sa.Text(), nullable=True),
        sa.Column("impression", sa.Text(), nullable=True),
        sa.Column("recommendation", sa.Text(), nullable=True),
        sa.Column("author_id", sa.Integer(), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("signed_by_id", sa.Integer(), nullable=True),
        sa.Column("signed_as", sa.String(length=300), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["author_id"], ["doctor.id"], name=op.f("fk_report_author_id_doctor"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["signed_by_id"], ["user_account.id"], name=op.f("fk_report_signed_by_id_user_account"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["study_id"], ["study.id"], name=op.f("fk_report_study_id_study"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report")),
        sa.UniqueConstraint("study_id", "number", name=op.f("uq_report_study_id_number")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_report_author_id"), "report", ["author_id"], unique=False)
    op.create_index(op.f("ix_report_signed_by_id"), "report", ["signed_by_id"], unique=False)

    op.create_table(
        "report_addendum",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("report_id", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("author_id", sa.Integer(), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("signed_by_id", sa.Integer(), nullable=True),
        sa.Column("signed_as", sa.String(length=300), nullable=False),
        sa.ForeignKeyConstraint(
            ["author_id"], ["doctor.id"], name=op.f("fk_report_addendum_author_id_doctor"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["report_id"], ["report.id"], name=op.f("fk_report_addendum_report_id_report"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["signed_by_id"], ["user_account.id"],
            name=op.f("fk_report_addendum_signed_by_id_user_account"), ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report_addendum")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_report_addendum_report_signed", "report_addendum", ["report_id", "signed_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_report_addendum_author_id"), "report_addendum", ["author_id"], unique=False
    )
    op.create_index(
        op.f("ix_report_addendum_signed_by_id"), "report_addendum", ["signed_by_id"], unique=False
    )

    if op.get_bind().dialect.name == "postgresql":
        create_pg_triggers()
    else:
        _create_sqlite(SQLITE_REPORT_TRIGGERS)
        create_sqlite_study_triggers()


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        drop_pg_triggers()
    else:
        _drop_sqlite(SQLITE_STUDY_TRIGGERS)
        _drop_sqlite(SQLITE_REPORT_TRIGGERS)
    op.drop_table("report_addendum")
    op.drop_table("report")
    op.drop_index(op.f("ix_study_event_user_id"), table_name="study_event")
    op.drop_index("ix_study_event_study_at", table_name="study_event")
    op.drop_table("study_event")
