"""The projections `icodrip projections status|rebuild` can operate on, by name.

The key lookup is there from the start; another read model joins with `register_projection`
when its module is imported (as `projections.request_audit_projection` does).
"""

from __future__ import annotations

from projections.key_lookup_projection import KeyLookupProjection
from projections.live_key_lookup import KEY_LOOKUP
from projections.rebuilds import Projection

PROJECTIONS: dict[str, Projection] = {KEY_LOOKUP: KeyLookupProjection()}


def register_projection(projection: Projection) -> None:
    """Make a projection known to `icodrip projections` (e.g. the request-audit model)."""
    PROJECTIONS[projection.name] = projection
