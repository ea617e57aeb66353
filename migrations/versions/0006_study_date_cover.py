"""Covering index for the dashboard's date-range counts (replaces the plain study_date index)

Revision ID: 0006_study_date_cover
Revises: 0005_sqlite_autoincrement
"""

from alembic import op

revision = "0006_study_date_cover"
down_revision = "0005_sqlite_autoincrement"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("study", schema=None) as batch_op:
        batch_op.create_index(
            "ix_study_date_cover",
            ["study_date", "urgency", "study_type", "patient_id"],
            unique=False,
        )
        batch_op.drop_index("ix_study_study_date")


def downgrade():
    with op.batch_alter_table("study", schema=None) as batch_op:
        batch_op.create_index("ix_study_study_date", ["study_date"], unique=False)
        batch_op.drop_index("ix_study_date_cover")
