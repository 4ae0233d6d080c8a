"""The request-event write-ahead log: an event is on disk when `publish()` returns, so a process
killed -9 the next instant loses none; its log leaves once the events are acknowledged or
spooled; a log left behind is delivered by the next publisher on the directory (a restarted
process or a sibling worker), never a live process's log; a full disk costs durability, never
a request.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.client import Client

from adapters.request_event_publisher import NATS_OPTIONS, RequestEventPublisher
from adapters.request_event_spool import read_locked, spooled_events
from adapters.request_event_wal import (
    RequestEventWal,
    claim_wal_segment,
    logged_events,
    wal_files,
)
from adapters.request_events import (
    AUDIT_STREAM,
    RequestEventBatch,
    ensure_audit_stream,
)
from support.request_events import publish_events, request_event
from support.servers import NatsServer

_batch = msgspec.json.Decoder(RequestEventBatch)


event = request_event


def claimed_ids(path: Path) -> list[str]:
    claim = claim_wal_segment(path, max_batch=100, max_bytes=1 << 20)
    assert claim is not None
    try:
        return [e.id for batch in claim.batches for e in _batch.decode(batch.payload).events]
    finally:
        os.close(claim.fd)


async def stream_ids(url: str) -> Counter[str]:
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        info = await js.stream_info(AUDIT_STREAM)
        ids: Counter[str] = Counter()
        if info.state.messages:
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                data = (await js.get_msg(AUDIT_STREAM, seq=seq)).data or b""
                ids.update(e.id for e in _batch.decode(data).events)
        return ids
    finally:
        await client.close()


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.fixture
async def audit(private_nats: NatsServer) -> str:
    """The URL of a NATS server of this test's own, with the real audit stream."""
    client = await nats.connect(private_nats.url)
    await ensure_audit_stream(client.jetstream())
    await client.close()
    return private_nats.url


@pytest.fixture
async def publishers(tmp_path: Path) -> AsyncIterator[Any]:
    """Makes started publishers on their own connections; closes them all at the end."""
    made: list[tuple[RequestEventPublisher, Client]] = []

    async def make(url: str, *, start: bool = True, **options: Any) -> RequestEventPublisher:
        client = await nats.connect(url, error_cb=quiet, **NATS_OPTIONS)
        options.setdefault("spool_dir", tmp_path / "spool")
        publisher = RequestEventPublisher(client, **options)
        if start:
            await publisher.start()
        made.append((publisher, client))
        return publisher

    yield make
    for publisher, client in made:
        await publisher.aclose(timeout=0.5)
        await client.close()


async def quiet(error: Exception) -> None:
    """nats-py's error callback: the tests expect connection errors."""


# -- the log on its own ------------------------------------------------------------------------


def test_an_event_is_in_the_log_when_append_returns_and_leaves_it_once_settled(
    tmp_path: Path,
) -> None:
    wal = RequestEventWal(tmp_path)
    events = [event() for _ in range(10)]
    for e in events:
        wal.append(e)
    [path] = wal_files(tmp_path)
    assert [e.id for e in logged_events(tmp_path)] == [e.id for e in events]

    wal.settle(4)  # a batch acknowledged: the log says so, for a successor
    assert [e.id for e in logged_events(tmp_path)] == [e.id for e in events[4:]]
    assert wal.paths == {path}

    wal.settle(6)  # all of it: the current segment is emptied, not left to grow
    assert path.stat().st_size == 0 and list(logged_events(tmp_path)) == []
    assert wal.close() == 0
    assert wal_files(tmp_path) == []


def test_a_live_log_cannot_be_claimed_and_a_dead_one_yields_its_unsettled_events(
    tmp_path: Path,
) -> None:
    wal = RequestEventWal(tmp_path)
    events = [event() for _ in range(300)]
    for e in events:
        wal.append(e)
    wal.settle(120)
    [path] = wal_files(tmp_path)
    assert read_locked(path) is None  # locked by its writer: nobody else takes it

    assert wal.close() == 180  # as a dead process leaves it: unlocked, unsettled events in it
    assert claimed_ids(path) == [e.id for e in events[120:]]
    assert claimed_ids(path) == claimed_ids(path)  # sealed alike by whoever claims it


def test_segments_rotate_at_their_size_and_go_once_all_their_events_are_settled(
    tmp_path: Path,
) -> None:
    probe = RequestEventWal(tmp_path / "probe")
    probe.append(event())
    record = wal_files(tmp_path / "probe")[0].stat().st_size  # every event() is as long
    probe.settle(1)
    probe.close()
    wal = RequestEventWal(tmp_path, max_segment_bytes=25 * record)
    for _ in range(100):
        wal.append(event())
    segments = wal_files(tmp_path)
    assert len(segments) == 4  # 25 events each

    wal.settle(35)  # the first segment's events (and a few of the second's)
    assert wal_files(tmp_path) == segments[1:]
    wal.settle(65)
    assert wal_files(tmp_path) == segments[-1:]  # the current one stays, empty
    assert list(logged_events(tmp_path)) == []
    wal.close()
    assert wal_files(tmp_path) == []


