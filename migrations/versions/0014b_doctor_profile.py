"""Doctors: several specialties each, qualification, practising since, languages, biographies

Revision ID: 0014b_doctor_profile
Revises: 0014_patient_chart

Each doctor's specialty becomes their first row of ``doctor_specialty`` (a doctor has one or
more); the ``doctor.specialty`` column goes. The new fields start empty. Downgrading puts back
one specialty per doctor (the first in code order) and drops the rest.
"""

from alembic import op
import sqlalchemy as sa

revision = "0014b_doctor_profile"
down_revision = "0014_patient_chart"
branch_labels = None
depends_on = None

SPECIALTIES = (
    "RADIOLOGY",
    "GENERAL_PRACTICE",
    "CARDIOLOGY",
    "ONCOLOGY",
    "GYNECOLOGY",
    "PEDIATRICS",
    "INTERNAL_MEDICINE",
    "OTHER",
)
NEW_COLUMNS = ("qualification", "practising_since", "languages", "bio_en", "bio_es", "bio_fr")


def _enum():
    return sa.Enum(
        *SPECIALTIES, name="specialty", native_enum=False, create_constraint=True, length=32
    )


def _sqlite():
    return op.get_bind().dialect.name == "sqlite"


def _batch():
    kwargs = {"table_kwargs": {"sqlite_autoincrement": True}} if _sqlite() else {}
    return op.batch_alter_table("doctor", recreate="auto", **kwargs)


def upgrade():
    op.create_table(
        "doctor_specialty",
        sa.Column("doctor_id", sa.Integer(), nullable=False),
        sa.Column("specialty", _enum(), nullable=False),
        sa.ForeignKeyConstraint(
            ["doctor_id"],
            ["doctor.id"],
            name=op.f("fk_doctor_specialty_doctor_id_doctor"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("doctor_id", "specialty", name=op.f("pk_doctor_specialty")),
    )
    op.create_index(
        "ix_doctor_specialty_specialty", "doctor_specialty", ["specialty"], unique=False
    )
    op.execute(
        "INSERT INTO doctor_specialty (doctor_id, specialty) "
        "SELECT id, specialty FROM doctor ORDER BY id"
    )
    with _batch() as batch:
        batch.add_column(sa.Column("qualification", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("practising_since", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("languages", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("bio_en", sa.Text(), nullable=True))
        batch.add_column(sa.Column("bio_es", sa.Text(), nullable=True))
        batch.add_column(sa.Column("bio_fr", sa.Text(), nullable=True))
        batch.drop_index("ix_doctor_specialty")
        if _sqlite():
            batch.drop_constraint(op.f("ck_doctor_specialty"), type_="check")
        batch.drop_column("specialty")


def downgrade():
    order = " ".join(f"WHEN '{code}' THEN {i}" for i, code in enumerate(SPECIALTIES))
    with _batch() as batch:
        batch.add_column(
            sa.Column("specialty", _enum(), nullable=False, server_default="GENERAL_PRACTICE")
        )
    op.execute(
        "UPDATE doctor SET specialty = COALESCE((SELECT s.specialty FROM doctor_specialty s "
        f"WHERE s.doctor_id = doctor.id ORDER BY CASE s.specialty {order} END LIMIT 1), "
        "'GENERAL_PRACTICE')"
    )
    with _batch() as batch:
        batch.alter_column(
            "specialty", existing_type=_enum(), server_default=None, existing_nullable=False
        )
        batch.create_index("ix_doctor_specialty", ["specialty"], unique=False)
        for column in NEW_COLUMNS:
            batch.drop_column(column)
    op.drop_table("doctor_specialty")
