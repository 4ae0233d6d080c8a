"""Opening the webhook delivery log on the backend the settings name.

`open_delivery_log` opens the SQLite log (`webhook_deliveries.sqlite3` in the data dir) when
the service runs embedded and the PostgreSQL one otherwise. There is one log, under a fixed
name: it is the record of what was sent, not a model rebuilt from events. The protocol the
backends share is `projections.webhook_deliveries.DeliveryLog`.
"""

from __future__ import annotations

from contextlib import suppress
from typing import cast

from adapters.settings import Settings
from projections.model_copies import open_model_copy
from projections.webhook_deliveries import NAME, DeliveryLog
from projections.webhook_deliveries_postgres import PostgresDeliveryLog
from projections.webhook_deliveries_sqlite import SQLiteDeliveryLog


def open_delivery_log(settings: Settings, *, pool_size: int = 2) -> DeliveryLog:
    """The webhook delivery log on the backend the settings name (tables made if missing)."""
    log = open_model_copy(
        settings, NAME, sqlite=SQLiteDeliveryLog, postgres=PostgresDeliveryLog, pool_size=pool_size
    )
    return cast(DeliveryLog, log)


def drop_delivery_log(settings: Settings) -> None:
    """Remove the delivery log and everything in it (tests; nothing if it does not exist)."""
    log = open_delivery_log(settings)
    try:
        log.drop()
    finally:
        with suppress(Exception):
            log.close()
