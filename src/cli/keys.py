"""`icodrip keys`: create, list, show, roll, revoke and rename API keys.

The plaintext of a key exists only in the output of `create` and `roll`: once on stdout
(with a warning on stderr, so `--json` and scripts get clean stdout), never afterwards.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import click

from application.registry import utc_now
from application.views import api_key_view
from cli.common import DURATION, Group, emit, json_option, print_table, registry_from, when
from domain.actors import OPERATOR
from domain.errors import ValidationError
from domain.ids import parse_key_id, parse_org_id
from domain.key_format import Environment, KeyType
from domain.key_limits import MAX_ROLL_GRACE
from domain.key_networks import clean_networks
from domain.naming import clean_name
from domain.plans import Permission, parse_permissions

ONCE_WARNING = (
    "This is the only time the key is shown. Store it now (e.g. in your secret manager); "
    "Icodrip keeps only its hash and hint."
)
KEY_ID_HELP = "KEY_ID is a key id, key_<32 hex digits>, as `keys create` and `keys list` print it."


@click.group(
    "keys",
    cls=Group,
    epilog='Example: icodrip keys create --org org_0123… --name "Production Backend" --env live',
)
def keys() -> None:
    """Create, list, roll, revoke and rename an organization's API keys."""


def _print_key(view: dict[str, Any]) -> None:
    click.echo(f"{'id':>12}: {view['id']}")
    click.echo(f"{'name':>12}: {view['name']}")
    click.echo(f"{'org':>12}: {view['organization']}")
    click.echo(f"{'type':>12}: {view['type']}/{view['env']}")
    click.echo(f"{'hint':>12}: {view['hint']}")
    click.echo(f"{'status':>12}: {view['status']}")
    click.echo(f"{'permissions':>12}: {', '.join(view['permissions']) or '-'}")
    if view["allowed_origins"]:
        click.echo(f"{'origins':>12}: {', '.join(view['allowed_origins'])}")
    if view.get("allowed_ips"):
        click.echo(f"{'allowed IPs':>12}: {', '.join(view['allowed_ips'])}")
    if view.get("exposed_at"):
        sources = ", ".join(e["source"] for e in view["exposure"])
        click.echo(f"{'EXPOSED':>12}: {view['exposed_at']} ({sources}): roll this key")
    click.echo(f"{'created':>12}: {view['created_at']}")
    click.echo(f"{'expires':>12}: {view['expires_at'] or 'never'}")
    if view["revoked_at"]:
        click.echo(f"{'revoked':>12}: {view['revoked_at']}")
    if view["rolled_from"]:
        click.echo(f"{'rolled from':>12}: {view['rolled_from']}")
    if view["rolled_to"]:
        click.echo(f"{'rolled to':>12}: {view['rolled_to']}")


def _print_secret(view: dict[str, Any]) -> None:
    _print_key(view)
    click.echo(f"{'key':>12}: {view['key']}")


def _emit_secret(view: dict[str, Any], as_json: bool) -> None:
    """The new key with its secret on stdout; the shown-once warning on stderr, always."""
    emit(view, as_json, lambda: _print_secret(view))
    click.echo(f"warning: {ONCE_WARNING}", err=True)


def _print_table(views: list[dict[str, Any]]) -> None:
    columns = ("ID", "NAME", "TYPE/ENV", "HINT", "STATUS", "CREATED (UTC)", "EXPIRES (UTC)")
    rows = [
        (
            v["id"],
            v["name"] if len(v["name"]) <= 30 else v["name"][:29] + "…",
            f"{v['type']}/{v['env']}",
            v["hint"],
            v["status"],
            when(v["created_at"]),
            when(v["expires_at"]),
        )
        for v in views
    ]
    print_table(columns, rows)
    if not rows:
        click.echo("(no keys yet: icodrip keys create --org ORG --name NAME)")


