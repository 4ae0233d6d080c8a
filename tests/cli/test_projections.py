"""`icodrip projections`: status with positions and lag; rebuilds beside the live copy."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from adapters.settings import Settings
from application.registry import KeyRegistry
from application.stores import open_registry
from bootstrap.api import api_process
from bootstrap.projections import assemble_projections
from bootstrap.workers import run_key_lookup
from cli.projections import projections
from domain.actors import OPERATOR
from domain.key_format import Environment, KeyType, generate_key, hash_key
from domain.organization import Organization
from domain.plans import Plan
from projections.generation_store import open_generation_store
from projections.key_lookup import KeyLookup
from projections.key_lookup_updater import KeyLookupUpdater
from projections.key_lookup_view import KeyLookupView
from projections.live_key_lookup import (
    KEY_LOOKUP,
    KEY_LOOKUP_VIEW,
    LiveKeyLookupView,
    open_key_lookup_view,
)
from projections.rebuilds import RebuildProgress
from support.api import Api, bearer, serving
from support.servers import NatsServer

# -- helpers -------------------------------------------------------------------------------


def invoke(env: dict[str, str], *args: str) -> Result:
    """`icodrip projections ARGS` in-process (whether or not main registers the group yet)."""
    return CliRunner().invoke(projections, list(args), env=env, obj={"data_dir": None})


def model(lookup: KeyLookup) -> tuple[Any, ...]:
    """Everything a loaded key-lookup model holds, comparable with ==."""
    return (
        lookup.position,
        {r.key_hash: dataclasses.astuple(r) for r in lookup.records()},
        {r.org_id: dataclasses.astuple(r) for r in lookup.org_records()},
    )


def load(settings: Settings, registry: KeyRegistry, name: str | None = None) -> KeyLookup:
    view = open_key_lookup_view(settings, name)
    try:
        return view.load(registry.name)
    finally:
        close(view)


def close(view: KeyLookupView) -> None:
    if isinstance(view, LiveKeyLookupView):
        view.close()
    else:
        view.datastore.close()  # type: ignore[attr-defined]


def from_scratch(registry: KeyRegistry) -> KeyLookup:
    """The model folded from the whole store, in memory (the reference a rebuild must match)."""
    updater = KeyLookupUpdater(registry, KeyLookup(), None)
    while batch := updater.fetch(500):
        updater.apply(batch)
    return updater.lookup


def catch_up_live_view(settings: Settings, registry: KeyRegistry) -> None:
    """What the key-lookup worker does: bring the live durable view to the store's head."""
    view = open_key_lookup_view(settings)
    try:
        KeyLookupUpdater.from_view(registry, view).catch_up_fully()
    finally:
        close(view)


def copy_exists(settings: Settings, name: str) -> bool:
    if settings.is_embedded:
        return (settings.data_dir / f"{name.lower()}.sqlite3").exists()
    assert settings.database_url is not None
    tables = [f"{name.lower()}_{part}" for part in ("keys", "orgs", "key_states", "tracking")]
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ANY(%s)",
            (tables,),
        ).fetchone()
    return bool(row and row[0])


def populate(registry: KeyRegistry, keys: int, plan: Plan = Plan.PRO) -> Organization:
    org = registry.register_organization("Acme", plan, OPERATOR)
    for i in range(keys):
        issued = registry.create_key(
            org.id, name=f"k{i}", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
        )
        if i % 3 == 1:
            registry.revoke_key(issued.key.id, actor=OPERATOR)
        elif i % 3 == 2:
            registry.rename_key(issued.key.id, name=f"renamed {i}", actor=OPERATOR)
    return org


@pytest.fixture
def own_registry(settings: Settings) -> Iterator[KeyRegistry]:
    registry = open_registry(settings)
    yield registry
    registry.close()


async def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


# -- status --------------------------------------------------------------------------------


def test_status_shows_each_projections_position_and_lag(
    store_env: dict[str, str], settings: Settings, own_registry: KeyRegistry
) -> None:
    populate(own_registry, 3)
    head = own_registry.recorder.max_notification_id()

    result = invoke(store_env, "status", "--json")
    assert result.exit_code == 0, result.output
    (lookup,) = [p for p in json.loads(result.stdout)["data"] if p["name"] == KEY_LOOKUP]
    assert lookup["generation"] == 1 and lookup["view"] == KEY_LOOKUP_VIEW
    assert lookup["position"] == 0 and lookup["head"] == head and lookup["lag"] == head
    assert lookup["rows"] == 0 and lookup["last_error"] is None and lookup["building"] is None

    catch_up_live_view(settings, own_registry)
    lookup = json.loads(invoke(store_env, "status", "--json").stdout)["data"][0]
    assert lookup["position"] == head and lookup["lag"] == 0 and lookup["rows"] == 3

    human = invoke(store_env, "status")
    assert human.exit_code == 0 and "key-lookup" in human.stdout and "LAG" in human.stdout


# -- rebuild from the command line ---------------------------------------------------------


