"""A read model fed from the request-event stream, as an operable projection: its live
generation, status and rebuild (the request-audit and usage models are two).

A rebuild fills generation n+1 from the JetStream audit stream beside the live copy, catches it
up to the stream's head, moves the pointer (see `projections.generations`), then removes the
old copy once readers have moved:

- the ingest worker checks the pointer about once a second; on a switch it opens the new
  copy and resumes its consumer just after the new copy's position (duplicates of what it had
  already put in the old copy are recognized by event id, so nothing is lost or doubled);
- readers follow the pointer the same way (`GenerationFollower`) and retry a read once on the
  new copy when the old one disappears under it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from adapters.request_events import AUDIT_STREAM
from adapters.settings import Settings
from projections.generations import Generation, GenerationStore
from projections.rebuild_sequence import BuiltCopy, rebuild_generation
from projections.rebuilds import (
    DEFAULT_GRACE_SECONDS,
    ProgressCallback,
    ProjectionStatus,
    RebuildReport,
    WorkerStatus,
)
from projections.request_audit_query import StreamFedModel
from projections.request_audit_stream import catch_up, stream_head

log = structlog.get_logger()


class StreamCopy(StreamFedModel, Protocol):
    """A copy of a stream-fed model, as its projection opens it."""

    def count(self) -> int: ...
    def close(self) -> None: ...


class StreamProjection:
    """Request events on JetStream → one read model; subclasses name it and its worker."""

    name: str
    default_name: str  # the first generation's copy
    description: str
    worker: str

    def __init__(
        self,
        settings: Settings,
        *,
        pointers: Callable[[], GenerationStore],
        copy: Callable[[str], StreamCopy],
        drop: Callable[[str], None],
    ) -> None:
        self.settings = settings  # where the stream is (`ICODRIP_NATS_URL`)
        self._pointers = pointers
        self._copy = copy
        self._drop = drop

    def status(self) -> ProjectionStatus:
        settings = self.settings
        store = self._pointers()
        try:
            record = store.record(self.name, self.default_name)
            worker = WorkerStatus.of(self.worker, store.heartbeats(self.worker))
        finally:
            store.close()
        live = self._copy(record.live.view_name)
        try:
            position, rows = live.position(), live.count()
        finally:
            live.close()
        details: dict[str, Any] = {"stream": AUDIT_STREAM}
        head = position
        if settings.nats_url:
            try:
                head = asyncio.run(stream_head(settings))
            except Exception as error:
                details["stream_error"] = type(error).__name__
        else:
            details["stream_error"] = "ICODRIP_NATS_URL is not set"
        return ProjectionStatus.of(
            self.name,
            f"stream {AUDIT_STREAM}",
            record,
            position=position,
            head=head,
            rows=rows,
            details=details,
            worker=worker,
        )

    def rebuild(
        self,
        *,
        progress: ProgressCallback | None = None,
        grace: float = DEFAULT_GRACE_SECONDS,
        batch_size: int = 1000,
        force: bool = False,
    ) -> RebuildReport:
        """Fill the next generation from the stream beside the live one, switch, remove the old."""
        settings = self.settings
        if not settings.nats_url:
            raise RuntimeError("ICODRIP_NATS_URL is not set (the stream to rebuild from)")
        pointers = self._pointers()

        def build(target: Generation) -> BuiltCopy:
            copy = self._copy(target.view_name)
            try:
                batch = max(1, min(batch_size, 1000))
                events = asyncio.run(catch_up(settings, copy, progress, batch=batch))
                return BuiltCopy(events, copy.position(), copy.count())
            finally:
                copy.close()

        try:
            report = rebuild_generation(
                pointers,
                self.name,
                self.default_name,
                build=build,
                drop=self._drop,
                grace=grace,
                force=force,
            )
        finally:
            pointers.close()
        log.info(
            "projection.rebuilt",
            projection=self.name,
            generation=report.live.number,
            events=report.events,
            rows=report.rows,
        )
        return report
