"""`RequestEventQueue`: the request events a publisher holds in memory until JetStream
acknowledges them or they are spilled to the spool. Each event is also in the process's
write-ahead log (`adapters.request_event_wal`) and is *settled* there as it leaves memory
(docs/adr/0016).
"""

from __future__ import annotations

import time
from collections import deque

import structlog

from adapters.request_event_backlog import RequestEventBacklog
from adapters.request_event_spool import SealedBatch, seal
from adapters.request_event_wal import RequestEventWal
from adapters.request_events import RequestEvent

log = structlog.get_logger()


class RequestEventQueue:
    """`buffer` holds events as published, `outbox` the batches sealed from them (the first
    one in flight). Both are strictly first in, first out: sent and spilled oldest first,
    which is what lets the log settle "the `count` oldest events". Not thread-safe.
    """

    def __init__(self, wal: RequestEventWal | None) -> None:
        self.wal = wal
        self.buffer: deque[RequestEvent] = deque()
        self.outbox: deque[SealedBatch] = deque()
        self._outbox_events = 0
        self._spilling = 0  # events on their way to the spool
        self.spill_retry_at = 0.0  # time.monotonic(): spares a failing disk a retry per round

    def __len__(self) -> int:
        return len(self.buffer) + self._outbox_events + self._spilling

    def append(self, event: RequestEvent) -> int:
        """Log and buffer one event; how many are buffered now."""
        if self.wal is not None:
            self.wal.append(event)
        self.buffer.append(event)
        return len(self.buffer)

    def seal(self, max_batch: int, max_bytes: int) -> None:
        """Seal the oldest buffered events, `max_batch` at most, into the outbox."""
        events = [self.buffer.popleft() for _ in range(min(len(self.buffer), max_batch))]
        for batch in seal(events, max_batch, max_bytes):
            self.outbox.append(batch)
            self._outbox_events += batch.count

    def sent(self) -> None:
        """The first batch of the outbox is acknowledged."""
        batch = self.outbox.popleft()
        self._outbox_events -= batch.count
        self._settle(batch.count)

    async def spill(self, backlog: RequestEventBacklog, max_batch: int, max_bytes: int) -> int:
        """Move everything to the spool, oldest first: how many events. When the disk fails
        everything is kept, as it was, and 0 returned."""
        batches, events = list(self.outbox), list(self.buffer)
        if not batches and not events:
            return 0
        self.outbox.clear()
        self.buffer.clear()
        outbox_events, self._outbox_events = self._outbox_events, 0
        moving = outbox_events + len(events)
        self._spilling += moving
        try:
            path, count = await backlog.spill(batches, events, max_batch, max_bytes)
        except OSError as error:
            self.buffer.extendleft(reversed(events))
            self.outbox.extendleft(reversed(batches))
            self._outbox_events += outbox_events
            self.spill_retry_at = time.monotonic() + 1.0
            log.error("request_events.spool_failed", error=str(error), in_memory=len(self))
            return 0
        finally:
            self._spilling -= moving
        self._settle(moving)
        log.info("request_events.spooled", events=count, file=path.name)
        return count

    def _settle(self, count: int) -> None:
        """The `count` oldest events in memory were acknowledged or spooled: out of the log."""
        if self.wal is not None:
            self.wal.settle(count)
