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
studies_cli = AppGroup("studies", help="Move studies through their life (as the buttons do).")
audit_cli = AppGroup("audit", help="Check the audit trail.")


def register(app: Flask) -> None:
    app.cli.add_command(seed_command)
    app.cli.add_command(users_cli)
    app.cli.add_command(studies_cli)
    app.cli.add_command(audit_cli)
    app.cli.add_command(import_command)
    app.cli.add_command(worker_command)


def default_operator() -> str:
    """Who runs a command, for the audit trail: BACKOFFICE_OPERATOR, else the OS user."""
    import getpass

    try:
        fallback = getpass.getuser()
    except (KeyError, OSError):
        fallback = "unknown"
    return os.environ.get("BACKOFFICE_OPERATOR") or f"command:{fallback}"


def operator_option(func):  # noqa: ANN001, ANN201
    """``--operator NAME``: changes made by the command are attributed to this name."""
    import functools

    @click.option(
        "--operator",
        default=None,
        help="Name recorded in the audit trail (default: $BACKOFFICE_OPERATOR, else the OS user).",
    )
    @functools.wraps(func)
    def wrapper(*args, operator: str | None = None, **kwargs):  # noqa: ANN002, ANN003, ANN202
        from backoffice.services.audit import acting_as

        with acting_as(operator or default_operator()):
            return func(*args, **kwargs)

    return wrapper


@audit_cli.command("verify")
def audit_verify() -> None:
    """Walk the hash chain; report the first entry that was altered or removed."""
    from backoffice.services.audit import verify_chain

    # The engine, not the session: the walk is one snapshot of its own (see verify_chain).
    report = verify_chain(db.engine)
    if report.ok:
        click.echo(f"Audit trail intact: {report.checked} entries verified.")
        return
    where = f"entry #{report.first_bad_id}" if report.first_bad_id else "the end of the chain"
    click.echo(
        f"Audit trail BROKEN at {where}: {report.reason}. "
        f"{report.checked} entries before it are intact.",
        err=True,
    )
    sys.exit(1)


@click.command("seed")
@operator_option
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
    from backoffice.auth.scope import unscoped

    password = current_app.config["DEMO_PASSWORD"] if demo_users else None
    with unscoped("flask seed: demo data"):
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


def _get_user(email: str):  # noqa: ANN202
    from backoffice.models import User

    user = db.session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None:
        raise click.ClickException(f"No user with email {email}.")
    return user


@users_cli.command("create")
@operator_option
@click.argument("email")
@click.option(
    "--role",
    "roles",
    multiple=True,
    required=True,
    type=click.Choice(["admin", "manager", "operator", "support", "doctor"], case_sensitive=False),
    help="Role to grant; repeat for several.",
)
@click.option(
    "--doctor",
    "doctor_key",
    default=None,
    metavar="EMAIL|ID",
    help="With --role doctor: the doctor record (email or id) the user is.",
)
@click.option("--name", "display_name", default=None, help="Display name (default: the email).")
@click.option(
    "--password-env",
    default="BACKOFFICE_PASSWORD",
    show_default=True,
    help="Environment variable to read the password from instead of prompting.",
)
def users_create(
    email: str,
    roles: tuple[str, ...],
    doctor_key: str | None,
    display_name: str | None,
    password_env: str,
) -> None:
    """Create a user with one or more roles (password prompted, or read from --password-env)."""
    from backoffice.auth.events import security_event
    from backoffice.services.users import create_user, find_doctor

    password = _read_password(password_env, prompt=True)
    try:
        doctor = find_doctor(doctor_key) if doctor_key else None
        user = create_user(
            email, display_name or email.split("@")[0], roles, password, doctor=doctor
        )
    except ValueError as exc:  # UserError and RuleError (e.g. a malformed email)
        raise click.ClickException(str(exc)) from None
    db.session.commit()
    security_event("user_created", user.id, by="command")
    names = ", ".join(sorted(r.name.value for r in user.roles))
    linked = f", linked to {user.doctor}" if user.doctor_id else ""
    click.echo(f"Created user {user.email} with roles {names}{linked}.")


@users_cli.command("set-password")
@operator_option
@click.argument("email")
@click.option("--password-env", default="BACKOFFICE_PASSWORD", show_default=True)
def users_set_password(email: str, password_env: str) -> None:
    """Set a new password; the user's open sessions end at their next request."""
    from backoffice.auth.events import security_event
    from backoffice.services.users import set_password

    user = _get_user(email)
    password = _read_password(password_env, prompt=True)
    try:
        set_password(user, password)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    db.session.commit()
    security_event("password_changed", user.id, by="command")
    click.echo(f"Password changed for {user.email}; their open sessions have ended.")


@users_cli.command("deactivate")
@operator_option
@click.argument("email")
def users_deactivate(email: str) -> None:
    """Deactivate a user; their open sessions end at their next request."""
    from backoffice.auth.events import security_event
    from backoffice.services.users import set_active

    user = _get_user(email)
    try:
        set_active(user, False)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    db.session.commit()
    security_event("user_deactivated", user.id, by="command")
    click.echo(f"Deactivated {user.email}.")


