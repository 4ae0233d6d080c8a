"""`icodrip dev`: the whole service on one machine with nothing to install."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import secrets
from pathlib import Path

import click

from adapters.affiliates import open_affiliate_store
from adapters.embedded_nats import EmbeddedNats
from adapters.logging import configure_logging
from adapters.private_files import write_private
from adapters.settings import Settings
from adapters.tls import ensure_self_signed
from adapters.users import hash_password
from application.stores import open_registry, open_user_directory
from application.views import organization_view
from bootstrap.workers import run_workers
from cli.serve import bind_to_master, ensure_port_free, run_granian
from domain.actors import OPERATOR
from domain.ids import format_key_id, format_org_id
from domain.key_format import Environment, KeyType
from domain.plans import Plan
from domain.user import Role
from projections.live_key_lookup import LiveKeyLookupView
from projections.request_audit_live import open_live_audit_store
from projections.usage_live import LiveUsageStore


def create_read_models(settings: Settings) -> None:
    """Create the read models' SQLite files before the workers and the API open them at once."""
    # Two processes creating one SQLite file's tables together can fail with "database is locked".
    key_lookup = LiveKeyLookupView(settings)
    key_lookup.count()
    key_lookup.close()
    open_live_audit_store(settings).close()
    usage = LiveUsageStore(settings)
    usage.count()
    usage.close()
    open_affiliate_store(settings).close()


#: The dashboard login `icodrip dev` makes on first start (its password is printed once).
DEV_LOGIN = "owner@demo.icodrip.test"


def first_start(settings: Settings) -> dict[str, str] | None:
    """On first start: a demo org, a test key and a dashboard login, printed once, not kept."""
    marker = settings.data_dir / "bootstrap.json"
    if marker.exists():
        return None
    registry = open_registry(settings)
    try:
        org = registry.register_organization("Demo Org", Plan.PRO, OPERATOR)
        issued = registry.create_key(
            org.id,
            name="Getting started",
            env=Environment.TEST,
            key_type=KeyType.SECRET,
            actor=OPERATOR,
        )
    finally:
        registry.close()
    password = secrets.token_urlsafe(12)
    users = open_user_directory(settings)
    try:
        owner = users.register_user(
            org.id,
            email=DEV_LOGIN,
            role=Role.OWNER,
            password_hash=hash_password(password),
            actor=OPERATOR,
        )
    finally:
        users.close()
    facts = {"org_id": format_org_id(org.id), "key_id": format_key_id(issued.key.id)}
    facts["dashboard_email"] = owner.email
    write_private(marker, json.dumps({**facts, "org": organization_view(org)}, indent=2).encode())
    return {**facts, "key": issued.secret, "dashboard_password": password}


class WorkersProcess:
    """The relay and projection workers in a process of their own, started fresh (spawned).

    Not a thread of this process: granian forks the API worker from here, and a fork taken
    while a workers' thread holds a SQLite lock leaves the child's SQLite convinced that
    lock is still held by its own process, so every store it opens reports "database is
    locked" forever. A spawned process shares no memory with the forked API worker.
    """

    def __init__(self, settings: Settings) -> None:
        self.process = multiprocessing.get_context("spawn").Process(
            target=_run_workers, args=(settings, os.getpid()), name="icodrip-workers"
        )

    def start(self) -> None:
        self.process.start()

    def stop(self) -> None:
        """SIGTERM (the workers finish what they hold), then SIGKILL after 10 s."""
        self.process.terminate()
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


def _run_workers(settings: Settings, parent_pid: int) -> None:
    bind_to_master(parent_pid)  # a `dev` killed outright takes its workers with it
    configure_logging(json=False)
    asyncio.run(run_workers(settings, []))


@click.command("dev", epilog="Example: icodrip dev --port 8443")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8443, show_default=True, type=int)
@click.pass_context
def dev(ctx: click.Context, host: str, port: int) -> None:
    """HTTPS API, workers, SQLite and NATS from the wheel, all in ./.icodrip (or --data-dir)."""
    configure_logging(json=False)
    ensure_port_free(host, port)
    data_dir = _data_dir(ctx)
    if data_dir is not None:
        os.environ["ICODRIP_DATA_DIR"] = str(data_dir)
    # Development receivers run on this machine, often over plain HTTP.
    os.environ.setdefault("ICODRIP_WEBHOOKS_ALLOW_PRIVATE", "1")
    settings = Settings.from_env()
    os.environ.setdefault("ICODRIP_DATA_DIR", str(settings.data_dir))
    certfile, keyfile = ensure_self_signed(settings.data_dir)
    nats = None
    if settings.nats_url is None:
        nats = EmbeddedNats(settings.data_dir)
        nats.start()
        os.environ["ICODRIP_NATS_URL"] = nats.url
    settings = Settings.from_env()
    first = first_start(settings)
    create_read_models(settings)
    workers = WorkersProcess(settings)
    workers.start()
    _announce(settings, host, port, certfile, first)
    try:
        run_granian(host=host, port=port, workers=1, certfile=certfile, keyfile=keyfile)
    finally:
        workers.stop()
        if nats is not None:
            nats.stop()


def _data_dir(ctx: click.Context) -> Path | None:
    obj = ctx.find_root().obj
    value = obj.get("data_dir") if isinstance(obj, dict) else getattr(obj, "data_dir", None)
    return Path(value) if value else None


def _announce(
    settings: Settings, host: str, port: int, certfile: Path, first: dict[str, str] | None
) -> None:
    url = f"https://{host}:{port}"
    click.echo(f"Icodrip Keys is running at {url}  (data: {settings.data_dir})")
    click.echo(f"  TLS certificate (self-signed): {certfile}")
    click.echo(f"  API schema: {url}/schema")
    click.echo(f"  Dashboard: {url}/dashboard/")
    if first is None:
        click.echo(
            "  Bootstrap org and key were printed at first start; more keys: icodrip keys create"
        )
        click.echo("  The dashboard login was printed then too; more logins: icodrip users create")
        return
    click.echo(
        f"  Dashboard login (password shown once): {first['dashboard_email']} / "
        f"{first['dashboard_password']}"
    )
    click.echo(f"  Organization: {first['org_id']}")
    click.echo(f"  Test API key (shown once, keep it now): {first['key']}")
    click.echo(
        f"  Try: curl --cacert {certfile} -H 'Authorization: Bearer {first['key']}' "
        f"{url}/v1/affiliates"
    )
