"""The usage model as an operable projection (see `projections.stream_projection`).

Generation 1 is `Usage`; a rebuild counts the whole stream again into `Usage_g<n>`. Buckets
older than the stream's retention are rebuilt only as far as the stream still holds events.
"""

from __future__ import annotations

from projections.stream_projection import StreamProjection
from projections.usage_live import USAGE
from projections.usage_query import DEFAULT_NAME


class UsageProjection(StreamProjection):
    """Request events on JetStream → per-key usage per minute, hour and day."""

    name = USAGE
    default_name = DEFAULT_NAME
    description = "request events → per-key counts and latency per minute, hour and day"
    worker = "usage"
