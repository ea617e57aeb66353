"""The admin-only Users view and the `users` commands: roles, activation, passwords, last admin."""

from __future__ import annotations

import io
import re
import zipfile

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from backoffice.extensions import db
from backoffice.models import Role, RoleName, User
from tests.conftest import PASSWORD, AuthActions, csrf_token_from, form_token, make_user

NEW_PASSWORD = "a fresh and long passphrase"
LAST_ADMIN = "is the last active administrator"


def role_id(name: RoleName) -> str:
    return str(db.session.scalar(select(Role.id).where(Role.name == name)))


def flashes(response) -> list[str]:  # noqa: ANN001
    html = response.get_data(as_text=True)
    found = re.findall(r'<div class="alert[^"]*"[^>]*>(.*?)</div>', html, flags=re.S)
    return [re.sub(r"<[^>]+>|&times;", "", m).strip() for m in found]


def fresh(user_id: int) -> User:
    db.session.expire_all()
    return db.session.get(User, user_id)


def by_email(email: str) -> User | None:
    db.session.expire_all()
    return db.session.scalar(select(User).where(User.email == email))


def export_text(response) -> str:  # noqa: ANN001
    """The text of a CSV download, or of every part of an XLSX one (a zip of XML files)."""
    data = response.get_data()
    if data[:2] != b"PK":
        return data.decode("utf-8", "replace")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return "".join(archive.read(n).decode("utf-8", "replace") for n in archive.namelist())


@pytest.fixture
def admin(client: FlaskClient) -> User:
    return AuthActions(client).as_role(RoleName.ADMIN, email="root@test.example.com")


def user_form(user: User | None = None, **changes: object) -> dict[str, object]:
    """The edit form of ``user`` as the browser would send it back, with ``changes`` applied
    (a value of None leaves the field out, which is how an unticked checkbox arrives)."""
    data: dict[str, object] = {"new_password": ""}
    if user is not None:
        data.update(
            email=user.email,
            display_name=user.display_name,
            roles=[str(r.id) for r in user.roles],
            active="y" if user.active else None,
        )
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def post_edit(client: FlaskClient, user: User, **changes: object):  # noqa: ANN201
    url = f"/admin/user/edit/?id={user.id}"
    data = user_form(user, **changes)
    data["csrf_token"] = form_token(client, url)
    return client.post(url, data=data, follow_redirects=True)


def post_action(client: FlaskClient, action: str, *users: User):  # noqa: ANN201
    token = form_token(client, "/admin/user/")
    return client.post(
        "/admin/user/action/",
        data={"action": action, "rowid": [str(u.id) for u in users], "csrf_token": token},
        follow_redirects=True,
    )


# --- the view ----------------------------------------------------------------------------------


def test_create_a_user_with_roles_and_an_initial_password(client, admin):
    data = user_form(
        email="  New.Person@Test.Example.com ",
        display_name="New Person",
        roles=[role_id(RoleName.MANAGER), role_id(RoleName.SUPPORT)],
        active="y",
        new_password=NEW_PASSWORD,
    )
    data["csrf_token"] = form_token(client, "/admin/user/new/")
    response = client.post("/admin/user/new/", data=data, follow_redirects=True)
    assert "Saved New Person (new.person@test.example.com)." in flashes(response)
    user = by_email("new.person@test.example.com")
    assert user is not None
    assert user.role_names == {RoleName.MANAGER, RoleName.SUPPORT}
    assert user.active
    assert user.password_hash.startswith("$argon2id$")
    assert user.check_password(NEW_PASSWORD)

    # and the new user can log in with it
    other = client.application.test_client()
    assert AuthActions(other).login(user.email, NEW_PASSWORD).headers["Location"] == "/admin/"


