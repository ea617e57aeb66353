"""A study's life (status and the time of each step), the reporting doctor, and the doctor role

Revision ID: 0013_study_workflow
Revises: 0014b_doctor_profile

- ``study`` gets its status (ORDERED, SCHEDULED, ARRIVED, IN_PROGRESS, PERFORMED, REPORTED,
  CANCELLED, NO_SHOW), the time of each step, the cancellation reason and the reporting doctor,
  with the indexes the status filter, the doctor scope and the worklists read.
- Every study already in the database is PERFORMED (the column's default fills it), with
  ``performed_at`` from its ``study_date``: the day is all that is known, so the time is noon
  UTC, which is that same calendar day in every time zone from UTC-11 to UTC+11. No row is
  rewritten otherwise; nothing is lost.
- The DOCTOR role, and ``user_account.doctor_id``: the Doctor record a doctor user is.

SQLite rebuilds ``study`` (and ``user_account``, ``role``) in Alembic's batch mode: the rebuild
keeps AUTOINCREMENT (migration 0005) and its counter (a deleted row's id is never handed out
again), and drops the per-patient summary triggers of migration 0008, which are created again
here from 0008 itself.
"""

import contextlib
import importlib.util
from pathlib import Path

from alembic import op
import sqlalchemy as sa

revision = "0013_study_workflow"
down_revision = "0012_hardening"  # after the chart (0014, 0014b) and the hardening (0012)
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
OLD_ROLES = ("ADMIN", "MANAGER", "OPERATOR", "SUPPORT")
NEW_ROLES = OLD_ROLES + ("DOCTOR",)
TIMES = (
    "ordered_at",
    "scheduled_for",
    "arrived_at",
    "started_at",
    "performed_at",
    "reported_at",
    "cancelled_at",
    "no_show_at",
)
INDEXES = {
    "ix_study_status_scheduled": ["status", "scheduled_for"],
    "ix_study_status_urgency_ordered": ["status", "urgency", "ordered_at"],
    "ix_study_reporting_status": ["reporting_doctor_id", "status"],
    "ix_study_reported_at": ["reported_at"],
}


