"""SQLite: AUTOINCREMENT on the audited tables, so a deleted record's id is never reused

Without it SQLite hands a deleted row's id to the next new row: the audit history of the two
records would mix, and a deleted record could not be restored under its own id. PostgreSQL
sequences never reuse ids, so this migration does nothing there.

Revision ID: 0005_sqlite_autoincrement
Revises: 0004_search_indexes
"""

from alembic import op

revision = "0005_sqlite_autoincrement"
down_revision = "0004_search_indexes"
branch_labels = None
depends_on = None

TABLES = ("clinic", "doctor", "doctor_phone", "patient", "study", "user_account", "import_batch")


def _rebuild(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
        ):
            pass


def upgrade():
    _rebuild(True)


def downgrade():
    _rebuild(False)
