"""`icodrip keys history KEY_ID`: every lifecycle event of a key, from the event store."""

from __future__ import annotations

from typing import Any

import click

from application.history import History
from cli.common import emit, friendly_errors, json_option, registry_from
from domain.actors import OPERATOR
from domain.ids import parse_key_id


def _describe(changes: dict[str, Any]) -> str:
    shown = []
    for name, change in changes.items():
        if change["from"] is None:
            continue  # a creation sets everything; its type says so
        shown.append(f"{name}: {change['from']} → {change['to']}")
    return "; ".join(shown)


@click.command("history", epilog="Example: icodrip keys history key_0123… --json")
@click.argument("key_id")
@json_option
@click.pass_context
@friendly_errors
def history(ctx: click.Context, key_id: str, as_json: bool) -> None:
    """Show who changed a key, when, and what changed (oldest first)."""
    uuid = parse_key_id(key_id)
    events = History(registry_from(ctx), OPERATOR).key_history(uuid)

    def table() -> None:
        click.echo(f"{'WHEN':<27}  {'EVENT':<16}  {'ACTOR':<38}  CHANGES")
        for e in events:
            kind = e["type"].removeprefix("api_key.")
            click.echo(
                f"{e['occurred_at']:<27}  {kind:<16}  {e['actor']:<38}  {_describe(e['changes'])}"
            )

    emit({"object": "list", "data": events}, as_json, table)
