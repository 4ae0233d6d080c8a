"""The request-event publisher on real NATS: each event reaches the audit stream once by id,
`publish()` never waits on NATS, and nothing is lost across a NATS crash, a spill to disk, a
shutdown with NATS down, or a restart of the publishing process."""

from __future__ import annotations

import asyncio
import inspect
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.client import Client
from nats.js.api import DiscardPolicy, StorageType
from nats.js.errors import APIError

from adapters.request_event_publisher import NATS_OPTIONS, RequestEventPublisher
from adapters.request_event_spool import spool_files, spooled_events
from adapters.request_events import (
    AUDIT_STREAM,
    RequestEventBatch,
    batch_msg_id,
    ensure_audit_stream,
    new_event_id,
)
from support.request_events import publish_events, request_event
from support.servers import NatsServer

event = request_event


@dataclass
class Audit:
    """A stream to publish into: the real audit stream or a private one on a shared server."""

    url: str
    stream: str
    subject: str
    server: NatsServer | None = None  # a private server, which a test may kill

    async def batches(self) -> list[tuple[str, list[str]]]:
        """Every stored message as (Nats-Msg-Id, event ids), checking that each decodes."""
        client = await nats.connect(self.url)
        try:
            js = client.jetstream()
            info = await js.stream_info(self.stream)
            stored = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                msg = await js.get_msg(self.stream, seq=seq)
                events = msgspec.json.decode(msg.data or b"", type=RequestEventBatch).events
                assert msg.headers and msg.headers["Nats-Msg-Id"] == batch_msg_id(events)
                stored.append((msg.headers["Nats-Msg-Id"], [e.id for e in events]))
            return stored
        finally:
            await client.close()

    async def event_ids(self) -> Counter[str]:
        return Counter(i for _, ids in await self.batches() for i in ids)


@pytest.fixture
async def shared_audit(nats_server: NatsServer) -> AsyncIterator[Audit]:
    """An audit stream of this test's own on the session's server, deleted afterwards."""
    name = f"TEST_AUDIT_{uuid.uuid4().hex[:8].upper()}"
    prefix = f"test.{name.lower()}"
    client = await nats.connect(nats_server.url)
    try:
        await ensure_audit_stream(client.jetstream(), name=name, subjects=[f"{prefix}.>"])
        yield Audit(nats_server.url, name, f"{prefix}.requests")
        await client.jetstream().delete_stream(name)
    finally:
        await client.close()


@pytest.fixture
async def private_audit(private_nats: NatsServer) -> Audit:
    """The real audit stream on a server of this test's own."""
    client = await nats.connect(private_nats.url)
    await ensure_audit_stream(client.jetstream())
    await client.close()
    return Audit(private_nats.url, AUDIT_STREAM, "icodrip.audit.requests", private_nats)


@pytest.fixture
async def publishers(tmp_path: Path) -> AsyncIterator[Any]:
    """Makes started publishers on their own connections; closes them all at the end."""
    made: list[tuple[RequestEventPublisher, Client, Audit]] = []

    async def make(audit: Audit, *, start: bool = True, **options: Any) -> RequestEventPublisher:
        client = await nats.connect(audit.url, error_cb=quiet, **NATS_OPTIONS)
        options.setdefault("spool_dir", tmp_path / "spool")
        publisher = RequestEventPublisher(
            client, subject=audit.subject, stream=audit.stream, **options
        )
        if start:
            await publisher.start()
        made.append((publisher, client, audit))
        return publisher

    yield make
    for publisher, client, audit in made:
        await publisher.aclose(timeout=0.5)
        if audit.server and audit.server.proc and audit.server.proc.poll() is not None:
            # Closing a client still reconnecting to a dead server once left its reconnect
            # task running and hung the loop's shutdown: bring the server back first.
            audit.server.start()
        await client.close()


async def quiet(error: Exception) -> None:
    """nats-py's error callback: the tests expect connection errors."""


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_every_published_event_is_stored_exactly_once_and_decodes(
    shared_audit: Audit, publishers: Any
) -> None:
    publisher = await publishers(shared_audit)
    ids = publish_events(publisher, 2_000)
    await publisher.flush()

    stored = await shared_audit.event_ids()
    assert set(stored) == set(ids)
    assert set(stored.values()) == {1}
    assert publisher.published == 2_000 and publisher.pending == 0


