"""Which generation of each projection's durable view is live: the pointer and its stores.

Generation 1 of the key lookup is the view `KeyLookup`, generation n is `KeyLookup_g<n>`. The
pointer (one row per projection) also records which generation a rebuild is building and the
last error; `GenerationStore` keeps it in `projections.sqlite3` in the data dir (embedded,
`generations_sqlite`) or in the PostgreSQL table `icodrip_projections` (`generations_postgres`);
`generation_store.open_generation_store` opens the one the settings name.

The same store keeps the workers' heartbeats (`icodrip_workers`, one row per worker and
process, written every `HEARTBEAT_SECONDS`), so `icodrip projections status` can tell whether
the worker that keeps each projection current is running (ADR 0014).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

#: How often a reader re-reads the pointer (a rebuild waits longer before removing a copy).
POINTER_CHECK_SECONDS = 1.0
#: The pointer table (one row per projection).
TABLE = "icodrip_projections"
#: The workers' heartbeats (one row per worker and process).
WORKERS_TABLE = "icodrip_workers"
#: How often a worker process writes its heartbeats.
HEARTBEAT_SECONDS = 5.0
#: A worker whose heartbeat is older than this is not running (three missed beats).
STALE_AFTER_SECONDS = 15.0
#: Heartbeats of processes gone for longer than this are removed (by the next worker to start).
FORGET_AFTER_SECONDS = 7 * 86400.0


def view_name_for(base: str, generation: int) -> str:
    """`KeyLookup` for generation 1 (the name views had before generations), else `_g<n>`."""
    return base if generation == 1 else f"{base}_g{generation}"


def _now() -> datetime:
    return datetime.now(UTC)


def _parse_time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def iso_time(moment: datetime | None) -> str | None:
    """ISO 8601 with `Z` for UTC, as the pointer stores times and status documents show them."""
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


class RebuildInProgress(Exception):
    """Another rebuild of this projection holds the claim (use --force if it died)."""


class SwitchConflict(Exception):
    """The live generation changed under a rebuild; its copy is abandoned, nothing switched."""


@dataclass(frozen=True, slots=True)
class Generation:
    """One generation of a projection's durable view."""

    projection: str
    number: int
    view_name: str
    switched_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PointerRecord:
    """Everything the pointer table knows about one projection."""

    live: Generation
    building: int | None = None
    building_since: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """What one process running one worker last said about it."""

    worker: str
    instance: str
    state: str
    started_at: datetime
    seen_at: datetime


_COLUMNS = "generation, view_name, switched_at, building, building_since, last_error, last_error_at"


