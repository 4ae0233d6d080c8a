"""Flagging secret keys as possibly exposed, off the request path.

A secret key seen with browser signals or over plain HTTP is refused at once; recording the
`ApiKey.Exposed` event happens in a background thread so the refusal never waits on the event
store. Each process flags a key once per source (an in-memory set); the aggregate itself
ignores a repeat from another process, so the history shows one event per key and source.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from uuid import UUID

import structlog

from api.key_mirror import KeyMirror
from application.registry import KeyRegistry
from domain.ids import format_key_id
from domain.key_format import KeyType, MalformedKey, hash_key, parse_key
from domain.key_states import ExposureSource

log = structlog.get_logger()


class ExposureFlagger:
    """Schedules `registry.flag_exposed` in the background, deduplicated per key and source."""

    def __init__(self, registry: KeyRegistry, mirror: KeyMirror, pepper: bytes) -> None:
        self.registry = registry
        self.mirror = mirror
        self.pepper = pepper
        self._flagged: set[tuple[UUID, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def flag(self, key_id: UUID, source: ExposureSource, detail: str) -> None:
        """Flag the key soon; returns at once (a no-op when this process already did)."""
        if (key_id, source) in self._flagged:
            return
        if len(self._flagged) > 100_000:
            self._flagged.clear()
        self._flagged.add((key_id, source))
        task = asyncio.get_running_loop().create_task(self._record(key_id, source, detail))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def flag_token(self, token: str, source: ExposureSource, detail: str) -> None:
        """Flag the secret key `token` if the mirror knows it (no I/O; never logs the token)."""
        try:
            parsed = parse_key(token.strip())
        except MalformedKey:
            return
        if parsed.type is not KeyType.SECRET:
            return
        record = self.mirror.get(hash_key(parsed.text, self.pepper))
        if record is not None and not record.revoked:
            self.flag(record.key_id, source, detail)

    async def _record(self, key_id: UUID, source: ExposureSource, detail: str) -> None:
        try:
            flagged = await asyncio.to_thread(
                self.registry.flag_exposed, key_id, source=source, detail=detail
            )
        except Exception as error:
            self._flagged.discard((key_id, source))  # try again on the next sighting
            log.warning(
                "exposure.flag_failed", key_id=format_key_id(key_id), error=type(error).__name__
            )
            return
        if flagged:
            log.warning("exposure.flagged", key_id=format_key_id(key_id), source=source)

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait (a while) for flags still being recorded, e.g. at shutdown or in tests."""
        if self._tasks:
            with suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*self._tasks, return_exceptions=True), timeout
                )
