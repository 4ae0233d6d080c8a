"""`icodrip users`: dashboard logins for organization members."""

from __future__ import annotations

import sys
from typing import Any

import click

from adapters.users import hash_password, password_problem
from application.stores import open_user_directory
from application.views import iso
from cli.common import CliError, Group, emit, json_option, registry_from, settings_from
from domain.actors import OPERATOR
from domain.ids import USER_PREFIX, format_id, format_org_id, parse_org_id
from domain.user import Role, User, normalize_email, parse_role

ROLES = click.Choice([r.value for r in Role])


@click.group(
    "users",
    cls=Group,
    epilog="Example: icodrip users create --org org_0123… --email ana@example.com --role admin",
)
def users() -> None:
    """Dashboard logins: members of an organization and their roles."""


def user_view(user: User) -> dict[str, Any]:
    """A user as scripts see it (never the password or its hash)."""
    return {
        "id": format_id(USER_PREFIX, user.id),
        "object": "user",
        "organization": format_org_id(user.org_id),
        "email": user.email,
        "role": user.role.value,
        "disabled": user.disabled,
        "created_at": iso(user.created_on),
    }


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
    problem = password_problem(password)
    if problem:
        raise CliError(problem, "validation_error")
    return password


@users.command(
    "create",
    epilog=(
        "Example: icodrip users create --org org_0123… --email ana@example.com --role admin\n\n"
        "Example (scripts): printf '%s\\n' \"$PASSWORD\" | icodrip users create --org org_0123… "
        "--email ci@example.com --role auditor --password-stdin --json\n\n"
        "Roles: owner and admin manage all keys; developer creates and rolls keys and "
        "renames or revokes the ones they created; auditor reads keys and the audit log."
    ),
)
@click.option("--org", required=True, help="The organization, org_<32 hex digits>.")
@click.option("--email", required=True, help="The login; unique across all organizations.")
@click.option("--role", required=True, type=ROLES, help="What the user may do.")
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of standard input instead of prompting.",
)
@json_option
@click.pass_context
def create(
    ctx: click.Context, org: str, email: str, role: str, password_stdin: bool, as_json: bool
) -> None:
    """Create a dashboard login for a member of ORG (the password is prompted for)."""
    org_id = parse_org_id(org)
    clean_email = normalize_email(email)
    chosen = parse_role(role)
    password = _read_password(password_stdin)
    registry_from(ctx).get_organization(org_id)  # an unknown org is refused before writing
    directory = open_user_directory(settings_from(ctx))
    try:
        user = directory.register_user(
            org_id,
            email=clean_email,
            role=chosen,
            password_hash=hash_password(password),
            actor=OPERATOR,
        )
    finally:
        directory.close()
    view = user_view(user)

    def human() -> None:
        click.echo(f"{'id':>6}: {view['id']}")
        click.echo(f"{'email':>6}: {view['email']}")
        click.echo(f"{'role':>6}: {view['role']}")
        click.echo(f"{'org':>6}: {view['organization']}")

    emit(view, as_json, human)
