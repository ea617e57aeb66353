"""MRN and email searched from their start: b-tree prefix indexes instead of trigram ones

Revision ID: 0007_search_key_prefix
Revises: 0006_study_date_cover

A trigram GIN index on a unique key (MRN, email) holds some thirty entries per row, all of them
rare: keeping the two up cost a million-row import 10 of its 24 seconds in PostgreSQL alone.
Nobody looks a record number or an address up by its middle, so both are now searched from
their start (``lower(column) LIKE 'term%'``), which a b-tree in pattern order serves. Names keep
their trigram indexes. ``ix_patient_last_name`` goes too: ``ix_patient_name_order`` (last name,
first name, id) serves everything it did, and now exists on SQLite as well.
"""

from alembic import op

revision = "0007_search_key_prefix"
down_revision = "0006_study_date_cover"
branch_labels = None
depends_on = None

KEYS = ("mrn", "email")


def upgrade():
    if op.get_bind().dialect.name == "postgresql":
        for column in KEYS:
            op.drop_index(f"ix_patient_{column}_trgm", table_name="patient")
            op.execute(
                f"CREATE INDEX ix_patient_{column}_prefix "
                f"ON patient (lower({column}) text_pattern_ops)"
            )
        # Statistics for the new expressions, so the planner knows how few rows a prefix finds.
        op.execute("ANALYZE patient")
    else:
        op.create_index(
            "ix_patient_name_order", "patient", ["last_name", "first_name", "id"], unique=False
        )
    op.drop_index("ix_patient_last_name", table_name="patient")


def downgrade():
    op.create_index("ix_patient_last_name", "patient", ["last_name"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        for column in KEYS:
            op.drop_index(f"ix_patient_{column}_prefix", table_name="patient")
            op.create_index(
                f"ix_patient_{column}_trgm",
                "patient",
                [column],
                unique=False,
                postgresql_using="gin",
                postgresql_ops={column: "gin_trgm_ops"},
            )
    else:
        op.drop_index("ix_patient_name_order", table_name="patient")
