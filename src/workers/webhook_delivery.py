"""Sending webhook deliveries: claimed from the delivery log, signed, sent, recorded.

Deliveries are claimed with a lease (`DeliveryLog.claim_due`): a worker killed mid-send
leaves its deliveries to be claimed again once the lease passes, so nothing is lost — at
least once, with the same `webhook-id` every time. An endpoint has one delivery in flight at
a time, so its events arrive in the order they happened (a delivery waiting for its retry
does not hold the next ones back: an endpoint that failed one message still gets the rest).
Each attempt is signed afresh (its own `webhook-timestamp`), by every secret that signs now.
A failure schedules the next attempt (`domain.webhook_retries`); an endpoint failing for five
days is disabled, which the fan-out then tells the organization's other endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from uuid import UUID

import structlog

from adapters.webhook_sender import AttemptOutcome, WebhookSender
from application.webhooks import Webhooks
from domain.errors import NotFound
from domain.key_format import redact_keys
from domain.webhook import TEST_EVENT, WebhookEndpoint
from domain.webhook_retries import RETRY_FOR, next_attempt_at, should_disable
from domain.webhook_signing import webhook_headers
from projections.webhook_deliveries import Attempt, Delivery, DeliveryLog, DeliveryStatus

log = structlog.get_logger()

#: A claimed delivery is another worker's to take after this many seconds (a dead worker's).
LEASE = 60.0
#: Seconds an endpoint read is used for (a new URL, secret or state is seen within this).
ENDPOINT_TTL = 1.0
#: How long an idle dispatcher waits before looking for due deliveries again.
IDLE_WAIT = 0.2


class Dispatcher:
    """Sends what is due, `concurrency` deliveries at once, until stopped."""

    def __init__(
        self,
        deliveries: DeliveryLog,
        webhooks: Webhooks,
        sender: WebhookSender,
        *,
        concurrency: int = 64,
        lease: float = LEASE,
        retry_scale: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`retry_scale` shrinks the waits between attempts (tests and rehearsals: 0.001
        makes five minutes a third of a second); the give-up point is not moved."""
        self.deliveries = deliveries
        self.webhooks = webhooks
        self.sender = sender
        self.concurrency = concurrency
        self.clock = clock
        self.lease = lease
        self.retry_scale = retry_scale
        self.sent = 0
        self.failed = 0
        self._in_flight: set[asyncio.Task[None]] = set()
        # Endpoints as read a moment ago: one read per endpoint per second, not per delivery.
        self._endpoints: dict[UUID, tuple[float, WebhookEndpoint | None]] = {}
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Look for due deliveries now (new ones were just enqueued)."""
        self._wake.set()

    async def run(self, stopping: asyncio.Event) -> None:
        """Claim and send until `stopping`; waits for the sends in flight before returning."""
        try:
            while not stopping.is_set():
                # Cleared before the claim: a wake during it (a send done, news enqueued)
                # makes the next wait return at once instead of being lost.
                self._wake.clear()
                room = self.concurrency - len(self._in_flight)
                claimed: list[Delivery] = []
                if room > 0:
                    try:
                        claimed = await asyncio.to_thread(
                            self.deliveries.claim_due, self.clock(), lease=self.lease, limit=room
                        )
                    except Exception as error:  # the log unreachable: try again shortly
                        log.warning("webhooks.claim_failed", error=type(error).__name__)
                for delivery in claimed:
                    task = asyncio.create_task(self.deliver(delivery))
                    self._in_flight.add(task)
                    task.add_done_callback(self._done)
                if claimed and len(claimed) == room:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), IDLE_WAIT)
        finally:
            if self._in_flight:
                await asyncio.gather(*self._in_flight, return_exceptions=True)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self._wake.set()  # room for more, and the endpoint's next delivery may be due
        if not task.cancelled() and task.exception() is not None:
            log.error("webhooks.delivery_crashed", error=repr(task.exception())[:200])

    async def deliver(self, delivery: Delivery) -> None:
        """One attempt of `delivery`, recorded with what it leads to."""
        endpoint = await self._endpoint(delivery.endpoint_id)
        if endpoint is None or (not endpoint.enabled and delivery.event_type != TEST_EVENT):
            reason = "endpoint deleted" if endpoint is None else "endpoint disabled"
            await self._record(delivery, AttemptOutcome(None, 0.0, reason), give_up=True)
            return
        outcome = await self.send(endpoint, delivery)
        await self._record(delivery, outcome, give_up=False)
        if not outcome.ok:
            await self._disable_if_failing(endpoint)

    async def _endpoint(self, endpoint_id: UUID) -> WebhookEndpoint | None:
        """The endpoint as stored at most `ENDPOINT_TTL` s ago (None: deleted)."""
        now = time.monotonic()
        cached = self._endpoints.get(endpoint_id)
        if cached is not None and now - cached[0] < ENDPOINT_TTL:
            return cached[1]
        try:
            endpoint: WebhookEndpoint | None = await asyncio.to_thread(
                self.webhooks.get, endpoint_id
            )
        except NotFound:
            endpoint = None
        if len(self._endpoints) > 10_000:
            self._endpoints.clear()
        self._endpoints[endpoint_id] = (now, endpoint)
        return endpoint

    async def send(self, endpoint: WebhookEndpoint, delivery: Delivery) -> AttemptOutcome:
        """Sign and send one attempt."""
        secrets = self.webhooks.signing_secrets(endpoint)
        headers = webhook_headers(secrets, delivery.msg_id, int(self.clock()), delivery.payload)
        return await self.sender.send(endpoint.url, headers, delivery.payload)

    async def _record(self, delivery: Delivery, outcome: AttemptOutcome, *, give_up: bool) -> None:
        now = self.clock()
        number = delivery.attempts + 1
        if outcome.ok:
            status, next_at = DeliveryStatus.SUCCEEDED, None
            self.sent += 1
        else:
            first = delivery.give_up_at - RETRY_FOR.total_seconds()
            next_at = None if give_up else next_attempt_at(number, first, now)
            if next_at is not None:
                next_at = now + (next_at - now) * self.retry_scale
            status = DeliveryStatus.PENDING if next_at is not None else DeliveryStatus.FAILED
            self.failed += 1
        attempt = Attempt(
            delivery_id=delivery.id,
            number=number,
            at=now,
            status_code=outcome.status_code,
            duration_ms=outcome.duration_ms,
            # A receiver may echo what it was sent, or worse: no key-shaped text is kept.
            error=None if outcome.error is None else redact_keys(outcome.error),
            excerpt=redact_keys(outcome.excerpt),
        )
        for delay in (0.2, 0.5, 1.0, 2.0, 5.0, 10.0):
            try:
                await asyncio.to_thread(
                    self.deliveries.record_attempt, attempt, status=status, next_attempt_at=next_at
                )
                return
            except Exception as error:  # the log away: keep the outcome a while
                log.warning("webhooks.record_failed", error=type(error).__name__)
                await asyncio.sleep(delay)
        # Unrecorded: the lease runs out and the delivery is sent again (at least once).
        log.error("webhooks.attempt_unrecorded", delivery_id=delivery.id)

    async def _disable_if_failing(self, endpoint: WebhookEndpoint) -> None:
        since = await asyncio.to_thread(self.deliveries.failing_since, endpoint.id)
        if not should_disable(since, self.clock()):
            return
        reason = "failing for 5 days: every attempt since then failed"
        with contextlib.suppress(NotFound):
            disabled = await asyncio.to_thread(self.webhooks.disable_failing, endpoint.id, reason)
            self._endpoints.pop(endpoint.id, None)  # its next delivery sees it disabled
            if disabled:
                log.warning("webhooks.endpoint_disabled", webhook_id=endpoint.id.hex)
