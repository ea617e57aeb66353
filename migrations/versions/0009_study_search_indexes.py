"""Study search served by indexes: trigram on the description, prefix on the accession number

Revision ID: 0009_study_search_indexes
Revises: 0008_patient_study_summary

The studies list searched four columns of two tables with one OR, which no index serves: every
search read all three million studies (about 2 s). It now takes the union of the studies whose
own columns match and the studies of the patients who match (see StudyView._apply_search), and
each side has its indexes: the body part and the description by trigram, the accession number
from its start (as the MRN), the patient's name and MRN by theirs. PostgreSQL only; SQLite scans.
"""

from alembic import op

revision = "0009_study_search_indexes"
down_revision = "0008_patient_study_summary"
branch_labels = None
depends_on = None


def upgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    op.create_index(
        "ix_study_description_trgm",
        "study",
        ["description"],
        unique=False,
        postgresql_using="gin",
        postgresql_ops={"description": "gin_trgm_ops"},
    )
    op.execute(
        "CREATE INDEX ix_study_accession_prefix ON study (lower(accession_number) text_pattern_ops)"
    )
    op.execute("ANALYZE study")


def downgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_study_accession_prefix", table_name="study")
    op.drop_index("ix_study_description_trgm", table_name="study")