class GenerationStore(ABC):
    """The live-generation pointer of every projection (one row each)."""

    def __init__(self) -> None:
        self._ready = False
        self._workers_ready = False

    # Backends run one statement at a time (`?` placeholders) and say how many rows changed.
    @abstractmethod
    def _run(self, sql: str, params: Sequence[Any]) -> tuple[list[tuple[Any, ...]], int]: ...

    def close(self) -> None:  # noqa: B027 - optional for backends that hold nothing open
        """Release what the store holds open."""

    def _create(self, statement: str) -> None:
        try:
            self._run(statement, ())
        except Exception:
            # Two processes creating the table at once: PostgreSQL can refuse the second
            # (a duplicate `pg_type` row) even with IF NOT EXISTS; by now the table is there.
            self._run(statement, ())

    def _ensure_table(self) -> None:
        if not self._ready:
            self._create(
                f"CREATE TABLE IF NOT EXISTS {TABLE} (projection TEXT PRIMARY KEY, "
                "generation INTEGER NOT NULL, view_name TEXT NOT NULL, switched_at TEXT, "
                "building INTEGER, building_since TEXT, last_error TEXT, last_error_at TEXT)"
            )
            self._ready = True

    def _ensure_workers_table(self) -> None:
        if not self._workers_ready:
            self._create(
                f"CREATE TABLE IF NOT EXISTS {WORKERS_TABLE} (worker TEXT NOT NULL, "
                "instance TEXT NOT NULL, state TEXT NOT NULL, started_at TEXT NOT NULL, "
                "seen_at TEXT NOT NULL, PRIMARY KEY (worker, instance))"
            )
            self._workers_ready = True

    def _ensure(self, projection: str, default_view: str) -> None:
        self._ensure_table()
        self._run(
            f"INSERT INTO {TABLE} (projection, generation, view_name) VALUES (?, 1, ?) "
            "ON CONFLICT (projection) DO NOTHING",
            (projection, default_view),
        )

    def record(self, projection: str, default_view: str) -> PointerRecord:
        """The projection's row (generation 1 under `default_view` if it has none yet)."""
        self._ensure_table()
        rows, _ = self._run(f"SELECT {_COLUMNS} FROM {TABLE} WHERE projection = ?", (projection,))
        if not rows:
            self._ensure(projection, default_view)
            rows, _ = self._run(
                f"SELECT {_COLUMNS} FROM {TABLE} WHERE projection = ?", (projection,)
            )
        number, view_name, switched_at, building, since, error, error_at = rows[0]
        return PointerRecord(
            live=Generation(projection, int(number), view_name, _parse_time(switched_at)),
            building=None if building is None else int(building),
            building_since=_parse_time(since),
            last_error=error,
            last_error_at=_parse_time(error_at),
        )

    def live(self, projection: str, default_view: str) -> Generation:
        """The generation readers must use now."""
        return self.record(projection, default_view).live

    def claim(self, projection: str, default_view: str, *, force: bool = False) -> Generation:
        """Reserve the next generation for a rebuild; RebuildInProgress if one holds it."""
        current = self.record(projection, default_view)
        target = current.live.number + 1
        _, changed = self._run(
            f"UPDATE {TABLE} SET building = ?, building_since = ? "
            "WHERE projection = ? AND generation = ? AND (building IS NULL OR ?)",
            (target, iso_time(_now()), projection, current.live.number, bool(force)),
        )
        if changed != 1:
            since = iso_time(current.building_since) or "just now"
            raise RebuildInProgress(
                f"generation {current.building} of {projection} is being built (since {since}); "
                "use --force if that rebuild died"
            )
        return Generation(projection, target, view_name_for(default_view, target))

    def release(self, projection: str, generation: int) -> None:
        """Give up a claim (the rebuild failed or was abandoned)."""
        self._run(
            f"UPDATE {TABLE} SET building = NULL, building_since = NULL "
            "WHERE projection = ? AND building = ?",
            (projection, generation),
        )

    def abandon(
        self, projection: str, default_view: str, generation: int, error: BaseException
    ) -> None:
        """A rebuild of `generation` failed: give up its claim and record why (best effort)."""
        with suppress(Exception):
            self.release(projection, generation)
        with suppress(Exception):
            self.record_error(
                projection,
                default_view,
                f"rebuild of generation {generation} failed: {type(error).__name__}",
            )

    def switch(self, projection: str, *, expected: Generation, new: Generation) -> Generation:
        """Make `new` live in one statement, only if `expected` is still live and `new` claimed."""
        switched_at = _now()
        _, changed = self._run(
            f"UPDATE {TABLE} SET generation = ?, view_name = ?, switched_at = ?, "
            "building = NULL, building_since = NULL "
            "WHERE projection = ? AND generation = ? AND building = ?",
            (
                new.number,
                new.view_name,
                iso_time(switched_at),
                projection,
                expected.number,
                new.number,
            ),
        )
        if changed != 1:
            raise SwitchConflict(
                f"{projection}: generation {expected.number} is no longer live or the claim on "
                f"{new.number} was taken over; nothing switched"
            )
        return Generation(projection, new.number, new.view_name, switched_at)

    def record_error(self, projection: str, default_view: str, message: str) -> None:
        """Remember a projection's last error (shown by `icodrip projections status`)."""
        self._ensure(projection, default_view)
        self._run(
            f"UPDATE {TABLE} SET last_error = ?, last_error_at = ? WHERE projection = ?",
            (message[:500], iso_time(_now()), projection),
        )

    # -- workers' heartbeats ------------------------------------------------------------

    def beat(self, instance: str, states: Mapping[str, str], started_at: datetime) -> None:
        """Each of `instance`'s workers is in this state now (`running`, `stopped`, …)."""
        self._ensure_workers_table()
        seen_at = iso_time(_now())
        for worker, state in states.items():
            self._run(
                f"INSERT INTO {WORKERS_TABLE} (worker, instance, state, started_at, seen_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (worker, instance) DO UPDATE "
                "SET state = excluded.state, started_at = excluded.started_at, "
                "seen_at = excluded.seen_at",
                (worker, instance, state, iso_time(started_at), seen_at),
            )

    def heartbeats(self, worker: str | None = None) -> list[Heartbeat]:
        """The heartbeats of `worker` (of every worker when None), latest first."""
        self._ensure_workers_table()
        query = f"SELECT worker, instance, state, started_at, seen_at FROM {WORKERS_TABLE}"
        rows, _ = (
            self._run(query, ())
            if worker is None
            else self._run(f"{query} WHERE worker = ?", (worker,))
        )
        beats = [
            Heartbeat(name, instance, state, datetime.fromisoformat(started), seen)
            for name, instance, state, started, seen_text in rows
            if (seen := _parse_time(seen_text)) is not None
        ]
        return sorted(beats, key=lambda b: b.seen_at, reverse=True)

    def forget_heartbeats(self, older_than: float = FORGET_AFTER_SECONDS) -> int:
        """Remove heartbeats not renewed for `older_than` seconds; how many were removed."""
        now = _now()
        gone = [b for b in self.heartbeats() if (now - b.seen_at).total_seconds() > older_than]
        for beat in gone:
            self._run(
                f"DELETE FROM {WORKERS_TABLE} WHERE worker = ? AND instance = ? AND seen_at = ?",
                (beat.worker, beat.instance, iso_time(beat.seen_at)),
            )
        return len(gone)

    def clear_error(self, projection: str) -> None:
        self._ensure_table()
        self._run(
            f"UPDATE {TABLE} SET last_error = NULL, last_error_at = NULL "
            "WHERE projection = ? AND last_error IS NOT NULL",
            (projection,),
        )
