"""One API process: the Litestar app over its services, and what it starts and stops with it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import structlog
from litestar import Litestar
from nats.aio.client import Client

from adapters import nats as nats_adapter
from adapters.request_event_publisher import RequestEventPublisher
from adapters.request_events import ensure_audit_stream
from api.app import create_app, route_commands
from api.auth import KeyAuthenticator, KeyGate
from api.cors import EVENTS_PATHS, CorsMiddleware
from api.edge import EdgeMiddleware
from api.idempotency import Idempotency
from api.services import Services

log = structlog.get_logger()


class ApiProcess:
    """The app serving one process's `Services` (built by `bootstrap.api.api_process`)."""

    def __init__(
        self,
        services: Services,
        *,
        trusted_proxies: Sequence[str] = (),
    ) -> None:
        self.services = services
        settings = services.settings
        self.litestar: Litestar = create_app(
            services, on_startup=[self.start], on_shutdown=[self.stop]
        )
        store_health = self.litestar.state.store_health
        gate = KeyGate(
            Idempotency(
                self.litestar,
                store=services.idempotency,
                pepper=settings.key_pepper,
                best_effort_paths=EVENTS_PATHS,
            ),
            authenticator=KeyAuthenticator(
                mirror=services.mirror,
                limiter=services.limiter,
                pepper=settings.key_pepper,
                exposure=services.exposure,
                store_health=store_health,
            ),
            route_command=route_commands(self.litestar),
            store_health=store_health,
        )
        self.app = EdgeMiddleware(
            CorsMiddleware(gate, mirror=services.mirror),
            services=services,
            trusted_proxies=trusted_proxies,
        )

    async def start(self) -> None:
        """Connect to NATS (when configured), start publishing request events, load the mirror."""
        services = self.services
        if services.settings.nats_url:
            client = await nats_adapter.connect(services.settings.nats_url, name="icodrip-api")
            services.nats_client = client
            services.mirror.nats_client = client
            await ensure_audit_stream(
                client.jetstream(), replicas=services.settings.stream_replicas
            )
            services.publisher = RequestEventPublisher(
                client, spool_dir=services.settings.data_dir / "spool" / "request-events"
            )
            await services.publisher.start()
        await services.mirror.start()

    async def stop(self) -> None:
        """Stop what started, then close every part; one failing to close skips none of the rest."""
        services = self.services
        await services.mirror.stop()
        await services.exposure.drain()
        if services.publisher is not None:
            await services.publisher.aclose(timeout=5.0)
        if services.nats_client is not None:
            await _close_nats(services.nats_client)
        await services.limiter.aclose()
        await services.idempotency.aclose()
        for part in (
            services.affiliates,
            services.tracked_events,
            services.audit,
            services.usage,
            services.key_lookup,
            services.registry,
        ):
            try:
                part.close()
            except Exception as error:
                log.warning(
                    "api.close_failed", part=type(part).__name__, error=type(error).__name__
                )


async def _close_nats(client: Client) -> None:
    # drain() waits on the server; with NATS gone it would hold shutdown up indefinitely.
    try:
        await asyncio.wait_for(client.drain(), timeout=5.0)
    except Exception:
        with contextlib.suppress(Exception):
            await client.close()
