"""One clinic name whatever its case or accents: a normalised unique key kept by the database

Revision ID: 0012_hardening
Revises: 0014b_doctor_profile

``Clínica Roma``, ``clinica roma`` and ``CLINICA  ROMA`` were three clinics. ``clinic.name_key``
holds the name folded (accents removed, lower case, inner spaces collapsed) by the database
function ``bo_name_key(text)``, and a unique index on it makes them one name. A trigger fills
the key on every insert and every change of the name, whatever writes the row (the forms, the
importer's set-based SQL, a restore, plain SQL), and the forms and the importer ask the same
function which clinic already holds a name.

- PostgreSQL: ``bo_name_key`` is SQL over the ``unaccent`` extension (contrib, shipped with
  PostgreSQL and the postgres Docker image); a BEFORE trigger sets the key.
- SQLite: ``bo_name_key`` is the Python function ``backoffice.validation.clinic_name_key``,
  registered on every connection the app opens (``backoffice.database``); an AFTER trigger sets
  the key. A connection that has not registered it (the ``sqlite3`` shell) cannot write clinics.

Existing clinics whose names fold to the same key are kept, none is merged or deleted: the
oldest keeps its name, each later one gets `` (2)``, `` (3)``... appended (and a new version, so
a form opened before the migration does not put the old name back). The renamed clinics are
listed in the migration's output, for an administrator to merge them by hand if they are one.
"""

import logging

import sqlalchemy as sa
from alembic import op

revision = "0012_hardening"
down_revision = "0014b_doctor_profile"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")

PG_FUNCTION = r"""
CREATE OR REPLACE FUNCTION bo_name_key(name text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = public, pg_catalog
AS $$
    SELECT lower(regexp_replace(btrim(unaccent('unaccent'::regdictionary, name)), '\s+', ' ', 'g'))
$$;
"""
PG_TRIGGER_FUNCTION = """
CREATE FUNCTION clinic_name_key_fill() RETURNS trigger AS $$
BEGIN
    NEW.name_key := bo_name_key(NEW.name);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
"""
PG_TRIGGER = (
    "CREATE TRIGGER clinic_name_key BEFORE INSERT OR UPDATE OF name ON clinic "
    "FOR EACH ROW EXECUTE FUNCTION clinic_name_key_fill()"
)
SQLITE_TRIGGERS = {
    "clinic_name_key_insert": "AFTER INSERT ON clinic",
    "clinic_name_key_update": "AFTER UPDATE OF name ON clinic",
}


def _rename_duplicates(conn):
    """Keep every clinic: later ones whose names fold to an earlier key get a suffix."""
    rows = conn.execute(sa.text("SELECT id, name, bo_name_key(name) FROM clinic ORDER BY id")).all()
    taken = {key for _id, _name, key in rows}
    seen = set()
    for clinic_id, name, key in rows:
        if key not in seen:
            seen.add(key)
            continue
        n = 2
        while True:
            candidate = f"{name[:190]} ({n})"
            candidate_key = conn.execute(
                sa.text("SELECT bo_name_key(:name)"), {"name": candidate}
            ).scalar_one()
            if candidate_key not in taken:
                break
            n += 1
        conn.execute(
            sa.text(
                "UPDATE clinic SET name = :name, version = version + 1 WHERE id = :id"
            ),
            {"name": candidate, "id": clinic_id},
        )
        taken.add(candidate_key)
        seen.add(candidate_key)
        log.warning(
            "clinic %s had the same name as an earlier clinic (whatever the case or accents):"
            " renamed to %r; merge them by hand if they are one clinic",
            clinic_id,
            candidate,
        )


def upgrade():
    conn = op.get_bind()
    postgresql = conn.dialect.name == "postgresql"
    if postgresql:
        op.execute("CREATE EXTENSION IF NOT EXISTS unaccent")
        op.execute(PG_FUNCTION)
    op.add_column("clinic", sa.Column("name_key", sa.String(length=200), nullable=True))
    _rename_duplicates(conn)
    op.execute("UPDATE clinic SET name_key = bo_name_key(name)")
    op.create_index("uq_clinic_name_key", "clinic", ["name_key"], unique=True)
    if postgresql:
        op.execute(PG_TRIGGER_FUNCTION)
        op.execute(PG_TRIGGER)
    else:
        for name, when in SQLITE_TRIGGERS.items():
            op.execute(
                f"CREATE TRIGGER {name} {when} FOR EACH ROW BEGIN "
                "UPDATE clinic SET name_key = bo_name_key(NEW.name) WHERE id = NEW.id; END"
            )


def downgrade():
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS clinic_name_key ON clinic")
        op.execute("DROP FUNCTION IF EXISTS clinic_name_key_fill()")
    else:
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_index("uq_clinic_name_key", table_name="clinic")
    with op.batch_alter_table("clinic") as batch:
        batch.drop_column("name_key")
    if conn.dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS bo_name_key(text)")
