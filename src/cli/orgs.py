"""`icodrip orgs`: organizations, their plans and rate limits."""

from __future__ import annotations

import click

from application.views import organization_view
from cli.common import emit, friendly_errors, json_option, registry_for
from domain.actors import OPERATOR
from domain.ids import parse_org_id
from domain.naming import clean_name
from domain.plans import Plan, parse_plan

PLANS = click.Choice([p.value for p in Plan])


@click.group("orgs")
def orgs() -> None:
    """Create organizations and change their plans and limits."""


def _print_org(view: dict[str, object]) -> None:
    for field in ("id", "name", "plan", "rate_limit_per_minute", "created_at"):
        click.echo(f"{field:>22}: {view[field]}")
    click.echo(f"{'permissions':>22}: {', '.join(view['permissions'])}")  # type: ignore[arg-type]


@orgs.command("create", epilog="Example: icodrip orgs create --name Acme --plan pro --json")
@click.option("--name", required=True, help="The organization's name (1-100 characters).")
@click.option("--plan", type=PLANS, default="free", show_default=True)
@json_option
@click.pass_context
@friendly_errors
def create(ctx: click.Context, name: str, plan: str, as_json: bool) -> None:
    """Create an organization; prints its id."""
    clean_name(name, "organization name")
    with registry_for(ctx) as registry:
        view = organization_view(registry.register_organization(name, parse_plan(plan), OPERATOR))
    emit(view, as_json, lambda: _print_org(view))


@orgs.command("show", epilog="Example: icodrip orgs show org_0123…")
@click.argument("org")
@json_option
@click.pass_context
@friendly_errors
def show(ctx: click.Context, org: str, as_json: bool) -> None:
    """Show an organization."""
    org_id = parse_org_id(org)
    with registry_for(ctx) as registry:
        view = organization_view(registry.get_organization(org_id))
    emit(view, as_json, lambda: _print_org(view))


@orgs.command("set-plan", epilog="Example: icodrip orgs set-plan org_0123… agency")
@click.argument("org")
@click.argument("plan", type=PLANS, metavar="PLAN")
@json_option
@click.pass_context
@friendly_errors
def set_plan(ctx: click.Context, org: str, plan: str, as_json: bool) -> None:
    """Move an organization to another plan; its keys' permissions follow."""
    org_id = parse_org_id(org)
    with registry_for(ctx) as registry:
        view = organization_view(registry.change_plan(org_id, parse_plan(plan), OPERATOR))
    emit(view, as_json, lambda: _print_org(view))


@orgs.command("set-rate-limit", epilog="Example: icodrip orgs set-rate-limit org_0123… 5000")
@click.argument("org")
@click.argument("requests_per_minute", metavar="N", type=int)
@json_option
@click.pass_context
@friendly_errors
def set_rate_limit(ctx: click.Context, org: str, requests_per_minute: int, as_json: bool) -> None:
    """Give every key of an agency organization N requests per minute."""
    org_id = parse_org_id(org)
    with registry_for(ctx) as registry:
        view = organization_view(registry.set_rate_limit(org_id, requests_per_minute, OPERATOR))
    emit(view, as_json, lambda: _print_org(view))


@orgs.command("clear-rate-limit", epilog="Example: icodrip orgs clear-rate-limit org_0123…")
@click.argument("org")
@json_option
@click.pass_context
@friendly_errors
def clear_rate_limit(ctx: click.Context, org: str, as_json: bool) -> None:
    """Return an organization's keys to the plan's default limit."""
    org_id = parse_org_id(org)
    with registry_for(ctx) as registry:
        view = organization_view(registry.clear_rate_limit(org_id, OPERATOR))
    emit(view, as_json, lambda: _print_org(view))
