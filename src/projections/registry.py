"""Which generation of each projection is live, and the operations operators run on them.

A projection's durable view lives in *generations*: generation 1 of the key lookup is the view
named `KeyLookup`, generation n > 1 is `KeyLookup_g<n>`. A rebuild builds generation n + 1
beside the live one, catches it up to the store's head, then moves the pointer (one row per
projection, in a tiny table) in a single compare-and-set; readers follow the pointer, and the
old copy is removed once they have had time to move.

- `GenerationStore` holds the pointer: `projections.sqlite3` in the data dir on the embedded
  default, the table `icodrip_projections` in PostgreSQL otherwise. It also keeps a projection's
  last error and which generation is being built (so two rebuilds never race).
- `LiveKeyLookupView` is what `open_key_lookup_view(settings)` returns when no name is given:
  the live generation, following a switch (reads re-check the pointer at most once a second;
  a write re-checks it every time and refuses to write into a generation its model was not
  loaded from, so the worker reloads from the new one instead of leaving a gap).
- `PROJECTIONS` names what `icodrip projections status|rebuild` can operate on; a new read
  model joins with `register_projection`.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, cast
from uuid import UUID

import structlog
from eventsourcing.persistence import Tracking

from adapters.event_store import schema_lock
from adapters.private_files import private_sqlite
from adapters.registry import open_registry
from adapters.settings import Settings
from projections.key_lookup import Changes, KeyLookup, KeyRecord, OrgRecord
from projections.key_lookup_updater import KeyLookupUpdater
from projections.key_lookup_view import (
    KeyLookupView,
    PostgresKeyLookupView,
    open_key_lookup_view,
)

log = structlog.get_logger()

KEY_LOOKUP = "key-lookup"
KEY_LOOKUP_VIEW = "KeyLookup"

#: How often a reader re-reads the pointer (a rebuild waits longer before removing a copy).
POINTER_CHECK_SECONDS = 1.0
#: How long a rebuild waits after the switch before it removes the old copy.
DEFAULT_GRACE_SECONDS = 5.0
#: The pointer table (one row per projection).
TABLE = "icodrip_projections"


def view_name_for(base: str, generation: int) -> str:
    """`KeyLookup` for generation 1 (the name views had before generations), else `_g<n>`."""
    return base if generation == 1 else f"{base}_g{generation}"


def _now() -> datetime:
    return datetime.now(UTC)


def _parse_time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


# -- the pointer ---------------------------------------------------------------------------


class RebuildInProgress(Exception):
    """Another rebuild of this projection holds the claim (use --force if it died)."""


class SwitchConflict(Exception):
    """The live generation changed under a rebuild; its copy is abandoned, nothing switched."""


class GenerationSwitched(Exception):
    """The live generation moved since the model was loaded: reload it, then continue."""


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


_COLUMNS = "generation, view_name, switched_at, building, building_since, last_error, last_error_at"


class GenerationStore(ABC):
    """The live-generation pointer of every projection (one row each)."""

    def __init__(self) -> None:
        self._ready = False

    # Backends run one statement at a time (`?` placeholders) and say how many rows changed.
    @abstractmethod
    def _run(self, sql: str, params: Sequence[Any]) -> tuple[list[tuple[Any, ...]], int]: ...

    def close(self) -> None:  # noqa: B027 - optional for backends that hold nothing open
        """Release what the store holds open."""

    def _ensure_table(self) -> None:
        if not self._ready:
            self._run(
                f"CREATE TABLE IF NOT EXISTS {TABLE} (projection TEXT PRIMARY KEY, "
                "generation INTEGER NOT NULL, view_name TEXT NOT NULL, switched_at TEXT, "
                "building INTEGER, building_since TEXT, last_error TEXT, last_error_at TEXT)",
                (),
            )
            self._ready = True

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
            (target, _iso(_now()), projection, current.live.number, bool(force)),
        )
        if changed != 1:
            since = _iso(current.building_since) or "just now"
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
            (new.number, new.view_name, _iso(switched_at), projection, expected.number, new.number),
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
            (message[:500], _iso(_now()), projection),
        )

    def clear_error(self, projection: str) -> None:
        self._ensure_table()
        self._run(
            f"UPDATE {TABLE} SET last_error = NULL, last_error_at = NULL "
            "WHERE projection = ? AND last_error IS NOT NULL",
            (projection,),
        )


class SQLiteGenerationStore(GenerationStore):
    """`projections.sqlite3` in the data dir; one short connection per statement."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def _run(self, sql: str, params: Sequence[Any]) -> tuple[list[tuple[Any, ...]], int]:
        with closing(sqlite3.connect(private_sqlite(self.path), timeout=10)) as conn, conn:
            cursor = conn.execute(sql, tuple(params))
            return [tuple(row) for row in cursor.fetchall()], cursor.rowcount


