"""The patient chart: identity, contact, alerts, studies, care team, history, actions, cost."""

from __future__ import annotations

import re
from datetime import date, timedelta

import pytest
from sqlalchemy import event, select
from sqlalchemy.engine import Engine

from backoffice.extensions import db
from backoffice.models import (
    AuditEntry,
    CareTeamMember,
    CareTeamRole,
    CareTeamStatus,
    PatientPhone,
    RoleName,
    Study,
)
from tests.factories import make_clinic, make_doctor, make_patient, make_study
from tests.test_admin_crud import flashes, form_values, text_of


def chart_url(patient) -> str:  # noqa: ANN001
    return f"/admin/patient/details/?id={patient.id}"


def section(page: str, section_id: str) -> str:
    """The HTML of one section of the chart (up to the next section)."""
    start = page.index(f'id="{section_id}"')
    following = page.find("<section", start + 1)
    return page[start : following if following != -1 else len(page)]


@pytest.fixture
def jose():  # noqa: ANN201
    clinic = make_clinic("Clínica Roma Norte", city="Ciudad de México")
    doctor = make_doctor("Ana", "Martínez", clinic=clinic)
    today = date.today()
    patient = make_patient(
        "Jose",
        "Villalobos",
        mrn="1",
        birth_date=date(today.year - 71, 1, 1),
        sex="MALE",
        email="pepe@ejemplo.com",
        street="Calle Durango 214",
        city="Ciudad de México",
        postal_code="06700",
        country="MX",
        preferred_language="es",
        emergency_contact_name="María Villalobos",
        emergency_contact_relation="hija",
        emergency_contact_phone="55 3344 5566",
        allergies="Penicilina (urticaria)",
        contrast_allergy=True,
        clinic=clinic,
        referring_doctor=doctor,
    )
    patient.phones.append(PatientPhone(number="55 1987 6543", kind="MOBILE", is_primary=True))
    patient.phones.append(PatientPhone(number="55 5264 1020", kind="HOME"))
    make_study(patient, urgency="HIGH", body_part="STOMACH", study_date=today)
    make_study(patient, urgency="LOW", body_part="NECK", study_date=today - timedelta(days=3))
    db.session.commit()
    return patient


def test_the_title_names_the_patient_with_age_sex_mrn_and_alerts(client, auth, jose):
    auth.as_role(RoleName.MANAGER)
    page = client.get(chart_url(jose)).get_data(as_text=True)
    start = page.index(">", page.index('class="chart-header'))
    header = text_of(page[start + 1 : page.index('<div class="chart-actions')])
    assert header.startswith("Jose Villalobos 71 years · Male · MRN 1 · born Jan 1,")
    alerts = text_of(section(page, "chart-alerts"))
    assert "Contrast agent allergy: check before CT and MRI" in alerts
    assert "Allergies: Penicilina (urticaria)" in alerts
    assert "1 open high-urgency study" in alerts


def test_contact_details_clinic_and_referring_doctor(client, auth, jose):
    auth.as_role(RoleName.SUPPORT)
    page = client.get(chart_url(jose)).get_data(as_text=True)
    contact = text_of(section(page, "chart-contact"))
    # phones as people read them, primary first, with their kind; stored in E.164
    assert "55 1987 6543 Mobile · primary 55 5264 1020 Home" in contact
    assert "pepe@ejemplo.com" in contact
    assert "Calle Durango 214 06700 Ciudad de México Mexico" in contact
    assert "Spanish" in contact
    assert "María Villalobos (hija) 55 3344 5566" in contact
    clinic = section(page, "chart-clinic")
    assert "Clínica Roma Norte" in text_of(clinic) and "Dr. Ana Martínez" in text_of(clinic)
    assert f'href="/admin/doctor/details/?id={jose.referring_doctor_id}"' in clinic


def test_a_patient_without_alerts_says_so(client, auth):
    patient = make_patient("Ana", "Sana")
    db.session.commit()
    auth.as_role(RoleName.OPERATOR)
    page = client.get(chart_url(patient)).get_data(as_text=True)
    alerts = section(page, "chart-alerts")
    assert "No allergies recorded" in text_of(alerts)
    assert "badge-danger" not in alerts


def test_sections_list_studies_care_team_and_history(client, auth, jose):
    specialist = make_doctor("Carlos", "Peña")
    jose.care_team.append(
        CareTeamMember(
            doctor=specialist,
            role=CareTeamRole.SPECIALIST,
            status=CareTeamStatus.COMPLETED,
            since=date(2025, 1, 1),
            until=date(2025, 6, 1),
            reason="Valoración oncológica",
        )
    )
    db.session.commit()
    auth.as_role(RoleName.ADMIN)
    page = client.get(chart_url(jose)).get_data(as_text=True)
    studies = section(page, "chart-studies")
    assert "Studies (2)" in text_of(studies)
    rows = re.findall(r"<tr class=\"study-[a-z]+\">(.*?)</tr>", studies, re.S)
    assert [("STOMACH" in r, "urgency-high" in r) for r in rows] == [(True, True), (False, False)]
    team = text_of(section(page, "chart-care-team"))
    assert "Dr. Ana Martínez Referring doctor Active" in team
    assert (
        "Dr. Carlos Peña Specialist Completed Jan 1, 2025 Jun 1, 2025 Valoración oncológica" in team
    )
    history = text_of(section(page, "chart-history"))
    assert "Record created" in history
    assert "Phone added: 55 1987 6543" in history
    assert "Care team: doctor added (Specialist)" in history


