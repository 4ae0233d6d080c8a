"""`icodrip keys`: create, list, roll, revoke and rename API keys."""

from __future__ import annotations

from typing import Any

import click

from application.registry import utc_now
from application.views import api_key_view
from cli.common import emit, friendly_errors, json_option, parse_duration, registry_for
from domain.actors import OPERATOR
from domain.ids import parse_key_id, parse_org_id
from domain.key_format import Environment, KeyType
from domain.naming import clean_name
from domain.plans import Permission, parse_permissions

ONCE_WARNING = "This is the only time the key is shown. Store it now; only its hint is kept."


@click.group("keys")
def keys() -> None:
    """Manage an organization's API keys."""


def _print_key(view: dict[str, Any]) -> None:
    for field in ("id", "name", "type", "env", "hint", "status", "created_at", "expires_at"):
        click.echo(f"{field:>12}: {view[field]}")
    click.echo(f"{'permissions':>12}: {', '.join(view['permissions'])}")


def _print_secret(view: dict[str, Any]) -> None:
    _print_key(view)
    click.echo(f"{'key':>12}: {view['key']}")
    click.echo(ONCE_WARNING, err=True)


@keys.command(
    "create",
    epilog='Example: icodrip keys create --org org_0123… --name "Production Backend" --env live',
)
@click.option("--org", required=True, help="The organization (org_…).")
@click.option("--name", required=True, help="What the key is for (1-100 characters).")
@click.option("--env", type=click.Choice(["live", "test"]), default="live", show_default=True)
@click.option("--public", is_flag=True, help="A public key (pk_…) for browsers: events:write only.")
@click.option("--origin", "origins", multiple=True, help="Allowed origin of a public key.")
@click.option(
    "--permission",
    "permissions",
    multiple=True,
    type=click.Choice([p.value for p in Permission]),
    help="Restrict the key to these permissions (repeatable); default: all of the org's.",
)
@click.option("--expires-in", help="Let the key expire, e.g. 30d.")
@json_option
@click.pass_context
@friendly_errors
def create(
    ctx: click.Context,
    org: str,
    name: str,
    env: str,
    public: bool,
    origins: tuple[str, ...],
    permissions: tuple[str, ...],
    expires_in: str | None,
    as_json: bool,
) -> None:
    """Create a key and print its secret, exactly once."""
    org_id = parse_org_id(org)
    clean_name(name, "key name")
    lifetime = parse_duration(expires_in) if expires_in else None
    if origins and not public:
        raise click.UsageError("--origin applies to --public keys only")
    with registry_for(ctx) as registry:
        issued = registry.create_key(
            org_id,
            name=name,
            env=Environment(env),
            key_type=KeyType.PUBLIC if public else KeyType.SECRET,
            actor=OPERATOR,
            permissions=parse_permissions(permissions) if permissions else None,
            expires_at=utc_now() + lifetime if lifetime else None,
            allowed_origins=origins,
        )
        view = api_key_view(
            issued.key, registry.get_organization(org_id), utc_now(), secret=issued.secret
        )
    emit(view, as_json, lambda: _print_secret(view))


@keys.command("list", epilog="Example: icodrip keys list --org org_0123… --json")
@click.option("--org", required=True, help="The organization (org_…).")
@json_option
@click.pass_context
@friendly_errors
def list_keys(ctx: click.Context, org: str, as_json: bool) -> None:
    """List an organization's keys (never their secrets)."""
    org_id = parse_org_id(org)
    with registry_for(ctx) as registry:
        organization = registry.get_organization(org_id)
        now = utc_now()
        views = [api_key_view(k, organization, now) for k in registry.list_keys(org_id)]

    def table() -> None:
        click.echo(f"{'ID':<36}  {'NAME':<24}  {'TYPE':<11}  {'HINT':<16}  {'STATUS':<8}  CREATED")
        for v in views:
            kind = f"{v['type']}/{v['env']}"
            click.echo(
                f"{v['id']:<36}  {v['name'][:24]:<24}  {kind:<11}  {v['hint']:<16}  "
                f"{v['status']:<8}  {v['created_at'][:19]}"
            )

    emit({"object": "list", "data": views}, as_json, table)


@keys.command("show", epilog="Example: icodrip keys show key_0123…")
@click.argument("key_id")
@json_option
@click.pass_context
@friendly_errors
def show(ctx: click.Context, key_id: str, as_json: bool) -> None:
    """Show one key."""
    uuid = parse_key_id(key_id)
    with registry_for(ctx) as registry:
        key = registry.get_key(uuid)
        view = api_key_view(key, registry.get_organization(key.org_id), utc_now())
    emit(view, as_json, lambda: _print_key(view))


@keys.command("revoke", epilog='Example: icodrip keys revoke key_0123… --reason "leaked"')
@click.argument("key_id")
@click.option("--reason", default="", help="Why (kept in the key's history).")
@json_option
@click.pass_context
@friendly_errors
def revoke(ctx: click.Context, key_id: str, reason: str, as_json: bool) -> None:
    """Revoke a key at once, for good."""
    uuid = parse_key_id(key_id)
    with registry_for(ctx) as registry:
        key = registry.revoke_key(uuid, actor=OPERATOR, reason=reason)
        view = api_key_view(key, registry.get_organization(key.org_id), utc_now())
    emit(view, as_json, lambda: click.echo(f"revoked {view['id']} ({view['hint']})"))


@keys.command("roll", epilog="Example: icodrip keys roll key_0123… --expire-in 24h")
@click.argument("key_id")
@click.option(
    "--expire-in",
    default="24h",
    show_default=True,
    help="How long the old key keeps working (0 = now; at most 30d).",
)
@json_option
@click.pass_context
@friendly_errors
def roll(ctx: click.Context, key_id: str, expire_in: str, as_json: bool) -> None:
    """Issue a key's successor (secret printed once); the old key expires after the grace."""
    uuid = parse_key_id(key_id)
    grace = parse_duration(expire_in)
    with registry_for(ctx) as registry:
        issued = registry.roll_key(uuid, grace=grace, actor=OPERATOR)
        view = api_key_view(
            issued.key,
            registry.get_organization(issued.key.org_id),
            utc_now(),
            secret=issued.secret,
        )
    emit(view, as_json, lambda: _print_secret(view))


@keys.command("rename", epilog='Example: icodrip keys rename key_0123… "Billing service"')
@click.argument("key_id")
@click.argument("name")
@json_option
@click.pass_context
@friendly_errors
def rename(ctx: click.Context, key_id: str, name: str, as_json: bool) -> None:
    """Give a key a new name."""
    uuid = parse_key_id(key_id)
    with registry_for(ctx) as registry:
        key = registry.rename_key(uuid, name=name, actor=OPERATOR)
        view = api_key_view(key, registry.get_organization(key.org_id), utc_now())
    emit(view, as_json, lambda: _print_key(view))
