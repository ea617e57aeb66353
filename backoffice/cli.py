"""Flask commands: ``seed`` and ``users`` (``db`` comes from Flask-Migrate)."""

from __future__ import annotations

import os
import sys

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from sqlalchemy import select

from backoffice.extensions import db

users_cli = AppGroup("users", help="Manage back-office users.")


def register(app: Flask) -> None:
    app.cli.add_command(seed_command)
    app.cli.add_command(users_cli)


@click.command("seed")
@click.option("--patients", default=150, show_default=True, help="Generated patients.")
@click.option("--studies", default=400, show_default=True, help="Generated studies.")
@click.option(
    "--demo-users/--no-demo-users",
    default=False,
    help="Also create one demo user per role (development only).",
)
def seed_command(patients: int, studies: int, demo_users: bool) -> None:
    """Load the demo data set (idempotent: a second run adds nothing)."""
    from backoffice.services.seed import DEMO_USERS, seed_demo

    if demo_users and current_app.config.get("ENV_NAME") == "production":
        raise click.UsageError("Demo users are never created in production.")
    password = current_app.config["DEMO_PASSWORD"] if demo_users else None
    report = seed_demo(patients=patients, studies=studies, demo_password=password)
    db.session.commit()
    if report.total():
        details = ", ".join(f"{n} {kind}" for kind, n in sorted(report.created.items()))
        click.echo(f"Seeded: {details}.")
    else:
        click.echo("Demo data already present: nothing to add.")
    if demo_users:
        click.echo("")
        click.echo(f"Demo logins (password: {password}):")
        for email, _name, role in DEMO_USERS:
            click.echo(f"  {role.value.lower():9} {email}")


def _read_password(env_var: str, prompt: bool) -> str:
    password = os.environ.get(env_var)
    if password:
        return password
    if not prompt or not sys.stdin.isatty():
        raise click.UsageError(f"No password: set {env_var} or run in a terminal to be asked.")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


@users_cli.command("create")
@click.argument("email")
@click.option(
    "--role",
    "roles",
    multiple=True,
    required=True,
    type=click.Choice(["admin", "manager", "operator", "support"], case_sensitive=False),
    help="Role to grant; repeat for several.",
)
@click.option("--name", "display_name", default=None, help="Display name (default: the email).")
@click.option(
    "--password-env",
    default="BACKOFFICE_PASSWORD",
    show_default=True,
    help="Environment variable to read the password from instead of prompting.",
)
def users_create(
    email: str, roles: tuple[str, ...], display_name: str | None, password_env: str
) -> None:
    """Create a user with one or more roles."""
    from backoffice.models import User
    from backoffice.services.seed import ensure_roles
    from backoffice.services.users import UserError, validate_new_password

    role_rows = ensure_roles()
    try:
        user = User(email=email, display_name=display_name or email.split("@")[0])
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if db.session.scalar(select(User.id).where(User.email == user.email)):
        raise click.ClickException(f"A user with email {user.email} already exists.")
    password = _read_password(password_env, prompt=True)
    try:
        validate_new_password(password, user_inputs=(user.email, user.display_name))
    except UserError as exc:
        raise click.ClickException(str(exc)) from None
    from backoffice.models import RoleName

    user.roles = [role_rows[RoleName(r.upper())] for r in roles]
    user.set_password(password)
    db.session.add(user)
    db.session.commit()
    click.echo(f"Created user {user.email} with roles {', '.join(r.upper() for r in roles)}.")
