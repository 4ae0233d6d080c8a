"""The key listing gives each key exactly as loading it from its events would, in one read of
the view, and stays right when the view is behind, older than the listing, or far behind."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.persistence import Tracking

from adapters.settings import Settings
from application.key_lifetimes import KeyLifetimes
from application.registry import KeyRegistry, utc_now
from domain.actors import OPERATOR
from domain.api_key import ApiKey
from domain.key_format import Environment, KeyType
from domain.key_states import ExposureSource
from domain.lifetime_policy import LifetimePolicy
from domain.plans import Permission, Plan
from projections.key_listing import KeyState, fold_keys, key_from, state_of
from projections.key_listing_reader import KeyListingReader
from projections.key_lookup_updater import KeyLookupUpdater
from projections.live_key_lookup import open_key_lookup_view


def attributes(key: ApiKey) -> dict[str, Any]:
    """A key's attributes; datetimes as ISO text, so an offset lost on the way shows."""
    return {
        name: value.isoformat() if isinstance(value, datetime) else value
        for name, value in vars(key).items()
        if name != "_pending_events"
    }


def stored_events(registry: KeyRegistry) -> list[object]:
    """Every event in the store, as the key-lookup worker reads them."""
    return [
        registry.mapper.to_domain_event(n) for n in registry.recorder.select_notifications(0, 1000)
    ]


MINUTE = timedelta(minutes=1)


def every_kind_of_event(registry: KeyRegistry) -> list[UUID]:
    """An organization's keys that between them went through every event a key can have."""
    org = registry.register_organization("Acme", Plan.AGENCY, OPERATOR)
    restricted = registry.create_key(
        org.id,
        name="Restricted",
        env=Environment.LIVE,
        key_type=KeyType.SECRET,
        actor=OPERATOR,
        permissions=frozenset({Permission.API_KEYS_READ}),
        expires_at=(utc_now() + timedelta(days=3)).astimezone(timezone(timedelta(hours=2))),
    ).key
    registry.change_key(restricted.id, name="Renamed", allowed_ips=["10.0.0.0/8"], actor=OPERATOR)
    registry.flag_exposed(restricted.id, source=ExposureSource.BROWSER, detail="origin x")
    successor = registry.roll_key(
        restricted.id, grace=timedelta(minutes=5), actor=OPERATOR, revoke_when_idle=MINUTE
    ).key
    registry.clock = lambda: utc_now() + timedelta(hours=1)
    assert registry.expire_key(restricted.id)
    public = registry.create_key(
        org.id,
        name="Web",
        env=Environment.TEST,
        key_type=KeyType.PUBLIC,
        actor=OPERATOR,
        allowed_origins=("https://shop.example",),
    ).key
    KeyLifetimes(registry).set_policy(
        OPERATOR, org.id, LifetimePolicy(revoke_unused_after=timedelta(days=1))
    )
    registry.clock = lambda: utc_now() + timedelta(days=2)
    assert KeyLifetimes(registry).warn_unused(public.id, None) is not None
    registry.revoke_key(successor.id, actor=OPERATOR, reason="done with it")
    return [restricted.id, successor.id, public.id]


def test_a_keys_state_round_trips_to_the_same_attributes_and_types(
    registry: KeyRegistry,
) -> None:
    for key_id in every_kind_of_event(registry):
        key = registry.get_key(key_id)
        restored = key_from(state_of(key))
        assert attributes(restored) == attributes(key)
        assert {n: type(v) for n, v in attributes(restored).items()} == {
            n: type(v) for n, v in attributes(key).items()
        }


def test_a_key_attribute_the_listing_does_not_know_fails_loudly(registry: KeyRegistry) -> None:
    org = registry.register_organization("Acme", Plan.PRO, OPERATOR)
    key = registry.create_key(
        org.id, name="k", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
    ).key
    key.nickname = "new attribute"  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        state_of(key)
    assert "nickname" not in KeyState.__struct_fields__


