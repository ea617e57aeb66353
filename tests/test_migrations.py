"""The migrations build exactly the schema the models describe; the database is at their head."""

from __future__ import annotations

from pathlib import Path

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