@keys.command(
    "create",
    epilog=(
        "\b\nExamples:\n"
        '  icodrip keys create --org org_0123… --name "Production Backend" --env live\n'
        "  icodrip keys create --org org_0123… --name Web --env test \\\n"
        "      --public --origin https://app.example.com\n"
        '  icodrip keys create --org org_0123… --name "Read only" \\\n'
        "      --permission affiliates:read --expires-in 30d --json"
    ),
)
@click.option("--org", required=True, help="The organization (org_<32 hex digits>).")
@click.option("--name", required=True, help="What the key is for (1-100 characters).")
@click.option(
    "--env",
    type=click.Choice([e.value for e in Environment]),
    default=Environment.LIVE.value,
    show_default=True,
    help="live (ak_live_…) or test (ak_test_…, sees test-mode data only).",
)
@click.option(
    "--public", is_flag=True, help="A public key (pk_…) for browsers and SDKs: events:write only."
)
@click.option(
    "--origin",
    "origins",
    multiple=True,
    metavar="URL",
    help="An origin a public key may be used from, e.g. https://app.example.com (repeatable).",
)
@click.option(
    "--permission",
    "permissions",
    multiple=True,
    type=click.Choice([p.value for p in Permission]),
    help="Restrict the key to these permissions (repeatable); default: all of the org's plan.",
)
@click.option(
    "--expires-in",
    type=DURATION,
    help="Let the key expire after this long, e.g. 30m, 24h, 90d (default: never).",
)
@click.option(
    "--allow-ip",
    "allowed_ips",
    multiple=True,
    metavar="CIDR",
    help="Accept the key only from this network, e.g. 203.0.113.0/24 (repeatable; secret keys).",
)
@json_option
@click.pass_context
def create(
    ctx: click.Context,
    org: str,
    name: str,
    env: str,
    public: bool,
    origins: tuple[str, ...],
    permissions: tuple[str, ...],
    expires_in: timedelta | None,
    allowed_ips: tuple[str, ...],
    as_json: bool,
) -> None:
    """Create a key and print its secret, exactly once."""
    org_id = parse_org_id(org)
    clean = clean_name(name, "key name")
    wanted = parse_permissions(permissions) if permissions else None
    if origins and not public:
        raise ValidationError("--origin applies to --public keys only")
    if expires_in is not None and expires_in <= timedelta(0):
        raise ValidationError("--expires-in must be longer than 0")
    clean_networks(allowed_ips)  # refuse a bad CIDR before anything is opened
    registry = registry_from(ctx)
    now = utc_now()
    issued = registry.create_key(
        org_id,
        name=clean,
        env=Environment(env),
        key_type=KeyType.PUBLIC if public else KeyType.SECRET,
        actor=OPERATOR,
        permissions=wanted,
        expires_at=None if expires_in is None else now + expires_in,
        allowed_origins=origins,
        allowed_ips=allowed_ips,
    )
    organization = registry.get_organization(org_id)
    view = api_key_view(issued.key, organization, utc_now(), secret=issued.secret)
    _emit_secret(view, as_json)


@keys.command("list", epilog="Example: icodrip keys list --org org_0123… --json")
@click.option("--org", required=True, help="The organization (org_<32 hex digits>).")
@json_option
@click.pass_context
def list_keys(ctx: click.Context, org: str, as_json: bool) -> None:
    """List an organization's keys, oldest first (never their secrets)."""
    org_id = parse_org_id(org)
    registry = registry_from(ctx)
    organization = registry.get_organization(org_id)
    now = utc_now()
    keys = registry.keys_for(OPERATOR, org_id)
    views = [api_key_view(key, organization, now) for key in keys]
    emit({"object": "list", "data": views}, as_json, lambda: _print_table(views))


@keys.command("show", epilog=f"Example: icodrip keys show key_0123… --json\n\n{KEY_ID_HELP}")
@click.argument("key_id")
@json_option
@click.pass_context
def show(ctx: click.Context, key_id: str, as_json: bool) -> None:
    """Show one key (never its secret)."""
    uuid = parse_key_id(key_id)
    registry = registry_from(ctx)
    key = registry.key_for(OPERATOR, uuid)
    view = api_key_view(key, registry.get_organization(key.org_id), utc_now())
    emit(view, as_json, lambda: _print_key(view))


