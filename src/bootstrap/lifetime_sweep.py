"""Assembling the lifetime sweep (`icodrip worker lifetimes`): its registry, the audit trail
it reads last use from, and the check that the trail is current before it judges anything.

The trail is current when the audit worker has a live heartbeat and its JetStream consumer
has at most `MAX_PENDING` messages (batches of request events) not yet acknowledged: after a
NATS outage, or a worker stopped for a while, the backlog must drain before a key that was in
use can be told from one that was not (ADR 0026).
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from nats.js import JetStreamContext

from adapters import nats as nats_adapter
from adapters.settings import Settings
from application.stores import open_registry
from projections.generation_store import open_generation_store
from projections.generations import GenerationStore
from projections.rebuilds import WorkerStatus
from projections.request_audit_live import LiveRequestAuditStore
from workers.audit_ingest import AuditIngestSettings
from workers.key_lifetimes import LifetimeSweep, sweep_until_stopped

log = structlog.get_logger()

#: Unacknowledged messages of the audit consumer up to which the trail counts as current
#: (a couple of fetches' worth: what a worker keeping up holds at any instant).
MAX_PENDING = 512


class AuditCurrency:
    """Whether the audit trail is current: its worker alive, its consumer caught up."""

    def __init__(self, pointers: GenerationStore, js: JetStreamContext | None) -> None:
        self._pointers = pointers
        self._js = js
        self._consumer = AuditIngestSettings.from_env(label="audit")

    async def __call__(self) -> bool:
        beats = await asyncio.to_thread(self._pointers.heartbeats, "audit")
        if not WorkerStatus.of("audit", beats).running or self._js is None:
            return False
        try:
            info = await self._js.consumer_info(self._consumer.stream, self._consumer.durable)
        except Exception as error:  # NATS away, or no consumer yet: not known to be current
            log.warning("lifetimes.audit_consumer_unknown", error=type(error).__name__)
            return False
        pending: int = (info.num_pending or 0) + (info.num_ack_pending or 0)
        return pending <= MAX_PENDING


async def run_lifetimes(settings: Settings, stopping: asyncio.Event) -> None:
    """The lifetime sweep: unused keys warned then revoked, rolled keys revoked once idle."""
    async with contextlib.AsyncExitStack() as opened:
        registry = await asyncio.to_thread(open_registry, settings)
        opened.callback(registry.close)
        audit = await asyncio.to_thread(LiveRequestAuditStore, settings)
        opened.callback(audit.close)
        pointers = await asyncio.to_thread(open_generation_store, settings)
        opened.callback(pointers.close)
        js = None
        if settings.nats_url:
            client = await nats_adapter.connect(settings.nats_url, name="icodrip-lifetimes")
            opened.push_async_callback(client.drain)
            js = client.jetstream()
        sweep = LifetimeSweep(registry, audit.last_used)
        await sweep_until_stopped(sweep, AuditCurrency(pointers, js), stopping)
