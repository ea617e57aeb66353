"""The migrations build exactly the schema the models describe; the database is at their head."""

from __future__ import annotations

import contextlib
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
# The study's columns before the workflow (migration 0013 adds its own after them).
OLD_STUDY_COLUMNS = (
    "id, patient_id, urgency, body_part, description, study_type, ordering_doctor_id, "
    "study_date, accession_number, created_at, updated_at, version, import_batch_id"
)


def _all_rows(conn) -> dict[str, list[tuple]]:  # noqa: ANN001
    out = {}
    for t in ("clinic", "doctor_phone", "audit_log"):
        result = conn.execute(text(f"SELECT * FROM {t} ORDER BY 1"))  # noqa: S608
        keys = [k for k in result.keys() if k not in DERIVED]
        out[t] = [tuple(row._mapping[k] for k in keys) for row in result]
    out["study"] = [
        tuple(r)
        for r in conn.execute(text(f"SELECT {OLD_STUDY_COLUMNS} FROM study ORDER BY id"))  # noqa: S608
    ]
    out["user_account"] = [
        tuple(r) for r in conn.execute(text("SELECT id, email FROM user_account ORDER BY id"))
    ]
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


# --------------------------------------------------------------------------- 0013: no row lost


# The revision before the workflow's (0013 follows the patient chart's 0014b).
BEFORE_WORKFLOW = "0014b_doctor_profile"
ROWS = [
    "INSERT INTO clinic (id, name, city, created_at, updated_at, version) "
    "VALUES (1, 'Clínica Norte', 'Puebla', :t, :t, 3)",
    "INSERT INTO doctor (id, first_name, last_name, email, clinic_id, active, "
    "created_at, updated_at, version) "
    "VALUES (1, 'Ana', 'Núñez', 'ana@m.example.com', 1, :yes, :t, :t, 1)",
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


def _rows_by_table(conn) -> dict[str, list[dict]]:
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


def test_the_workflow_migration_keeps_every_row(tmp_path: Path):
    """Migrating a database of the schema before the workflow: every row of every table is
    kept as it was; studies are PERFORMED with ``performed_at`` from their date; the triggers
    of migration 0008 still keep the per-patient summary; ids are still never reused."""
    from datetime import UTC, datetime

    from flask_migrate import downgrade, upgrade
    from sqlalchemy import text

    from backoffice.auth.scope import EVERYTHING, using_scope
    from backoffice.models import Study, StudyStatus
    from tests.scratch import scratch_database

    with contextlib.ExitStack() as stack:
        url = stack.enter_context(scratch_database(tmp_path, "mig13"))
        app = create_app({"ENV_NAME": "testing", "SQLALCHEMY_DATABASE_URI": url})
        stack.enter_context(app.app_context())
        stack.enter_context(using_scope(EVERYTHING))
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
                before = _rows_by_table(conn)
            upgrade()
            with db.engine.begin() as conn:
                after = _rows_by_table(conn)
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
                back = _rows_by_table(conn)
            assert len(back["study"]) == 3 and len(back["role"]) == 4
        finally:
            db.session.remove()
            db.engine.dispose()


def select_studies(model):
    from sqlalchemy import select

    return select(model).order_by(model.id)