def _summary_migration():
    """Migration 0008, whose functions create the per-patient summary triggers."""
    path = Path(__file__).with_name("0008_patient_study_summary.py")
    spec = importlib.util.spec_from_file_location("migration_0008", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sqlite_summary_triggers_again():
    summary = _summary_migration()
    summary.drop_sqlite_triggers()  # IF EXISTS: a rebuild has dropped them already
    summary.create_sqlite_triggers()


@contextlib.contextmanager
def _sqlite_sequence_kept(table, sqlite):
    """A batch rebuild copies the rows into a new table, whose AUTOINCREMENT counter starts at
    the highest id copied: the id of a row deleted at the end would be handed out again.
    The counter is put back to where it was."""
    if not sqlite:
        yield
        return
    bind = op.get_bind()
    seq = bind.exec_driver_sql(
        "SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)
    ).scalar()
    yield
    if seq is None:
        return
    bind.exec_driver_sql(
        "UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = ?", (seq, table)
    )
    if bind.exec_driver_sql(
        "SELECT 1 FROM sqlite_sequence WHERE name = ?", (table,)
    ).scalar() is None:
        bind.exec_driver_sql("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table, seq))


def _in_list(values):
    return ", ".join(f"'{v}'" for v in values)


def _role_check(roles, sqlite):
    if sqlite:
        with op.batch_alter_table("role", recreate="always") as batch:
            batch.drop_constraint(op.f("ck_role_rolename"), type_="check")
            batch.create_check_constraint(op.f("ck_role_rolename"), f"name IN ({_in_list(roles)})")
    else:
        op.drop_constraint(op.f("ck_role_rolename"), "role", type_="check")
        op.create_check_constraint(op.f("ck_role_rolename"), "role", f"name IN ({_in_list(roles)})")


def upgrade():
    sqlite = op.get_bind().dialect.name == "sqlite"

    # -- the doctor role and the user's doctor --------------------------------------------
    _role_check(NEW_ROLES, sqlite)
    op.execute("INSERT INTO role (name) VALUES ('DOCTOR')")
    with _sqlite_sequence_kept("user_account", sqlite), op.batch_alter_table(
        "user_account", table_kwargs={"sqlite_autoincrement": True}
    ) as batch:
        batch.add_column(sa.Column("doctor_id", sa.Integer(), nullable=True))
        batch.create_unique_constraint(op.f("uq_user_account_doctor_id"), ["doctor_id"])
        batch.create_foreign_key(
            op.f("fk_user_account_doctor_id_doctor"),
            "doctor",
            ["doctor_id"],
            ["id"],
            ondelete="RESTRICT",
        )

    # -- the study's life -----------------------------------------------------------------
    status = sa.Enum(
        *STATUSES, name="studystatus", native_enum=False, create_constraint=True, length=32
    )
    with _sqlite_sequence_kept("study", sqlite), op.batch_alter_table(
        "study",
        recreate="always" if sqlite else "auto",
        table_kwargs={"sqlite_autoincrement": True},
    ) as batch:
        # The default fills every existing row: they are all PERFORMED.
        batch.add_column(
            sa.Column("status", status, nullable=False, server_default="PERFORMED")
        )
        for name in TIMES:
            batch.add_column(sa.Column(name, sa.DateTime(timezone=True), nullable=True))
            if name == "cancelled_at":
                batch.add_column(sa.Column("cancel_reason", sa.String(length=500), nullable=True))
        batch.add_column(sa.Column("reporting_doctor_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_study_reporting_doctor_id_doctor"),
            "doctor",
            ["reporting_doctor_id"],
            ["id"],
            ondelete="RESTRICT",
        )
        batch.create_check_constraint(
            op.f("ck_study_cancel_reason"), "status <> 'CANCELLED' OR cancel_reason IS NOT NULL"
        )
    if sqlite:
        _sqlite_summary_triggers_again()

    # performed_at from study_date, at noon UTC (see the docstring). Only performed_at changes:
    # the summary's update trigger has nothing to do (PostgreSQL would still build its
    # transition tables over every row, so it is off for this one statement).
    if sqlite:
        # SQLAlchemy's SQLite DATETIME text, as the application reads it back.
        op.execute(
            "UPDATE study SET performed_at = study_date || ' 12:00:00.000000' "
            "WHERE performed_at IS NULL"
        )
    else:
        op.execute("ALTER TABLE study DISABLE TRIGGER patient_study_summary_update")
        op.execute(
            "UPDATE study SET performed_at = (study_date + time '12:00') AT TIME ZONE 'UTC' "
            "WHERE performed_at IS NULL"
        )
        op.execute("ALTER TABLE study ENABLE TRIGGER patient_study_summary_update")

    for name, columns in INDEXES.items():
        op.create_index(name, "study", columns, unique=False)
    if not sqlite:
        op.execute("ANALYZE study")


def downgrade():
    sqlite = op.get_bind().dialect.name == "sqlite"
    for name in INDEXES:
        op.drop_index(name, table_name="study")
    with _sqlite_sequence_kept("study", sqlite), op.batch_alter_table(
        "study",
        recreate="always" if sqlite else "auto",
        table_kwargs={"sqlite_autoincrement": True},
    ) as batch:
        batch.drop_constraint(op.f("ck_study_cancel_reason"), type_="check")
        batch.drop_constraint(op.f("fk_study_reporting_doctor_id_doctor"), type_="foreignkey")
        batch.drop_column("reporting_doctor_id")
        batch.drop_column("cancel_reason")
        for name in TIMES:
            batch.drop_column(name)
        batch.drop_constraint(op.f("ck_study_studystatus"), type_="check")
        batch.drop_column("status")
    if sqlite:
        _sqlite_summary_triggers_again()

    with _sqlite_sequence_kept("user_account", sqlite), op.batch_alter_table(
        "user_account", table_kwargs={"sqlite_autoincrement": True}
    ) as batch:
        batch.drop_constraint(op.f("fk_user_account_doctor_id_doctor"), type_="foreignkey")
        batch.drop_constraint(op.f("uq_user_account_doctor_id"), type_="unique")
        batch.drop_column("doctor_id")
    op.execute(
        "DELETE FROM user_role WHERE role_id IN (SELECT id FROM role WHERE name = 'DOCTOR')"
    )
    op.execute("DELETE FROM role WHERE name = 'DOCTOR'")
    _role_check(OLD_ROLES, sqlite)