class PostgresGenerationStore(GenerationStore):
    """The table `icodrip_projections` in the store's database; one connection, reopened on loss."""

    def __init__(self, database_url: str) -> None:
        super().__init__()
        self.database_url = database_url
        self._conn: Any = None
        self._lock = threading.Lock()

    def _connection(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.database_url, autocommit=True, connect_timeout=5)
        return self._conn

    def _run(self, sql: str, params: Sequence[Any]) -> tuple[list[tuple[Any, ...]], int]:
        import psycopg

        statement = sql.replace("?", "%s")
        with self._lock:
            for attempt in (1, 2):
                try:
                    cursor = self._connection().execute(statement, tuple(params))
                    rows = cursor.fetchall() if cursor.description else []
                    return [tuple(r) for r in rows], cursor.rowcount
                except (psycopg.OperationalError, psycopg.InterfaceError):
                    self.close_locked()
                    if attempt == 2:
                        raise
        raise AssertionError("unreachable")

    def close_locked(self) -> None:
        if self._conn is not None:
            with suppress(Exception):
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        with self._lock:
            self.close_locked()


def open_generation_store(settings: Settings) -> GenerationStore:
    """The pointer store on the backend the settings name."""
    if settings.database_url is None:
        return SQLiteGenerationStore(settings.data_dir / "projections.sqlite3")
    with schema_lock(settings):
        return PostgresGenerationStore(settings.database_url)


# -- the live key-lookup view --------------------------------------------------------------


def _close_view(view: KeyLookupView) -> None:
    datastore = getattr(view, "datastore", None)
    if datastore is not None:
        with suppress(Exception):
            datastore.close()


