"""The request-event spool: events sealed into wire batches (`seal`, `SealedBatch`), batches
framed as length- and CRC-checked msgpack records (`frame_record`, `parse_records`, shared with
the write-ahead log of `adapters.request_event_wal`), and the append-only spool files that a
publisher writes (`SpoolWriter`) and claims for delivery (`claim_spool_file`,
`release_claim`); each file is `flock`ed by its writer and by the one process delivering it,
so several processes may share a spool directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import struct
import time
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import msgspec
import structlog

from adapters.private_files import private_dir
from adapters.request_events import RequestEvent, RequestEventBatch, batch_msg_id

log = structlog.get_logger()

T = TypeVar("T")

SPOOL_SUFFIX = ".spool"
_FRAME = struct.Struct(">II")  # body length, CRC-32 of the body
_MAX_SPOOL_FILE = 64 * 1024 * 1024
_MAX_FIELD = 2048  # characters kept of a text field when one event alone exceeds a message


class SealedBatch(msgspec.Struct, array_like=True, frozen=True):
    """A batch as it goes on the wire (and in the spool): message id, event count, payload."""

    msg_id: str
    count: int
    payload: bytes


_wire = msgspec.json.Encoder()
_wire_decoder = msgspec.json.Decoder(RequestEventBatch)
_spool_encoder = msgspec.msgpack.Encoder()
_spool_decoder = msgspec.msgpack.Decoder(SealedBatch)


def seal(events: list[RequestEvent], max_batch: int, max_bytes: int) -> list[SealedBatch]:
    """`events` as batches of at most `max_batch` events and `max_bytes` bytes each."""
    sealed: list[SealedBatch] = []
    for start in range(0, len(events), max_batch):
        _seal_into(sealed, events[start : start + max_batch], max_bytes)
    return sealed


def _seal_into(out: list[SealedBatch], events: list[RequestEvent], max_bytes: int) -> None:
    payload = _wire.encode(RequestEventBatch(events=events))
    if len(payload) > max_bytes and len(events) > 1:
        half = len(events) // 2
        _seal_into(out, events[:half], max_bytes)
        _seal_into(out, events[half:], max_bytes)
        return
    if len(payload) > max_bytes:  # one event with a huge path or user agent: keep its start
        short = {
            name: value[:_MAX_FIELD]
            for name, value in msgspec.structs.asdict(events[0]).items()
            if isinstance(value, str) and len(value) > _MAX_FIELD
        }
        events = [msgspec.structs.replace(events[0], **short)]
        payload = _wire.encode(RequestEventBatch(events=events))
    out.append(SealedBatch(batch_msg_id(events), len(events), payload))


# -- the spool: runs in the publisher's single I/O thread --------------------------------------


def frame_record(body: bytes) -> bytes:
    """One record: the length and CRC-32 of `body`, then `body`."""
    return _FRAME.pack(len(body), zlib.crc32(body)) + body


def _frame(batches: list[SealedBatch]) -> bytes:
    return b"".join(frame_record(_spool_encoder.encode(batch)) for batch in batches)


def parse_records(data: bytes, decoder: msgspec.msgpack.Decoder[T]) -> tuple[list[T], int]:
    """The complete records at the start of `data`, decoded, and how many bytes after them
    are bad (a write cut short by a crash, or garbage): everything from the first bad record
    on is ignored."""
    records: list[T] = []
    pos = 0
    while pos + _FRAME.size <= len(data):
        length, crc = _FRAME.unpack_from(data, pos)
        body = data[pos + _FRAME.size : pos + _FRAME.size + length]
        if len(body) < length or zlib.crc32(body) != crc:
            break
        try:
            records.append(decoder.decode(body))
        except msgspec.DecodeError:
            break
        pos += _FRAME.size + length
    return records, len(data) - pos


def _parse(data: bytes) -> tuple[list[SealedBatch], int]:
    return parse_records(data, _spool_decoder)


def fsync_dir(directory: Path) -> None:
    """Make the directory's entries (new, renamed or removed files) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SpoolWriter:
    """The current append-only spool file of this process, locked while it is written."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path: Path | None = None
        self._fd: int | None = None
        self._size = 0

    def append(
        self, batches: list[SealedBatch], events: list[RequestEvent], max_batch: int, max_bytes: int
    ) -> tuple[Path, int]:
        """Write sealed batches and then `events` (sealed here), fsync; the file and count."""
        batches = batches + seal(events, max_batch, max_bytes)
        data = _frame(batches)
        if self._fd is not None and self._size + len(data) > _MAX_SPOOL_FILE:
            self.seal()
        if self._fd is None or self.path is None:
            self._open()
        assert self._fd is not None and self.path is not None
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
        except OSError:
            with contextlib.suppress(OSError):  # keep the file a sequence of whole records
                os.ftruncate(self._fd, self._size)
            raise
        self._size += len(data)
        return self.path, sum(batch.count for batch in batches)

    def _open(self) -> None:
        private_dir(self.directory)
        name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}"
        tmp = self.directory / f".{name}.tmp"  # never seen, so never taken, before it is locked
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self.path = self.directory / f"{name}{SPOOL_SUFFIX}"
        os.rename(tmp, self.path)
        fsync_dir(self.directory)
        self._fd, self._size = fd, 0

    def seal(self) -> Path | None:
        """Close the current file (releasing its lock) so that it can be delivered."""
        path, fd = self.path, self._fd
        self.path, self._fd, self._size = None, None, 0
        if fd is not None:
            os.close(fd)
        return path


@dataclass
class SpoolClaim:
    """A spool file being delivered by this process, locked until it is deleted."""

    path: Path
    fd: int
    batches: deque[SealedBatch] = field(default_factory=deque)


def read_locked(path: Path) -> tuple[int, bytes] | None:
    """Lock `path` (without waiting) and read it: its open descriptor, which holds the lock,
    and its contents; None when another process holds it or it is already gone."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_nlink == 0:
            raise FileNotFoundError(path)
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
    except OSError:
        os.close(fd)
        return None
    return fd, b"".join(chunks)


def claim_spool_file(path: Path) -> SpoolClaim | None:
    """Lock and read a spool file, unless another process holds it or it is already gone."""
    locked = read_locked(path)
    if locked is None:
        return None
    fd, data = locked
    batches, bad = _parse(data)
    if bad:
        log.warning("request_events.spool_truncated", file=path.name, bad_bytes=bad)
    return SpoolClaim(path, fd, deque(batches))


def release_claim(claim: SpoolClaim, delete: bool) -> None:
    """Unlock a claimed spool file, deleting it first when every batch in it was delivered."""
    if delete:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(claim.path)
    os.close(claim.fd)


def spool_files(spool_dir: Path) -> list[Path]:
    """The spool files in `spool_dir`, oldest first."""
    return sorted(spool_dir.glob(f"*{SPOOL_SUFFIX}")) if spool_dir.is_dir() else []


def spooled_events(spool_dir: Path) -> Iterator[RequestEvent]:
    """Every event waiting in `spool_dir` (for operators and tests; takes no lock)."""
    for path in spool_files(spool_dir):
        for batch in _parse(path.read_bytes())[0]:
            yield from _wire_decoder.decode(batch.payload).events