def test_a_new_user_without_a_password_is_refused(client, admin):
    data = user_form(
        email="nopassword@test.example.com",
        display_name="No Password",
        roles=[role_id(RoleName.OPERATOR)],
        active="y",
    )
    data["csrf_token"] = form_token(client, "/admin/user/new/")
    response = client.post("/admin/user/new/", data=data, follow_redirects=True)
    assert response.status_code == 200
    assert "A new user needs an initial password." in flashes(response)
    assert by_email("nopassword@test.example.com") is None


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("too short", "at least 12 characters"),
        ("1qaz2wsx3edc", "too common"),
        ("weak@test.example.com", "must not be your email or name"),
    ],
)
def test_a_new_user_with_a_weak_password_is_refused(client, admin, password, message):
    data = user_form(
        email="weak@test.example.com",
        display_name="Weak",
        roles=[role_id(RoleName.OPERATOR)],
        active="y",
        new_password=password,
    )
    data["csrf_token"] = form_token(client, "/admin/user/new/")
    response = client.post("/admin/user/new/", data=data)
    assert response.status_code == 200
    assert message in response.get_data(as_text=True)
    html = response.get_data(as_text=True)
    password_input = re.search(r'<input[^>]*name="new_password"[^>]*>', html)
    assert password_input and f'value="{password}"' not in password_input.group(0)  # not echoed
    assert by_email("weak@test.example.com") is None


def test_change_roles(client, admin):
    user = make_user("roles@test.example.com", RoleName.SUPPORT)
    response = post_edit(
        client, user, roles=[role_id(RoleName.OPERATOR), role_id(RoleName.MANAGER)]
    )
    assert "Saved roles (roles@test.example.com)." in flashes(response)
    assert fresh(user.id).role_names == {RoleName.OPERATOR, RoleName.MANAGER}
    post_edit(client, user, roles=[])
    assert fresh(user.id).role_names == frozenset()


def test_deactivate_and_reactivate_with_the_edit_form(client, admin):
    user = make_user("toggle@test.example.com", RoleName.OPERATOR)
    token_before = user.session_token
    response = post_edit(client, user, active=None)
    assert "Saved toggle (toggle@test.example.com)." in flashes(response)
    assert fresh(user.id).active is False
    assert fresh(user.id).session_token != token_before
    post_edit(client, fresh(user.id), active="y")
    assert fresh(user.id).active is True
    assert fresh(user.id).check_password(PASSWORD)  # reactivation keeps the password


def test_deactivate_and_reactivate_with_bulk_actions(client, admin):
    one = make_user("bulk1@test.example.com", RoleName.OPERATOR)
    two = make_user("bulk2@test.example.com", RoleName.SUPPORT)
    response = post_action(client, "deactivate", one, two)
    assert "2 users deactivated." in flashes(response)
    assert (fresh(one.id).active, fresh(two.id).active) == (False, False)
    assert fresh(admin.id).active is True
    response = post_action(client, "reactivate", one, two)
    assert "2 users reactivated." in flashes(response)
    assert (fresh(one.id).active, fresh(two.id).active) == (True, True)


def test_reset_a_password(client, admin):
    user = make_user("reset@test.example.com", RoleName.OPERATOR)
    response = post_edit(client, user, new_password=NEW_PASSWORD)
    assert "Saved reset (reset@test.example.com)." in flashes(response)
    after = fresh(user.id)
    assert after.check_password(NEW_PASSWORD)
    assert not after.check_password(PASSWORD)

    # an empty field keeps the password; a weak one is refused and changes nothing
    post_edit(client, after, display_name="Still Same Password")
    assert fresh(user.id).check_password(NEW_PASSWORD)
    response = post_edit(client, fresh(user.id), new_password="1qaz2wsx3edc")
    assert "too common" in response.get_data(as_text=True)
    assert fresh(user.id).check_password(NEW_PASSWORD)


def test_password_hashes_are_never_shown(client, admin):
    user = make_user("secret@test.example.com", RoleName.OPERATOR)
    stored = fresh(user.id)
    pages = {
        "list": client.get("/admin/user/"),
        "search": client.get("/admin/user/?search=secret"),
        "details": client.get(f"/admin/user/details/?id={user.id}"),
        "edit": client.get(f"/admin/user/edit/?id={user.id}"),
        "new": client.get("/admin/user/new/"),
    }
    for name, response in pages.items():
        html = response.get_data(as_text=True)
        assert response.status_code == 200, name
        assert stored.password_hash not in html, name
        assert "$argon2" not in html, name
        assert stored.session_token not in html, name
        assert "password_hash" not in html and "session_token" not in html, name
    assert "secret@test.example.com" in pages["list"].get_data(as_text=True)
    assert "secret@test.example.com" in pages["details"].get_data(as_text=True)
    edit = pages["edit"].get_data(as_text=True)
    field = re.search(r'<input[^>]*name="new_password"[^>]*>', edit)
    assert field and 'value="' not in field.group(0).replace('value=""', "")

    for kind in ("csv", "xlsx"):
        export = client.get(f"/admin/user/export/{kind}/")
        assert export.status_code in (200, 302), kind  # a file, or no export offered
        body = export_text(export)
        assert "$argon2" not in body and stored.password_hash not in body, kind
        assert stored.session_token not in body and "password" not in body.lower(), kind


