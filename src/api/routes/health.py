"""Liveness and readiness probes (no key, plain HTTP allowed)."""

from __future__ import annotations

from litestar import get
from litestar.di import NamedDependency
from litestar.response import Response

from api.objects.service import Health, Readiness
from api.services import Services


@get("/healthz", exclude_from_auth=True, include_in_schema=True, sync_to_thread=False)
def healthz() -> Health:
    """The process is alive."""
    return Health()


@get("/readyz", exclude_from_auth=True, sync_to_thread=False)
def readyz(services: NamedDependency[Services]) -> Response[Readiness]:
    """Ready once the key mirror has loaded and caught up with the key store."""
    ready = services.mirror.ready
    body = Readiness(
        status="ready" if ready else "starting", key_position=services.mirror.lookup.position
    )
    return Response(body, status_code=200 if ready else 503)
