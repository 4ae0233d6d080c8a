"""Operating a projection: the `Projection` protocol and the types its operations answer in.

A read model implements `status` (a `ProjectionStatus`) and `rebuild` (reporting
`RebuildProgress` while it builds the next generation, then a `RebuildReport`) so operators can
inspect and rebuild it without stopping the API.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from projections.generations import (
    STALE_AFTER_SECONDS,
    Generation,
    Heartbeat,
    PointerRecord,
    iso_time,
)

#: How long a rebuild waits after the switch before it removes the old copy.
DEFAULT_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class WorkerStatus:
    """Whether the worker that keeps a projection current is running, from its heartbeats.

    `state` is `running`, `retrying` (its process is up, its start is being retried) or
    `not running` (no heartbeat within `STALE_AFTER_SECONDS`, or it stopped);
    `instances` counts the processes running it now, `last_seen` is its latest heartbeat.
    """

    name: str
    running: bool
    state: str
    instances: int
    last_seen: datetime | None
    seconds_ago: float | None

    @classmethod
    def of(cls, name: str, beats: Sequence[Heartbeat], now: datetime | None = None) -> WorkerStatus:
        now = now or datetime.now(UTC)
        alive = [
            b
            for b in beats
            if b.state != "stopped" and (now - b.seen_at).total_seconds() <= STALE_AFTER_SECONDS
        ]
        running = [b for b in alive if b.state == "running"]
        latest = max(beats, key=lambda b: b.seen_at, default=None)
        if running:
            state = "running"
        elif alive:
            state = max(alive, key=lambda b: b.seen_at).state
        else:
            state = "not running"
        return cls(
            name=name,
            running=bool(running),
            state=state,
            instances=len(alive),
            last_seen=None if latest is None else latest.seen_at,
            seconds_ago=(
                None if latest is None else max(0.0, (now - latest.seen_at).total_seconds())
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        document = asdict(self)
        document["last_seen"] = iso_time(self.last_seen)
        if self.seconds_ago is not None:
            document["seconds_ago"] = round(self.seconds_ago, 1)
        return document


@dataclass(frozen=True)
class ProjectionStatus:
    """Where a projection stands: what `icodrip projections status` prints."""

    name: str
    source: str
    generation: int
    view: str
    position: int
    head: int
    lag: int
    rows: int | None = None
    switched_at: datetime | None = None
    building: int | None = None
    building_since: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    details: dict[str, Any] = field(default_factory=dict)
    #: The worker that keeps it current (None: not known to this status).
    worker: WorkerStatus | None = None

    @classmethod
    def of(
        cls,
        name: str,
        source: str,
        record: PointerRecord,
        *,
        position: int,
        head: int,
        rows: int | None,
        details: dict[str, Any] | None = None,
        worker: WorkerStatus | None = None,
    ) -> ProjectionStatus:
        """The status from a projection's generation record and its position against `head`."""
        return cls(
            name=name,
            source=source,
            generation=record.live.number,
            view=record.live.view_name,
            position=position,
            head=head,
            lag=max(0, head - position),
            rows=rows,
            switched_at=record.live.switched_at,
            building=record.building,
            building_since=record.building_since,
            last_error=record.last_error,
            last_error_at=record.last_error_at,
            details=details or {},
            worker=worker,
        )

    def to_dict(self) -> dict[str, Any]:
        document = asdict(self)
        for name in ("switched_at", "building_since", "last_error_at"):
            document[name] = iso_time(document[name])
        document["worker"] = None if self.worker is None else self.worker.to_dict()
        return document


@dataclass(frozen=True)
class RebuildProgress:
    """A rebuild's progress: events folded so far, and positions reached and aimed at."""

    events: int
    position: int
    start: int
    target: int
    elapsed: float

    @property
    def rate(self) -> float:
        """Events per second so far."""
        return self.events / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def fraction(self) -> float:
        span = self.target - self.start
        return 1.0 if span <= 0 else min(1.0, max(0.0, (self.position - self.start) / span))

    @property
    def eta(self) -> float | None:
        """Seconds left at the current pace, if known."""
        if self.fraction <= 0 or self.elapsed <= 0:
            return None
        return self.elapsed * (1 - self.fraction) / self.fraction


@dataclass(frozen=True)
class RebuildReport:
    name: str
    previous: Generation
    live: Generation
    events: int
    position: int
    rows: int
    seconds: float
    removed: str | None

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "previous_generation": self.previous.number,
            "previous_view": self.previous.view_name,
            "generation": self.live.number,
            "view": self.live.view_name,
            "switched_at": iso_time(self.live.switched_at),
            "events": self.events,
            "position": self.position,
            "rows": self.rows,
            "seconds": round(self.seconds, 3),
            "events_per_second": round(self.rate, 1),
            "removed": self.removed,
        }


ProgressCallback = Callable[[RebuildProgress], None]


class Projection(Protocol):
    """A read model operators can inspect and rebuild without stopping the API."""

    name: str
    description: str
    #: The worker that keeps it current (`icodrip worker NAME`), whose heartbeats status reads.
    worker: str

    def status(self) -> ProjectionStatus: ...

    def rebuild(
        self,
        *,
        progress: ProgressCallback | None = None,
        grace: float = DEFAULT_GRACE_SECONDS,
        batch_size: int = 1000,
        force: bool = False,
    ) -> RebuildReport: ...