async def test_publish_is_synchronous_and_returns_at_once_while_nats_is_down(
    private_nats: NatsServer, private_audit: Audit, publishers: Any
) -> None:
    publisher = await publishers(private_audit)
    private_nats.kill()
    await asyncio.sleep(0.1)

    assert not inspect.iscoroutinefunction(publisher.publish)
    started = time.perf_counter()
    results = [publisher.publish(event()) for _ in range(5_000)]  # no await in between
    elapsed = time.perf_counter() - started

    assert results == [None] * 5_000
    assert publisher.pending == 5_000
    assert elapsed < 5.0  # loose: a blocked call would wait out a NATS timeout per event


async def test_no_event_is_lost_when_nats_is_killed_and_restarted_mid_flow(
    private_nats: NatsServer, private_audit: Audit, publishers: Any
) -> None:
    publisher = await publishers(private_audit)
    ids: list[str] = []
    saw_outage = False

    async def steady_flow() -> None:  # 3,000 events over about 2 s
        nonlocal saw_outage
        for _ in range(100):
            ids.extend(publish_events(publisher, 30))
            saw_outage = saw_outage or not publisher.available
            await asyncio.sleep(0.02)

    flow = asyncio.create_task(steady_flow())
    await asyncio.sleep(0.6)
    await asyncio.to_thread(private_nats.kill)
    await asyncio.sleep(0.5)
    await asyncio.to_thread(private_nats.start)
    await flow
    await publisher.flush(timeout=60)

    assert saw_outage
    batches = await private_audit.batches()
    by_msg_id: dict[str, list[str]] = {}
    for msg_id, event_ids in batches:  # a duplicate is only ever a whole batch again
        assert by_msg_id.setdefault(msg_id, event_ids) == event_ids
    distinct = [i for event_ids in by_msg_id.values() for i in event_ids]
    assert len(distinct) == len(set(distinct)) == 3_000
    assert set(distinct) == set(ids)


async def test_a_batch_whose_ack_timed_out_is_sent_again_and_stored_once(
    private_nats: NatsServer, private_audit: Audit, publishers: Any
) -> None:
    publisher = await publishers(private_audit, ack_timeout=0.2)
    assert private_nats.proc is not None
    ids = []
    private_nats.proc.send_signal(signal.SIGSTOP)  # frozen: sends wait, acks never come
    try:
        ids.extend(publish_events(publisher, 100))
        await eventually(lambda: publisher.failures >= 2)
    finally:
        private_nats.proc.send_signal(signal.SIGCONT)
    await publisher.flush(timeout=30)

    stored = await private_audit.event_ids()  # every copy but the first was dropped
    assert set(stored) == set(ids) and set(stored.values()) == {1}
    assert publisher.duplicates >= 1


async def test_events_past_max_buffer_spill_to_spool_files_while_nats_is_down(
    private_nats: NatsServer, private_audit: Audit, publishers: Any, tmp_path: Path
) -> None:
    publisher = await publishers(private_audit, max_buffer=100, max_batch=50)
    private_nats.kill()
    ids = set()
    for _ in range(10):
        ids.update(publish_events(publisher, 100))
        await asyncio.sleep(0.02)

    await eventually(lambda: publisher.in_memory <= 100)
    assert spool_files(tmp_path / "spool")
    on_disk = {e.id for e in spooled_events(tmp_path / "spool")}
    assert len(on_disk) >= 900 and on_disk <= ids
    assert publisher.spooled == len(on_disk)


async def test_shutdown_with_nats_down_leaves_every_event_in_the_spool(
    private_nats: NatsServer, private_audit: Audit, publishers: Any, tmp_path: Path
) -> None:
    publisher = await publishers(private_audit)
    private_nats.kill()
    ids = publish_events(publisher, 500)

    await publisher.aclose(timeout=0.5)

    assert publisher.in_memory == 0
    assert sorted(e.id for e in spooled_events(tmp_path / "spool")) == sorted(ids)


async def test_the_spool_is_delivered_and_deleted_once_nats_is_back(
    private_nats: NatsServer, private_audit: Audit, publishers: Any, tmp_path: Path
) -> None:
    publisher = await publishers(private_audit, max_buffer=100, max_batch=50)
    private_nats.kill()
    ids = publish_events(publisher, 1_000)
    await eventually(lambda: publisher.spooled >= 900)

    private_nats.start()
    await publisher.flush(timeout=30)

    stored = await private_audit.event_ids()
    assert set(stored) == set(ids) and set(stored.values()) == {1}
    assert spool_files(tmp_path / "spool") == []


async def test_events_published_after_shutdown_go_to_the_spool(
    shared_audit: Audit, publishers: Any, tmp_path: Path
) -> None:
    publisher = await publishers(shared_audit)
    await publisher.aclose()
    late = [event() for _ in range(3)]
    for e in late:
        publisher.publish(e)  # a request that finished after shutdown began

    assert [e.id for e in spooled_events(tmp_path / "spool")] == [e.id for e in late]