@users_cli.command("list")
def users_list() -> None:
    """List users with their roles and status (never their password hashes)."""
    from backoffice.models import User

    users = db.session.scalars(select(User).order_by(User.email)).all()
    if not users:
        click.echo("No users.")
        return
    width = max(len(u.email) for u in users)
    for u in users:
        roles = ",".join(sorted(r.name.value for r in u.roles)) or "-"
        status = "active" if u.active else "inactive"
        last = u.last_login_at.isoformat(timespec="minutes") if u.last_login_at else "never"
        click.echo(f"{u.email:<{width}}  {status:<8}  {roles:<30}  last login {last}")


@studies_cli.command("move")
@operator_option
@click.argument("study")
@click.argument(
    "transition",
    type=click.Choice(["schedule", "check_in", "start", "complete", "no_show", "cancel", "reopen"]),
)
@click.option("--reason", default=None, help="Why (cancel and reopen need one).")
@click.option(
    "--when",
    "when",
    default=None,
    help="The appointment, YYYY-MM-DDTHH:MM in BACKOFFICE_TIMEZONE (schedule needs one).",
)
def studies_move(study: str, transition: str, reason: str | None, when: str | None) -> None:
    """Make TRANSITION on STUDY (its id or accession number), with the workflow's rules.

    The command's operator is the one acting (audit trail, the study's steps); the record scope
    is opened for the command and that is on record too.
    """
    from backoffice.auth.scope import unscoped
    from backoffice.models import Study
    from backoffice.services.workflow import WorkflowError, make_move, parse_local_time
    from backoffice.validation import whole_number

    with unscoped(f"flask studies move {study} {transition}"):
        found = None
        if (key := whole_number(study)) is not None:
            found = db.session.get(Study, key)
        if found is None:
            found = db.session.scalar(select(Study).where(Study.accession_number == study))
        if found is None:
            raise click.ClickException(f"No study with the id or accession number {study}.")
        try:
            make_move(
                found,
                transition,
                reason=reason,
                scheduled_for=parse_local_time(when),
            )
        except WorkflowError as exc:
            db.session.rollback()
            raise click.ClickException(exc.message) from None
        db.session.commit()
        click.echo(f"{found}: {found.status.label}.")


# --------------------------------------------------------------------------- bulk import

_PHASE_SPAN = {"reading": (0, 700), "checking": (700, 800), "writing": (800, 950)}
_PHASE_SPAN["auditing"] = (950, 1000)


@click.command("import")
@operator_option
@click.argument("kind", type=click.Choice(["clinics", "doctors", "patients", "studies"]))
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Preview only: check and count, write nothing.")
@click.option(
    "--skip-invalid",
    is_flag=True,
    help="Import the valid rows and skip the rejected ones (default: all or nothing).",
)
@click.option(
    "--rejected",
    "rejected_path",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write the rejected rows to this CSV file, with an error column.",
)
def import_command(
    kind: str, file: str, dry_run: bool, skip_invalid: bool, rejected_path: str | None
) -> None:
    """Import a CSV file of KIND (the same service and report as the Bulk upload page).

    Exits 1 when rows are rejected, 2 when the file is refused or nothing could be written.
    """
    from backoffice.services.imports import run_import

    def import_with(progress):  # noqa: ANN001, ANN202
        return run_import(
            file,
            kind,
            dry_run=dry_run,
            skip_invalid=skip_invalid,
            progress=progress,
            rejected_path=rejected_path,
        )

    if sys.stdout.isatty():
        with click.progressbar(length=1000, label=f"Importing {kind}", file=sys.stderr) as bar:
            shown = [0]

            def progress(phase: str, done: int, total: int) -> None:
                start, end = _PHASE_SPAN.get(phase, (1000, 1000))
                at = start + (end - start) * done // total if total else start
                if at > shown[0]:
                    bar.update(at - shown[0])
                    shown[0] = at

            report = import_with(progress)
            bar.update(1000 - shown[0])
    else:
        report = import_with(None)
    for line in report.text_lines():
        click.echo(line)
    if rejected_path and report.rejected:
        click.echo(f"Rejected rows written to {rejected_path}.")
    if report.outcome in ("refused", "failed", "changed"):
        sys.exit(2)
    if report.rejected:
        sys.exit(1)


@click.command("worker")
@click.option("--burst", is_flag=True, help="Run the queued jobs, then stop.")
def worker_command(burst: bool) -> None:
    """Run the RQ worker that runs bulk imports (needs RQ_REDIS_URL)."""
    if not current_app.config.get("RQ_REDIS_URL"):
        raise click.UsageError("RQ_REDIS_URL is not set: imports run in the web process.")
    from rq import Worker

    from backoffice.services.imports import get_queue

    queue = get_queue()
    Worker([queue], connection=queue.connection).work(burst=burst)
