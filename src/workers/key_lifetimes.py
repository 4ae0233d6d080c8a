"""The lifetime sweep: revokes keys unused past their org's limit, and rolled keys gone idle.

`LifetimeIndex` folds the key store's notification log into what the sweep needs (each org's
lifetime policy and when it was set; each unrevoked key's org, issue time, roll, idle
arrangement and warning), so a pass reads only the last use of the keys that may be due, from
the audit trail (`LastUseReader`), and calls `application.key_lifetimes.KeyLifetimes` for those
that are: it judges each again on the key as stored, and acts as the system.

Nothing is judged on a last use the audit trail may not know: a pass that cannot read it, or
that is told the audit is not current (`audit_current`: its worker down or behind), neither
warns nor revokes; it counts what it held back (`SweepReport.held_back`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from uuid import UUID

import structlog

from application.key_lifetimes import KeyLifetimes
from application.key_management import LastUseReader
from application.registry import KeyRegistry
from domain.api_key import ApiKey
from domain.ids import format_key_id
from domain.lifetime_policy import (
    LifetimePolicy,
    UnusedWarning,
    idle_revocation_due,
    last_active,
    unused_verdict,
)
from domain.organization import Organization

log = structlog.get_logger()

#: How often the sweep looks for rolled keys gone idle (asked in minutes), in seconds.
SWEEP_INTERVAL = 5.0
#: Unused keys (asked in days) are looked for every this many passes: a minute.
UNUSED_EVERY = 12
BATCH_SIZE = 1000
#: Keys whose last use is read in one query.
LAST_USE_CHUNK = 500
#: Unused keys warned or revoked in one pass (each a stored event, some milliseconds): an org
#: setting its rule over many keys is worked through over several passes, while rolled keys
#: gone idle are still revoked every few seconds.
UNUSED_ACTIONS_PER_PASS = 500


@dataclass
class TrackedKey:
    """What the sweep knows of one unrevoked key."""

    org_id: UUID
    issued_at: datetime
    rolled: bool = False
    idle_revocation: tuple[datetime, timedelta] | None = None
    unused_warning: UnusedWarning | None = None


@dataclass
class LifetimeIndex:
    """Orgs' policies (and when each was set) and unrevoked keys, from stored events (no I/O)."""

    policies: dict[UUID, tuple[LifetimePolicy, datetime]] = field(default_factory=dict)
    keys: dict[UUID, TrackedKey] = field(default_factory=dict)
    position: int = 0

    def apply(self, event: Any, position: int) -> None:
        if position <= self.position:
            return
        self.position = position
        key_id = event.originator_id
        if isinstance(event, Organization.LifetimePolicySet):
            policy = LifetimePolicy.of_seconds(
                event.max_lifetime_seconds, event.require_expiry, event.revoke_unused_after_seconds
            )
            self.policies[key_id] = (policy, event.timestamp)
        elif isinstance(event, ApiKey.Created):
            self.keys[key_id] = TrackedKey(event.org_id, event.timestamp)
        elif isinstance(event, ApiKey.Revoked | ApiKey.Expired):
            self.keys.pop(key_id, None)
        elif (tracked := self.keys.get(key_id)) is not None:
            if isinstance(event, ApiKey.Rolled):
                tracked.rolled = True
            elif isinstance(event, ApiKey.IdleRevocationArranged):
                tracked.idle_revocation = (event.timestamp, timedelta(seconds=event.idle_seconds))
            elif isinstance(event, ApiKey.UnusedWarned):
                tracked.unused_warning = UnusedWarning(event.timestamp, event.revoke_at)

    def candidates(self, *, unused: bool = True) -> list[UUID]:
        """Keys the sweep may act on: rolled ones arranged to go idle, and (with `unused`)
        unrolled ones of orgs that revoke unused keys."""
        return [
            key_id
            for key_id, tracked in self.keys.items()
            if (tracked.rolled and tracked.idle_revocation is not None)
            or (unused and not tracked.rolled and self.policy(tracked.org_id).revoke_unused_after)
        ]

    def policy(self, org_id: UUID) -> LifetimePolicy:
        return self.policies.get(org_id, (LifetimePolicy(), None))[0]

    def policy_set_at(self, org_id: UUID) -> datetime | None:
        return self.policies[org_id][1] if org_id in self.policies else None


@dataclass
class SweepReport:
    """What one pass did."""

    warned: int = 0
    revoked_unused: int = 0
    revoked_idle: int = 0
    held_back: int = 0  # keys not judged: the audit trail was unreadable or not current