def test_breadcrumbs_and_the_print_summary(client, auth, jose):
    auth.as_role(RoleName.MANAGER)
    page = client.get(chart_url(jose)).get_data(as_text=True)
    crumbs = page[page.index(">", page.index('class="breadcrumb')) + 1 : page.index("</ol>")]
    assert text_of(crumbs) == "Dashboard Patients Jose Villalobos"
    assert 'href="/admin/patient/"' in crumbs and 'aria-current="page"' in crumbs
    assert "/static/css/chart.css" in page  # its @media print layout
    assert "data-print" in page and "Print chart summary" in page
    assert "Chart summary printed on" in page  # the header only print shows


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        (
            RoleName.ADMIN,
            [
                "Edit contact details",
                "Add a study for this patient",
                "Add a doctor to the care team",
            ],
        ),
        (
            RoleName.OPERATOR,
            [
                "Edit contact details",
                "Add a study for this patient",
                "Add a doctor to the care team",
            ],
        ),
        (RoleName.SUPPORT, ["Edit contact details", "Add a doctor to the care team"]),
        (RoleName.MANAGER, []),
    ],
)
def test_actions_appear_where_the_role_may_use_them(client, auth, jose, role, expected):
    auth.as_role(role)
    page = client.get(chart_url(jose)).get_data(as_text=True)
    actions = page[
        page.index('id="chart-actions"') : page.index("</div>", page.index('id="chart-actions"'))
    ]
    links = re.findall(r'<a class="btn[^"]*"[^>]*href="([^"]+)"[^>]*>(.*?)</a>', actions)
    shown = [text_of(label) for _url, label in links]
    assert shown == [*expected, "History"]
    # and every one of them is allowed on the server too
    for url, _label in links:
        assert client.get(url.replace("&amp;", "&")).status_code == 200, url


def test_opening_the_chart_is_recorded(client, auth, jose):
    user = auth.as_role(RoleName.SUPPORT)
    client.get(chart_url(jose))
    db.session.expire_all()
    entry = db.session.scalars(
        select(AuditEntry).where(AuditEntry.action == "VIEW").order_by(AuditEntry.id.desc())
    ).first()
    assert (entry.entity, entry.entity_id, entry.actor_id) == ("patient", str(jose.id), user.id)


@pytest.mark.parametrize("raw", ["", "abc", "1;DROP", "99999999", "-1", "1" * 40])
def test_a_malformed_or_unknown_id_is_a_404(client, auth, raw):
    auth.as_role(RoleName.ADMIN)
    response = client.get(f"/admin/patient/details/?id={raw}")
    assert response.status_code == 404
    assert "Traceback" not in response.get_data(as_text=True)


def statements_for(client, url: str) -> int:  # noqa: ANN001
    count = 0

    def counter(*args, **kwargs) -> None:  # noqa: ANN002, ANN003
        nonlocal count
        count += 1

    event.listen(Engine, "before_cursor_execute", counter)
    try:
        response = client.get(url)
    finally:
        event.remove(Engine, "before_cursor_execute", counter)
    assert response.status_code == 200
    return count


def test_the_charts_statement_count_does_not_grow_with_its_size(client, auth):
    """One study, one phone and one link cost the same statements as forty, five and six."""
    auth.as_role(RoleName.ADMIN)
    doctors = [make_doctor(f"Doc{i}", f"Equipo{i}") for i in range(6)]

    def build(n_studies: int, n_phones: int, n_links: int):  # noqa: ANN202
        patient = make_patient(referring_doctor=doctors[0])
        for i in range(n_phones):
            patient.phones.append(PatientPhone(number=f"55 1000 {2000 + i}", kind="MOBILE"))
        for doctor in doctors[1:n_links]:
            patient.care_team.append(
                CareTeamMember(doctor=doctor, role=CareTeamRole.SPECIALIST, status="ACTIVE")
            )
        for i in range(n_studies):
            make_study(
                patient,
                urgency="HIGH" if i % 3 == 0 else "LOW",
                ordering_doctor=doctors[i % len(doctors)],
                study_date=date.today() - timedelta(days=i),
            )
        db.session.commit()
        return patient

    small, large = build(1, 1, 1), build(40, 5, 6)
    client.get(chart_url(small))  # warm up: the first request loads what every one caches
    few, many = statements_for(client, chart_url(small)), statements_for(client, chart_url(large))
    assert few == many, (few, many)
    assert many <= 25
    page = client.get(chart_url(large)).get_data(as_text=True)
    assert "Studies (40)" in text_of(page)
    assert page.count('class="study-open"') == 40


