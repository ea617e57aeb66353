"""The migrations build exactly the schema the models describe; the database is at their head."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask, current_app
from sqlalchemy import Column, Index, Integer, MetaData, String, inspect, text

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


# --------------------------------------------------------------------------- 0014: the chart

OLD_HEAD = "0010_study_date_cover_id"


def _old_rows(conn) -> None:  # noqa: ANN001
    """What a database at 0010 holds: a clinic, two doctors, patients with and without an MRN
    (one of them already in the sequence's format), referring doctors, phones, studies. A fresh
    database numbers them from 1, in this order."""
    now = "2026-01-01 10:00:00"
    conn.execute(
        text(
            "INSERT INTO clinic (name, city, created_at, updated_at, version) "
            "VALUES ('Clínica Vieja', 'Puebla', :now, :now, 1)"
        ),
        {"now": now},
    )
    for doctor_id, email, specialty in (
        (1, "ana@old.example.com", "RADIOLOGY"),
        (2, "luis@old.example.com", "ONCOLOGY"),
    ):
        conn.execute(
            text(
                "INSERT INTO doctor (first_name, last_name, email, specialty, clinic_id, "
                "active, created_at, updated_at, version) VALUES ('Doc', :last, :email, "
                ":specialty, 1, :yes, :now, :now, 1)"
            ),
            {
                "id": doctor_id,
                "last": f"Old{doctor_id}",
                "email": email,
                "specialty": specialty,
                "yes": True,
                "now": now,
            },
        )
    conn.execute(
        text(
            "INSERT INTO doctor_phone (doctor_id, number, kind, is_primary) "
            "VALUES (1, '+525512345678', 'MOBILE', :yes)"
        ),
        {"yes": True},
    )
    patients = [
        (1, "1", "Jose", 1),
        (2, None, "Sin", 2),  # no MRN: gets the first free number
        (3, "MRN-000001", "Formato", None),  # already holds what would be the first number
        (4, None, "Otro", None),
    ]
    for patient_id, mrn, first, doctor_id in patients:
        conn.execute(
            text(
                "INSERT INTO patient (mrn, first_name, last_name, birth_date, "
                "referring_doctor_id, clinic_id, created_at, updated_at, version) VALUES "
                "(:mrn, :first, 'Antiguo', '1970-01-01', :doctor, 1, :now, :now, 3)"
            ),
            {"id": patient_id, "mrn": mrn, "first": first, "doctor": doctor_id, "now": now},
        )
    conn.execute(
        text(
            "INSERT INTO study (patient_id, urgency, body_part, study_type, study_date, "
            "created_at, updated_at, version) VALUES (1, 'HIGH', 'CHEST', 'XRAY', '2026-01-01', "
            ":now, :now, 1)"
        ),
        {"now": now},
    )


# Columns later migrations add that the database derives from others (0012: clinic.name_key).
DERIVED = ("name_key",)


def _all_rows(conn) -> dict[str, list[tuple]]:  # noqa: ANN001
    tables = ("clinic", "doctor_phone", "study", "audit_log", "user_account")
    out = {}
    for t in tables:
        result = conn.execute(text(f"SELECT * FROM {t} ORDER BY 1"))  # noqa: S608
        keys = [k for k in result.keys() if k not in DERIVED]
        out[t] = [tuple(row._mapping[k] for k in keys) for row in result]
    out["doctor"] = [
        tuple(r)
        for r in conn.execute(
            text("SELECT id, first_name, last_name, email, clinic_id FROM doctor ORDER BY id")
        )
    ]
    out["patient"] = [
        tuple(r)
        for r in conn.execute(
            text(
                "SELECT id, first_name, last_name, birth_date, referring_doctor_id, clinic_id, "
                "version FROM patient ORDER BY id"
            )
        )
    ]
    return out


def test_migration_0014_keeps_every_row_and_gives_every_patient_an_mrn(tmp_path: Path):
    """From the schema before the chart (0010) to the head and back, with data in it."""
    from flask_migrate import downgrade, upgrade

    from tests.scratch import scratch_database

    with scratch_database(tmp_path, "mig14") as url:
        other: Flask = create_app({"ENV_NAME": "testing", "SQLALCHEMY_DATABASE_URI": url})
        with other.app_context():
            try:
                upgrade(revision=OLD_HEAD)
                with db.engine.begin() as conn:
                    _old_rows(conn)
                    before = _all_rows(conn)
                upgrade()
                with db.engine.connect() as conn:
                    after = _all_rows(conn)
                    assert after == before  # nothing lost, nothing changed
                    key = conn.execute(text("SELECT name_key FROM clinic")).scalar()
                    assert key == "clinica vieja"  # 0012 folded the existing names
                    mrns = dict(conn.execute(text("SELECT id, mrn FROM patient")).all())
                    # in id order, skipping the number patient 3 already holds
                    assert mrns == {1: "1", 2: "MRN-000002", 3: "MRN-000001", 4: "MRN-000003"}
                    links = conn.execute(
                        text(
                            "SELECT patient_id, doctor_id, role, status FROM care_team_member "
                            "ORDER BY patient_id"
                        )
                    ).all()
                    assert [tuple(r) for r in links] == [
                        (1, 1, "REFERRING", "ACTIVE"),
                        (2, 2, "REFERRING", "ACTIVE"),
                    ]
                    specialties = conn.execute(
                        text("SELECT doctor_id, specialty FROM doctor_specialty ORDER BY 1")
                    ).all()
                    assert [tuple(r) for r in specialties] == [(1, "RADIOLOGY"), (2, "ONCOLOGY")]
                    flags = conn.execute(
                        text("SELECT DISTINCT sex, active, contrast_allergy FROM patient")
                    ).all()
                    assert [(s, bool(a), bool(c)) for s, a, c in flags] == [
                        ("UNKNOWN", True, False)
                    ]
                # the sequence goes on after the numbers the migration gave
                with other.test_request_context():
                    from backoffice.models import Patient

                    patient = Patient(
                        first_name="Nuevo", last_name="Paciente", birth_date=date(1990, 1, 1)
                    )
                    db.session.add(patient)
                    db.session.commit()
                    assert patient.mrn == "MRN-000004"
                    db.session.delete(patient)
                    db.session.commit()
                    db.session.remove()

                downgrade(revision=OLD_HEAD)
                with db.engine.connect() as conn:
                    back = _all_rows(conn)
                    assert back["patient"] == before["patient"]
                    assert back["doctor"] == before["doctor"]
                    assert {t: back[t] for t in ("clinic", "doctor_phone", "study")} == {
                        t: before[t] for t in ("clinic", "doctor_phone", "study")
                    }
                    specialties = conn.execute(
                        text("SELECT id, specialty FROM doctor ORDER BY id")
                    ).all()
                    assert [tuple(r) for r in specialties] == [(1, "RADIOLOGY"), (2, "ONCOLOGY")]
                upgrade()
            finally:
                db.engine.dispose()