@keys.command(
    "revoke",
    epilog=f'Example: icodrip keys revoke key_0123… --reason "leaked in CI logs"\n\n{KEY_ID_HELP}',
)
@click.argument("key_id")
@click.option("--reason", default="", help="Why (kept in the key's history; at most 500 chars).")
@json_option
@click.pass_context
def revoke(ctx: click.Context, key_id: str, reason: str, as_json: bool) -> None:
    """Revoke a key at once and for good: every request with it is refused from now on."""
    uuid = parse_key_id(key_id)
    registry = registry_from(ctx)
    key = registry.revoke_key(uuid, actor=OPERATOR, reason=reason)
    view = api_key_view(key, registry.get_organization(key.org_id), utc_now())
    emit(view, as_json, lambda: click.echo(f"revoked {view['id']} ({view['hint']})"))


@keys.command(
    "roll",
    epilog=(
        "Zero-downtime rotation: roll, move your services to the new key, verify, then let "
        "the old key expire (or revoke it).\n\n"
        f"Example: icodrip keys roll key_0123… --expire-in 1h --json\n\n{KEY_ID_HELP}"
    ),
)
@click.argument("key_id")
@click.option(
    "--expire-in",
    type=DURATION,
    default="24h",
    show_default=True,
    help="How long the old key keeps working: 0 (now), 30m, 1h, 24h, 7d … at most 30d.",
)
@click.option(
    "--revoke-when-idle",
    type=DURATION,
    help="Revoke the old key sooner, once unused this long (e.g. 15m; within the grace).",
)
@click.option(
    "--successor-expires-in",
    type=DURATION,
    help="Let the new key expire after this long (default: when the old key would have).",
)
@json_option
@click.pass_context
def roll(
    ctx: click.Context,
    key_id: str,
    expire_in: timedelta,
    revoke_when_idle: timedelta | None,
    successor_expires_in: timedelta | None,
    as_json: bool,
) -> None:
    """Issue a key's successor and print its secret once; the old key expires after a grace."""
    uuid = parse_key_id(key_id)
    if expire_in > MAX_ROLL_GRACE:
        raise ValidationError(f"--expire-in must be at most {MAX_ROLL_GRACE.days}d")
    registry = registry_from(ctx)
    issued = registry.roll_key(
        uuid,
        grace=expire_in,
        actor=OPERATOR,
        expires_at=None if successor_expires_in is None else utc_now() + successor_expires_in,
        revoke_when_idle=revoke_when_idle,
    )
    organization = registry.get_organization(issued.key.org_id)
    view = api_key_view(issued.key, organization, utc_now(), secret=issued.secret)
    _emit_secret(view, as_json)


@keys.command(
    "set-allowed-ips",
    epilog=(
        "Example: icodrip keys set-allowed-ips key_0123… 203.0.113.0/24 2001:db8::/32\n\n"
        f"With no CIDR the key is accepted from anywhere again.\n\n{KEY_ID_HELP}"
    ),
)
@click.argument("key_id")
@click.argument("cidrs", nargs=-1, metavar="[CIDR]...")
@json_option
@click.pass_context
def set_allowed_ips(ctx: click.Context, key_id: str, cidrs: tuple[str, ...], as_json: bool) -> None:
    """Accept a secret key only from these networks (replaces its IP allowlist)."""
    uuid = parse_key_id(key_id)
    clean_networks(cidrs)
    registry = registry_from(ctx)
    key = registry.change_key(uuid, allowed_ips=cidrs, actor=OPERATOR)
    view = api_key_view(key, registry.get_organization(key.org_id), utc_now())
    emit(view, as_json, lambda: _print_key(view))


@keys.command(
    "rename",
    epilog=f'Example: icodrip keys rename key_0123… "Billing service"\n\n{KEY_ID_HELP}',
)
@click.argument("key_id")
@click.argument("name")
@json_option
@click.pass_context
def rename(ctx: click.Context, key_id: str, name: str, as_json: bool) -> None:
    """Give a key a new NAME (1-100 characters)."""
    uuid = parse_key_id(key_id)
    clean = clean_name(name, "key name")
    registry = registry_from(ctx)
    key = registry.rename_key(uuid, name=clean, actor=OPERATOR)
    view = api_key_view(key, registry.get_organization(key.org_id), utc_now())
    emit(view, as_json, lambda: _print_key(view))
