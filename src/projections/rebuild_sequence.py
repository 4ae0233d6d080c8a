"""The one rebuild sequence every rebuildable read model follows: claim, build, switch, grace, drop.

A rebuild never writes the live copy. It claims the next generation in the pointer table (one
rebuild at a time), builds that copy beside the live one, switches the pointer to it (refused if
someone else switched meanwhile), gives readers `grace` seconds to follow (they re-check the
pointer about once a second), then removes the old copy. A rebuild that fails is abandoned: the
claim is released with its error and the half-built copy removed (ADR 0007).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

from projections.generations import Generation, GenerationStore, SwitchConflict
from projections.rebuilds import RebuildReport


@dataclass(frozen=True)
class BuiltCopy:
    """What building a generation's copy produced: events folded, position reached, rows."""

    events: int
    position: int
    rows: int


def rebuild_generation(
    pointers: GenerationStore,
    projection: str,
    default_view: str,
    *,
    build: Callable[[Generation], BuiltCopy],
    drop: Callable[[str], None],
    grace: float,
    force: bool = False,
) -> RebuildReport:
    """Build the next generation with `build` (which closes what it opens), switch, drop the old.

    `drop(view_name)` removes a copy; it must succeed on a copy that does not exist.
    """
    previous = pointers.live(projection, default_view)
    target = pointers.claim(projection, default_view, force=force)
    started = time.monotonic()
    try:
        drop(target.view_name)  # leftovers of a rebuild that died
        built = build(target)
        live = _switch(pointers, projection, default_view, previous, target)
    except BaseException as error:
        if not _is_live(pointers, projection, default_view, target):
            pointers.abandon(projection, default_view, target.number, error)
            with suppress(Exception):
                drop(target.view_name)
        raise
    seconds = time.monotonic() - started
    time.sleep(max(0.0, grace))
    drop(previous.view_name)
    with suppress(Exception):
        pointers.clear_error(projection)
    return RebuildReport(
        name=projection,
        previous=previous,
        live=live,
        events=built.events,
        position=built.position,
        rows=built.rows,
        seconds=seconds,
        removed=previous.view_name,
    )


def _switch(
    pointers: GenerationStore,
    projection: str,
    default_view: str,
    previous: Generation,
    target: Generation,
) -> Generation:
    try:
        return pointers.switch(projection, expected=previous, new=target)
    except SwitchConflict:
        # A switch whose commit went through but whose answer was lost (the pointer store
        # retries a statement once after a dropped connection) finds the pointer moved: by us.
        live = pointers.live(projection, default_view)
        if live.view_name == target.view_name:
            return live
        raise


def _is_live(
    pointers: GenerationStore, projection: str, default_view: str, target: Generation
) -> bool:
    """Whether `target` became live after all (then it must never be dropped); unknown = yes."""
    try:
        return pointers.live(projection, default_view).view_name == target.view_name
    except Exception:
        return True
