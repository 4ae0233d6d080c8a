"""`icodrip orgs`: organizations, their plans and their keys' rate limit."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import click

from application.key_lifetimes import KeyLifetimes
from application.views import organization_view
from cli.common import Group, emit, json_option, parse_duration, registry_from
from domain.actors import OPERATOR
from domain.ids import parse_org_id
from domain.lifetime_policy import ExpiryRequirement, LifetimePolicy, describe
from domain.naming import clean_name
from domain.organization import LeakPolicy, parse_leak_policy
from domain.plans import Plan, parse_plan

PLANS = click.Choice([p.value for p in Plan])
ORG_HELP = "ORG is an organization id, org_<32 hex digits>, as `orgs create` prints it."


@click.group("orgs", cls=Group, epilog="Example: icodrip orgs create --name Acme --plan pro")
def orgs() -> None:
    """Create organizations and change their plans, rate limits and key policies."""


def _print_org(view: dict[str, Any]) -> None:
    limit = view["rate_limit_per_minute"]
    click.echo(f"{'id':>12}: {view['id']}")
    click.echo(f"{'name':>12}: {view['name']}")
    click.echo(f"{'plan':>12}: {view['plan']}")
    click.echo(f"{'rate limit':>12}: {limit} requests/minute per key")
    click.echo(f"{'permissions':>12}: {', '.join(view['permissions'])}")
    click.echo(f"{'leak policy':>12}: {view['leak_policy']}")
    click.echo(f"{'key policy':>12}: {_policy_text(view['key_policy'])}")
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


def _policy_text(policy: dict[str, Any]) -> str:
    rules = []
    if policy["max_lifetime_seconds"] is not None:
        rules.append(
            f"keys live at most {describe(timedelta(seconds=policy['max_lifetime_seconds']))}"
        )
    if policy["require_expiry"] != ExpiryRequirement.NONE:
        rules.append(f"expiry required on {policy['require_expiry']} keys")
    if policy["revoke_unused_after_seconds"] is not None:
        unused = describe(timedelta(seconds=policy["revoke_unused_after_seconds"]))
        rules.append(f"unused keys revoked after {unused}")
    return "; ".join(rules) or "none"


def _rule_duration(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> timedelta | Keep | None:
    """A rule's duration option: left out keeps the rule, `off` turns it off."""
    if value is None:
        return KEEP
    if value.strip().lower() in {"off", "none"}:
        return None
    try:
        return parse_duration(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


class Keep:
    """An option left out: the rule stays as it is."""


KEEP = Keep()


@orgs.command(
    "set-policy",
    epilog=(
        "Example: icodrip orgs set-policy org_0123… --max-lifetime 90d --require-expiry live "
        f"--revoke-unused-after 90d\n\n{ORG_HELP}"
    ),
)
@click.argument("org")
@click.option(
    "--max-lifetime",
    callback=_rule_duration,
    help="Every new key expires within this (e.g. 90d, 12h), or `off`.",
)
@click.option(
    "--require-expiry",
    type=click.Choice([r.value for r in ExpiryRequirement]),
    help="Which new keys must have an expiry: live, all or none.",
)
@click.option(
    "--revoke-unused-after",
    callback=_rule_duration,
    help="Revoke keys unused this long (warned first; e.g. 90d), or `off`.",
)
@json_option
@click.pass_context
def set_policy(
    ctx: click.Context,
    org: str,
    max_lifetime: timedelta | Keep | None,
    require_expiry: str | None,
    revoke_unused_after: timedelta | Keep | None,
    as_json: bool,
) -> None:
    """Set the org's key-lifetime policy; options left out keep their rule (keys already
    issued are not changed, only new ones are held to it)."""
    org_id = parse_org_id(org)

    def change(policy: LifetimePolicy) -> LifetimePolicy:
        return LifetimePolicy(
            max_lifetime=policy.max_lifetime if isinstance(max_lifetime, Keep) else max_lifetime,
            require_expiry=ExpiryRequirement(require_expiry or policy.require_expiry),
            revoke_unused_after=(
                policy.revoke_unused_after
                if isinstance(revoke_unused_after, Keep)
                else revoke_unused_after
            ),
        )

    lifetimes = KeyLifetimes(registry_from(ctx))
    view = organization_view(lifetimes.change_policy(OPERATOR, org_id, change))
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
