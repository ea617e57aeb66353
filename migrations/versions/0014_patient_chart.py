"""The patient chart: sex, address, language, emergency contact, allergies, active flag, phones,
a required MRN from a sequence, and care teams (the referring doctors become links)

Revision ID: 0014_patient_chart
Revises: 0010_study_date_cover_id

Every existing row is kept. Patients without an MRN get one, in id order, from the configured
format (``MRN_PREFIX`` + ``MRN_DIGITS``, "MRN-000001"), skipping MRNs already held; the sequence
then starts after the last one given (a PostgreSQL sequence; a counter row on SQLite). Each
patient's referring doctor becomes an active REFERRING link of their care team. Existing
patients are active, of unknown sex, without a contrast agent allergy.

SQLite rebuilds ``patient`` in batch mode (the table has no triggers of its own; the study
summary's triggers are on ``study`` and are not touched).
"""

from alembic import op
import sqlalchemy as sa

revision = "0014_patient_chart"
down_revision = "0010_study_date_cover_id"
branch_labels = None
depends_on = None

SEX = ("FEMALE", "MALE", "OTHER", "UNKNOWN")
PHONE_KINDS = ("MOBILE", "OFFICE", "HOME", "FAX")
ROLES = ("REFERRING", "PRIMARY", "SPECIALIST", "REPORTING")
STATUSES = ("ACTIVE", "INACTIVE", "COMPLETED")
NEW_PATIENT_COLUMNS = (
    "sex",
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
    "contrast_allergy",
    "active",
)


def _enum(values, name):
    return sa.Enum(*values, name=name, native_enum=False, create_constraint=True, length=32)


def _mrn_format():
    try:
        from flask import current_app

        return current_app.config.get("MRN_PREFIX", "MRN-"), int(
            current_app.config.get("MRN_DIGITS", 6)
        )
    except RuntimeError:  # outside an app (plain alembic): the defaults
        return "MRN-", 6


def _sqlite():
    return op.get_bind().dialect.name == "sqlite"


def _batch(table):
    kwargs = {"table_kwargs": {"sqlite_autoincrement": True}} if _sqlite() else {}
    return op.batch_alter_table(table, recreate="auto", **kwargs)


def _assign_mrns(conn):
    """Give every patient without an MRN the next number; returns the last number used."""
    prefix, digits = _mrn_format()
    patient = sa.table("patient", sa.column("id", sa.Integer), sa.column("mrn", sa.String))
    taken = set(
        conn.execute(
            sa.select(patient.c.mrn).where(patient.c.mrn.like(prefix.replace("%", r"\%") + "%"))
        ).scalars()
    )
    number = 0
    missing = conn.execute(
        sa.select(patient.c.id).where(patient.c.mrn.is_(None)).order_by(patient.c.id)
    ).scalars().all()
    for start in range(0, len(missing), 1000):
        rows = []
        for patient_id in missing[start : start + 1000]:
            while True:
                number += 1
                mrn = f"{prefix}{number:0{digits}d}"
                if mrn not in taken:
                    break
            rows.append({"pid": patient_id, "new_mrn": mrn})
        conn.execute(
            patient.update()
            .where(patient.c.id == sa.bindparam("pid"))
            .values(mrn=sa.bindparam("new_mrn")),
            rows,
        )
    return number