def test_a_log_cut_short_by_a_machine_crash_still_gives_its_whole_records(tmp_path: Path) -> None:
    wal = RequestEventWal(tmp_path)
    events = [event() for _ in range(5)]
    for e in events:
        wal.append(e)
    wal.close()
    [path] = wal_files(tmp_path)
    with path.open("ab") as f:
        f.write(b"\x00\x00\x01\x00\x12\x34\x56\x78half a rec")
    assert claimed_ids(path) == [e.id for e in events]


def test_a_failing_disk_keeps_events_in_memory_and_the_log_resumes_when_it_can(
    tmp_path: Path,
) -> None:
    wal = RequestEventWal(tmp_path)
    wal.append(first := event())
    [path] = wal_files(tmp_path)
    segment_fd = wal._segment.fd  # type: ignore[union-attr]
    saved = os.dup(segment_fd)
    full = os.open("/dev/full", os.O_WRONLY)  # every write: ENOSPC
    try:
        os.dup2(full, segment_fd)
        for _ in range(3):
            wal.append(event())  # never raises
        assert (wal.durable, wal.failures, wal.unprotected) == (False, 3, 3)
    finally:
        os.dup2(saved, segment_fd)
        os.close(saved)
        os.close(full)
    wal.append(last := event())  # space again
    assert wal.durable and wal.unprotected == 3
    assert [e.id for e in logged_events(tmp_path)] == [first.id, last.id]

    wal.settle(4)  # the first, the three kept in memory only, and not yet the last
    assert wal.unprotected == 0
    assert [e.id for e in logged_events(tmp_path)] == [last.id]
    wal.settle(1)
    wal.close()
    assert not path.exists()


def test_the_log_is_synced_only_when_events_waited_a_whole_interval(tmp_path: Path) -> None:
    wal = RequestEventWal(tmp_path)
    for _ in range(5):
        wal.append(event())
    assert wal.sync_due() == []  # nothing has waited an interval yet
    wal.settle(5)
    wal.append(event())
    assert wal.sync_due() == []  # everything appended before the last call was settled
    fds = wal.sync_due()  # the last event has waited a whole interval: sync
    assert len(fds) == 1
    for fd in fds:
        os.close(fd)
    wal.settle(1)
    wal.close()


# -- with the publisher ------------------------------------------------------------------------


async def test_the_log_is_emptied_as_events_are_acknowledged_and_gone_after_close(
    audit: str, publishers: Any, tmp_path: Path
) -> None:
    publisher = await publishers(audit)
    ids = publish_events(publisher, 500)
    assert {e.id for e in logged_events(tmp_path / "spool")} == set(ids)
    await publisher.flush()
    assert list(logged_events(tmp_path / "spool")) == []

    await publisher.aclose()
    assert list((tmp_path / "spool").iterdir()) == []  # nothing left behind
    assert set(await stream_ids(audit)) == set(ids)


async def test_spilled_events_leave_the_log(
    private_nats: NatsServer, audit: str, publishers: Any, tmp_path: Path
) -> None:
    publisher = await publishers(audit, max_buffer=100, max_batch=50)
    private_nats.kill()
    for _ in range(1_000):
        publisher.publish(event())
    await eventually(lambda: publisher.spooled >= 900)
    assert len(list(logged_events(tmp_path / "spool"))) == 1_000 - publisher.spooled
    await publisher.aclose(timeout=0.2)
    assert wal_files(tmp_path / "spool") == []
    assert len(list(spooled_events(tmp_path / "spool"))) == 1_000