async def test_a_new_publisher_delivers_the_spool_left_by_a_previous_process(
    private_nats: NatsServer, private_audit: Audit, publishers: Any, tmp_path: Path
) -> None:
    first = await publishers(private_audit, max_buffer=100)
    private_nats.kill()
    ids = publish_events(first, 700)
    await first.aclose(timeout=0.5)
    assert spool_files(tmp_path / "spool")

    private_nats.start()
    second = await publishers(private_audit)  # same spool_dir: a restarted process
    await second.flush(timeout=30)

    stored = await private_audit.event_ids()
    assert set(stored) == set(ids) and set(stored.values()) == {1}
    assert spool_files(tmp_path / "spool") == []


async def test_a_spool_file_cut_short_by_a_crash_still_delivers_its_whole_records(
    shared_audit: Audit, publishers: Any, tmp_path: Path
) -> None:
    writer = await publishers(shared_audit, start=False, max_batch=100)
    ids = publish_events(writer, 300)
    await writer.aclose()  # never started: everything goes to the spool
    [path] = spool_files(tmp_path / "spool")
    with path.open("ab") as f:
        f.write(b"\x00\x00\x40\x00\x12\x34\x56\x78half a reco")  # a torn last write

    reader = await publishers(shared_audit)
    await reader.flush(timeout=30)

    stored = await shared_audit.event_ids()
    assert set(stored) == set(ids) and set(stored.values()) == {1}


async def test_a_spool_file_still_being_written_is_not_taken_by_another_process(
    private_nats: NatsServer,
    private_audit: Audit,
    shared_audit: Audit,
    publishers: Any,
    tmp_path: Path,
) -> None:
    cut_off = await publishers(private_audit, max_buffer=10)
    private_nats.kill()
    ids = publish_events(cut_off, 200)
    await eventually(lambda: cut_off.spooled == 200)
    [path] = spool_files(tmp_path / "spool")

    neighbour = await publishers(shared_audit, rescan_interval=0.05)
    await neighbour.flush(timeout=5)
    assert path.exists() and len(list(spooled_events(tmp_path / "spool"))) == 200

    await cut_off.aclose(timeout=0.1)  # its file is released: the neighbour takes it
    await eventually(lambda: not spool_files(tmp_path / "spool"))
    await neighbour.flush(timeout=10)
    assert set(await shared_audit.event_ids()) == set(ids)


async def test_events_too_big_for_one_message_together_are_split_across_messages(
    shared_audit: Audit, publishers: Any
) -> None:
    publisher = await publishers(shared_audit)
    ids = []
    for _ in range(40):
        e = event(user_agent="x" * 100_000, path="/v1/affiliates/" + "y" * 1_000)
        ids.append(e.id)
        publisher.publish(e)
    await publisher.flush()

    batches = await shared_audit.batches()
    assert len(batches) > 1
    assert sorted(i for _, event_ids in batches for i in event_ids) == sorted(ids)


async def test_the_audit_stream_refuses_purge_and_delete_and_discards_new(
    shared_audit: Audit,
) -> None:
    client = await nats.connect(shared_audit.url)
    try:
        js = client.jetstream()
        await js.publish(shared_audit.subject, b"{}")
        config = (await js.stream_info(shared_audit.stream)).config
        assert config.discard == DiscardPolicy.NEW
        assert config.storage == StorageType.FILE
        assert config.deny_purge and config.deny_delete
        assert config.duplicate_window == 120
        with pytest.raises(APIError):
            await js.purge_stream(shared_audit.stream)
        with pytest.raises(APIError):
            await js.delete_msg(shared_audit.stream, 1)
        assert (await js.stream_info(shared_audit.stream)).state.messages == 1
    finally:
        await client.close()


async def test_ensure_audit_stream_is_idempotent_and_applies_new_limits(
    private_audit: Audit,
) -> None:
    client = await nats.connect(private_audit.url)
    try:
        js = client.jetstream()
        await ensure_audit_stream(js)
        await ensure_audit_stream(js, max_age_days=30, max_bytes=1 << 30)
        config = (await js.stream_info(AUDIT_STREAM)).config
        assert config.max_age == 30 * 86_400 and config.max_bytes == 1 << 30
        assert config.deny_purge and config.discard == DiscardPolicy.NEW
    finally:
        await client.close()


def test_event_ids_are_unique_and_ordered_by_creation_time() -> None:
    ids = [new_event_id() for _ in range(100_000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids[:10])
    millis = [i[:12] for i in ids]
    assert millis == sorted(millis)