def test_rebuild_builds_a_new_generation_switches_and_removes_the_old_copy(
    store_env: dict[str, str], settings: Settings, own_registry: KeyRegistry
) -> None:
    populate(own_registry, 7)
    catch_up_live_view(settings, own_registry)
    before = model(load(settings, own_registry, KEY_LOOKUP_VIEW))

    result = invoke(
        store_env, "rebuild", "key-lookup", "--grace", "0", "--batch-size", "2", "--json"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["generation"] == 2 and report["view"] == "KeyLookup_g2"
    assert report["removed"] == KEY_LOOKUP_VIEW and report["rows"] == 7
    assert (
        report["events"] > 0 and report["position"] == own_registry.recorder.max_notification_id()
    )
    assert "events/s" in result.stderr and "ETA" in result.stderr
    assert not copy_exists(settings, KEY_LOOKUP_VIEW) and copy_exists(settings, "KeyLookup_g2")
    assert model(load(settings, own_registry)) == before  # the live view, now generation 2

    status = json.loads(invoke(store_env, "status", "--json").stdout)["data"][0]
    assert status["generation"] == 2 and status["view"] == "KeyLookup_g2"
    assert status["lag"] == 0 and status["switched_at"] is not None

    again = invoke(store_env, "rebuild", "key-lookup", "--grace", "0")
    assert again.exit_code == 0, again.output
    assert "generation 3" in again.stdout and "removed KeyLookup_g2" in again.stderr
    assert not copy_exists(settings, "KeyLookup_g2") and copy_exists(settings, "KeyLookup_g3")
    assert model(load(settings, own_registry)) == before


def test_a_second_rebuild_is_refused_while_one_holds_the_claim(
    store_env: dict[str, str], settings: Settings, own_registry: KeyRegistry
) -> None:
    populate(own_registry, 2)
    store = open_generation_store(settings)
    try:
        store.claim(KEY_LOOKUP, KEY_LOOKUP_VIEW)  # as a running (or dead) rebuild would
    finally:
        store.close()
    refused = invoke(store_env, "rebuild", "key-lookup", "--grace", "0")
    assert refused.exit_code == 2
    assert "rebuild_refused" in refused.stderr and "Traceback" not in refused.output
    status = json.loads(invoke(store_env, "status", "--json").stdout)["data"][0]
    assert status["generation"] == 1 and status["building"] == 2

    forced = invoke(store_env, "rebuild", "key-lookup", "--grace", "0", "--force", "--json")
    assert forced.exit_code == 0, forced.output
    assert json.loads(forced.stdout)["generation"] == 2


def test_a_failed_rebuild_leaves_the_live_copy_and_records_the_error(
    store_env: dict[str, str], settings: Settings, own_registry: KeyRegistry
) -> None:
    populate(own_registry, 5)
    catch_up_live_view(settings, own_registry)

    def explode(progress: RebuildProgress) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        assemble_projections(settings)[KEY_LOOKUP].rebuild(progress=explode, grace=0, batch_size=2)

    status = json.loads(invoke(store_env, "status", "--json").stdout)["data"][0]
    assert status["generation"] == 1 and status["building"] is None and status["lag"] == 0
    assert "RuntimeError" in status["last_error"] and status["last_error_at"]
    assert not copy_exists(settings, "KeyLookup_g2") and copy_exists(settings, KEY_LOOKUP_VIEW)

    assemble_projections(settings)[KEY_LOOKUP].rebuild(grace=0)  # a later success clears it
    status = json.loads(invoke(store_env, "status", "--json").stdout)["data"][0]
    assert status["generation"] == 2 and status["last_error"] is None


def test_every_projections_command_has_help() -> None:
    for argv in ([], ["status"], ["rebuild"]):
        result = CliRunner().invoke(projections, [*argv, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output, argv


# -- rebuilds while the service runs --------------------------------------------------------


@pytest.fixture
async def api(settings: Settings, nats_server: NatsServer, redis_url: str) -> AsyncIterator[Api]:
    api_settings = dataclasses.replace(settings, nats_url=nats_server.url, redis_url=redis_url)
    process = api_process(api_settings, trusted_proxies=["10.0.0.0/8"])
    async with serving(process) as api:
        yield api


async def test_a_rebuild_under_api_traffic_fails_no_request_and_builds_an_identical_view(
    api: Api, settings: Settings
) -> None:
    registry = api.registry
    org = populate(registry, 120, Plan.AGENCY)
    registry.set_rate_limit(org.id, 1_000_000, OPERATOR)
    caller = await api.key(org)
    await asyncio.to_thread(catch_up_live_view, settings, registry)
    before = model(await asyncio.to_thread(load, settings, registry, KEY_LOOKUP_VIEW))

    stop = asyncio.Event()
    statuses: Counter[int] = Counter()
    misses: Counter[int] = Counter()

    async def traffic() -> None:
        while not stop.is_set():
            response = await api.client.get("/v1/affiliates", headers=bearer(caller))
            statuses[response.status_code] += 1
            if sum(misses.values()) < 15 and random.random() < 0.05:
                # an unknown key: the mirror misses and asks the durable view
                unknown = generate_key(KeyType.SECRET, Environment.LIVE)
                response = await api.client.get("/v1/affiliates", headers=bearer(unknown))
                misses[response.status_code] += 1
            await asyncio.sleep(0)

    def slowly(progress: RebuildProgress) -> None:
        time.sleep(0.02)  # stretch the rebuild so the traffic overlaps all of it

    task = asyncio.create_task(traffic())
    try:
        report = await asyncio.to_thread(
            assemble_projections(settings)[KEY_LOOKUP].rebuild,
            progress=slowly,
            batch_size=20,
            grace=1.5,
        )
        await asyncio.sleep(0.2)
    finally:
        stop.set()
        await task

    assert set(statuses) == {200} and statuses[200] >= 50, statuses
    assert set(misses) <= {401}, misses
    assert report.live.view_name == "KeyLookup_g2" and report.removed == KEY_LOOKUP_VIEW
    assert not copy_exists(settings, KEY_LOOKUP_VIEW)
    after = model(await asyncio.to_thread(load, settings, registry, "KeyLookup_g2"))
    assert after == before

    # After the old copy is gone the API still answers: a new key works, an unknown one is 401.
    fresh = await api.key(org)
    assert (await api.client.get("/v1/affiliates", headers=bearer(fresh))).status_code == 200
    unknown = generate_key(KeyType.SECRET, Environment.LIVE)
    response = await api.client.get("/v1/affiliates", headers=bearer(unknown))
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    assert (await api.client.get("/readyz")).status_code == 200


async def test_the_key_lookup_worker_follows_a_switch_without_skipping_an_event(
    settings: Settings, own_registry: KeyRegistry
) -> None:
    registry = own_registry
    org = populate(registry, 30)
    catch_up_live_view(settings, registry)  # creates the view before the worker opens it too
    stopping = asyncio.Event()
    worker = asyncio.create_task(run_key_lookup(settings, stopping))

    def live_caught_up() -> bool:
        head = registry.recorder.max_notification_id()
        view = open_key_lookup_view(settings)
        try:
            return view.max_tracking_id(registry.name) == head
        finally:
            close(view)

    writing = True

    def write_meanwhile() -> int:
        written = 0
        while writing:
            issued = registry.create_key(
                org.id,
                name="meanwhile",
                env=Environment.LIVE,
                key_type=KeyType.SECRET,
                actor=OPERATOR,
            )
            registry.revoke_key(issued.key.id, actor=OPERATOR)
            written += 1
            time.sleep(0.01)
        return written

    try:
        await wait_until(live_caught_up)
        for generation in (2, 3):
            writing = True
            writer = asyncio.create_task(asyncio.to_thread(write_meanwhile))
            report = await asyncio.to_thread(
                assemble_projections(settings)[KEY_LOOKUP].rebuild,
                progress=lambda p: time.sleep(0.01),
                batch_size=10,
                grace=1.2,
            )
            writing = False
            assert await writer > 0
            assert report.live.number == generation
            last = registry.create_key(
                org.id,
                name="after",
                env=Environment.LIVE,
                key_type=KeyType.SECRET,
                actor=OPERATOR,
            )
            await wait_until(live_caught_up)
            live = await asyncio.to_thread(load, settings, registry)
            assert model(live) == model(from_scratch(registry))
            assert live.get(hash_key(last.secret, settings.key_pepper)) is not None
            assert not copy_exists(settings, report.removed or "")
    finally:
        stopping.set()
        await worker


# -- `icodrip keys history` ------------------------------------------------------------------


def test_keys_history_prints_who_changed_a_key_and_what(
    store_env: dict[str, str], own_registry: KeyRegistry
) -> None:
    from cli.history import history

    org = own_registry.register_organization("Acme", Plan.PRO, OPERATOR)
    issued = own_registry.create_key(
        org.id, name="Backend", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
    )
    own_registry.rename_key(issued.key.id, name="Billing", actor=OPERATOR)
    own_registry.revoke_key(issued.key.id, actor=OPERATOR, reason="rotated")
    key_id = f"key_{issued.key.id.hex}"

    runner = CliRunner()
    as_json = runner.invoke(history, [key_id, "--json"], env=store_env, obj={"data_dir": None})
    assert as_json.exit_code == 0, as_json.output
    events = json.loads(as_json.stdout)["data"]
    assert [e["type"] for e in events] == ["api_key.created", "api_key.renamed", "api_key.revoked"]
    assert issued.secret not in as_json.stdout and issued.key.key_hash not in as_json.stdout

    table = runner.invoke(history, [key_id], env=store_env, obj={"data_dir": None})
    assert table.exit_code == 0 and "name: Backend → Billing" in table.stdout

    unknown = runner.invoke(history, ["key_nonsense"], env=store_env, obj={"data_dir": None})
    assert unknown.exit_code == 2 and "Traceback" not in unknown.output
    assert CliRunner().invoke(history, ["--help"]).exit_code == 0