def test_the_last_admin_cannot_be_deactivated_with_the_edit_form(client, admin):
    response = post_edit(client, admin, active=None)
    assert any(LAST_ADMIN in m for m in flashes(response))
    after = fresh(admin.id)
    assert after.active is True and after.session_token == admin.session_token
    assert client.get("/admin/user/").status_code == 200  # still logged in and in charge


def test_the_last_admin_cannot_lose_the_admin_role(client, admin):
    response = post_edit(client, admin, roles=[role_id(RoleName.OPERATOR)])
    assert any(LAST_ADMIN in m for m in flashes(response))
    assert fresh(admin.id).role_names == {RoleName.ADMIN}


def test_the_last_admin_cannot_be_deactivated_by_bulk_action(client, admin):
    other = make_user("other-op@test.example.com", RoleName.OPERATOR)
    response = post_action(client, "deactivate", admin, other)
    assert any(LAST_ADMIN in m for m in flashes(response))
    assert fresh(admin.id).active is True
    assert fresh(other.id).active is True  # all or nothing


def test_two_admins_cannot_deactivate_each_other_in_one_bulk_action(client, admin):
    second = make_user("second-admin@test.example.com", RoleName.ADMIN)
    response = post_action(client, "deactivate", admin, second)
    assert any(LAST_ADMIN in m for m in flashes(response))
    assert (fresh(admin.id).active, fresh(second.id).active) == (True, True)


def test_an_admin_can_go_once_another_admin_remains(client, admin):
    second = make_user("deputy@test.example.com", RoleName.ADMIN)
    response = post_edit(client, second, roles=[role_id(RoleName.MANAGER)])
    assert "Saved deputy (deputy@test.example.com)." in flashes(response)
    assert fresh(second.id).role_names == {RoleName.MANAGER}
    post_edit(client, fresh(second.id), roles=[role_id(RoleName.ADMIN)])
    response = post_action(client, "deactivate", second)
    assert "1 user deactivated." in flashes(response)
    assert fresh(second.id).active is False


def test_users_are_not_deleted(client, admin):
    user = make_user("keep@test.example.com", RoleName.OPERATOR)
    html = client.get("/admin/user/").get_data(as_text=True)
    assert "/admin/user/delete/" not in html
    token = csrf_token_from(html)
    client.post("/admin/user/delete/", data={"id": str(user.id), "csrf_token": token})
    client.post(
        "/admin/user/action/",
        data={"action": "delete", "rowid": str(user.id), "csrf_token": token},
    )
    assert fresh(user.id) is not None


# --- the commands ------------------------------------------------------------------------------


@pytest.fixture
def cli(app):  # noqa: ANN001, ANN201
    return app.test_cli_runner()


def test_cli_users_create(cli):
    result = cli.invoke(
        args=["users", "create", "Cli.Op@Test.Example.com", "--role", "operator"],
        env={"BACKOFFICE_PASSWORD": NEW_PASSWORD},
    )
    assert result.exit_code == 0, result.output
    assert "Created user cli.op@test.example.com with roles OPERATOR." in result.output
    user = by_email("cli.op@test.example.com")
    assert user.role_names == {RoleName.OPERATOR}
    assert user.check_password(NEW_PASSWORD)
    assert NEW_PASSWORD not in result.output


