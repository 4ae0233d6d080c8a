"""The comparison target for bench/api_throughput.py: the same routes with auth switched off.

The same route handlers, services and exception handlers as `bootstrap.asgi:app`, but without the
edge layer (HTTPS check, headers, request events), authentication, rate limiting and guards:
every request acts as one fixed principal. Never deploy this; it exists to measure their cost.
Run by granian as `unauthenticated:app` with `bench/` on PYTHONPATH and BENCH_KEY_ID set.
"""

from __future__ import annotations

import os
from typing import Any

from litestar import Litestar
from litestar.di import Provide

from adapters.settings import Settings
from api.errors import EXCEPTION_HANDLERS
from api.process import ApiProcess
from api.routes.affiliates import AffiliatesController
from api.routes.api_keys import ApiKeysController
from api.routes.health import healthz, readyz
from bootstrap.api import api_process
from domain.ids import parse_key_id


class FixedPrincipal:
    """Sets `scope["user"]` to one key's principal, as authentication would."""

    def __init__(self, app: Any, process: ApiProcess, key_id: str) -> None:
        self.app = app
        self.process = process
        self.key_id = parse_key_id(key_id)
        self.principal: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            if self.principal is None:  # once: the baseline does no per-request key work
                lookup = self.process.services.mirror.lookup
                record = lookup.get_by_id(self.key_id)
                assert record is not None, "the benchmark key is not in the mirror"
                self.principal = lookup.principal(record)
            scope["user"] = self.principal
        await self.app(scope, receive, send)


process = api_process(Settings.from_env())
app = FixedPrincipal(
    Litestar(
        route_handlers=[healthz, readyz, AffiliatesController, ApiKeysController],
        dependencies={"services": Provide(lambda: process.services, sync_to_thread=False)},
        exception_handlers=EXCEPTION_HANDLERS,
        on_startup=[process.start],
        on_shutdown=[process.stop],
    ),
    process,
    os.environ["BENCH_KEY_ID"],
)
