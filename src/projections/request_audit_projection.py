"""The request-audit model as an operable projection (see `projections.stream_projection`).

Generation 1 is `RequestAudit`; a rebuild fills `RequestAudit_g<n>` from the stream. The
rebuilt copy chains each organization's rows in stream order; `icodrip audit verify` checks it
like any other.
"""

from __future__ import annotations

from projections.request_audit_live import REQUEST_AUDIT
from projections.request_audit_query import DEFAULT_NAME
from projections.stream_projection import StreamProjection


class RequestAuditProjection(StreamProjection):
    """Request events on JetStream → the hash-chained request-audit model."""

    name = REQUEST_AUDIT
    default_name = DEFAULT_NAME
    description = "request events → audit rows, hash chains and last use per key"
    worker = "audit"
