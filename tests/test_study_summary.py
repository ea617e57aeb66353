"""The patients' study summary: the database keeps it whatever writes the studies, and the
listing's "most recent" and "highest urgency" sorts read it in the order the per-patient
subqueries give."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import event, func, select, text

from backoffice.extensions import db
from backoffice.models import (
    AuditEntry,
    DeletionRefused,
    Patient,
    PatientStudySummary,
    RoleName,
    Study,
)
from backoffice.services.audit import AUDITED, acting_as
from backoffice.services.imports import run_import
from backoffice.services.listing import (
    ListingQuery,
    _patient_conditions,
    _shown_studies_order,
    listing_page,
    urgency_rank,
)
from backoffice.services.restore import restore_deleted
from tests.factories import make_clinic, make_doctor, make_patient, make_study

HIGH, MID, LOW = 0, 1, 2


def summary() -> dict[int, tuple[int, date]]:
    """What the table holds: {patient id: (top rank, latest date)}."""
    rows = db.session.execute(
        select(
            PatientStudySummary.patient_id,
            PatientStudySummary.top_rank,
            PatientStudySummary.latest_date,
        )
    )
    return {patient_id: (rank, latest) for patient_id, rank, latest in rows}


def recomputed() -> dict[int, tuple[int, date]]:
    """The same, computed from the studies as they are now."""
    rows = db.session.execute(
        select(
            Study.patient_id, func.min(urgency_rank(Study.urgency)), func.max(Study.study_date)
        ).group_by(Study.patient_id)
    )
    return {patient_id: (rank, latest) for patient_id, rank, latest in rows}


def assert_in_step() -> dict[int, tuple[int, date]]:
    db.session.flush()
    held = summary()
    assert held == recomputed()
    return held


# --------------------------------------------------------------------------- kept by the database


def test_orm_creates_edits_moves_and_deletes_keep_it():
    ana, bea, cai = make_patient("Ana", "Uno"), make_patient("Bea", "Dos"), make_patient("Cai")
    assert summary() == {}

    low_new = make_study(ana, urgency="LOW", study_date=date(2026, 3, 1))
    assert assert_in_step() == {ana.id: (LOW, date(2026, 3, 1))}
    high_old = make_study(ana, urgency="HIGH", body_part="NECK", study_date=date(2024, 1, 1))
    mid = make_study(bea, urgency="MID", study_date=date(2025, 6, 1))
    db.session.commit()
    assert assert_in_step() == {
        ana.id: (HIGH, date(2026, 3, 1)),
        bea.id: (MID, date(2025, 6, 1)),
    }

    # an edit that makes a patient less urgent, then one that makes the latest study older
    high_old.urgency = "MID"
    db.session.commit()
    assert assert_in_step()[ana.id] == (MID, date(2026, 3, 1))
    low_new.study_date = date(2023, 1, 1)
    db.session.commit()
    assert assert_in_step()[ana.id] == (MID, date(2024, 1, 1))

    # a study moved to another patient changes both, and gives one without studies a row
    high_old.patient = cai
    db.session.commit()
    assert assert_in_step() == {
        ana.id: (LOW, date(2023, 1, 1)),
        bea.id: (MID, date(2025, 6, 1)),
        cai.id: (MID, date(2024, 1, 1)),
    }

    # an edit of anything else leaves the row as it is
    mid.description = "FOLLOW-UP"
    db.session.commit()
    assert assert_in_step()[bea.id] == (MID, date(2025, 6, 1))

    # a patient's last study deleted: no row
    db.session.delete(low_new)
    db.session.delete(mid)
    db.session.commit()
    assert assert_in_step() == {cai.id: (MID, date(2024, 1, 1))}


def test_set_based_sql_keeps_it():
    """Several rows, several patients per statement: what the importer and plain SQL do."""
    patients = [make_patient("Set", f"Based{i}") for i in range(4)]
    ids = [p.id for p in patients]
    db.session.commit()
    insert = text(
        "INSERT INTO study (patient_id, urgency, body_part, study_type, study_date,"
        " created_at, updated_at, version)"
        " VALUES (:p, :u, 'CHEST', 'XRAY', :d, :now, :now, 1)"
    )
    now = "2026-01-01 00:00:00+00:00"
    rows = [
        (ids[0], "LOW", date(2026, 1, 5)),
        (ids[0], "HIGH", date(2025, 1, 5)),
        (ids[0], "MID", date(2026, 1, 5)),
        (ids[1], "MID", date(2024, 2, 2)),
        (ids[2], "LOW", date(2020, 2, 2)),
        (ids[2], "LOW", date(2021, 2, 2)),
    ]
    # one multi-row statement (one trigger call for all of them on PostgreSQL) ...
    params = {"now": now}
    for i, (p, u, d) in enumerate(rows):
        params.update({f"p{i}": p, f"u{i}": u, f"d{i}": d})
    db.session.execute(
        text(
            "INSERT INTO study (patient_id, urgency, body_part, study_type, study_date,"
            " created_at, updated_at, version) VALUES"
            " (:p0, :u0, 'CHEST', 'XRAY', :d0, :now, :now, 1),"
            " (:p1, :u1, 'CHEST', 'XRAY', :d1, :now, :now, 1),"
            " (:p2, :u2, 'CHEST', 'XRAY', :d2, :now, :now, 1),"
            " (:p3, :u3, 'CHEST', 'XRAY', :d3, :now, :now, 1),"
            " (:p4, :u4, 'CHEST', 'XRAY', :d4, :now, :now, 1),"
            " (:p5, :u5, 'CHEST', 'XRAY', :d5, :now, :now, 1)"
        ),
        params,
    )
    # ... and one that adds to patients who already have a row
    db.session.execute(insert, {"p": ids[1], "u": "HIGH", "d": date(2023, 3, 3), "now": now})
    assert assert_in_step() == {
        ids[0]: (HIGH, date(2026, 1, 5)),
        ids[1]: (HIGH, date(2024, 2, 2)),
        ids[2]: (LOW, date(2021, 2, 2)),
    }

    # every study of one patient moved to another, and a change of urgency, in one statement
    db.session.execute(
        text(
            "UPDATE study SET patient_id = :to,"
            " urgency = CASE WHEN urgency = 'HIGH' THEN 'LOW' ELSE urgency END"
            " WHERE patient_id = :from"
        ),
        {"to": ids[3], "from": ids[0]},
    )
    assert assert_in_step() == {
        ids[1]: (HIGH, date(2024, 2, 2)),
        ids[2]: (LOW, date(2021, 2, 2)),
        ids[3]: (MID, date(2026, 1, 5)),
    }

    # an update that changes nothing the summary holds
    db.session.execute(text("UPDATE study SET description = 'SEEN'"))
    assert_in_step()

    # the newest study of one patient and every study of another deleted together
    db.session.execute(
        text("DELETE FROM study WHERE (patient_id = :a AND study_date = :d) OR patient_id = :b"),
        {"a": ids[2], "d": date(2021, 2, 2), "b": ids[1]},
    )
    assert assert_in_step() == {
        ids[2]: (LOW, date(2020, 2, 2)),
        ids[3]: (MID, date(2026, 1, 5)),
    }
    db.session.execute(text("DELETE FROM study"))
    assert assert_in_step() == {}


def test_imports_keep_it(tmp_path: Path):
    people = tmp_path / "patients.csv"
    people.write_text(
        "first_name,last_name,birth_date,email,id\n"
        "Rosa,Imp,1960-01-01,rosa@imp.example.com,IMP-1\n"
        "Raul,Imp,1961-01-01,raul@imp.example.com,IMP-2\n"
        "Rita,Imp,1962-01-01,rita@imp.example.com,IMP-3\n"
    )
    studies = tmp_path / "studies.csv"
    header = "urgency_level,body_part,description,type,patient_id,study_date,accession_number\n"
    studies.write_text(
        header + "LOW,CHEST,,XRAY,IMP-1,2026-02-01,A-1\n"
        "HIGH,HEAD,,CT,IMP-1,2025-02-01,A-2\n"
        "MID,KNEE,,MRI,IMP-2,2024-02-01,A-3\n"
    )
    with acting_as("tester"):
        assert run_import(people, "patients", dry_run=False).outcome == "committed"
        report = run_import(studies, "studies", dry_run=False)
    assert report.outcome == "committed", report.text_lines()
    ids = {
        p.mrn: p.id for p in db.session.scalars(select(Patient).where(Patient.last_name == "Imp"))
    }
    assert assert_in_step() == {
        ids["IMP-1"]: (HIGH, date(2026, 2, 1)),
        ids["IMP-2"]: (MID, date(2024, 2, 1)),
    }

    # the same accession numbers again: the HIGH study is now LOW and belongs to Rita, the MID
    # one is newer; a new study for Raul
    changed = tmp_path / "studies-changed.csv"
    changed.write_text(
        header + "LOW,CHEST,,XRAY,IMP-1,2026-02-01,A-1\n"
        "LOW,HEAD,,CT,IMP-3,2025-02-01,A-2\n"
        "MID,KNEE,,MRI,IMP-2,2026-05-01,A-3\n"
        "HIGH,NECK,,XRAY,IMP-2,2020-01-01,A-4\n"
    )
    with acting_as("tester"):
        report = run_import(changed, "studies", dry_run=False)
    assert report.outcome == "committed", report.text_lines()
    assert report.counts == {"created": 1, "updated": 2, "unchanged": 1, "rejected": 0}
    assert assert_in_step() == {
        ids["IMP-1"]: (LOW, date(2026, 2, 1)),
        ids["IMP-2"]: (HIGH, date(2026, 5, 1)),
        ids["IMP-3"]: (LOW, date(2025, 2, 1)),
    }
    # a preview writes nothing, the summary included
    preview = tmp_path / "studies-preview.csv"
    preview.write_text(header + "HIGH,HAND,,XRAY,IMP-1,2027-01-01,A-5\n")
    before = summary()
    assert run_import(preview, "studies", dry_run=True).outcome == "previewed"
    assert assert_in_step() == before


def test_a_restored_study_is_counted_again():
    patient = make_patient("Resto", "Red")
    with acting_as("tester"):
        study = make_study(patient, urgency="HIGH", study_date=date(2025, 5, 5))
        db.session.commit()
        study_id = study.id
        db.session.delete(study)
        db.session.commit()
    assert patient.id not in summary()
    entry = db.session.scalars(
        select(AuditEntry).where(
            AuditEntry.entity == "study",
            AuditEntry.entity_id == str(study_id),
            AuditEntry.action == "DELETE",
        )
    ).one()
    with acting_as("tester"):
        restore_deleted(entry.id)
        db.session.commit()
    assert assert_in_step() == {patient.id: (HIGH, date(2025, 5, 5))}


def test_deleting_patients_still_follows_the_rules():
    kept = make_patient("Kept", "Studies")
    make_study(kept)
    gone = make_patient("Gone", "Empty")
    db.session.commit()
    db.session.delete(kept)
    with pytest.raises(DeletionRefused, match="1 study still belong"):
        db.session.commit()
    db.session.rollback()
    assert kept.id in summary()
    db.session.delete(gone)
    db.session.commit()
    # once its studies are gone, a patient goes, and nothing of theirs is left in the summary
    for study in db.session.scalars(select(Study).where(Study.patient_id == kept.id)):
        db.session.delete(study)
    db.session.commit()
    assert kept.id not in summary()
    db.session.delete(kept)
    db.session.commit()
    assert assert_in_step() == {}


def test_the_summary_is_not_audited():
    assert PatientStudySummary not in AUDITED
    with acting_as("tester"):
        patient = make_patient("Audit", "Quiet")
        make_study(patient, urgency="HIGH")
        db.session.commit()
    entities = set(db.session.scalars(select(AuditEntry.entity)))
    assert {"patient", "study"} <= entities
    assert "patient_study_summary" not in entities
    assert patient.id in summary()


# --------------------------------------------------------------------------- the listing's order


class Crowd:
    """Patients in three clinics with ties on every key: equal ranks, equal latest dates, equal
    names (the id decides), and patients without studies."""

    def __init__(self) -> None:
        self.clinics = [make_clinic(f"Summary Clinic {c}") for c in "ABC"]
        self.doctor = make_doctor("Sum", "Mary", clinic=self.clinics[0])
        surnames = ["Baez", "Baez", "Cano", "Avila", "Duran", "Cano", "Baez"]
        firsts = ["Eva", "Eva", "Ivan", "Olga", "Eva", "Ivan"]
        dates = [date(2026, 1, 1), date(2025, 6, 1), date(2026, 1, 1), date(2024, 3, 3)]
        urgencies = ["HIGH", "MID", "LOW"]
        self.patients: list[Patient] = []
        for i in range(46):
            patient = make_patient(
                firsts[i % len(firsts)],
                surnames[i % len(surnames)] + "zsum",
                clinic=self.clinics[i % 3],
                referring_doctor=self.doctor if i % 4 == 0 else None,
            )
            self.patients.append(patient)
            if i % 5 == 4 or i >= 36:
                continue  # without studies (the last pages hold only such patients)
            for j in range(1 + i % 3):
                make_study(
                    patient,
                    urgency=urgencies[(i + j) % 3 if i % 7 else 2],
                    body_part=("CHEST", "HEAD", "KNEE")[j],
                    study_date=dates[(i * 3 + j) % len(dates)],
                )
        db.session.commit()


@pytest.fixture
def crowd() -> Crowd:
    return Crowd()


def page_ids(q: ListingQuery) -> list[int]:
    return [p.id for p in listing_page(q).patients]


def subquery_page_ids(q: ListingQuery, grouped: bool) -> list[int]:
    """The same page as the way used with study filters orders it: a subquery per patient, or
    the shown studies grouped by patient and joined."""
    order = _shown_studies_order(q, grouped=grouped)
    return list(
        db.session.scalars(
            order.outerjoin(select(Patient.id).select_from(Patient))
            .where(*_patient_conditions(q))
            .order_by(*order.order_by())
            .limit(q.page_size)
            .offset(q.page * q.page_size)
        )
    )


def python_order(q: ListingQuery, patients: list[Patient]) -> list[int]:
    """The order as the listing describes it, computed here from the studies."""
    keys = recomputed()
    names = {p.id: (p.last_name, p.first_name) for p in patients}

    def key(pid: int) -> tuple:
        rank, latest = keys.get(pid, (None, None))
        recent = (latest is None, -latest.toordinal() if latest else 0)
        by_name = (*names[pid], pid)
        if q.sort == "recent":
            return (*recent, *by_name)
        return (rank is None, rank or 0, *recent, *by_name)

    return sorted(names, key=key)


def every_page_compared(args: dict[str, str]) -> list[int]:
    """The listing's patient ids, page after page, each page checked against the two other
    ways of ordering (a subquery per patient; the shown studies grouped and joined)."""
    seen: list[int] = []
    page = 0
    while True:
        q = ListingQuery.from_args({**args, "page": str(page)})
        ids = page_ids(q)
        assert ids == subquery_page_ids(q, grouped=False), f"page {page}"
        assert ids == subquery_page_ids(q, grouped=True), f"page {page}"
        if not ids:
            return seen
        seen.extend(ids)
        page += 1


CONDITIONS = [
    {},
    {"clinic": 0},
    {"doctor": True},
    {"only_high": "1"},
    {"without_studies": "1"},
    {"search": "baez"},
    {"clinic": 2, "only_high": "1"},
    {"search": "zsum", "clinic": 1},
]


@pytest.mark.parametrize("sort", ["recent", "urgency"])
@pytest.mark.parametrize("conditions", CONDITIONS, ids=lambda c: "-".join(c) or "none")
def test_the_summary_order_is_the_subquery_order_page_by_page(crowd, sort, conditions):
    args = {"sort": sort, "page_size": "10"}
    for name, value in conditions.items():
        if name == "clinic":
            value = str(crowd.clinics[value].id)
        elif name == "doctor":
            value = str(crowd.doctor.id)
        args[name] = value
    first = ListingQuery.from_args(args)
    assert not first.has_study_filters and not first.ignored
    seen = every_page_compared(args)
    assert len(seen) == len(set(seen))
    # every page was compared, and together they are the whole list in the described order
    everyone = list(db.session.scalars(select(Patient.id).where(*_patient_conditions(first))))
    assert sorted(seen) == sorted(everyone) and seen
    if "search" not in conditions:  # the search matches name parts the oracle does not know
        matching = [p for p in crowd.patients if p.id in set(everyone)]
        assert seen == python_order(first, matching)


STUDY_FILTERS = [
    {"urgency": "HIGH"},
    {"urgency": "LOW", "only_high": "1"},
    {"body_part": "HEAD"},
    {"date_from": "2025-06-01"},
    {"urgency": "MID", "clinic": 1},
    {"urgency": "HIGH", "search": "baez"},
]


@pytest.mark.parametrize("sort", ["recent", "urgency"])
@pytest.mark.parametrize("conditions", STUDY_FILTERS, ids=lambda c: "-".join(c))
def test_with_study_filters_both_ways_give_the_same_pages(crowd, sort, conditions):
    """With a study filter the keys come from the shown studies: grouped once and joined, or a
    subquery per patient (chosen by whether a search, clinic or doctor narrows the patients),
    page by page the same, and the same as the listing shows."""
    args = {"sort": sort, "page_size": "10"}
    for name, value in conditions.items():
        args[name] = str(crowd.clinics[value].id) if name == "clinic" else value
    first = ListingQuery.from_args(args)
    assert first.has_study_filters and not first.ignored
    seen = every_page_compared(args)
    everyone = list(db.session.scalars(select(Patient.id).where(*_patient_conditions(first))))
    assert sorted(seen) == sorted(everyone) and seen


def test_the_crowd_has_what_the_comparison_needs(crowd):
    """Ties on the keys and patients without studies sit on both sides of page boundaries."""
    keys = recomputed()
    without = [p.id for p in crowd.patients if p.id not in keys]
    assert len(without) >= 5 and len(keys) >= 25
    assert len(set(keys.values())) < len(keys)  # equal (rank, date) pairs
    names = [(p.last_name, p.first_name) for p in crowd.patients]
    assert len(set(names)) < len(names)  # equal names
    ranks = {rank for rank, _ in keys.values()}
    assert ranks == {HIGH, MID, LOW}


@pytest.mark.parametrize("sort", ["recent", "urgency"])
def test_a_page_costs_the_same_statements_wherever_it_is(client, auth, crowd, sort):
    auth.as_role(RoleName.SUPPORT)
    seen: list[str] = []

    def count(conn, cursor, statement, *args):  # noqa: ANN001, ANN002
        seen.append(statement)

    counts = []
    engine = db.engine.engine
    for page in range(5):  # with studies, across the boundary, then without studies only
        seen.clear()
        event.listen(engine, "before_cursor_execute", count)
        try:
            response = client.get(f"/admin/patient-studies/?sort={sort}&page_size=10&page={page}")
        finally:
            event.remove(engine, "before_cursor_execute", count)
        assert response.status_code == 200
        assert 'class="card mb-3 listing-patient"' in response.get_data(as_text=True)
        counts.append(len(seen))
    assert len(set(counts)) == 1, counts