async def test_a_log_left_behind_is_delivered_by_a_new_publisher_and_by_a_live_sibling(
    audit: str, publishers: Any, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    sibling = await publishers(audit, rescan_interval=0.05)
    sibling.publish(first := event())
    left = [first.id]
    for _ in range(2):  # two dead processes' logs
        wal = RequestEventWal(spool)
        for _ in range(150):
            e = event()
            left.append(e.id)
            wal.append(e)
        wal.close()
    assert len(wal_files(spool)) == 3  # theirs and the sibling's own (live, locked)

    await eventually(lambda: len(wal_files(spool)) == 1)  # the sibling's own log stays
    await sibling.flush()
    stored = await stream_ids(audit)
    assert set(stored) == set(left) and set(stored.values()) == {1}


async def test_publishers_sharing_a_directory_never_take_each_others_live_log(
    audit: str, publishers: Any, tmp_path: Path
) -> None:
    first = await publishers(audit, rescan_interval=0.02)
    second = await publishers(audit, rescan_interval=0.02)
    ids = []
    for n in range(2_000):
        e = event()
        ids.append(e.id)
        (first if n % 2 else second).publish(e)
        if n % 100 == 0:
            await asyncio.sleep(0.01)
    await first.flush()
    await second.flush()
    assert len(wal_files(tmp_path / "spool")) == 2
    await first.aclose()
    await second.aclose()

    stored = await stream_ids(audit)
    assert set(stored) == set(ids) and set(stored.values()) == {1}
    assert list((tmp_path / "spool").iterdir()) == []


async def test_a_failing_disk_loses_no_request_and_no_event(
    audit: str, publishers: Any, tmp_path: Path
) -> None:
    publisher = await publishers(audit)
    publisher.publish(event())
    wal = publisher._wal
    assert wal is not None and wal._segment is not None
    segment_fd, saved = wal._segment.fd, os.dup(wal._segment.fd)
    full = os.open("/dev/full", os.O_WRONLY)
    ids = []
    try:
        os.dup2(full, segment_fd)
        ids.extend(publish_events(publisher, 300))  # never raises: delivered from memory
        assert not publisher.durable and publisher.wal_failures == 300
        await publisher.flush()
    finally:
        os.dup2(saved, segment_fd)
        os.close(saved)
        os.close(full)
    publisher.publish(e := event())
    assert publisher.durable
    await publisher.flush()
    assert set(ids) | {e.id} <= set(await stream_ids(audit))


# -- kill -9 ----------------------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import asyncio, sys, time
    from pathlib import Path

    import nats

    from adapters.request_event_publisher import NATS_OPTIONS, RequestEventPublisher
    from adapters.request_events import RequestEvent, new_event_id


    async def main(url: str, spool: str, wal: str) -> None:
        client = await nats.connect(url, **NATS_OPTIONS)
        publisher = RequestEventPublisher(client, spool_dir=Path(spool), wal=wal == "on")
        await publisher.start()
        while True:  # a request answered = an id written after publish() returned
            ids = []
            for _ in range(10):
                e = RequestEvent(
                    id=new_event_id(), request_id=new_event_id(), key_id="key_x",
                    key_hint=None, org_id="org_x", env="live", method="GET", route="/",
                    path="/", status=200, client_addr=None, user_agent=None,
                    latency_ms=1.0, occurred_at=time.time(),
                )
                publisher.publish(e)
                ids.append(e.id)
            sys.stdout.write("".join(i + "\\n" for i in ids))
            sys.stdout.flush()
            await asyncio.sleep(0.002)


    asyncio.run(main(*sys.argv[1:]))
    """
)


def answered(out: Path) -> list[str]:
    return [line for line in out.read_text().split("\n")[:-1] if len(line) == 32]


async def killed_mid_stream(private_nats: NatsServer, tmp_path: Path, wal: str) -> list[str]:
    """A publishing process killed -9 while NATS hangs (its acks never come): its answered ids.

    NATS is frozen for the last few hundred events, so that they are certainly unacknowledged
    when the process dies, wherever its batching was."""
    assert private_nats.proc is not None
    script, out = tmp_path / "child.py", tmp_path / "answered.txt"
    script.write_text(_CHILD)
    with out.open("w") as stdout:
        child = subprocess.Popen(
            [sys.executable, str(script), private_nats.url, str(tmp_path / "spool"), wal],
            stdout=stdout,
        )
    try:
        await eventually(lambda: len(answered(out)) >= 500, timeout=30)
        private_nats.proc.send_signal(signal.SIGSTOP)
        try:
            seen = len(answered(out))
            await eventually(lambda: len(answered(out)) >= seen + 300)
            child.send_signal(signal.SIGKILL)
            child.wait(10)
        finally:
            private_nats.proc.send_signal(signal.SIGCONT)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    return answered(out)


async def test_a_process_killed_9_loses_no_event_it_answered_for(
    private_nats: NatsServer, audit: str, publishers: Any, tmp_path: Path
) -> None:
    ids = await killed_mid_stream(private_nats, tmp_path, wal="on")
    assert wal_files(tmp_path / "spool")  # left behind, unlocked by the kernel

    successor = await publishers(audit)  # the restarted process, on the same directory
    await successor.flush(timeout=30)
    await successor.aclose()

    stored = await stream_ids(audit)
    missing = set(ids) - set(stored)
    assert not missing, f"{len(missing)} of {len(ids)} answered events never reached the stream"
    assert list((tmp_path / "spool").iterdir()) == []


async def test_without_the_log_a_process_killed_9_loses_events_it_answered_for(
    private_nats: NatsServer, audit: str, publishers: Any, tmp_path: Path
) -> None:
    """The test above fails without the log: this is what it would see."""
    ids = await killed_mid_stream(private_nats, tmp_path, wal="off")
    successor = await publishers(audit)
    await successor.flush(timeout=30)

    stored = await stream_ids(audit)
    # Most of the 300 answered while NATS hung (a batch already in the socket may still land).
    assert len(set(ids) - set(stored)) >= 150
