"""The Python client of the Icodrip Keys API.

```python
from icodrip_client import Icodrip

with Icodrip(api_key="ak_live_…", base_url="https://keys.example.com") as client:
    print(client.api_keys.current().name)
    for key in client.api_keys.list():
        print(key.id, key.status)
```
"""

from icodrip_client import webhooks
from icodrip_client._async_client import AsyncIcodrip
from icodrip_client._client import Icodrip
from icodrip_client._public import async_revoke_leaked_keys, revoke_leaked_keys
from icodrip_client._version import __version__
from icodrip_client.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    IcodripError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    PolicyViolationError,
    RateLimitError,
    UnexpectedResponseError,
    UnprocessableEntityError,
    ValidationError,
    WebhookVerificationError,
)
from icodrip_client.pagination import AsyncPage, AsyncPager, Page
from icodrip_client.types import (
    Affiliate,
    ApiKey,
    AuditRequest,
    DeliveryAttempt,
    Exposure,
    KeyPolicy,
    LifecycleEvent,
    ListedTrackedEvent,
    RateLimit,
    TrackedEvent,
    UsageCounts,
    UsageReport,
    UsageRow,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookTest,
)

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "Affiliate",
    "ApiKey",
    "AsyncIcodrip",
    "AsyncPage",
    "AsyncPager",
    "AuditRequest",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "DeliveryAttempt",
    "Exposure",
    "Icodrip",
    "IcodripError",
    "InternalServerError",
    "KeyPolicy",
    "LifecycleEvent",
    "ListedTrackedEvent",
    "NotFoundError",
    "Page",
    "PermissionDeniedError",
    "PolicyViolationError",
    "RateLimit",
    "RateLimitError",
    "TrackedEvent",
    "UnexpectedResponseError",
    "UnprocessableEntityError",
    "UsageCounts",
    "UsageReport",
    "UsageRow",
    "ValidationError",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookTest",
    "WebhookVerificationError",
    "__version__",
    "async_revoke_leaked_keys",
    "revoke_leaked_keys",
    "webhooks",
]
