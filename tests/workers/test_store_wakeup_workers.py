"""On PostgreSQL the relay and the key-lookup worker are woken by the store (ADR 0018).

The relay here polls only once an hour: a key created after it went idle still reaches the
stream, because the store's NOTIFY woke it. The worker process's two followers each hold one
LISTEN connection while they run, and close it when they stop. Nothing here is timed.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import nats
import psycopg
import pytest

from adapters import nats as nats_adapter
from adapters.key_events import decode
from adapters.settings import Settings
from adapters.store_wakeup import StoreWakeup
from application.stores import open_registry
from bootstrap.workers import run_workers
from domain.actors import OPERATOR
from domain.key_format import Environment, KeyType
from domain.plans import Plan
from projections.live_key_lookup import open_key_lookup_view
from support.databases import POSTGRES_ADMIN_URL, fresh_database
from support.servers import NatsServer
from workers.relay import Relay


@pytest.fixture
def settings(tmp_path: Path, nats_server: NatsServer) -> Iterator[Settings]:
    stream = f"KEYS_{uuid.uuid4().hex[:8]}"
    with fresh_database("wakeup") as url:
        yield Settings.from_env(
            {
                "ICODRIP_DATABASE_URL": url,
                "ICODRIP_KEY_PEPPER": "wakeup-test-pepper-" + uuid.uuid4().hex,
                "ICODRIP_NATS_URL": nats_server.url,
                "ICODRIP_KEYS_STREAM": stream,
                "ICODRIP_KEYS_SUBJECT": f"test.{stream.lower()}",
            },
            data_dir=tmp_path / "data",
        )


async def eventually(check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("not in time")
        await asyncio.sleep(0.05)


async def test_the_relay_publishes_a_new_key_because_the_store_woke_it(
    settings: Settings,
) -> None:
    assert settings.nats_url
    registry = open_registry(settings)
    client = await nats.connect(settings.nats_url)
    js = client.jetstream()
    await nats_adapter.ensure_keys_stream(js, settings.keys_stream, settings.keys_subject)
    wakeup = await StoreWakeup.open(settings, registry.recorder, name="relay-test")
    relay = Relay(
        registry,
        js,
        stream=settings.keys_stream,
        subject_prefix=settings.keys_subject,
        poll_interval=3600.0,  # an idle relay would not look again during this test
        wakeup=wakeup,
    )
    task = asyncio.create_task(relay.run())
    try:
        org = await asyncio.to_thread(registry.register_organization, "Acme", Plan.PRO, OPERATOR)
        await eventually(lambda: relay.position == registry.recorder.max_notification_id())
        await asyncio.sleep(0.5)  # let it go idle (the assertions do not depend on it)
        woken = wakeup.wakeups

        await asyncio.to_thread(
            registry.create_key,
            org.id,
            name="New",
            env=Environment.LIVE,
            key_type=KeyType.SECRET,
            actor=OPERATOR,
        )
        head = registry.recorder.max_notification_id()
        await eventually(lambda: relay.position == head)

        info = await js.stream_info(settings.keys_stream)
        last = await js.get_msg(settings.keys_stream, seq=info.state.last_seq)
        assert decode(last.data or b"").type == "api_key.created"
        await eventually(lambda: wakeup.wakeups > woken)
    finally:
        relay.stop()
        await asyncio.wait_for(task, 30)  # its idle wait ends at once on stop
        await wakeup.aclose()
        await client.drain()
        registry.close()


def wakeup_backends(settings: Settings) -> list[str]:
    """Application names of the wake-up connections to the settings' database, LISTENing."""
    assert settings.database_url
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT application_name FROM pg_stat_activity"
            " WHERE datname = %s AND query LIKE 'LISTEN%%' ORDER BY 1",
            (settings.database_url.rsplit("/", 1)[1],),
        ).fetchall()
    return [row[0] for row in rows]


async def test_the_worker_process_listens_once_per_follower_and_closes_on_stop(
    settings: Settings,
) -> None:
    stopping = asyncio.Event()
    task = asyncio.create_task(
        run_workers(settings, ["relay", "key-lookup"], stopping=stopping, handle_signals=False)
    )
    registry = await asyncio.to_thread(open_registry, settings)
    try:
        expected = ["icodrip-wakeup-key-lookup", "icodrip-wakeup-relay"]
        await eventually(lambda: wakeup_backends(settings) == expected)

        await asyncio.to_thread(registry.register_organization, "Acme", Plan.PRO, OPERATOR)
        head = registry.recorder.max_notification_id()
        view = await asyncio.to_thread(open_key_lookup_view, settings)
        try:
            await eventually(lambda: (view.max_tracking_id(registry.name) or 0) >= head)
        finally:
            view.close()  # type: ignore[attr-defined]
    finally:
        stopping.set()
        await asyncio.wait_for(task, 30)
        registry.close()
    await eventually(lambda: wakeup_backends(settings) == [])
