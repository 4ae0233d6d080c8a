"""How long usage is kept: buckets of each granularity, and the event ids kept for
recognizing a redelivered event (see `projections.usage_query`). Pure (no I/O)."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from projections.usage import Granularity


class UsageRetention(msgspec.Struct, frozen=True):
    """How long each granularity is kept (days; None = forever), and how long event ids are
    remembered for recognizing a duplicate (see `projections.usage_query`)."""

    minute_days: float | None = 7
    hour_days: float | None = 90
    day_days: float | None = None
    seen_event_days: float = 7

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> UsageRetention:
        """The retention `ICODRIP_USAGE_KEEP_{MINUTES,HOURS,DAYS,EVENT_IDS}_DAYS` set (a number
        of days, or `forever` but for event ids), the defaults otherwise; ValueError else."""
        default = cls()

        def days(name: str, fallback: float | None) -> float | None:
            text = (env.get(f"ICODRIP_USAGE_KEEP_{name}_DAYS") or "").strip().lower()
            if not text:
                return fallback
            if text == "forever":
                return None
            try:
                value = float(text)
            except ValueError:
                value = -1.0
            if not 0 < value < 1e6:
                raise ValueError(
                    f"ICODRIP_USAGE_KEEP_{name}_DAYS: expected a number of days or 'forever'"
                )
            return value

        seen = days("EVENT_IDS", default.seen_event_days)
        if seen is None:
            raise ValueError("ICODRIP_USAGE_KEEP_EVENT_IDS_DAYS: expected a number of days")
        return cls(
            minute_days=days("MINUTES", default.minute_days),
            hour_days=days("HOURS", default.hour_days),
            day_days=days("DAYS", default.day_days),
            seen_event_days=seen,
        )

    def kept_days(self, granularity: Granularity) -> float | None:
        """How long buckets of this granularity are kept, in days (None = forever)."""
        return {
            Granularity.MINUTE: self.minute_days,
            Granularity.HOUR: self.hour_days,
            Granularity.DAY: self.day_days,
        }[granularity]

    def cutoff(self, granularity: Granularity, now: float) -> int | None:
        """The first bucket start kept at `now`: every earlier bucket ended more than the
        retention ago (None: nothing expires)."""
        days = self.kept_days(granularity)
        return None if days is None else granularity.align(now - days * 86_400)

    def is_expired(self, granularity: Granularity, start: int, now: float) -> bool:
        """Whether the bucket starting at `start` is past its retention at `now`."""
        cutoff = self.cutoff(granularity, now)
        return cutoff is not None and start < cutoff

    def seen_floor(self, now: float) -> str:
        """The event-id prefix below which event ids are forgotten at `now` (12 hex digits of
        Unix milliseconds, as `adapters.request_events.new_event_id` starts)."""
        millis = max(0, int((now - self.seen_event_days * 86_400) * 1000))
        return f"{millis:012x}"