def upgrade():
    conn = op.get_bind()
    pg = conn.dialect.name == "postgresql"

    with _batch("patient") as batch:
        batch.add_column(
            sa.Column("sex", _enum(SEX, "administrativesex"), nullable=False, server_default="UNKNOWN")
        )
        batch.add_column(sa.Column("street", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("city", sa.String(length=120), nullable=True))
        batch.add_column(sa.Column("state", sa.String(length=120), nullable=True))
        batch.add_column(sa.Column("postal_code", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("country", sa.String(length=2), nullable=True))
        batch.add_column(sa.Column("preferred_language", sa.String(length=8), nullable=True))
        batch.add_column(sa.Column("emergency_contact_name", sa.String(length=200), nullable=True))
        batch.add_column(
            sa.Column("emergency_contact_relation", sa.String(length=100), nullable=True)
        )
        batch.add_column(sa.Column("emergency_contact_phone", sa.String(length=20), nullable=True))
        batch.add_column(sa.Column("allergies", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column("contrast_allergy", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.true())
        )

    last = _assign_mrns(conn)

    with _batch("patient") as batch:
        batch.alter_column("mrn", existing_type=sa.String(length=64), nullable=False)
        batch.create_index("ix_patient_city", ["city"], unique=False)
        batch.drop_index("ix_patient_name_order")
        batch.create_index(
            "ix_patient_name_order", ["last_name", "first_name", "id", "active"], unique=False
        )

    # The MRN sequence: after the numbers just given (and any MRN already in its format).
    op.create_table(
        "record_counter",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("value", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_record_counter")),
    )
    if pg:
        op.execute(f"CREATE SEQUENCE patient_mrn_seq START WITH {last + 1}")
    else:
        op.execute(f"INSERT INTO record_counter (name, value) VALUES ('patient_mrn', {last})")

    op.create_table(
        "patient_phone",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(length=20), nullable=False),
        sa.Column("kind", _enum(PHONE_KINDS, "phonekind"), nullable=False),
        sa.Column("is_primary", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["patient.id"],
            name=op.f("fk_patient_phone_patient_id_patient"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patient_phone")),
        sa.UniqueConstraint("patient_id", "number", name=op.f("uq_patient_phone_patient_id_number")),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_patient_phone_patient_id", "patient_phone", ["patient_id"], unique=False)
    if pg:
        op.create_index(
            "ix_patient_phone_number_trgm",
            "patient_phone",
            ["number"],
            unique=False,
            postgresql_using="gin",
            postgresql_ops={"number": "gin_trgm_ops"},
        )

    op.create_table(
        "care_team_member",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("doctor_id", sa.Integer(), nullable=False),
        sa.Column("role", _enum(ROLES, "careteamrole"), nullable=False),
        sa.Column("status", _enum(STATUSES, "careteamstatus"), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("since", sa.Date(), nullable=True),
        sa.Column("until", sa.Date(), nullable=True),
        sa.Column("import_batch_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["doctor_id"],
            ["doctor.id"],
            name=op.f("fk_care_team_member_doctor_id_doctor"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["import_batch_id"],
            ["import_batch.id"],
            name=op.f("fk_care_team_member_import_batch_id_import_batch"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"],
            ["patient.id"],
            name=op.f("fk_care_team_member_patient_id_patient"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_care_team_member")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_care_team_member_doctor_status",
        "care_team_member",
        ["doctor_id", "status", "patient_id"],
        unique=False,
    )
    op.create_index(
        "ix_care_team_member_patient",
        "care_team_member",
        ["patient_id", "role", "status"],
        unique=False,
    )
    op.create_index(
        "ix_care_team_member_import_batch_id",
        "care_team_member",
        ["import_batch_id"],
        unique=False,
    )
    # Every referring doctor on record becomes an active REFERRING link (since: unknown).
    op.execute(
        "INSERT INTO care_team_member (patient_id, doctor_id, role, status, created_at, "
        "updated_at, version) SELECT id, referring_doctor_id, 'REFERRING', 'ACTIVE', "
        "created_at, created_at, 1 FROM patient WHERE referring_doctor_id IS NOT NULL "
        "ORDER BY id"
    )


def downgrade():
    conn = op.get_bind()
    pg = conn.dialect.name == "postgresql"
    # The referring doctors stay on the patients (the column was kept in step); the links,
    # phones, and new fields go. MRNs given by the sequence stay: they may be in other systems.
    op.drop_table("care_team_member")
    op.drop_table("patient_phone")
    if pg:
        op.execute("DROP SEQUENCE IF EXISTS patient_mrn_seq")
    op.drop_table("record_counter")
    with _batch("patient") as batch:
        batch.drop_index("ix_patient_name_order")
        batch.create_index("ix_patient_name_order", ["last_name", "first_name", "id"], unique=False)
        batch.drop_index("ix_patient_city")
        batch.alter_column("mrn", existing_type=sa.String(length=64), nullable=True)
        if not pg:
            # The rebuilt table would keep the CHECK of the dropped column otherwise.
            batch.drop_constraint(op.f("ck_patient_administrativesex"), type_="check")
        for column in NEW_PATIENT_COLUMNS:
            batch.drop_column(column)
