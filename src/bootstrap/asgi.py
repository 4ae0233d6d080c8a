"""`bootstrap.asgi:app`: the ASGI target `icodrip serve` hands to granian (settings: the env)."""

from __future__ import annotations

import os

from adapters.logging import configure_logging
from adapters.settings import Settings
from bootstrap.api import start_api_process

configure_logging()
_proxies = [p for p in os.environ.get("ICODRIP_TRUSTED_PROXIES", "").split(",") if p.strip()]
# Retried (with backoff, logged) while the stores are not usable yet: see `bootstrap.api`.
app = start_api_process(
    Settings.from_env(),
    trusted_proxies=_proxies,
    rate_limit_fail_closed=os.environ.get("ICODRIP_RATE_LIMIT_FAIL_CLOSED", "") == "1",
).app
