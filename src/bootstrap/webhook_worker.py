"""Assembling the webhook worker: two stream consumers that enqueue, and a dispatcher that sends.

`icodrip worker webhooks` (and `icodrip dev`) run it. Its parts:
- the key stream on its own durable consumer (`icodrip-webhooks`): lifecycle events, and the
  endpoints' own requests (a test, a retry), fanned out into the delivery log;
- the request stream on another (`icodrip-webhooks-requests`): each key's first 429 of an
  hour becomes `rate_limit.exceeded`;
- the expiry notices falling due (`api_key.expiring`), looked for every `NOTICE_INTERVAL`;
- the dispatcher, which sends what is due (`workers.webhook_delivery`);
- pruning: finished deliveries older than `ICODRIP_WEBHOOKS_KEEP_DAYS` (30) go, hourly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from datetime import timedelta

import structlog
from nats.js.client import JetStreamContext

from adapters import nats as nats_adapter
from adapters.request_events import ensure_audit_stream
from adapters.settings import Settings
from adapters.webhook_sender import WebhookSender
from application.stores import open_registry
from bootstrap.webhooks import webhooks_for
from projections.request_audit_query import IngestResult
from projections.webhook_delivery_store import open_delivery_log
from workers.audit_ingest import AuditIngester, AuditIngestSettings
from workers.webhook_delivery import LEASE, Dispatcher
from workers.webhook_fanout import WebhookFanout
from workers.webhook_streams import KeyEventFanout, RateLimitFanout

log = structlog.get_logger()

#: How often due expiry notices are looked for, in seconds.
NOTICE_INTERVAL = 30.0
PRUNE_INTERVAL = 3600.0


async def run_webhooks(settings: Settings, stopping: asyncio.Event) -> None:
    """The webhook worker (see the module docstring)."""
    if not settings.nats_url:
        raise RuntimeError("ICODRIP_NATS_URL is not set (icodrip dev starts its own NATS)")
    nats_url = settings.nats_url
    async with contextlib.AsyncExitStack() as opened:
        registry = await asyncio.to_thread(open_registry, settings)
        opened.callback(registry.close)
        deliveries = await asyncio.to_thread(open_delivery_log, settings)
        opened.callback(deliveries.close)
        webhooks = webhooks_for(registry, settings)
        sender = WebhookSender(allow_private=settings.webhooks_allow_private)
        opened.push_async_callback(sender.aclose)
        fanout = WebhookFanout(registry, webhooks, deliveries)
        dispatcher = Dispatcher(
            deliveries,
            webhooks,
            sender,
            concurrency=int(os.environ.get("ICODRIP_WEBHOOKS_CONCURRENCY") or 64),
            lease=float(os.environ.get("ICODRIP_WEBHOOKS_LEASE_SECONDS") or LEASE),
            retry_scale=float(os.environ.get("ICODRIP_WEBHOOKS_RETRY_SCALE") or 1.0),
        )

        def woken(result: IngestResult) -> None:
            if result.inserted:
                dispatcher.wake()

        async def keys_stream(js: JetStreamContext) -> None:
            await nats_adapter.ensure_keys_stream(
                js, settings.keys_stream, settings.keys_subject, settings.stream_replicas
            )

        async def requests_stream(js: JetStreamContext) -> None:
            await ensure_audit_stream(js, replicas=settings.stream_replicas)

        key_events = AuditIngester(
            KeyEventFanout(fanout, deliveries, "webhooks-keys"),
            nats_url,
            AuditIngestSettings(
                durable=os.environ.get("ICODRIP_WEBHOOKS_DURABLE") or "icodrip-webhooks",
                label="webhooks",
                batch=64,
                linger=0.0,
                stream=settings.keys_stream,
                subject=f"{settings.keys_subject}.>",
                replicas=settings.stream_replicas,
                replay_when_behind=False,  # a lost delivery log must not send everything again
            ),
            on_commit=woken,
            ensure_stream=keys_stream,
        )
        limits = AuditIngester(
            RateLimitFanout(fanout, deliveries, "webhooks-requests"),
            nats_url,
            AuditIngestSettings(
                durable=os.environ.get("ICODRIP_WEBHOOKS_REQUESTS_DURABLE")
                or "icodrip-webhooks-requests",
                label="webhooks-requests",
                replicas=settings.stream_replicas,
                replay_when_behind=False,
            ),
            on_commit=woken,
            ensure_stream=requests_stream,
        )

        def send_notices() -> int:
            return fanout.send_due_notices(time.time())

        def prune() -> int:
            keep = timedelta(days=float(os.environ.get("ICODRIP_WEBHOOKS_KEEP_DAYS") or 30))
            return deliveries.prune(time.time() - keep.total_seconds())

        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(key_events.run(stopping))
                group.create_task(limits.run(stopping))
                group.create_task(dispatcher.run(stopping))
                group.create_task(_every(NOTICE_INTERVAL, send_notices, stopping, dispatcher.wake))
                group.create_task(_every(PRUNE_INTERVAL, prune, stopping, lambda: None))
        except BaseExceptionGroup as failed:
            # The supervisor judges one error (transient: retried; else the end): not a group.
            raise failed.exceptions[0] from None


async def _every(
    seconds: float, job: Callable[[], int], stopping: asyncio.Event, after: Callable[[], None]
) -> None:
    """Run `job` in a thread now and every `seconds` until `stopping`; a failure is logged and
    tried again at the next turn."""
    while not stopping.is_set():
        try:
            if await asyncio.to_thread(job):
                after()
        except Exception as error:
            log.warning("webhooks.periodic_failed", job=job.__name__, error=type(error).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), seconds)
