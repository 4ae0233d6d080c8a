"""Request events for tests and benchmarks of the publisher and its log."""

from __future__ import annotations

import time
from typing import Any

from adapters.request_events import RequestEvent, new_event_id


def request_event(**changes: Any) -> RequestEvent:
    """Plausible fields, any of them overridden."""
    fields: dict[str, Any] = {
        "id": new_event_id(),
        "request_id": new_event_id(),
        "key_id": "key_test",
        "key_hint": None,
        "org_id": "org_test",
        "env": "live",
        "method": "GET",
        "route": "/v1/affiliates",
        "path": "/v1/affiliates",
        "status": 200,
        "client_addr": "127.0.0.1",
        "user_agent": "svc/1.0",
        "latency_ms": 1.25,
        "occurred_at": time.time(),
    }
    return RequestEvent(**{**fields, **changes})


def served_request_event() -> RequestEvent:
    """An event shaped as the API writes them (full-length ids, a real agent): for benchmarks."""
    return request_event(
        key_id="key_0190f7c2a6b34e8c9d1e2f3a4b5c6d7e",
        org_id="org_0190f7c2a6b34e8c9d1e2f3a4b5c6d7e",
        client_addr="10.0.0.7",
        user_agent="billing-service/2.3 (python-httpx)",
        latency_ms=1.7,
    )


def publish_events(publisher: Any, count: int) -> list[str]:
    """Publish `count` fresh events; their ids, in order."""
    ids = []
    for _ in range(count):
        event = request_event()
        ids.append(event.id)
        publisher.publish(event)
    return ids
