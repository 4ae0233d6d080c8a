"""The read models operators can inspect and rebuild (`icodrip projections`), by name."""

from __future__ import annotations

from projections.key_lookup_projection import KeyLookupProjection
from projections.live_key_lookup import KEY_LOOKUP
from projections.rebuilds import Projection
from projections.request_audit_live import REQUEST_AUDIT
from projections.request_audit_projection import RequestAuditProjection

#: Every rebuildable read model; a new one is added here (see DEVELOPERS.md).
PROJECTIONS: dict[str, Projection] = {
    KEY_LOOKUP: KeyLookupProjection(),
    REQUEST_AUDIT: RequestAuditProjection(),
}
