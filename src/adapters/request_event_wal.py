"""The request-event write-ahead log: each API process appends every request event to a file of
its own before the response starts, so that an answered request survives a crash of the
process (kill -9, OOM, a segfault) — see docs/adr/0016-audit-log-durable-before-the-response.md.

A WAL *segment* is an append-only file `<time_ns>-<pid>-<random>.wal` in the publisher's spool
directory, `flock`ed by the process writing it for as long as it has it open, so no other
process ever takes a live process's log. Records are framed like spool records
(`adapters.request_event_spool.frame_record`: length, CRC-32, msgpack body); a body is either
one `RequestEvent` or an integer *mark*: "the first N events of this segment are settled"
(acknowledged by JetStream or written to the fsync'ed spool), which spares a successor the
re-sending of those.

`RequestEventWal.append` is one `os.write` to an `O_APPEND` descriptor, no fsync: once it
returns, the event is in the kernel's page cache, which outlives the process. The publisher
calls `settle(n)` as events leave its memory, oldest first; a segment whose events are all
settled is emptied (`ftruncate`) if it is the current one, deleted otherwise; a segment is
rotated at `max_segment_bytes`. `sync_when_due`, run by the publisher, fdatasyncs the segments
once per sync interval while events wait longer than that (NATS is slow or away), which bounds
what a machine crash loses.

A segment left behind — its process died, or shut down unable to spool — is unlocked: the
next publisher on the directory claims it like a spool file (`claim_wal_segment`) and
delivers its unsettled events, sealed into batches the same way every time, so a claim cut
short and taken again re-sends the same `Nats-Msg-Id`s.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import msgspec
import structlog

from adapters.private_files import private_dir
from adapters.request_event_spool import (
    SpoolClaim,
    frame_record,
    fsync_dir,
    parse_records,
    read_locked,
    seal,
    spool_files,
)
from adapters.request_events import RequestEvent

log = structlog.get_logger()

WAL_SUFFIX = ".wal"
#: About 12,000 events of ~350 bytes: what a crash can make a successor send twice, at most,
#: when the marks of the segment were not written.
MAX_SEGMENT_BYTES = 4 * 1024 * 1024
_FAILURE_LOG_INTERVAL = 10.0

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(RequestEvent | int)


class WalSegment:
    """One open segment of this process: its file, locked, and what it holds."""

    __slots__ = ("events", "fd", "path", "settled", "size")

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd
        self.size = 0  # bytes of whole records
        self.events = 0  # event records since the file was last emptied
        self.settled = 0  # how many of those are settled (always the oldest)


class _Run:
    """Consecutive unsettled events that went to the same segment (None: to none)."""

    __slots__ = ("count", "segment")

    def __init__(self, segment: WalSegment | None) -> None:
        self.segment = segment
        self.count = 1


class RequestEventWal:
    """The write-ahead log of one process in `directory`. Not thread-safe: one event loop.

    Counters: `written` and `settled` (events appended, events settled: both include events
    the log could not take), `failures` (appends that failed), `unprotected` (events now held
    in memory only, because their append failed); `durable` is False from a failed append to
    the next one that succeeds.
    """

    def __init__(self, directory: Path, *, max_segment_bytes: int = MAX_SEGMENT_BYTES) -> None:
        self.directory = directory
        self.max_segment_bytes = max_segment_bytes
        self.written = 0
        self.settled = 0
        self.failures = 0
        self.unprotected = 0
        self.durable = True
        self._segment: WalSegment | None = None
        self._segments: list[WalSegment] = []  # open, oldest first; the last is the current one
        self._runs: deque[_Run] = deque()  # the unsettled events, in append order
        self._sync_mark = 0
        self._failed_logged_at = 0.0

    @property
    def paths(self) -> set[Path]:
        """The segments this process holds (never to be claimed by itself)."""
        return {segment.path for segment in self._segments}

    # -- the request path -----------------------------------------------------------------------

    def append(self, event: RequestEvent) -> None:
        """Log one event: one `os.write` (no fsync). Never raises: on a failed write the event
        is kept in memory only (`durable` goes False, `unprotected` counts it) and the next
        append tries the disk again."""
        self.written += 1
        record = frame_record(_encoder.encode(event))
        segment = self._segment
        try:
            if segment is None or segment.size >= self.max_segment_bytes:
                segment = self._rotate()
            self._write(segment, record)
        except OSError as error:
            segment = None
            self.unprotected += 1
            self._failed(error)
        else:
            segment.events += 1
            if not self.durable:
                self.durable = True
                log.warning("request_events.wal_restored", unprotected=self.unprotected)
        runs = self._runs
        if runs and runs[-1].segment is segment:
            runs[-1].count += 1
        else:
            runs.append(_Run(segment))

    def _write(self, segment: WalSegment, data: bytes) -> None:
        try:
            written = os.write(segment.fd, data)
            if written != len(data):  # a full disk takes what fits
                raise OSError(errno.ENOSPC, "short write to the request-event log")
        except OSError:
            with contextlib.suppress(OSError):  # the file stays a sequence of whole records
                os.ftruncate(segment.fd, segment.size)
            raise
        segment.size += written

    def _failed(self, error: OSError) -> None:
        self.failures += 1
        now = time.monotonic()
        if self.durable or now - self._failed_logged_at >= _FAILURE_LOG_INTERVAL:
            self._failed_logged_at = now
            log.error(
                "request_events.wal_failed",
                error=str(error),
                failures=self.failures,
                unprotected=self.unprotected,
                note="events are kept in memory only until acknowledged: a crash now loses them",
            )
        self.durable = False

    def _rotate(self) -> WalSegment:
        private_dir(self.directory)
        name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}"
        tmp = self.directory / f".{name}.tmp"  # never seen, so never claimed, before it is locked
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            path = self.directory / f"{name}{WAL_SUFFIX}"
            os.rename(tmp, path)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        segment = WalSegment(path, fd)
        previous, self._segment = self._segment, segment
        self._segments.append(segment)
        if previous is not None and previous.settled >= previous.events:
            self._drop(previous)
        return segment

    # -- the publisher's background task --------------------------------------------------------

    def settle(self, count: int) -> None:
        """The `count` oldest unsettled events are acknowledged or spooled: empty or delete
        segments whose events are all settled, mark the others."""
        if count <= 0:
            return
        self.settled += count
        runs = self._runs
        touched: list[WalSegment] = []
        while count and runs:
            run = runs[0]
            take = min(count, run.count)
            run.count -= take
            count -= take
            segment = run.segment
            if segment is None:
                self.unprotected -= take
            else:
                segment.settled += take
                if not touched or touched[-1] is not segment:
                    touched.append(segment)
            if not run.count:
                runs.popleft()
        for segment in touched:
            if segment.settled < segment.events:
                with contextlib.suppress(OSError):  # a mark saves duplicates; it is no must
                    self._write(segment, frame_record(_encoder.encode(segment.settled)))
            elif segment is self._segment:
                self._empty(segment)
            else:
                self._drop(segment)

    def _empty(self, segment: WalSegment) -> None:
        try:
            os.ftruncate(segment.fd, 0)
        except OSError as error:
            log.warning("request_events.wal_truncate_failed", error=str(error))
            return
        segment.size = segment.events = segment.settled = 0

    def _drop(self, segment: WalSegment) -> None:
        """Delete a segment (while still locked: nobody can claim it after), then unlock it."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(segment.path)
        os.close(segment.fd)
        self._segments.remove(segment)
        if segment is self._segment:
            self._segment = None

    def sync_due(self) -> list[int]:
        """Called once per sync interval: when some event appended before the previous call is
        still unsettled, duplicates of the descriptors of the segments holding unsettled events,
        for `sync_descriptors` to fdatasync (and close); otherwise nothing. In normal operation
        every event is settled within milliseconds, so the log is never synced."""
        due = self.settled < self._sync_mark
        self._sync_mark = self.written
        if not due:
            return []
        return [os.dup(s.fd) for s in self._segments if s.settled < s.events]

    def close(self) -> int:
        """Delete the segments whose events are all settled, unlock the others (left for the
        next process to deliver); how many events those hold."""
        left = 0
        for segment in list(self._segments):
            if segment.settled >= segment.events:
                self._drop(segment)
            else:
                left += segment.events - segment.settled
                os.close(segment.fd)
                self._segments.remove(segment)
        self._segment = None
        self._runs.clear()
        return left