def test_folding_the_stored_events_gives_each_key_as_loading_it_does(
    registry: KeyRegistry,
) -> None:
    key_ids = every_kind_of_event(registry)
    events = stored_events(registry)
    keys: dict[UUID, ApiKey] = {}
    folded = fold_keys(events, keys, lambda *_: None)
    assert folded.changed == set(key_ids) and folded.dropped == set()
    for key_id in key_ids:
        assert attributes(keys[key_id]) == attributes(registry.get_key(key_id))


def test_an_event_the_state_already_has_is_not_applied_twice(registry: KeyRegistry) -> None:
    key_ids = every_kind_of_event(registry)
    events = stored_events(registry)
    keys = {key_id: registry.get_key(key_id) for key_id in key_ids}
    assert fold_keys(events, keys, lambda *_: None).changed == set()
    for key_id in key_ids:
        assert attributes(keys[key_id]) == attributes(registry.get_key(key_id))


def listing(registry: KeyRegistry, settings: Settings, **options: Any) -> KeyListingReader:
    return KeyListingReader(registry, open_key_lookup_view(settings), **options)


def catch_up(registry: KeyRegistry, settings: Settings) -> None:
    KeyLookupUpdater.from_view(registry, open_key_lookup_view(settings)).catch_up_fully()


class CountedLoads:
    """Counts the aggregates loaded from the store while patched in."""

    def __init__(self, registry: KeyRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        get_key = registry.get_key

        def counted(key_id: UUID) -> ApiKey:
            self.count += 1
            return get_key(key_id)

        monkeypatch.setattr(registry, "get_key", counted)


def test_a_current_view_lists_every_key_without_loading_one(
    registry: KeyRegistry, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_ids = every_kind_of_event(registry)
    catch_up(registry, settings)
    expected = [attributes(registry.get_key(key_id)) for key_id in key_ids]
    loads = CountedLoads(registry, monkeypatch)
    listed = listing(registry, settings).keys(key_ids)
    assert [attributes(key) for key in listed] == expected
    assert loads.count == 0


def test_a_key_changed_after_the_views_position_lists_as_it_is_now(
    registry: KeyRegistry, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_ids = every_kind_of_event(registry)
    catch_up(registry, settings)
    registry.rename_key(key_ids[2], name="Renamed since", actor=OPERATOR)
    org_id = registry.get_key(key_ids[2]).org_id
    created = registry.create_key(
        org_id, name="Brand new", env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
    ).key
    loads = CountedLoads(registry, monkeypatch)
    listed = listing(registry, settings).keys([*key_ids, created.id])
    assert [key.name for key in listed][2:] == ["Renamed since", "Brand new"]
    assert loads.count == 1  # the brand-new key only: the view has never seen it


def test_a_view_written_before_the_listing_lists_from_the_store(
    registry: KeyRegistry, settings: Settings
) -> None:
    key_ids = every_kind_of_event(registry)
    view = open_key_lookup_view(settings)
    updater = KeyLookupUpdater.from_view(registry, view)
    # What a worker from before the listing wrote: the rows and the position, no states.
    changes = updater.apply(updater.fetch(1000))
    view.write(changes, Tracking(registry.name, updater.lookup.position))
    listed = listing(registry, settings).keys(key_ids)
    assert [attributes(k) for k in listed] == [
        attributes(registry.get_key(key_id)) for key_id in key_ids
    ]
    # The next event of such a key gives the listing its state, from the key as it was.
    registry.rename_key(key_ids[2], name="After the upgrade", actor=OPERATOR)
    KeyLookupUpdater.from_view(registry, view).catch_up_fully()
    _, states = view.key_states(registry.name, key_ids)
    assert key_from(states[key_ids[2]]).name == "After the upgrade"
    assert attributes(key_from(states[key_ids[2]])) == attributes(registry.get_key(key_ids[2]))


def test_a_view_far_behind_lists_from_the_store(
    registry: KeyRegistry, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_ids = every_kind_of_event(registry)
    catch_up(registry, settings)
    for n in range(6):  # more events than the listing folds in: the view is far behind
        registry.rename_key(key_ids[2], name=f"name {n}", actor=OPERATOR)
    loads = CountedLoads(registry, monkeypatch)
    listed = listing(registry, settings, tail_limit=5).keys(key_ids)
    assert [k.id for k in listed] == key_ids and listed[2].name == "name 5"
    assert loads.count == len(key_ids)


def test_every_kind_of_key_event_is_in_the_round_trip() -> None:
    kinds = {cls.__name__ for cls in vars(ApiKey).values() if isinstance(cls, type)}
    events = {k for k in kinds if issubclass(getattr(ApiKey, k), ApiKey.Event)} - {"Event"}
    # `every_kind_of_event` goes through each of these; a new kind must be added there.
    assert events == {
        "Created",
        "Renamed",
        "AllowedIpsChanged",
        "Exposed",
        "Rolled",
        "IdleRevocationArranged",
        "UnusedWarned",
        "Expired",
        "Revoked",
    }


def test_a_key_behind_a_gap_lists_as_it_is_and_the_view_catches_up(
    registry: KeyRegistry, settings: Settings
) -> None:
    key_ids = every_kind_of_event(registry)
    view = open_key_lookup_view(settings)
    catch_up(registry, settings)
    # An older worker (rolled back to, or still running) moves the view on without a state.
    registry.rename_key(key_ids[2], name="by the old worker", actor=OPERATOR)
    old = KeyLookupUpdater.from_view(registry, view)
    view.write(old.apply(old.fetch(1000)), Tracking(registry.name, old.lookup.position))
    registry.rename_key(key_ids[2], name="after the gap", actor=OPERATOR)

    assert listing(registry, settings).keys(key_ids)[2].name == "after the gap"
    catch_up(registry, settings)  # the worker goes on past the gap
    _, states = view.key_states(registry.name, key_ids)
    assert attributes(key_from(states[key_ids[2]])) == attributes(registry.get_key(key_ids[2]))


def test_a_key_whose_event_cannot_be_applied_is_dropped_and_read_from_the_store(
    registry: KeyRegistry,
) -> None:
    key_ids = every_kind_of_event(registry)
    events = stored_events(registry)
    keys: dict[UUID, ApiKey] = {}
    broken = key_ids[0]  # the key with the most events
    folded = fold_keys(
        [e for e in events if not (e.originator_id == broken and e.originator_version == 1)],
        keys,
        lambda *_: None,  # the store has nothing either
    )
    assert folded.dropped == {broken} and broken not in keys
    assert folded.changed == set(key_ids) - {broken}


#: A state as this release writes it: every later `KeyState` must still read it (a field added
#: later needs a default). Values are made up; the hint is not a key.
STATE_OF_THIS_RELEASE = (
    b'{"id":"0b8e4a3e-2f4c-4f0e-9a51-6d2d3c1f9a10","version":3,'
    b'"created_on":"2026-12-01T10:00:00+00:00","modified_on":"2026-12-01T11:00:00+00:00",'
    b'"org_id":"5f0c7b7e-1b2a-4c3d-8e9f-0a1b2c3d4e5f","name":"Backend","env":"live",'
    b'"type":"secret","key_hash":"00","hint":"ak_live_abcd",'
    b'"permissions":["api_keys:read"],"expires_at":"2026-12-04T12:00:00+02:00",'
    b'"created_by":"operator","allowed_ips":["10.0.0.0/8"],'
    b'"exposed_at":"2026-12-01T10:30:00+00:00",'
    b'"exposures":[{"source":"browser","detail":"origin x"}]}'
)


def test_a_state_written_by_this_release_still_reads() -> None:
    key = key_from(STATE_OF_THIS_RELEASE)
    assert key.name == "Backend" and key.version == 3
    assert key.permissions == frozenset({Permission.API_KEYS_READ})
    assert key.expires_at is not None and key.expires_at.isoformat().endswith("+02:00")
    assert key.exposures == [{"source": "browser", "detail": "origin x"}]