def test_the_status_column_reads_the_studys_status_once_studies_have_one(
    client, auth, jose, monkeypatch
):
    """i13-workflow adds ``Study.status``: the chart shows it and counts only open studies."""
    from sqlalchemy import case, literal

    from backoffice.models import LabeledEnum

    class Status(LabeledEnum):
        PERFORMED = "PERFORMED"
        REPORTED = "REPORTED"

        @classmethod
        def labels(cls) -> dict:
            return {cls.PERFORMED: "Performed", cls.REPORTED: "Reported"}

    # A stand-in for the real column: HIGH studies are reported, the others performed.
    monkeypatch.setattr(
        Study,
        "status",
        property(lambda s: Status.REPORTED if s.urgency == "HIGH" else Status.PERFORMED),
        raising=False,
    )
    from backoffice.services import chart

    monkeypatch.setattr(
        chart,
        "open_study_clause",
        lambda: case((Study.urgency == "HIGH", literal(False)), else_=literal(True)),
    )
    auth.as_role(RoleName.ADMIN)
    page = client.get(chart_url(jose)).get_data(as_text=True)
    statuses = [text_of(c) for c in re.findall(r'<td class="study-status">(.*?)</td>', page, re.S)]
    assert statuses == ["Reported", "Performed"]
    assert "open high-urgency" not in text_of(section(page, "chart-alerts"))
    assert page.count('class="study-closed"') == 1


def test_add_a_study_for_this_patient_prefills_them_and_comes_back(client, auth, jose):
    auth.as_role(RoleName.OPERATOR)
    chart = chart_url(jose)
    page = client.get(chart).get_data(as_text=True)
    link = re.search(r'href="([^"]+)">Add a study for this patient', page).group(1)
    form_page = client.get(link.replace("&amp;", "&")).get_data(as_text=True)
    # the patient is chosen, and the form says what matters before a CT or MRI
    assert re.search(
        rf'<option selected value="{jose.id}">Jose Villalobos \(MRN 1\)', form_page
    ) or (f'value="{jose.id}"' in form_page and "Jose Villalobos (MRN 1)" in form_page)
    messages = " ".join(flashes(form_page))
    assert "Jose Villalobos is allergic to contrast agents" in messages
    data = form_values(form_page)
    assert data["patient"] == str(jose.id)
    data.update(study_type="CT", urgency="MID", body_part="head", study_date="2026-03-01")
    response = client.post(link.replace("&amp;", "&"), data=data)
    assert response.status_code == 302
    assert response.headers["Location"] == chart
    landed = client.get(chart).get_data(as_text=True)
    assert "Saved CT scan head · Mar 1, 2026 · Jose Villalobos (MRN 1)." in " ".join(
        flashes(landed)
    )
    assert "Studies (3)" in text_of(landed)


def test_add_a_doctor_to_the_care_team_from_the_chart(client, auth, jose):
    auth.as_role(RoleName.SUPPORT)
    other = make_doctor("Sofía", "Ramírez")
    db.session.commit()
    chart = chart_url(jose)
    page = client.get(chart).get_data(as_text=True)
    link = re.search(r'href="([^"]+)">Add a doctor to the care team', page).group(1)
    link = link.replace("&amp;", "&")
    data = form_values(client.get(link).get_data(as_text=True))
    assert data["patient"] == str(jose.id)
    data.update(doctor=str(other.id), role="SPECIALIST", status="ACTIVE", reason="Cardiología")
    response = client.post(link, data=data)
    assert response.status_code == 302 and response.headers["Location"] == chart
    landed = client.get(chart).get_data(as_text=True)
    assert "Saved Dr. Sofía Ramírez · Specialist · Jose Villalobos." in " ".join(flashes(landed))
    assert "Dr. Sofía Ramírez Specialist Active" in text_of(section(landed, "chart-care-team"))


def test_edit_contact_details_opens_the_contact_section_and_comes_back(client, auth, jose):
    auth.as_role(RoleName.SUPPORT)
    chart = chart_url(jose)
    page = client.get(chart).get_data(as_text=True)
    link = re.search(r'href="([^"]+)">Edit contact details', page).group(1).replace("&amp;", "&")
    assert link.endswith("#contact")
    form_page = client.get(link).get_data(as_text=True)
    assert 'id="contact"' in form_page
    data = form_values(form_page)
    data["email"] = "jose.nuevo@ejemplo.com"
    response = client.post(link.split("#")[0], data=data)
    assert response.status_code == 302 and response.headers["Location"] == chart
    landed = client.get(chart).get_data(as_text=True)
    assert "Saved Jose Villalobos (MRN 1)." in " ".join(flashes(landed))
    assert "jose.nuevo@ejemplo.com" in text_of(section(landed, "chart-contact"))