def test_cli_users_create_with_several_roles(cli):
    result = cli.invoke(
        args=[
            "users",
            "create",
            "multi@test.example.com",
            "--role",
            "manager",
            "--role",
            "SUPPORT",
        ],
        env={"BACKOFFICE_PASSWORD": NEW_PASSWORD},
    )
    assert result.exit_code == 0, result.output
    assert by_email("multi@test.example.com").role_names == {RoleName.MANAGER, RoleName.SUPPORT}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BACKOFFICE_PASSWORD": "short"}, "at least 12 characters"),
        ({"BACKOFFICE_PASSWORD": "1qaz2wsx3edc"}, "too common"),
        ({"BACKOFFICE_PASSWORD": None}, "No password"),
    ],
)
def test_cli_users_create_refuses_a_bad_or_missing_password(cli, env, message):
    result = cli.invoke(
        args=["users", "create", "refused@test.example.com", "--role", "operator"], env=env
    )
    assert result.exit_code != 0
    assert message in result.output
    assert by_email("refused@test.example.com") is None


def test_cli_users_create_refuses_a_duplicate(cli):
    make_user("dup@test.example.com", RoleName.SUPPORT)
    result = cli.invoke(
        args=["users", "create", "DUP@test.example.com", "--role", "admin"],
        env={"BACKOFFICE_PASSWORD": NEW_PASSWORD},
    )
    assert result.exit_code != 0
    assert "already exists" in result.output
    assert by_email("dup@test.example.com").role_names == {RoleName.SUPPORT}


def test_cli_users_set_password(cli):
    user = make_user("clipw@test.example.com", RoleName.OPERATOR)
    old_token = user.session_token
    result = cli.invoke(
        args=["users", "set-password", "clipw@test.example.com"],
        env={"BACKOFFICE_PASSWORD": NEW_PASSWORD},
    )
    assert result.exit_code == 0, result.output
    assert "Password changed for clipw@test.example.com" in result.output
    after = fresh(user.id)
    assert after.check_password(NEW_PASSWORD) and not after.check_password(PASSWORD)
    assert after.session_token != old_token

    result = cli.invoke(
        args=["users", "set-password", "nobody@test.example.com"],
        env={"BACKOFFICE_PASSWORD": NEW_PASSWORD},
    )
    assert result.exit_code != 0
    assert "No user with email nobody@test.example.com" in result.output


def test_cli_users_deactivate(cli):
    make_user("boss@test.example.com", RoleName.ADMIN)
    user = make_user("leaver@test.example.com", RoleName.OPERATOR)
    result = cli.invoke(args=["users", "deactivate", "leaver@test.example.com"])
    assert result.exit_code == 0, result.output
    assert "Deactivated leaver@test.example.com." in result.output
    assert fresh(user.id).active is False


def test_cli_users_deactivate_refuses_the_last_admin(cli):
    boss = make_user("onlyboss@test.example.com", RoleName.ADMIN)
    result = cli.invoke(args=["users", "deactivate", "onlyboss@test.example.com"])
    assert result.exit_code != 0
    assert LAST_ADMIN in result.output
    assert fresh(boss.id).active is True


def test_cli_users_list_shows_no_hashes(cli):
    admin = make_user("listed-admin@test.example.com", RoleName.ADMIN)
    make_user("listed-off@test.example.com", RoleName.SUPPORT, RoleName.MANAGER, active=False)
    result = cli.invoke(args=["users", "list"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    row = next(line for line in lines if line.startswith("listed-admin@test.example.com"))
    assert "active" in row and "ADMIN" in row and "never" in row
    row = next(line for line in lines if line.startswith("listed-off@test.example.com"))
    assert "inactive" in row and "MANAGER,SUPPORT" in row
    assert "$argon2" not in result.output
    assert fresh(admin.id).password_hash not in result.output
    assert fresh(admin.id).session_token not in result.output


def test_a_password_reset_by_an_admin_lifts_a_lockout(client, admin):
    user = make_user("locked-out@test.example.com", RoleName.OPERATOR)
    other = client.application.test_client()
    for _attempt in range(5):
        AuthActions(other).login(user.email, "forgotten password")
    assert fresh(user.id).locked_until is not None

    response = post_edit(client, fresh(user.id), new_password=NEW_PASSWORD)
    assert "Saved locked-out (locked-out@test.example.com)." in flashes(response)
    after = fresh(user.id)
    assert after.locked_until is None and after.failed_login_count == 0
    assert AuthActions(other).login(user.email, NEW_PASSWORD).headers["Location"] == "/admin/"