def sync_descriptors(fds: list[int], directory: Path) -> None:
    """fdatasync and close `fds` (from `RequestEventWal.sync_due`), then sync `directory` so
    that new segments' names are on disk too. Runs in the publisher's I/O thread."""
    for fd in fds:
        try:
            os.fdatasync(fd)
        except OSError as error:
            log.warning("request_events.wal_sync_failed", error=str(error))
        finally:
            os.close(fd)
    try:
        fsync_dir(directory)
    except OSError as error:
        log.warning("request_events.wal_sync_failed", error=str(error))


async def sync_when_due(
    wal: RequestEventWal, interval: float, in_io: Callable[..., Awaitable[object]]
) -> None:
    """Every `interval` seconds, until cancelled: `sync_descriptors` what `wal.sync_due()`
    names, with `in_io` (the publisher's I/O thread, never the event loop)."""
    while True:
        await asyncio.sleep(interval)
        fds = wal.sync_due()
        if fds:
            try:
                await in_io(sync_descriptors, fds, wal.directory)
            except Exception:
                log.exception("request_events.wal_sync_error")


# -- segments left behind ----------------------------------------------------------------------


def _unsettled(data: bytes) -> tuple[list[RequestEvent], int, int]:
    """The unsettled events of a segment's contents, how many were settled, and bad bytes."""
    records, bad = parse_records(data, _decoder)
    events: list[RequestEvent] = []
    settled = 0
    for record in records:
        if isinstance(record, int):
            settled = record
        else:
            events.append(record)
    return events[settled:], settled, bad


def claim_wal_segment(path: Path, max_batch: int, max_bytes: int) -> SpoolClaim | None:
    """Lock and read a segment left behind, as a spool claim of its unsettled events (sealed
    the same way whoever claims it); None while its process holds it, or once it is gone."""
    locked = read_locked(path)
    if locked is None:
        return None
    fd, data = locked
    events, settled, bad = _unsettled(data)
    log.info(
        "request_events.wal_recovered",
        file=path.name,
        events=len(events),
        already_settled=settled,
        bad_bytes=bad,
    )
    return SpoolClaim(path, fd, deque(seal(events, max_batch, max_bytes)))


def wal_files(directory: Path) -> list[Path]:
    """The WAL segments in `directory`, live or left behind, oldest first."""
    return sorted(directory.glob(f"*{WAL_SUFFIX}")) if directory.is_dir() else []


def pending_files(directory: Path) -> list[Path]:
    """Spool files and WAL segments in `directory`, oldest first: what may need delivering."""
    return sorted([*spool_files(directory), *wal_files(directory)])


def logged_events(directory: Path) -> Iterator[RequestEvent]:
    """The unsettled events of every WAL segment in `directory` (operators, tests; no lock)."""
    for path in wal_files(directory):
        with contextlib.suppress(FileNotFoundError):
            yield from _unsettled(path.read_bytes())[0]
