"""Micro-benchmark of what the request-event log costs a request: `RequestEventPublisher.publish()`
with its write-ahead log and without it, on a started publisher delivering to a NATS server from
the pinned wheel (JetStream, file storage, `sync_interval: always`; a free port, a temporary
directory), and `RequestEventWal.append` alone.

Usage:
    .venv/bin/python bench/request_event_wal.py [--events 100000] [--callers 32] [--rounds 3]

`--callers` concurrent "requests" each call `publish()` and yield to the loop once, as the API's
edge does before a response starts; the µs per call is the time spent inside `publish()` (what a
request pays), the best of `--rounds` rounds per case, the cases interleaved so that both see
the same machine. The log is in the temporary directory (the machine's disk, page cache).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import nats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from adapters.request_event_publisher import NATS_OPTIONS, RequestEventPublisher  # noqa: E402
from adapters.request_event_wal import RequestEventWal  # noqa: E402
from adapters.request_events import RequestEvent, ensure_audit_stream  # noqa: E402
from support.request_events import served_request_event  # noqa: E402
from support.servers import NatsServer  # noqa: E402


async def publish_cost(url: str, spool: Path, wal: bool, events: int, callers: int) -> float:
    """µs spent per `publish()` call, `callers` concurrent callers, until all acknowledged."""
    client = await nats.connect(url, **NATS_OPTIONS)
    publisher = RequestEventPublisher(client, spool_dir=spool, wal=wal)
    await publisher.start()
    ready = [served_request_event() for _ in range(events)]  # built outside the timed calls
    spent = 0.0

    async def caller(mine: list[RequestEvent]) -> None:
        nonlocal spent
        for e in mine:
            t = time.perf_counter()
            publisher.publish(e)
            spent += time.perf_counter() - t
            await asyncio.sleep(0)

    await asyncio.gather(*(caller(ready[i::callers]) for i in range(callers)))
    await publisher.flush(120)
    await publisher.aclose()
    await client.close()
    return spent / events * 1e6


def append_cost(directory: Path, events: int) -> float:
    wal = RequestEventWal(directory)
    ready = [served_request_event() for _ in range(events)]
    t = time.perf_counter()
    for e in ready:
        wal.append(e)
    took = time.perf_counter() - t
    wal.settle(events)
    wal.close()
    return took / events * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="icodrip-bench-wal-") as tmp:
        root = Path(tmp)
        server = NatsServer(root / "nats")
        server.start()
        try:
            client = await nats.connect(server.url)
            await ensure_audit_stream(client.jetstream())
            await client.close()
            best: dict[str, float] = {}
            for _ in range(args.rounds):
                for name, wal in (("publish() with the log", True), ("without", False)):
                    us = await publish_cost(
                        server.url, root / "spool", wal, args.events, args.callers
                    )
                    best[name] = min(best.get(name, us), us)
                name, us = "RequestEventWal.append alone", append_cost(root / "a", args.events)
                best[name] = min(best.get(name, us), us)
        finally:
            server.stop()
    for name, us in best.items():
        print(f"{name:<32} {us:6.2f} µs/call")
    extra = best["publish() with the log"] - best["without"]
    print(f"{'the log costs a request':<32} {extra:6.2f} µs")


if __name__ == "__main__":
    asyncio.run(main())
