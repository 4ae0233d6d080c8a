"""Micro-benchmark of request-event publishing: batched publisher vs one awaited JetStream
publish per event, against a NATS server started from the pinned wheel (JetStream, file
storage, `sync_interval: always` as in tests) on a free port and a temporary directory.

Usage:
    .venv/bin/python bench/request_events.py [--events 50000] [--baseline-events 10000]
                                             [--callers 32]

Prints, for each case, events/s from the first publish to the last acknowledgement, the
µs spent in each `publish()` call (what a request pays), and the process CPU µs per event
(the API process, not NATS, is the bottleneck; see NOTES "Measured costs"):
- RequestEventPublisher: `publish()` per event from `--callers` concurrent "requests"
  (each yields to the loop once), batches of up to 256 acknowledged by the stream; then a
  steady 5,000 events/s for 2 s (events per batch at moderate load, whole-process CPU);
- baseline: one awaited `js.publish` (one message, one ack) per event, 1 caller and
  `--callers` concurrent callers (bounded by `--baseline-events`: each is a stored message).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import nats
from nats.aio.client import Client

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from adapters.request_event_publisher import NATS_OPTIONS, RequestEventPublisher  # noqa: E402
from adapters.request_events import (  # noqa: E402
    AUDIT_STREAM,
    REQUESTS_SUBJECT,
    RequestEvent,
    RequestEventBatch,
    ensure_audit_stream,
    new_event_id,
)
from support.request_events import served_request_event  # noqa: E402
from support.servers import NatsServer  # noqa: E402


def report(name: str, events: int, seconds: float, cpu: float, call_us: float) -> None:
    print(
        f"{name:<48} {events / seconds:>9,.0f} events/s  {call_us:>7.2f} µs/call"
        f"  {cpu / events * 1e6:>6.1f} CPU µs/event"
    )


async def concurrently(
    events: int, callers: int, one: Callable[[RequestEvent], Awaitable[float]]
) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, µs per call) for `events` calls from `callers` callers;
    `one` returns the seconds its call took (what the request waited)."""
    per_caller = events // callers
    spent = [0.0]

    async def caller() -> None:
        for _ in range(per_caller):
            took = await one(served_request_event())
            spent[0] += took

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return (
        time.perf_counter() - wall,
        time.process_time() - cpu,
        spent[0] / (per_caller * callers) * 1e6,
    )


async def batched(url: str, events: int, callers: int, spool: Path) -> None:
    client = await nats.connect(url, **NATS_OPTIONS)
    publisher = RequestEventPublisher(client, spool_dir=spool)
    await publisher.start()

    async def request(e: RequestEvent) -> float:
        t = time.perf_counter()
        publisher.publish(e)
        spent = time.perf_counter() - t
        await asyncio.sleep(0)  # a request yields to the loop at least once
        return spent

    await concurrently(2_000, callers, request)  # warm up
    await publisher.flush(60)
    js = client.jetstream()
    messages = (await js.stream_info(AUDIT_STREAM)).state.messages
    start_cpu, start = time.process_time(), time.perf_counter()
    _, _, call_us = await concurrently(events, callers, request)
    await publisher.flush(120)
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    report(f"RequestEventPublisher, {callers} callers", events, wall, cpu, call_us)
    batches = (await js.stream_info(AUDIT_STREAM)).state.messages - messages
    print(f"{'':<48} {events / batches:>9.1f} events/batch ({batches} acknowledged messages)")
    await paced(publisher, client, rate=5_000, seconds=2.0)
    await publisher.aclose()
    await client.close()


async def paced(
    publisher: RequestEventPublisher, client: Client, rate: int, seconds: float
) -> None:
    """A steady `rate` of events for `seconds`: how big batches are at moderate load."""
    js = client.jetstream()
    messages = (await js.stream_info(AUDIT_STREAM)).state.messages
    published, tick = publisher.published, 0.001
    start_cpu, start = time.process_time(), time.perf_counter()
    sent = 0
    while (elapsed := time.perf_counter() - start) < seconds:
        while sent < elapsed * rate:
            publisher.publish(served_request_event())
            sent += 1
        await asyncio.sleep(tick)
    await publisher.flush(60)
    cpu = time.process_time() - start_cpu
    batches = (await js.stream_info(AUDIT_STREAM)).state.messages - messages
    print(
        f"{f'RequestEventPublisher, paced {rate:,}/s':<48} {sent:>9,} events  "
        f"{(publisher.published - published) / batches:>7.1f} events/batch"
        f"  {cpu / sent * 1e6:>6.1f} CPU µs/event (whole process)"
    )


async def unbatched(url: str, events: int, callers: int) -> None:
    client = await nats.connect(url, **NATS_OPTIONS)
    js = client.jetstream()
    encoder = msgspec.json.Encoder()

    async def one(e: RequestEvent) -> float:
        t = time.perf_counter()
        await js.publish(
            REQUESTS_SUBJECT,
            encoder.encode(RequestEventBatch(events=[e])),
            headers={"Nats-Msg-Id": e.id},
        )
        return time.perf_counter() - t

    await concurrently(500, callers, one)  # warm up
    wall, cpu, call_us = await concurrently(events, callers, one)
    report(f"one awaited js.publish per event, {callers} caller(s)", events, wall, cpu, call_us)
    await client.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--baseline-events", type=int, default=10_000)
    parser.add_argument("--callers", type=int, default=32)
    args = parser.parse_args()

    n = 100_000
    t = time.perf_counter()
    for _ in range(n):
        new_event_id()
    print(f"{'new_event_id()':<48} {(time.perf_counter() - t) / n * 1e6:>31.2f} µs/call")

    with tempfile.TemporaryDirectory(prefix="icodrip-bench-") as tmp:
        server = NatsServer(Path(tmp) / "nats")
        server.start()
        try:
            client = await nats.connect(server.url)
            await ensure_audit_stream(client.jetstream())
            await client.close()
            await batched(server.url, args.events, args.callers, Path(tmp) / "spool")
            for callers in (1, args.callers):
                await unbatched(server.url, args.baseline_events, callers)
        finally:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
