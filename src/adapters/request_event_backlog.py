"""`RequestEventBacklog`: what a `RequestEventPublisher` has on disk to deliver. That is the
spool file it writes while NATS is away, and the files of its spool directory awaiting
delivery: its own spool files once sealed, those other processes left, and the WAL segments of
processes that died (`adapters.request_event_wal`). They are delivered oldest first, one
claimed (locked) at a time, so several processes may share the directory. Between `open()`
and `close()` its file I/O runs in a thread of its own, never on the event loop that answers
requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import structlog

from adapters.request_event_spool import (
    SPOOL_SUFFIX,
    SealedBatch,
    SpoolClaim,
    SpoolWriter,
    claim_spool_file,
    release_claim,
)
from adapters.request_event_wal import RequestEventWal, claim_wal_segment, pending_files
from adapters.request_events import RequestEvent

log = structlog.get_logger()

T = TypeVar("T")


class RequestEventBacklog:
    """The spool directory as one publisher sees it. Not thread-safe: one event loop.

    `pending` counts the events of the files noted: a file found by a rescan counts 0 until
    it is claimed and read. This process's own files (the spool file it writes, its WAL
    segments) are never noted, so never claimed by itself.
    """

    def __init__(self, directory: Path, wal: RequestEventWal | None) -> None:
        self.directory = directory
        self.writer = SpoolWriter(directory)
        self.claim: SpoolClaim | None = None
        self._wal = wal
        self._counts: dict[Path, int] = {}
        self._io: ThreadPoolExecutor | None = None
        self._late = False

    @property
    def pending(self) -> int:
        return sum(self._counts.values())

    @property
    def files(self) -> int:
        """How many files are to deliver, the claimed one included."""
        return len(self._counts)

    @property
    def busy(self) -> bool:
        """Files to deliver, or a spool file still being written (not deliverable yet)."""
        return bool(self._counts) or self.claim is not None or self.writer.path is not None

    def open(self) -> None:
        """Start the I/O thread; until then, and after `close()`, I/O runs on the caller's."""
        self._io = ThreadPoolExecutor(1, thread_name_prefix="request-event-spool")

    async def in_io(self, fn: Callable[..., T], *args: Any) -> T:
        if self._io is None:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    async def rescan(self) -> None:
        """Note the spool files and WAL segments of the directory (but this process's own)."""
        found = await self.in_io(pending_files, self.directory)
        held = {self.writer.path, self.claim.path if self.claim else None}
        if self._wal is not None:
            held |= self._wal.paths
        for path in found:
            if path not in held:
                self._counts.setdefault(path, 0)

    async def spill(
        self, batches: list[SealedBatch], events: list[RequestEvent], max_batch: int, max_bytes: int
    ) -> tuple[Path, int]:
        """Append to the spool file, fsync'ed: the file, and how many events. OSError on a
        failing disk, with nothing written."""
        path, count = await self.in_io(self.writer.append, batches, events, max_batch, max_bytes)
        self._counts[path] = self._counts.get(path, 0) + count
        return path, count

    def append_late(self, event: RequestEvent, max_batch: int, max_bytes: int) -> int:
        """Spool an event published after `close()`, on the caller's thread: how many events
        were written; 0 when the disk failed (the event is lost, and logged)."""
        if not self._late:
            self._late = True
            log.warning("request_events.published_after_close")
        try:
            _, count = self.writer.append([], [event], max_batch, max_bytes)
        except OSError as error:  # publish() never raises: the request is answered anyway
            log.error("request_events.lost_after_close", error=str(error), event_id=event.id)
            return 0
        return count

    async def seal(self) -> None:
        """Close the spool file being written (releasing its lock), so that it can be claimed
        and delivered."""
        if self.writer.path is not None:
            await self.in_io(self.writer.seal)

    async def claim_oldest(self, max_batch: int, max_bytes: int) -> SpoolClaim | None:
        """Claim and read the oldest file noted; None (and the file forgotten) when another
        process delivers it, or already did."""
        path = min(self._counts)
        claim = await self.in_io(self._claim_file, path, max_batch, max_bytes)
        if claim is None:
            self._counts.pop(path)
            return None
        self.claim = claim
        self._counts[path] = sum(batch.count for batch in claim.batches)
        return claim

    @staticmethod
    def _claim_file(path: Path, max_batch: int, max_bytes: int) -> SpoolClaim | None:
        if path.suffix == SPOOL_SUFFIX:
            return claim_spool_file(path)
        return claim_wal_segment(path, max_batch, max_bytes)

    def sent(self, claim: SpoolClaim) -> None:
        """The first batch of `claim` is acknowledged."""
        batch = claim.batches.popleft()
        self._counts[claim.path] -= batch.count

    async def release(self, *, delivered: bool) -> None:
        """Unlock the claimed file: deleted when `delivered`, else left, for this or another
        process to deliver again (its acknowledged batches then being duplicates only)."""
        claim = self.claim
        if claim is None:
            return
        await self.in_io(release_claim, claim, delivered)
        self.claim = None
        self._counts.pop(claim.path, None)
        if delivered:
            log.info("request_events.spool_delivered", file=claim.path.name)

    async def close(self) -> None:
        """Release the claim undelivered, seal the spool file, stop the I/O thread."""
        await self.release(delivered=False)
        await self.in_io(self.writer.seal)
        if self._io is not None:
            self._io.shutdown(wait=True)
            self._io = None
