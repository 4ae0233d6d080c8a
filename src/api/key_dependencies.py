"""`KeyManagement` as a Litestar dependency, for `/v1/api-keys` and the dashboard's key pages.

The keys' last use comes from the request-audit read model (`Services.audit`); when it cannot
answer the keys still list (without it) and the failure is logged under the caller's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from uuid import UUID

import structlog
from litestar.di import NamedDependency, Provide

from api.services import Services
from application.key_management import KeyManagement, KeyUse, LastUseReader

log = structlog.get_logger()


def last_use_reader(services: Services, unavailable: str) -> LastUseReader:
    """Keys' last use from the audit model; none (logged as `unavailable`) while it is away."""

    def read(key_ids: list[UUID]) -> Mapping[UUID, KeyUse]:
        try:
            return services.audit.last_used(key_ids)
        except Exception as error:  # the audit model may be unavailable; keys still list
            log.warning(unavailable, error=type(error).__name__)
            return {}

    return read


def provide_key_management(unavailable: str) -> Provide:
    """A `KeyManagement` over the app's services per request; last-use failures logged so."""

    def key_management(services: NamedDependency[Services]) -> KeyManagement:
        return KeyManagement(
            services.registry,
            last_use_reader(services, unavailable),
            services.listing.keys,
        )

    return Provide(key_management, sync_to_thread=False)
