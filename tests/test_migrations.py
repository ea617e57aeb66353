"""The migrations build exactly the schema the models describe; the database is at their head."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask, current_app
from sqlalchemy import Column, Index, Integer, MetaData, String, inspect

from backoffice import create_app
from backoffice.extensions import db


def migration_context() -> MigrationContext:
    """A context on the test database with the options ``flask db migrate`` uses."""
    options = dict(current_app.extensions["migrate"].configure_args)
    options.setdefault("compare_type", True)
    return MigrationContext.configure(db.session.connection(), opts=options)


def script_directory() -> ScriptDirectory:
    config = current_app.extensions["migrate"]
    return ScriptDirectory.from_config(config.migrate.get_config(config.directory))


def test_models_and_migrations_agree():
    """What ``flask db check`` checks: autogenerate finds nothing to add, drop or alter."""
    differences = compare_metadata(migration_context(), db.metadata)
    assert differences == []


def test_the_comparison_sees_a_model_change():
    """The check above has teeth: a column or index the migrations lack is reported."""
    changed = MetaData(naming_convention=db.metadata.naming_convention)
    for table in db.metadata.tables.values():
        table.to_metadata(changed)
    patient = changed.tables["patient"]
    patient.append_column(Column("nickname", String(50)))
    Index("ix_patient_first_name", patient.c.first_name)
    changed.tables["clinic"].c.city.type = Integer()

    differences = compare_metadata(migration_context(), changed)
    kinds = sorted(d[0] if isinstance(d, tuple) else d[0][0] for d in differences)
    assert kinds == ["add_column", "add_index", "modify_type"]


def test_database_is_at_the_single_head():
    heads = script_directory().get_heads()
    assert len(heads) == 1, f"the migrations have several heads: {heads}"
    assert migration_context().get_current_heads() == tuple(heads)


def test_every_model_table_exists_with_its_indexes():
    inspector = inspect(db.session.connection())
    assert set(db.metadata.tables) <= set(inspector.get_table_names())
    study_indexes = {i["name"] for i in inspector.get_indexes("study")}
    assert {"ix_study_patient_date", "ix_study_urgency_date", "ix_study_type_date"} <= (
        study_indexes
    )
    patient_indexes = {i["name"] for i in inspector.get_indexes("patient")}
    assert "ix_patient_name_order" in patient_indexes
    assert "ix_patient_last_name" not in patient_indexes  # the name-order index serves it
    if db.session.connection().dialect.name == "postgresql":
        # names anywhere (trigram), record numbers and emails from their start (b-tree)
        assert {
            "ix_patient_first_name_trgm",
            "ix_patient_last_name_trgm",
            "ix_patient_mrn_prefix",
            "ix_patient_email_prefix",
        } <= patient_indexes
        assert not {"ix_patient_mrn_trgm", "ix_patient_email_trgm"} & patient_indexes
        assert {
            "ix_study_body_part_trgm",
            "ix_study_description_trgm",
            "ix_study_accession_prefix",
        } <= study_indexes


def test_migrations_go_down_to_nothing_and_up_again(tmp_path: Path):
    """On a database of its own: downgrade to base leaves no table, upgrade rebuilds it all."""
    from flask_migrate import downgrade, upgrade

    url = f"sqlite:///{tmp_path / 'roundtrip.sqlite'}"
    other: Flask = create_app({"ENV_NAME": "testing", "SQLALCHEMY_DATABASE_URI": url})
    with other.app_context():
        try:
            upgrade()
            downgrade(revision="base")
            left = set(inspect(db.engine).get_table_names()) - {"alembic_version"}
            assert left == set()
            upgrade()
            with db.engine.connect() as connection:
                options = dict(other.extensions["migrate"].configure_args)
                context = MigrationContext.configure(connection, opts=options)
                assert compare_metadata(context, db.metadata) == []
        finally:
            db.engine.dispose()


# --------------------------------------------------------------------------- 0013: no row lost


@pytest.fixture
def scratch_database(tmp_path: Path):
    """A database of its own: a SQLite file, or a PostgreSQL database next to the test one."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from tests.conftest import _database_url

    base = _database_url()
    if base.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'migrate.sqlite'}"
        return
    name = f"{make_url(base).database}_migrate"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


