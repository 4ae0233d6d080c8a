"""Request events reach the audit stream on real NATS: each id once, through a server crash,
through an outage longer than memory allows (spill to disk, delivered by the next process),
and through a shutdown while NATS is down; `publish()` never waits; the stream keeps history.
"""

from __future__ import annotations

import asyncio
import inspect
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client
from nats.js.api import DiscardPolicy
from nats.js.client import JetStreamContext
from nats.js.errors import APIError

from adapters.nats import connect
from adapters.request_event_publisher import RequestEventPublisher
from adapters.request_events import (
    AUDIT_STREAM,
    RequestEvent,
    RequestEventBatch,
    ensure_audit_stream,
)
from support.request_events import request_event
from support.servers import NatsServer

_decoder = msgspec.json.Decoder(RequestEventBatch)


def event(n: int = 0) -> RequestEvent:
    return request_event(request_id=f"req-{n}", env="test", user_agent="pytest", latency_ms=1.5)


async def stream_event_ids(js: JetStreamContext, stream: str) -> list[str]:
    """Every event id on the stream, in stream order, duplicates included."""
    info = await js.stream_info(stream)
    ids: list[str] = []
    if not info.state.messages:
        return ids
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        data = (await js.get_msg(stream, seq=seq)).data or b""
        ids += [e.id for e in _decoder.decode(data).events]
    return ids


def spool_contents(spool: Path) -> list[Path]:
    return sorted(spool.iterdir()) if spool.exists() else []


@asynccontextmanager
async def connected(server: NatsServer) -> AsyncIterator[tuple[Client, JetStreamContext]]:
    """A client as the application makes one (reconnects forever), closed on exit."""
    client = await connect(server.url, "test-request-events", wait=10)
    try:
        yield client, client.jetstream()
    finally:
        await client.close()


async def deliver_spool(server: NatsServer, spool: Path) -> list[str]:
    """What a new process finds in `spool` once NATS is back: the event ids then on the stream."""
    async with connected(server) as (client, js):
        successor = publisher(client, spool)
        await successor.start()
        await successor.flush(timeout=20)
        await successor.aclose()
        return await stream_event_ids(js, AUDIT_STREAM)


@pytest.fixture
async def shared(nats_server: NatsServer) -> AsyncIterator[tuple[JetStreamContext, str, str]]:
    """A protected audit stream of this test's own on the session server: (js, stream, subject)."""
    name = f"AUDIT_{uuid.uuid4().hex[:10].upper()}"
    prefix = f"test.{name.lower()}"
    async with connected(nats_server) as (_, js):
        await ensure_audit_stream(js, name=name, subjects=[f"{prefix}.>"])
        try:
            yield js, name, f"{prefix}.requests"
        finally:
            await js.delete_stream(name)


@pytest.fixture
async def private(private_nats: NatsServer) -> AsyncIterator[tuple[Client, JetStreamContext]]:
    """A client of this test's own server, which has the real audit stream."""
    async with connected(private_nats) as (client, js):
        await ensure_audit_stream(js)
        yield client, js


def publisher(client: Client, spool: Path, **options: Any) -> RequestEventPublisher:
    return RequestEventPublisher(client, spool_dir=spool, **options)


# -- delivery -------------------------------------------------------------------------------


async def test_published_events_arrive_on_the_stream_each_id_once(
    shared: tuple[JetStreamContext, str, str], nats_server: NatsServer, tmp_path: Path
) -> None:
    js, stream, subject = shared
    sent = [event(n) for n in range(1_000)]
    async with connected(nats_server) as (client, _):
        pub = publisher(client, tmp_path / "spool", subject=subject, stream=stream, max_batch=64)
        await pub.start()
        for e in sent:
            pub.publish(e)
        await pub.flush(timeout=10)
        await pub.aclose()

    info = await js.stream_info(stream)
    on_stream = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(stream, seq=seq)
        assert msg.subject == subject
        assert msg.headers and msg.headers["Nats-Msg-Id"].startswith("req-")
        on_stream += _decoder.decode(msg.data or b"").events
    assert on_stream == sent  # decodable, complete, in order, no duplicates
    assert info.state.messages < len(sent) / 10  # batched, not one message per event
    assert (pub.published, pub.pending) == (len(sent), 0)


