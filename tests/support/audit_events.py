"""Request events for audit tests: realistic batches, publishing them, the worker script."""

from __future__ import annotations

import asyncio
import random
import time
import uuid

import msgspec
import nats

from adapters.request_events import (
    AUDIT_STREAM,
    REQUESTS_SUBJECT,
    RequestEvent,
    RequestEventBatch,
    batch_msg_id,
    ensure_audit_stream,
    new_event_id,
)
from projections.request_audit_query import RequestAuditStore

ORGS = [f"org_{uuid.uuid4().hex}" for _ in range(3)]
KEYS = {org: [f"key_{uuid.uuid4().hex}" for _ in range(2)] for org in ORGS}

WORKER = """
import asyncio, signal
from adapters.logging import configure_logging
from adapters.settings import Settings
from bootstrap.workers import run_audit

async def main() -> None:
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    await run_audit(Settings.from_env(), stopping)

configure_logging()
asyncio.run(main())
"""


def make_batch(size: int) -> list[RequestEvent]:
    batch = []
    for _ in range(size):
        org = random.choice([*ORGS, None])
        batch.append(
            RequestEvent(
                id=new_event_id(),
                request_id=new_event_id(),
                key_id=None if org is None else random.choice(KEYS[org]),
                key_hint="ak_live_…abcd",
                org_id=org,
                env=None if org is None else "live",
                method="GET",
                route="/v1/affiliates",
                path="/v1/affiliates",
                status=200 if org else 401,
                client_addr=f"10.0.0.{random.randint(1, 9)}",
                user_agent="svc/1.0",
                latency_ms=random.uniform(0.5, 9.0),
                occurred_at=time.time(),
            )
        )
    return batch


async def publish(
    url: str,
    batches: list[list[RequestEvent]],
    *,
    interval: float = 0.0,
    msg_id_suffix: str = "",
) -> None:
    """Publish each batch as one message (retrying with the same id until acknowledged)."""
    client = await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    try:
        js = client.jetstream()
        await ensure_audit_stream(js)
        for batch in batches:
            payload = msgspec.json.encode(RequestEventBatch(events=batch))
            headers = {"Nats-Msg-Id": batch_msg_id(batch) + msg_id_suffix}
            while True:
                try:
                    await js.publish(REQUESTS_SUBJECT, payload, headers=headers, timeout=2)
                    break
                except Exception:
                    await asyncio.sleep(0.2)
            if interval:
                await asyncio.sleep(interval)
    finally:
        await client.close()


async def consumer_drained(url: str, durable: str, timeout: float = 60.0) -> bool:
    """Whether, within `timeout` seconds, the durable consumer of the request-event stream has
    nothing left to deliver and nothing delivered awaiting its ack: every message was counted
    and acknowledged, so no redelivery (after its ack wait) can still change a count."""
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        deadline = time.monotonic() + timeout
        while True:
            info = await js.consumer_info(AUDIT_STREAM, durable)
            if info.num_pending == 0 and info.num_ack_pending == 0:
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.1)
    finally:
        await client.close()


def event_ids(store: RequestAuditStore) -> list[str]:
    with store.rows_by_event_id(10**12) as rows:
        return [row.event_id for row in rows]
