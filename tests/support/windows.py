"""Rate limits count in one-minute windows: tests that count hits start early in one."""

from __future__ import annotations

import asyncio
import time

from domain.rate_limits import WINDOW_SECONDS


async def early_in_a_window(seconds_needed: float = 10.0) -> None:
    """Wait, if need be, for a window with at least `seconds_needed` left in it."""
    left = WINDOW_SECONDS - time.time() % WINDOW_SECONDS
    if left < seconds_needed:
        await asyncio.sleep(left + 0.05)
