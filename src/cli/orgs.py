"""`icodrip orgs`: organizations, their plans and their keys' rate limit."""

from __future__ import annotations

from typing import Any

import click

from application.views import organization_view
from cli.common import Group, emit, json_option, registry_from
from domain.actors import OPERATOR
from domain.ids import parse_org_id
from domain.naming import clean_name
from domain.organization import LeakPolicy, parse_leak_policy
from domain.plans import Plan, parse_plan

PLANS = click.Choice([p.value for p in Plan])
ORG_HELP = "ORG is an organization id, org_<32 hex digits>, as `orgs create` prints it."


@click.group("orgs", cls=Group, epilog="Example: icodrip orgs create --name Acme --plan pro")
def orgs() -> None:
    """Create organizations and change their plans and rate limits."""


def _print_org(view: dict[str, Any]) -> None:
    limit = view["rate_limit_per_minute"]
    click.echo(f"{'id':>12}: {view['id']}")
    click.echo(f"{'name':>12}: {view['name']}")
    click.echo(f"{'plan':>12}: {view['plan']}")
    click.echo(f"{'rate limit':>12}: {limit} requests/minute per key")
    click.echo(f"{'permissions':>12}: {', '.join(view['permissions'])}")
    click.echo(f"{'leak policy':>12}: {view['leak_policy']}")
    click.echo(f"{'created':>12}: {view['created_at']}")


@orgs.command(
    "create",
    epilog="Example: icodrip orgs create --name Acme --plan pro --json",
)
@click.option("--name", required=True, help="The organization's name (1-100 characters).")
@click.option("--plan", type=PLANS, default=Plan.FREE.value, show_default=True)
@json_option
@click.pass_context
def create(ctx: click.Context, name: str, plan: str, as_json: bool) -> None:
    """Create an organization and print it (its `id` is what other commands take)."""
    clean = clean_name(name, "organization name")
    chosen = parse_plan(plan)
    registry = registry_from(ctx)
    view = organization_view(registry.register_organization(clean, chosen, OPERATOR))
    emit(view, as_json, lambda: _print_org(view))


@orgs.command("show", epilog=f"Example: icodrip orgs show org_0123… --json\n\n{ORG_HELP}")
@click.argument("org")
@json_option
@click.pass_context
def show(ctx: click.Context, org: str, as_json: bool) -> None:
    """Show an organization: plan, permissions its keys inherit, rate limit."""
    org_id = parse_org_id(org)
    view = organization_view(registry_from(ctx).get_organization(org_id))
    emit(view, as_json, lambda: _print_org(view))


@orgs.command("set-plan", epilog=f"Example: icodrip orgs set-plan org_0123… agency\n\n{ORG_HELP}")
@click.argument("org")
@click.argument("plan", type=PLANS)
@json_option
@click.pass_context
def set_plan(ctx: click.Context, org: str, plan: str, as_json: bool) -> None:
    """Move an organization to PLAN (free, pro or agency); its keys' permissions follow."""
    org_id = parse_org_id(org)
    chosen = parse_plan(plan)
    view = organization_view(registry_from(ctx).change_plan(org_id, chosen, OPERATOR))
    emit(view, as_json, lambda: _print_org(view))


@orgs.command(
    "set-rate-limit",
    epilog=f"Example: icodrip orgs set-rate-limit org_0123… 5000\n\n{ORG_HELP}",
)
@click.argument("org")
@click.argument("requests_per_minute", metavar="N", type=int)
@json_option
@click.pass_context
def set_rate_limit(ctx: click.Context, org: str, requests_per_minute: int, as_json: bool) -> None:
    """Give every key of an agency organization N requests per minute."""
    org_id = parse_org_id(org)
    registry = registry_from(ctx)
    view = organization_view(registry.set_rate_limit(org_id, requests_per_minute, OPERATOR))
    emit(view, as_json, lambda: _print_org(view))


@orgs.command(
    "set-leak-policy",
    epilog=f"Example: icodrip orgs set-leak-policy org_0123… roll\n\n{ORG_HELP}",
)
@click.argument("org")
@click.argument("policy", type=click.Choice([p.value for p in LeakPolicy]))
@json_option
@click.pass_context
def set_leak_policy(ctx: click.Context, org: str, policy: str, as_json: bool) -> None:
    """What a leak report does to the org's keys: revoke (default) or roll (1 h grace)."""
    org_id = parse_org_id(org)
    chosen = parse_leak_policy(policy)
    view = organization_view(registry_from(ctx).set_leak_policy(org_id, chosen, OPERATOR))
    emit(view, as_json, lambda: _print_org(view))


@orgs.command(
    "clear-rate-limit",
    epilog=f"Example: icodrip orgs clear-rate-limit org_0123…\n\n{ORG_HELP}",
)
@click.argument("org")
@json_option
@click.pass_context
def clear_rate_limit(ctx: click.Context, org: str, as_json: bool) -> None:
    """Return an organization's keys to the plan's default limit."""
    org_id = parse_org_id(org)
    view = organization_view(registry_from(ctx).clear_rate_limit(org_id, OPERATOR))
    emit(view, as_json, lambda: _print_org(view))
