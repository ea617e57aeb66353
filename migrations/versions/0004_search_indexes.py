"""trigram indexes for substring search and a name-order index on PostgreSQL

Revision ID: 0004_search_indexes
Revises: 0003_audit_trail
Create Date: 2026-11-24 04:00:00

The admin lists search with ``ILIKE '%term%'``, which no b-tree index serves: at a million
patients every search was a sequential scan. ``pg_trgm`` GIN indexes serve it. SQLite has no
such index (and is not used at that size): nothing happens there. A (last_name, first_name, id)
index lets a deep page of a list sorted by name read its ids from the index alone; a wider one
covering the exported columns lets an export of every patient read its rows in order, without a
sort. The models
declare the same indexes with ``ddl_if(dialect="postgresql")``.
"""
from alembic import op


# revision identifiers, used by Alembic.
revision = "0004_search_indexes"
down_revision = "0003_audit_trail"
branch_labels = None
depends_on = None

# (index name, table, column): the columns the admin lists and the listing search.
TRIGRAM_INDEXES = (
    ("ix_patient_first_name_trgm", "patient", "first_name"),
    ("ix_patient_last_name_trgm", "patient", "last_name"),
    ("ix_patient_email_trgm", "patient", "email"),
    ("ix_patient_mrn_trgm", "patient", "mrn"),
    ("ix_doctor_first_name_trgm", "doctor", "first_name"),
    ("ix_doctor_last_name_trgm", "doctor", "last_name"),
    ("ix_doctor_email_trgm", "doctor", "email"),
    ("ix_study_body_part_trgm", "study", "body_part"),
)


def upgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for name, table, column in TRIGRAM_INDEXES:
        op.create_index(
            name,
            table,
            [column],
            unique=False,
            postgresql_using="gin",
            postgresql_ops={column: "gin_trgm_ops"},
        )
    # Lists sorted by name: a deep page (OFFSET 250,000) reads its ids from this index alone.
    op.create_index(
        "ix_patient_name_order", "patient", ["last_name", "first_name", "id"], unique=False
    )
    # An export of every patient reads its rows from this one in order (no sort, no table
    # reads); it is too wide for deep pages (three times the pages to skip).
    op.create_index(
        "ix_patient_name_export",
        "patient",
        ["last_name", "first_name", "id"],
        unique=False,
        postgresql_include=["mrn", "birth_date", "email", "referring_doctor_id", "clinic_id"],
    )


def downgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_patient_name_export", table_name="patient")
    op.drop_index("ix_patient_name_order", table_name="patient")
    for name, table, _column in TRIGRAM_INDEXES:
        op.drop_index(name, table_name=table)
    # The extension stays: other objects may use it, and dropping it needs more rights.
