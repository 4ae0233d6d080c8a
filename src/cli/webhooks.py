"""`icodrip webhooks`: list, create and delete an organization's webhook endpoints.

As the operator (any organization), with the same rules as `/v1/webhooks`
(`application.webhooks.Webhooks`): URLs are judged as the settings say
(ICODRIP_WEBHOOKS_ALLOW_PRIVATE), so an internal address is refused here too. The signing
secret exists only in the output of `create`: once on stdout, with a warning on stderr.
"""

from __future__ import annotations

from typing import Any

import click

from application.webhook_views import webhook_view
from application.webhooks import Webhooks
from bootstrap.webhooks import webhooks_for
from cli.common import Group, emit, json_option, print_table, registry_from, settings_from, when
from domain.actors import OPERATOR
from domain.ids import parse_org_id, parse_webhook_id
from domain.key_format import Environment
from domain.webhook import WebhookEventType, clean_description, parse_event_types

ONCE_WARNING = (
    "This is the only time the signing secret is shown. Give it to the receiver now (it "
    "verifies the webhook-signature header with it); rotate it if it is lost."
)
WEBHOOK_ID_HELP = "WEBHOOK_ID is an endpoint id, we_<32 hex digits>, as `webhooks list` prints it."


@click.group(
    "webhooks",
    cls=Group,
    epilog=(
        "Example: icodrip webhooks create --org org_0123… --url https://hooks.example.com/in "
        "--event api_key.revoked"
    ),
)
def webhooks() -> None:
    """List, create and delete an organization's webhook endpoints."""


def _service(ctx: click.Context) -> Webhooks:
    return webhooks_for(registry_from(ctx), settings_from(ctx))


def _print_webhook(view: dict[str, Any]) -> None:
    click.echo(f"{'id':>12}: {view['id']}")
    click.echo(f"{'org':>12}: {view['organization']}")
    click.echo(f"{'env':>12}: {view['env']}")
    click.echo(f"{'url':>12}: {view['url']}")
    click.echo(f"{'events':>12}: {', '.join(view['events'])}")
    click.echo(f"{'description':>12}: {view['description'] or '-'}")
    click.echo(f"{'status':>12}: {view['status']}")
    click.echo(f"{'created':>12}: {view['created_at']}")


def _print_table(views: list[dict[str, Any]]) -> None:
    columns = ("ID", "ENV", "STATUS", "EVENTS", "URL", "CREATED (UTC)")
    rows = [
        (
            v["id"],
            v["env"],
            v["status"],
            str(len(v["events"])),
            v["url"] if len(v["url"]) <= 60 else v["url"][:59] + "…",
            when(v["created_at"]),
        )
        for v in views
    ]
    print_table(columns, rows)
    if not rows:
        click.echo("(no webhook endpoints yet: icodrip webhooks create --org ORG --url URL ...)")


@webhooks.command("list", epilog="Example: icodrip webhooks list --org org_0123… --json")
@click.option("--org", required=True, help="The organization (org_<32 hex digits>).")
@json_option
@click.pass_context
def list_webhooks(ctx: click.Context, org: str, as_json: bool) -> None:
    """List an organization's endpoints (never their secrets), oldest first."""
    org_id = parse_org_id(org)
    endpoints = _service(ctx).endpoints(OPERATOR, org_id)
    views = [webhook_view(e) for e in endpoints]
    document = {"object": "list", "data": views, "next_cursor": None}
    emit(document, as_json, lambda: _print_table(views))


@webhooks.command(
    "create",
    epilog=(
        "\b\nExamples:\n"
        "  icodrip webhooks create --org org_0123… --url https://hooks.example.com/in \\\n"
        "      --event api_key.revoked --event api_key.exposed\n"
        "  icodrip webhooks create --org org_0123… --url https://hooks.example.com/test \\\n"
        '      --event api_key.created --env test --description "Staging" --json\n'
        "\n"
        "The URL must be public HTTPS: loopback, private, link-local and metadata addresses, "
        "and host names resolving to them, are refused (webhook_url_not_allowed) unless "
        "ICODRIP_WEBHOOKS_ALLOW_PRIVATE=1 (development only)."
    ),
)
@click.option("--org", required=True, help="The organization (org_<32 hex digits>).")
@click.option("--url", required=True, help="Where events are POSTed (public https://…).")
@click.option(
    "--event",
    "events",
    multiple=True,
    required=True,
    type=click.Choice([t.value for t in WebhookEventType]),
    help="An event type to send there (repeatable; at least one).",
)
@click.option("--description", default="", help="What the endpoint is for (at most 500 chars).")
@click.option(
    "--env",
    type=click.Choice([e.value for e in Environment]),
    default=Environment.LIVE.value,
    show_default=True,
    help="Which environment's events the endpoint receives.",
)
@json_option
@click.pass_context
def create(
    ctx: click.Context,
    org: str,
    url: str,
    events: tuple[str, ...],
    description: str,
    env: str,
    as_json: bool,
) -> None:
    """Add an endpoint and print its signing secret, exactly once."""
    org_id = parse_org_id(org)
    parse_event_types(events)  # refuse bad input before anything is opened
    clean_description(description)
    new = _service(ctx).add(
        OPERATOR,
        org_id,
        url=url,
        events=events,
        description=description,
        env=Environment(env),
    )
    view = webhook_view(new.endpoint, secret=new.secret)

    def human() -> None:
        _print_webhook(view)
        click.echo(f"{'secret':>12}: {view['secret']}")

    emit(view, as_json, human)
    click.echo(f"warning: {ONCE_WARNING}", err=True)


@webhooks.command(
    "delete", epilog=f"Example: icodrip webhooks delete we_0123… --json\n\n{WEBHOOK_ID_HELP}"
)
@click.argument("webhook_id")
@json_option
@click.pass_context
def delete(ctx: click.Context, webhook_id: str, as_json: bool) -> None:
    """Delete an endpoint for good (its history stays); nothing more is sent to it."""
    endpoint_id = parse_webhook_id(webhook_id)
    endpoint = _service(ctx).delete(OPERATOR, endpoint_id)
    view = {**webhook_view(endpoint), "deleted": True}
    emit(view, as_json, lambda: click.echo(f"deleted {view['id']} ({view['url']})"))