class LifetimeSweep:
    """Follows the store and acts on due keys; `run_once` is one pass (used by tests too)."""

    def __init__(self, registry: KeyRegistry, last_use: LastUseReader) -> None:
        self.registry = registry
        self.lifetimes = KeyLifetimes(registry)
        self.index = LifetimeIndex()
        self._last_use = last_use

    def catch_up(self) -> int:
        """Fold new stored events into the index (I/O); the number read."""
        total = 0
        while True:
            notifications = self.registry.recorder.select_notifications(
                start=self.index.position, limit=BATCH_SIZE, inclusive_of_start=False
            )
            for notification in notifications:
                if notification.topic.startswith(("domain.api_key:", "domain.organization:")):
                    self._apply(notification)
                self.index.position = max(self.index.position, notification.id)
            total += len(notifications)
            if len(notifications) < BATCH_SIZE:
                return total

    def _apply(self, notification: Any) -> None:
        try:
            event = self.registry.mapper.to_domain_event(notification)
            self.index.apply(event, notification.id)
        except Exception as error:  # one unreadable event must not stop the sweep for good
            log.error(
                "lifetimes.event_skipped", position=notification.id, error=type(error).__name__
            )

    def run_once(self, *, audit_current: bool, unused: bool = True) -> SweepReport:
        """Catch up, then warn or revoke every due key (idle ones only, without `unused`)."""
        self.catch_up()
        report = SweepReport()
        candidates = self.index.candidates(unused=unused)
        if not candidates:
            return report
        used = self._read_last_use(candidates) if audit_current else None
        if used is None:
            report.held_back = len(candidates)
            return report
        now = self.registry.clock()
        rolled_first = sorted(candidates, key=lambda k: not self.index.keys[k].rolled)
        for key_id in rolled_first:
            if report.warned + report.revoked_unused >= UNUSED_ACTIONS_PER_PASS:
                break  # the rest next pass
            try:
                self._judge(key_id, self.index.keys[key_id], used.get(key_id), now, report)
            except Exception as error:  # one key's failure must not stop the others
                log.warning(
                    "lifetimes.failed", key_id=format_key_id(key_id), error=type(error).__name__
                )
        return report

    def _judge(
        self,
        key_id: UUID,
        tracked: TrackedKey,
        last_used: datetime | None,
        now: datetime,
        report: SweepReport,
    ) -> None:
        if tracked.rolled:
            due = idle_revocation_due(tracked.idle_revocation, last_used, now)
            if due and self.lifetimes.revoke_idle(key_id, last_used):
                report.revoked_idle += 1
                log.info("lifetimes.revoked_idle", key_id=format_key_id(key_id))
            return
        verdict = unused_verdict(
            self.index.policy(tracked.org_id),
            last_active(tracked.issued_at, last_used),
            tracked.unused_warning,
            self.index.policy_set_at(tracked.org_id),
            now,
        )
        if verdict is None:
            return
        if not verdict.revoke:
            if self.lifetimes.warn_unused(key_id, last_used) is not None:
                report.warned += 1
                log.info("lifetimes.warned", key_id=format_key_id(key_id))
        elif self.lifetimes.revoke_unused(key_id, last_used):
            report.revoked_unused += 1
            log.info("lifetimes.revoked_unused", key_id=format_key_id(key_id))

    def _read_last_use(self, key_ids: list[UUID]) -> dict[UUID, datetime] | None:
        """Each key's last use; None when the audit trail cannot say."""
        found: dict[UUID, datetime] = {}
        try:
            for start in range(0, len(key_ids), LAST_USE_CHUNK):
                chunk = key_ids[start : start + LAST_USE_CHUNK]
                for key_id, use in self._last_use(chunk).items():
                    found[key_id] = datetime.fromtimestamp(use.at, UTC)
        except Exception as error:
            log.warning("lifetimes.last_use_unavailable", error=type(error).__name__)
            return None
        return found


async def sweep_until_stopped(
    sweep: LifetimeSweep, audit_current: Callable[[], Awaitable[bool]], stopping: asyncio.Event
) -> None:
    """Run a pass every `SWEEP_INTERVAL` until `stopping` (`icodrip worker lifetimes`)."""
    log.info("lifetimes.started")
    passes = 0
    while not stopping.is_set():
        try:
            unused = passes % UNUSED_EVERY == 0
            passes += 1
            current = await audit_current()
            run = partial(sweep.run_once, audit_current=current, unused=unused)
            report = await asyncio.to_thread(run)
            if report.held_back:
                log.warning("lifetimes.audit_not_current", held_back=report.held_back)
        except Exception as error:
            log.warning("lifetimes.pass_failed", error=type(error).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=SWEEP_INTERVAL)
