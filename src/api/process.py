"""One API process: builds its services at start-up and the Litestar app over them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import structlog
from litestar import Litestar
from nats.aio.client import Client

from adapters import nats as nats_adapter
from adapters.affiliates import open_affiliate_store
from adapters.rate_limiter import rate_limiter_for
from adapters.registry import open_registry
from adapters.settings import Settings
from api.app import create_app
from api.edge import EdgeMiddleware
from api.key_mirror import KeyMirror
from api.services import Services
from projections.key_lookup_view import open_key_lookup_view
from projections.request_audit_store import close_request_audit_stores

log = structlog.get_logger()


class ApiProcess:
    """The services of one API process and the app that serves them."""

    def __init__(
        self,
        settings: Settings,
        *,
        trusted_proxies: Sequence[str] = (),
        require_https: bool = True,
        rate_limit_fail_closed: bool = False,
    ) -> None:
        registry = open_registry(settings)
        self.services = Services(
            settings=settings,
            registry=registry,
            mirror=KeyMirror(
                registry, open_key_lookup_view(settings), subject=f"{settings.keys_subject}.>"
            ),
            limiter=rate_limiter_for(settings.redis_url, fail_closed=rate_limit_fail_closed),
            affiliates=open_affiliate_store(settings),
        )
        self.litestar: Litestar = create_app(
            self.services, on_startup=[self.start], on_shutdown=[self.stop]
        )
        self.app = EdgeMiddleware(
            self.litestar,
            services=self.services,
            trusted_proxies=trusted_proxies,
            require_https=require_https,
        )

    async def start(self) -> None:
        """Connect to NATS (when configured), start publishing request events, load the mirror."""
        services = self.services
        if services.settings.nats_url:
            from adapters.request_event_publisher import RequestEventPublisher
            from adapters.request_events import ensure_audit_stream

            client = await nats_adapter.connect(services.settings.nats_url, name="icodrip-api")
            services.nats_client = client
            services.mirror.nats_client = client
            js = client.jetstream()
            await ensure_audit_stream(js)
            services.publisher = RequestEventPublisher(
                js, spool_dir=services.settings.data_dir / "spool" / "request-events"
            )
            await services.publisher.start()
        await services.mirror.start()

    async def stop(self) -> None:
        services = self.services
        await services.mirror.stop()
        if services.publisher is not None:
            await services.publisher.aclose(timeout=5.0)
        if services.nats_client is not None:
            await _close_nats(services.nats_client)
        await services.limiter.aclose()
        services.affiliates.close()
        services.registry.close()
        close_request_audit_stores()


async def _close_nats(client: Client) -> None:
    # drain() waits on the server; with NATS gone it would hold shutdown up indefinitely.
    try:
        await asyncio.wait_for(client.drain(), timeout=5.0)
    except Exception:
        with contextlib.suppress(Exception):
            await client.close()
