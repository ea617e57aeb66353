"""Users of the doctor role: each is linked to one Doctor record, from the Users view or
``flask users create --role doctor --doctor EMAIL|ID``; the demo login is such a doctor."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from backoffice.extensions import db
from backoffice.models import RoleName, Study, User
from tests.conftest import AuthActions, csrf_token_from, make_user
from tests.factories import make_doctor
from tests.test_users_admin import NEW_PASSWORD, by_email, flashes, role_id


@pytest.fixture
def runner(app):  # noqa: ANN001, ANN201
    return app.test_cli_runner()


def create(runner, *args: str):  # noqa: ANN001, ANN201
    return runner.invoke(
        args=["users", "create", *args, "--operator", "t"],
        env={"BACKOFFICE_PASSWORD": NEW_PASSWORD},
    )


def test_the_command_links_a_doctor_by_email_or_id(runner):
    ana = make_doctor("Ana", "Martínez", email="ana@docs.example.com")
    luis = make_doctor("Luis", "Hernández", email="luis@docs.example.com")
    db.session.commit()
    by_mail = create(
        runner, "dra.ana@x.example.com", "--role", "doctor", "--doctor", "ANA@docs.example.com"
    )
    assert by_mail.exit_code == 0, by_mail.output
    assert "linked to Dr. Ana Martínez" in by_mail.output
    by_id = create(runner, "dr.luis@x.example.com", "--role", "doctor", "--doctor", str(luis.id))
    assert by_id.exit_code == 0, by_id.output
    assert by_email("dra.ana@x.example.com").doctor_id == ana.id
    assert by_email("dr.luis@x.example.com").doctor_id == luis.id


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--role", "doctor"], "must be linked to the doctor they are"),
        (["--role", "doctor", "--doctor", "nobody@docs.example.com"], "No doctor has the email"),
        (["--role", "operator", "--doctor", "ana@docs.example.com"], "Only a user with the doctor"),
        (["--role", "doctor", "--doctor", "ana@docs.example.com"], "is already the doctor of"),
    ],
)
def test_the_command_refuses_a_wrong_link(runner, args, message):
    ana = make_doctor("Ana", "Martínez", email="ana@docs.example.com")
    taken = make_user("taken@x.example.com", RoleName.DOCTOR)
    taken.doctor_id = ana.id
    db.session.commit()
    result = create(runner, "new@x.example.com", *args)
    assert result.exit_code != 0
    assert message in result.output
    assert by_email("new@x.example.com") is None


def test_the_users_view_links_a_doctor_and_checks_the_link(client):
    AuthActions(client).as_role(RoleName.ADMIN, email="root@x.example.com")
    ana = make_doctor("Ana", "Martínez", email="ana@docs.example.com")
    db.session.commit()
    page = client.get("/admin/user/new/").get_data(as_text=True)
    assert "Doctor record" in page and 'name="doctor"' in page
    base = {
        "email": "dra@x.example.com",
        "display_name": "Dra. Ana",
        "roles": role_id(RoleName.DOCTOR),
        "active": "y",
        "new_password": NEW_PASSWORD,
        "csrf_token": csrf_token_from(page),
    }
    missing = client.post("/admin/user/new/", data=base)
    assert "must be linked to the doctor they are" in " ".join(flashes(missing))
    assert by_email("dra@x.example.com") is None
    done = client.post("/admin/user/new/", data=base | {"doctor": str(ana.id)})
    assert done.status_code == 302, flashes(done)
    assert by_email("dra@x.example.com").doctor_id == ana.id
    again = client.post(
        "/admin/user/new/", data=base | {"email": "dra2@x.example.com", "doctor": str(ana.id)}
    )
    assert "Dr. Ana Martínez is already the doctor of the user dra@x.example.com" in " ".join(
        flashes(again)
    )
    listed = client.get("/admin/user/").get_data(as_text=True)
    assert "Dr. Ana Martínez" in listed


def test_the_demo_doctor_is_linked_to_a_seeded_doctor_with_studies(runner):
    result = runner.invoke(args=["seed", "--demo-users", "--patients", "20", "--studies", "60"])
    assert result.exit_code == 0, result.output
    assert "doctor@backoffice.example.com" in result.output
    user = db.session.scalar(select(User).where(User.email == "doctor@backoffice.example.com"))
    assert user.role_names == {RoleName.DOCTOR}
    assert user.doctor is not None and user.doctor.email == "ana.martinez@clinica.example.com"
    theirs = db.session.scalars(
        select(Study).where(
            (Study.ordering_doctor_id == user.doctor_id)
            | (Study.reporting_doctor_id == user.doctor_id)
        )
    ).all()
    assert len(theirs) >= 4  # the four reference studies at least, waiting for her report
    statuses = {s.status for s in theirs}
    assert {"PERFORMED", "REPORTED"} <= statuses