# -- NATS down ------------------------------------------------------------------------------


async def test_publish_returns_at_once_while_nats_is_down(
    private_nats: NatsServer, private: tuple[Client, JetStreamContext], tmp_path: Path
) -> None:
    client, _ = private
    pub = publisher(client, tmp_path / "spool", ack_timeout=0.5)
    await pub.start()
    private_nats.kill()
    assert not inspect.iscoroutinefunction(pub.publish)

    slowest = 0.0
    for n in range(2_000):
        started = time.perf_counter()
        result = pub.publish(event(n))  # type: ignore[func-returns-value]  # no await, no raise
        slowest = max(slowest, time.perf_counter() - started)
        assert result is None
        if n % 100 == 0:
            await asyncio.sleep(0.01)  # let the publisher try (and fail) to send
    assert slowest < 0.05  # a call that waited on NATS would take the 0.5 s ack timeout
    assert pub.pending == 2_000
    assert pub.published == 0
    await pub.aclose(timeout=0.1)


async def test_every_event_survives_a_server_crash_once(
    private_nats: NatsServer, private: tuple[Client, JetStreamContext], tmp_path: Path
) -> None:
    client, js = private
    pub = publisher(client, tmp_path / "spool", ack_timeout=0.5)
    await pub.start()
    ids: list[str] = []

    async def steady_flow(total: int = 3_000, ticks: int = 100) -> None:
        for _ in range(ticks):  # ~30 events every 20 ms: ~2 s
            for _ in range(total // ticks):
                e = event(len(ids))
                ids.append(e.id)
                pub.publish(e)
            await asyncio.sleep(0.02)

    waiting_at_restart: list[int] = []

    async def crash() -> None:
        await asyncio.sleep(0.6)
        private_nats.kill()
        await asyncio.sleep(0.4)
        waiting_at_restart.append(pub.pending)
        await asyncio.to_thread(private_nats.start)

    await asyncio.gather(steady_flow(), crash())
    await pub.flush(timeout=30)
    await pub.aclose()

    on_stream = await stream_event_ids(js, AUDIT_STREAM)
    duplicates = {i: n for i, n in Counter(on_stream).items() if n > 1}
    print(
        f"crash: {len(on_stream)} ids on the stream, {len(duplicates)} duplicated, "
        f"{pub.duplicates} batches the stream dropped as re-sends"
    )
    assert len(ids) == 3_000 and waiting_at_restart[0] > 0  # events did wait for the server
    assert set(on_stream) == set(ids)
    assert duplicates == {}


async def test_a_batch_whose_ack_timed_out_lands_once_when_sent_again(
    private_nats: NatsServer, private: tuple[Client, JetStreamContext], tmp_path: Path
) -> None:
    client, js = private
    pub = publisher(client, tmp_path / "spool", ack_timeout=0.3)
    await pub.start()
    assert private_nats.proc is not None
    private_nats.proc.send_signal(signal.SIGSTOP)  # alive but silent: every send times out
    try:
        sent = [event(n) for n in range(100)]
        for e in sent:
            pub.publish(e)
        await asyncio.sleep(1.5)  # several re-sends of the same batch queue up behind it
        assert pub.failures >= 2 and pub.published == 0
    finally:
        private_nats.proc.send_signal(signal.SIGCONT)
    await pub.flush(timeout=20)
    await pub.aclose()

    on_stream = await stream_event_ids(js, AUDIT_STREAM)
    assert sorted(on_stream) == sorted(e.id for e in sent)  # the first send landed; no copy
    assert pub.duplicates >= 1  # the stream said so for the re-send


# -- spill to disk, shutdown ----------------------------------------------------------------


async def test_a_long_outage_spills_to_disk_and_the_next_process_delivers_it(
    private_nats: NatsServer, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    ids: list[str] = []
    async with connected(private_nats) as (client, js):
        await ensure_audit_stream(js)
        pub = publisher(client, spool, max_batch=20, max_buffer=100, ack_timeout=0.2)
        await pub.start()
        private_nats.kill()
        per_tick, tick = 20, 0.02
        most_in_memory = 0
        for _ in range(75):  # 1,500 events over ~1.5 s, all while NATS is down
            for _ in range(per_tick):
                e = event(len(ids))
                ids.append(e.id)
                pub.publish(e)
            await asyncio.sleep(tick)
            most_in_memory = max(most_in_memory, pub.in_memory)
        # Memory holds `max_buffer` plus what arrives while a send awaits its acknowledgement
        # timeout or a spill is being written; how much that is depends on the machine's load,
        # so the promise checked is the shape: far less than the outage brought.
        assert most_in_memory < len(ids) / 2
        assert spool_contents(spool)
        await pub.aclose(timeout=0.5)  # the process ends while NATS is still down
        assert pub.published == 0

    private_nats.start()
    on_stream = await deliver_spool(private_nats, spool)
    assert sorted(on_stream) == sorted(ids)  # every event, each once
    assert spool_contents(spool) == []


async def test_shutdown_while_nats_is_down_keeps_every_event_in_the_spool(
    private_nats: NatsServer, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    sent: list[str] = []
    async with connected(private_nats) as (client, js):
        await ensure_audit_stream(js)
        pub = publisher(client, spool, max_batch=50, ack_timeout=0.3)
        await pub.start()
        private_nats.kill()
        for n in range(777):
            e = event(n)
            sent.append(e.id)
            pub.publish(e)
            if n == 500:
                await asyncio.sleep(0.1)  # the publisher is trying to send when shutdown comes
        await pub.aclose(timeout=0.5)
        assert (pub.in_memory, pub.published, pub.spooled) == (0, 0, len(sent))
        assert spool_contents(spool)

    private_nats.start()
    assert sorted(await deliver_spool(private_nats, spool)) == sorted(sent)


# -- the stream -----------------------------------------------------------------------------


async def test_the_audit_stream_refuses_purge(shared: tuple[JetStreamContext, str, str]) -> None:
    js, stream, subject = shared
    await js.publish(subject, b"{}")
    with pytest.raises(APIError):
        await js.purge_stream(stream)
    assert (await js.stream_info(stream)).state.messages == 1


async def test_the_audit_stream_refuses_message_delete(
    shared: tuple[JetStreamContext, str, str],
) -> None:
    js, stream, subject = shared
    ack = await js.publish(subject, b"{}")
    with pytest.raises(APIError):
        await js.delete_msg(stream, ack.seq)
    assert (await js.get_msg(stream, seq=ack.seq)).data == b"{}"


async def test_the_audit_stream_is_configured_to_discard_new_messages(
    shared: tuple[JetStreamContext, str, str],
) -> None:
    js, stream, _ = shared
    config = (await js.stream_info(stream)).config
    assert config.discard == DiscardPolicy.NEW
    assert (config.deny_purge, config.deny_delete) == (True, True)


async def test_a_full_audit_stream_refuses_new_events_and_keeps_the_old(
    shared: tuple[JetStreamContext, str, str],
) -> None:
    js, stream, subject = shared
    await ensure_audit_stream(
        js, name=stream, subjects=[subject[: -len("requests")] + ">"], max_bytes=4096
    )
    first = await js.publish(subject, b"first" * 100)
    with pytest.raises(APIError):
        for _ in range(100):
            await js.publish(subject, b"x" * 500)
    assert (await js.get_msg(stream, seq=first.seq)).data == b"first" * 100