BEFORE_WORKFLOW = "0010_study_date_cover_id"
ROWS = [
    "INSERT INTO clinic (id, name, city, created_at, updated_at, version) "
    "VALUES (1, 'Clínica Norte', 'Puebla', :t, :t, 3)",
    "INSERT INTO doctor (id, first_name, last_name, email, specialty, clinic_id, active, "
    "created_at, updated_at, version) "
    "VALUES (1, 'Ana', 'Núñez', 'ana@m.example.com', 'RADIOLOGY', 1, :yes, :t, :t, 1)",
    "INSERT INTO doctor_phone (id, doctor_id, number, kind, is_primary) "
    "VALUES (1, 1, '+525512345678', 'MOBILE', :yes)",
    "INSERT INTO patient (id, mrn, first_name, last_name, birth_date, email, "
    "referring_doctor_id, clinic_id, created_at, updated_at, version) "
    "VALUES (1, 'M-1', 'José', 'Peña', '1955-04-10', 'jose@m.example.com', 1, 1, :t, :t, 2)",
    "INSERT INTO study (id, patient_id, urgency, body_part, description, study_type, "
    "ordering_doctor_id, study_date, accession_number, created_at, updated_at, version) "
    "VALUES (1, 1, 'HIGH', 'CHEST', 'NO FINDINGS', 'XRAY', 1, '2026-01-15', 'A-1', :t, :t, 4)",
    "INSERT INTO study (id, patient_id, urgency, body_part, description, study_type, "
    "ordering_doctor_id, study_date, accession_number, created_at, updated_at, version) "
    "VALUES (2, 1, 'LOW', 'KNEE', NULL, 'MRI', NULL, '2025-12-31', NULL, :t, :t, 1)",
    "INSERT INTO study (id, patient_id, urgency, body_part, description, study_type, "
    "ordering_doctor_id, study_date, accession_number, created_at, updated_at, version) "
    "VALUES (3, 1, 'MID', 'HEAD', 'A ''quoted'' note', 'CT', 1, '2024-02-29', 'A-3', :t, :t, 1)",
    "INSERT INTO user_account (id, email, display_name, password_hash, active, "
    "session_token, created_at, updated_at, failed_login_count) "
    "VALUES (1, 'op@m.example.com', 'Op', 'x', :yes, 'tok', :t, :t, 0)",
    "INSERT INTO user_role (user_id, role_id) SELECT 1, id FROM role WHERE name = 'OPERATOR'",
]


def _all_rows(conn) -> dict[str, list[dict]]:
    from sqlalchemy import MetaData, select

    meta = MetaData()
    meta.reflect(conn)
    out = {}
    for table in meta.sorted_tables:
        if table.name == "alembic_version":
            continue
        order = list(table.primary_key.columns) or list(table.columns)
        out[table.name] = [dict(r._mapping) for r in conn.execute(select(table).order_by(*order))]
    return out


def test_the_workflow_migration_keeps_every_row(scratch_database):
    """Migrating a database of the schema before the workflow: every row of every table is
    kept as it was; studies are PERFORMED with ``performed_at`` from their date; the triggers
    of migration 0008 still keep the per-patient summary; ids are still never reused."""
    from datetime import UTC, datetime

    from flask_migrate import downgrade, upgrade
    from sqlalchemy import text

    from backoffice.auth.scope import EVERYTHING, using_scope
    from backoffice.models import Study, StudyStatus

    app = create_app({"ENV_NAME": "testing", "SQLALCHEMY_DATABASE_URI": scratch_database})
    with app.app_context(), using_scope(EVERYTHING):
        try:
            upgrade(revision=BEFORE_WORKFLOW)
            now = datetime(2026, 2, 1, 10, 30, tzinfo=UTC)
            with db.engine.begin() as conn:
                yes = True if conn.dialect.name == "postgresql" else 1
                for sql in ROWS:
                    conn.execute(text(sql), {"t": now, "yes": yes})
                if conn.dialect.name == "postgresql":
                    for table in ("clinic", "doctor", "doctor_phone", "patient", "study"):
                        sql = f"SELECT setval('{table}_id_seq', (SELECT max(id) FROM {table}))"  # noqa: S608
                        conn.execute(text(sql))
                conn.execute(text("DELETE FROM study WHERE id = 3"))  # id 3 must stay unused
                before = _all_rows(conn)
            upgrade()
            with db.engine.begin() as conn:
                after = _all_rows(conn)
            assert set(after) >= set(before)
            for table, rows in before.items():
                assert len(after[table]) == len(rows) + (1 if table == "role" else 0), table
                for old, new in zip(rows, after[table], strict=False):
                    assert {k: new[k] for k in old} == old, table
            assert [r["name"] for r in after["role"]][-1] == "DOCTOR"
            studies = db.session.scalars(select_studies(Study)).all()
            assert [s.status for s in studies] == [StudyStatus.PERFORMED] * 2
            assert [s.performed_at for s in studies] == [
                datetime(2026, 1, 15, 12, 0, tzinfo=UTC),
                datetime(2025, 12, 31, 12, 0, tzinfo=UTC),
            ]
            assert all(s.ordered_at is None and s.reporting_doctor_id is None for s in studies)
            db.session.rollback()  # the read's transaction holds locks the downgrade needs
            with db.engine.begin() as conn:
                # 0008's triggers: a new HIGH study, a study moved to LOW, and the summary says so
                conn.execute(
                    text(
                        "INSERT INTO study (patient_id, urgency, body_part, study_type, "
                        "study_date, created_at, updated_at, version) "
                        "VALUES (1, 'LOW', 'HAND', 'XRAY', '2026-03-01', :t, :t, 1)"
                    ),
                    {"t": now},
                )
                conn.execute(text("UPDATE study SET urgency = 'LOW' WHERE id = 1"))
                summary = conn.execute(
                    text("SELECT top_rank, latest_date FROM patient_study_summary")
                ).one()
                assert (summary[0], str(summary[1])) == (2, "2026-03-01")
                new_id = conn.execute(text("SELECT max(id) FROM study")).scalar()
                assert new_id == 4  # 3 was deleted before the migration: not reused
                status = conn.execute(text("SELECT status FROM study WHERE id = 4")).scalar()
                assert status == "PERFORMED"  # a row written without a status
            downgrade(revision=BEFORE_WORKFLOW)
            with db.engine.begin() as conn:
                back = _all_rows(conn)
            assert len(back["study"]) == 3 and len(back["role"]) == 4
        finally:
            db.session.remove()
            db.engine.dispose()


def select_studies(model):
    from sqlalchemy import select

    return select(model).order_by(model.id)