class LiveKeyLookupView:
    """The key-lookup view of the live generation, following a rebuild's switch.

    - `load` re-reads the pointer and loads from the live generation (and remembers which).
    - `write` re-reads the pointer and raises GenerationSwitched, writing nothing, when the
      live generation is no longer the one the model was loaded from: the updater then
      reloads (from the new generation) and carries on from there, so no event is skipped.
    - `find`, `count`, `max_tracking_id` use the live generation, re-checked at most once a
      second; a failure on a generation that just went away is retried on the new one.
    A generation left behind is closed once no call uses it any more.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        store: GenerationStore | None = None,
        check_interval: float = POINTER_CHECK_SECONDS,
        opener: Callable[[Settings, str], KeyLookupView] = open_key_lookup_view,
    ) -> None:
        self.settings = settings
        self.store = store or open_generation_store(settings)
        self.check_interval = check_interval
        self._opener = opener
        self._lock = threading.Lock()
        self._bound: Generation | None = None
        self._views: dict[str, KeyLookupView] = {}
        self._in_use: dict[str, int] = {}
        self._retired: set[str] = set()
        self._checked_at = float("-inf")
        self._loaded_from: str | None = None
        self._error_recorded = False

    @property
    def generation(self) -> Generation:
        """The generation reads go to (after re-checking the pointer if it is due)."""
        with self._using(force=False) as (generation, _):
            return generation

    # -- binding ----------------------------------------------------------------------

    def _live(self) -> Generation:
        return self.store.live(KEY_LOOKUP, KEY_LOOKUP_VIEW)

    def _bind_locked(self, live: Generation) -> None:
        if live.view_name not in self._views:
            self._views[live.view_name] = self._opener(self.settings, live.view_name)
            self._in_use[live.view_name] = 0
        previous = self._bound
        self._bound = live
        if previous is not None and previous.view_name != live.view_name:
            log.info(
                "key_lookup.generation_followed",
                previous=previous.view_name,
                live=live.view_name,
            )
            self._retired.add(previous.view_name)
            self._close_retired_locked()

    def _close_retired_locked(self) -> None:
        for name in list(self._retired):
            if self._in_use.get(name, 0) == 0 and (
                self._bound is None or name != self._bound.view_name
            ):
                _close_view(self._views.pop(name))
                self._in_use.pop(name, None)
                self._retired.discard(name)

    @contextmanager
    def _using(self, *, force: bool) -> Iterator[tuple[Generation, KeyLookupView]]:
        with self._lock:
            now = time.monotonic()
            if force or self._bound is None or now - self._checked_at >= self.check_interval:
                self._checked_at = now
                try:
                    live = self._live()
                except Exception as error:
                    if force or self._bound is None:
                        raise
                    # A read can go on with the generation it has until the pointer answers.
                    log.warning("key_lookup.pointer_unreadable", error=type(error).__name__)
                else:
                    if self._bound is None or live.view_name != self._bound.view_name:
                        self._bind_locked(live)
            assert self._bound is not None
            generation = self._bound
            name = generation.view_name
            self._in_use[name] += 1
            view = self._views[name]
        try:
            yield generation, view
        finally:
            with self._lock:
                self._in_use[name] -= 1
                self._close_retired_locked()

    def _read(self, call: Callable[[KeyLookupView], Any]) -> Any:
        with self._using(force=False) as (generation, view):
            try:
                return call(view)
            except Exception as error:
                failed, first_error = generation.view_name, error
        # The generation may have just been switched away from and removed: look again.
        with self._using(force=True) as (generation, view):
            if generation.view_name == failed:
                raise first_error
            return call(view)

    # -- the KeyLookupView protocol ----------------------------------------------------

    def load(self, application_name: str, into: KeyLookup | None = None) -> KeyLookup:
        with self._using(force=True) as (generation, view):
            lookup = view.load(application_name, into)
            with self._lock:
                self._loaded_from = generation.view_name
            return lookup

    def write(self, changes: Changes, tracking: Tracking) -> None:
        with self._using(force=True) as (generation, view):
            with self._lock:
                loaded_from = self._loaded_from or generation.view_name
                self._loaded_from = loaded_from
            if generation.view_name != loaded_from:
                raise GenerationSwitched(
                    f"the live key-lookup generation is now {generation.view_name}, "
                    f"the model was loaded from {loaded_from}"
                )
            try:
                view.write(changes, tracking)
            except Exception as error:
                self._note_error(
                    f"{type(error).__name__} writing position {tracking.notification_id}"
                )
                raise
        if self._error_recorded:
            with suppress(Exception):
                self.store.clear_error(KEY_LOOKUP)
            self._error_recorded = False

    def _note_error(self, message: str) -> None:
        try:
            self.store.record_error(KEY_LOOKUP, KEY_LOOKUP_VIEW, message)
            self._error_recorded = True
        except Exception as error:
            log.warning("key_lookup.error_not_recorded", error=type(error).__name__)

    def find(self, key_hash: str) -> tuple[KeyRecord, OrgRecord | None] | None:
        return cast(
            "tuple[KeyRecord, OrgRecord | None] | None", self._read(lambda v: v.find(key_hash))
        )

    def max_tracking_id(self, application_name: str) -> int | None:
        return cast("int | None", self._read(lambda v: v.max_tracking_id(application_name)))

    def count(self) -> int:
        return cast(int, self._read(lambda v: v.count()))

    def expiring(self, application_name: str) -> tuple[int, list[tuple[UUID, float]]]:
        return cast(
            "tuple[int, list[tuple[UUID, float]]]",
            self._read(lambda v: v.expiring(application_name)),
        )

    def close(self) -> None:
        with self._lock:
            for view in self._views.values():
                _close_view(view)
            self._views.clear()
            self._in_use.clear()
            self._retired.clear()
            self._bound = None
        self.store.close()


# -- operating projections -----------------------------------------------------------------


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
        )

    def to_dict(self) -> dict[str, Any]:
        document = asdict(self)
        for name in ("switched_at", "building_since", "last_error_at"):
            document[name] = _iso(document[name])
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
            "switched_at": _iso(self.live.switched_at),
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

    def status(self, settings: Settings) -> ProjectionStatus: ...

    def rebuild(
        self,
        settings: Settings,
        *,
        progress: ProgressCallback | None = None,
        grace: float = DEFAULT_GRACE_SECONDS,
        batch_size: int = 1000,
        force: bool = False,
    ) -> RebuildReport: ...


def drop_key_lookup_view(settings: Settings, name: str) -> None:
    """Remove the durable key-lookup copy `name` (its file, or its three tables)."""
    if settings.is_embedded:
        base = settings.data_dir / f"{name.lower()}.sqlite3"
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{base}{suffix}").unlink(missing_ok=True)
        return
    view = cast(PostgresKeyLookupView, open_key_lookup_view(settings, name))
    try:
        from psycopg.sql import SQL, Identifier

        tracking = SQL("{0}.{1}").format(
            Identifier(view.datastore.schema), Identifier(view.tracking_table_name)
        )
        with view.datastore.transaction(commit=True) as curs:
            for table in (view.keys_table, view.orgs_table, tracking):
                curs.execute(SQL("DROP TABLE IF EXISTS {0}").format(table))
    finally:
        _close_view(view)


class KeyLookupProjection:
    """The hashed-key lookup: event store → `KeyLookup*` views (and every API mirror)."""

    name = KEY_LOOKUP
    description = "key hash → key and org records; authenticates every API request"

    def status(self, settings: Settings) -> ProjectionStatus:
        store = open_generation_store(settings)
        registry = open_registry(settings)
        view: KeyLookupView | None = None
        try:
            record = store.record(KEY_LOOKUP, KEY_LOOKUP_VIEW)
            view = open_key_lookup_view(settings, record.live.view_name)
            position = view.max_tracking_id(registry.name) or 0
            rows = view.count()
            head = registry.recorder.max_notification_id() or 0
        finally:
            if view is not None:
                _close_view(view)
            registry.close()
            store.close()
        return ProjectionStatus.of(
            self.name, "event store", record, position=position, head=head, rows=rows
        )

    def rebuild(
        self,
        settings: Settings,
        *,
        progress: ProgressCallback | None = None,
        grace: float = DEFAULT_GRACE_SECONDS,
        batch_size: int = 1000,
        force: bool = False,
    ) -> RebuildReport:
        """Build the next generation from zero beside the live one, switch, remove the old.

        The live view is never written here; API processes keep serving from memory and
        follow the pointer, and the key-lookup worker reloads from the new generation.
        """
        store = open_generation_store(settings)
        registry = open_registry(settings)
        new_view: KeyLookupView | None = None
        try:
            previous = store.live(KEY_LOOKUP, KEY_LOOKUP_VIEW)
            target = store.claim(KEY_LOOKUP, KEY_LOOKUP_VIEW, force=force)
            try:
                drop_key_lookup_view(settings, target.view_name)  # leftovers of a dead rebuild
                new_view = open_key_lookup_view(settings, target.view_name)
                updater = KeyLookupUpdater(registry, KeyLookup(), new_view)
                started = time.monotonic()
                head = registry.recorder.max_notification_id() or 0
                events = 0
                while read := updater.catch_up(batch_size):
                    events += read
                    position = updater.lookup.position
                    head = max(head, position)
                    if progress is not None:
                        progress(
                            RebuildProgress(events, position, 0, head, time.monotonic() - started)
                        )
                live = store.switch(KEY_LOOKUP, expected=previous, new=target)
            except BaseException as error:
                store.abandon(KEY_LOOKUP, KEY_LOOKUP_VIEW, target.number, error)
                if new_view is not None:
                    _close_view(new_view)
                    new_view = None
                with suppress(Exception):
                    drop_key_lookup_view(settings, target.view_name)
                raise
            seconds = time.monotonic() - started
            rows = new_view.count()
            _close_view(new_view)
            new_view = None
            # Readers re-check the pointer at least once a second: give them time to move.
            time.sleep(max(0.0, grace))
            drop_key_lookup_view(settings, previous.view_name)
            with suppress(Exception):
                store.clear_error(KEY_LOOKUP)
            return RebuildReport(
                name=self.name,
                previous=previous,
                live=live,
                events=events,
                position=updater.lookup.position,
                rows=rows,
                seconds=seconds,
                removed=previous.view_name,
            )
        finally:
            if new_view is not None:
                _close_view(new_view)
            registry.close()
            store.close()


PROJECTIONS: dict[str, Projection] = {KEY_LOOKUP: KeyLookupProjection()}


def register_projection(projection: Projection) -> None:
    """Make a projection known to `icodrip projections` (e.g. the request-audit model)."""
    PROJECTIONS[projection.name] = projection
