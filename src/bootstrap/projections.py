"""The read models operators can inspect and rebuild (`icodrip projections`), by name, each
given the openers of its stores on the settings' backend."""

from __future__ import annotations

from functools import partial

from adapters.settings import Settings
from application.stores import open_registry
from projections.generation_store import open_generation_store
from projections.key_lookup_projection import KeyLookupProjection
from projections.key_lookup_view import drop_key_lookup_view, open_named_key_lookup_view
from projections.live_key_lookup import KEY_LOOKUP
from projections.rebuilds import Projection
from projections.request_audit_live import REQUEST_AUDIT
from projections.request_audit_projection import RequestAuditProjection
from projections.request_audit_store import drop_audit_copy, open_request_audit_store
from projections.usage_live import USAGE
from projections.usage_projection import UsageProjection
from projections.usage_store import drop_usage_copy, open_usage_store

#: Every rebuildable read model's name; a new one is added here and below (see DEVELOPERS.md).
PROJECTION_NAMES = (KEY_LOOKUP, REQUEST_AUDIT, USAGE)


def assemble_projections(settings: Settings) -> dict[str, Projection]:
    """Every rebuildable read model, over the stores `settings` name."""
    pointers = partial(open_generation_store, settings)
    built: dict[str, Projection] = {
        KEY_LOOKUP: KeyLookupProjection(
            pointers=pointers,
            registry=partial(open_registry, settings),
            view=partial(open_named_key_lookup_view, settings),
            drop=partial(drop_key_lookup_view, settings),
        ),
        REQUEST_AUDIT: RequestAuditProjection(
            settings,
            pointers=pointers,
            copy=partial(open_request_audit_store, settings),
            drop=partial(drop_audit_copy, settings),
        ),
        USAGE: UsageProjection(
            settings,
            pointers=pointers,
            copy=partial(open_usage_store, settings),
            drop=partial(drop_usage_copy, settings),
        ),
    }
    assert tuple(built) == PROJECTION_NAMES
    return built
