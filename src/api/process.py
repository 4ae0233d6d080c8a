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
from adapters.tracked_events import open_tracked_event_store
from api.app import create_app
from api.cors import CorsMiddleware
from api.edge import EdgeMiddleware
from api.exposure import ExposureFlagger
from api.key_mirror import KeyMirror
from api.services import Services
from projections.live_key_lookup import open_key_lookup_view
from projections.request_audit_shared import close_request_audit_stores

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
            tracked_events=open_tracked_event_store(settings),
        )
        services = self.services
        services.exposure = ExposureFlagger(registry, services.mirror, settings.key_pepper)
        self.litestar: Litestar = create_app(
            self.services, on_startup=[self.start], on_shutdown=[self.stop]
        )
        self.app = EdgeMiddleware(
            CorsMiddleware(self.litestar, mirror=self.services.mirror),
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
            await ensure_audit_stream(js, replicas=services.settings.stream_replicas)
            services.publisher = RequestEventPublisher(
                js, spool_dir=services.settings.data_dir / "spool" / "request-events"
            )
            await services.publisher.start()
        await services.mirror.start()

    async def stop(self) -> None:
        services = self.services
        await services.mirror.stop()
        if services.exposure is not None:
            await services.exposure.drain()
        if services.publisher is not None:
            await services.publisher.aclose(timeout=5.0)
        if services.nats_client is not None:
            await _close_nats(services.nats_client)
        await services.limiter.aclose()
        services.affiliates.close()
        if services.tracked_events is not None:
            services.tracked_events.close()
        services.registry.close()
        close_request_audit_stores()


async def _close_nats(client: Client) -> None:
    # drain() waits on the server; with NATS gone it would hold shutdown up indefinitely.
    try:
        await asyncio.wait_for(client.drain(), timeout=5.0)
    except Exception:
        with contextlib.suppress(Exception):
            await client.close()
