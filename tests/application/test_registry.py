"""KeyRegistry on SQLite and PostgreSQL: the lifecycle of keys, stored for good, hash only,
and safe when two processes change the same key or organization at the same moment.

Each story reads its result back through a NEW registry on the same store, as a restarted
process or another replica would: what is asserted is what was committed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import IntegrityError

from application.key_lifetimes import KeyLifetimes
from application.registry import COMMAND_ATTEMPTS, Conflict, KeyRegistry
from domain.actors import OPERATOR
from domain.api_key import ApiKey
from domain.errors import KeyRevoked, NotFound, PermissionExceeded, PlanDoesNotAllow
from domain.key_format import Environment, KeyType, hash_key, hint_for, parse_key
from domain.key_states import ExposureSource, KeyStatus
from domain.lifetime_policy import ExpiryRequirement, LifetimePolicy
from domain.organization import LeakPolicy, Organization
from domain.plans import PLAN_PERMISSIONS, Permission, Plan
from support.actors import user_of

if TYPE_CHECKING:
    from conftest import Store  # tests/application/conftest.py

LIVE, TEST = Environment.LIVE, Environment.TEST
SECRET, PUBLIC = KeyType.SECRET, KeyType.PUBLIC
HOUR = timedelta(hours=1)
ADMIN = OPERATOR  # who acts does not matter to these stories; tests/domain/test_access.py
RACE_ROUNDS = 4


def new_org(registry: KeyRegistry, plan: Plan = Plan.PRO) -> Organization:
    return registry.register_organization("Acme Affiliates", plan, OPERATOR)


def new_key(registry: KeyRegistry, org_id: UUID, name: str = "billing", **options: Any):  # type: ignore[no-untyped-def]
    options.setdefault("env", LIVE)
    options.setdefault("key_type", SECRET)
    return registry.create_key(org_id, name=name, actor=ADMIN, **options)


def created_key_events(registry: KeyRegistry) -> int:
    """How many keys the store has ever recorded, whatever organization lists them."""
    notifications = registry.recorder.select_notifications(start=1, limit=10_000)
    return sum(n.topic.endswith("ApiKey.Created") for n in notifications)


# -- the lifecycle, durable ----------------------------------------------------------------


def test_a_registered_organization_is_read_back_after_a_restart(store: Store) -> None:
    org = new_org(store.open(), Plan.AGENCY)

    again = store.open().get_organization(org.id)

    assert (again.name, again.plan, again.key_ids) == ("Acme Affiliates", Plan.AGENCY, [])
    assert again.registered_by == OPERATOR.name


def test_a_created_key_is_listed_with_its_hash_after_a_restart(store: Store) -> None:
    registry = store.open()
    org = new_org(registry)

    issued = new_key(registry, org.id, env=TEST, permissions=frozenset({Permission.AUDIT_READ}))

    (listed,) = store.open().list_keys(org.id)
    assert parse_key(issued.secret).env is TEST
    assert listed.id == issued.key.id
    assert listed.name == "billing"
    assert listed.key_hash == hash_key(issued.secret, store.pepper)
    assert listed.hint == hint_for(issued.secret)
    assert listed.permissions == {Permission.AUDIT_READ}
    assert listed.created_by == ADMIN.name
    assert listed.status_at(datetime.now(UTC)) == KeyStatus.ACTIVE


def test_keys_are_listed_oldest_first(store: Store) -> None:
    registry = store.open()
    org = new_org(registry)
    names = ["billing", "reporting", "tracking"]
    ids = [new_key(registry, org.id, name).key.id for name in names]

    listed = store.open().list_keys(org.id)

    assert [k.id for k in listed] == ids
    assert [k.name for k in listed] == names


def test_a_renamed_key_keeps_its_new_name_after_a_restart(store: Store) -> None:
    registry = store.open()
    issued = new_key(registry, new_org(registry).id)

    registry.rename_key(issued.key.id, name="  billing (eu)  ", actor=ADMIN)

    assert store.open().get_key(issued.key.id).name == "billing (eu)"


def test_a_rolled_key_and_its_successor_are_read_back_after_a_restart(store: Store) -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    registry = store.open(clock=lambda: now)
    org = new_org(registry)
    old = new_key(registry, org.id)

    new = registry.roll_key(old.key.id, grace=24 * HOUR, actor=ADMIN)

    reader = store.open()
    old_key, new_key_ = reader.get_key(old.key.id), reader.get_key(new.key.id)
    assert new.secret != old.secret
    assert old_key.successor_id == new.key.id
    assert old_key.expires_at == now + 24 * HOUR
    assert old_key.status_at(now) == KeyStatus.EXPIRING
    assert new_key_.predecessor_id == old.key.id
    assert new_key_.key_hash == hash_key(new.secret, store.pepper)
    assert [k.id for k in reader.list_keys(org.id)] == [old.key.id, new.key.id]


def test_a_revoked_key_is_revoked_for_every_later_reader(store: Store) -> None:
    registry = store.open()
    issued = new_key(registry, new_org(registry).id)

    registry.revoke_key(issued.key.id, actor=ADMIN, reason="leaked")

    key = store.open().get_key(issued.key.id)
    assert key.is_revoked
    assert (key.revoked_by, key.revocation_reason) == (ADMIN.name, "leaked")
    assert key.status_at(datetime.now(UTC)) == KeyStatus.REVOKED
    with pytest.raises(KeyRevoked):
        store.open().revoke_key(issued.key.id, actor=ADMIN)


def test_the_whole_story_register_create_list_rename_roll_revoke(store: Store) -> None:
    registry = store.open()
    org = new_org(registry)
    first = new_key(registry, org.id, "checkout")
    tracker = new_key(
        registry, org.id, "web tracker", key_type=PUBLIC, allowed_origins=("https://acme.example",)
    )
    assert [k.name for k in registry.list_keys(org.id)] == ["checkout", "web tracker"]
    registry.rename_key(first.key.id, name="checkout (prod)", actor=ADMIN)
    second = registry.roll_key(first.key.id, grace=HOUR, actor=ADMIN)
    registry.revoke_key(first.key.id, actor=ADMIN, reason="rotation done")

    reader = store.open()
    keys = {k.id: k for k in reader.list_keys(reader.get_organization(org.id).id)}
    assert list(keys) == [first.key.id, tracker.key.id, second.key.id]
    old, web, new = keys[first.key.id], keys[tracker.key.id], keys[second.key.id]
    now = datetime.now(UTC)
    assert (old.name, old.status_at(now), old.successor_id) == (
        "checkout (prod)",
        KeyStatus.REVOKED,
        second.key.id,
    )
    assert (new.name, new.status_at(now), new.predecessor_id) == (
        "checkout (prod)",
        KeyStatus.ACTIVE,
        first.key.id,
    )
    assert (web.type, web.allowed_origins) == (PUBLIC, ["https://acme.example"])
    org_now = reader.get_organization(org.id)
    assert web.effective_permissions(org_now) == {Permission.EVENTS_WRITE}


def test_plan_changes_and_rate_limits_are_durable(store: Store) -> None:
    registry = store.open()
    org = new_org(registry, Plan.FREE)

    registry.change_plan(org.id, Plan.AGENCY, OPERATOR)
    registry.set_rate_limit(org.id, 2500, OPERATOR)

    again = store.open().get_organization(org.id)
    assert again.plan is Plan.AGENCY
    assert again.rate_limit_per_minute == 2500


def test_an_org_restored_from_a_snapshot_keeps_its_plan_and_rate_limit(store: Store) -> None:
    """Organizations are snapshotted every 100 events; the snapshot must not lose the plan."""
    registry = store.open()
    org = new_org(registry, Plan.AGENCY)
    for limit in range(2, 101):
        registry.set_rate_limit(org.id, limit * 10, OPERATOR)
    assert registry.snapshots is not None
    assert list(registry.snapshots.get(org.id))  # a snapshot exists

    reader = store.open()
    again = reader.get_organization(org.id)
    assert again.version == 100
    assert again.plan is Plan.AGENCY
    assert again.rate_limit_per_minute == 1000
    assert again.permissions == PLAN_PERMISSIONS[Plan.AGENCY]
    reader.set_rate_limit(org.id, 42, OPERATOR)
    assert store.open().get_organization(org.id).rate_limit_per_minute == 42


def test_a_downgrade_shrinks_stored_keys_permissions(store: Store) -> None:
    registry = store.open()
    org = new_org(registry, Plan.PRO)
    issued = new_key(registry, org.id)

    registry.change_plan(org.id, Plan.FREE, OPERATOR)

    reader = store.open()
    key, org_now = reader.get_key(issued.key.id), reader.get_organization(org.id)
    assert Permission.AUDIT_READ not in key.effective_permissions(org_now)


def test_a_refused_command_stores_nothing(store: Store) -> None:
    registry = store.open()
    org = new_org(registry, Plan.FREE)

    with pytest.raises(PermissionExceeded):
        new_key(registry, org.id, permissions=frozenset({Permission.AUDIT_READ}))
    with pytest.raises(PlanDoesNotAllow):
        registry.set_rate_limit(org.id, 500, OPERATOR)

    reader = store.open()
    again = reader.get_organization(org.id)
    assert (again.version, again.key_ids, again.custom_rate_limit) == (1, [], None)
    assert created_key_events(reader) == 0


def test_unknown_ids_are_not_found(store: Store) -> None:
    registry = store.open()
    new_key(registry, new_org(registry).id)

    with pytest.raises(NotFound, match="no such organization"):
        registry.get_organization(uuid4())
    with pytest.raises(NotFound, match="no such API key"):
        registry.get_key(uuid4())
    with pytest.raises(NotFound, match="no such API key"):
        registry.revoke_key(uuid4(), actor=ADMIN)
    with pytest.raises(NotFound, match="no such organization"):
        new_key(registry, uuid4())


def test_an_id_of_the_wrong_kind_is_not_found(store: Store) -> None:
    registry = store.open()
    org = new_org(registry)
    issued = new_key(registry, org.id)

    with pytest.raises(NotFound, match="no such API key"):
        registry.get_key(org.id)
    with pytest.raises(NotFound, match="no such organization"):
        registry.get_organization(issued.key.id)
    with pytest.raises(NotFound):
        registry.roll_key(org.id, grace=HOUR, actor=ADMIN)


# -- no plaintext secret, anywhere in the store -------------------------------------------


def test_no_plaintext_secret_is_stored_only_its_hash(store: Store) -> None:
    registry = store.open()
    org = new_org(registry, Plan.AGENCY)
    issued = [
        new_key(registry, org.id, "live secret"),
        new_key(registry, org.id, "test secret", env=TEST),
        new_key(
            registry, org.id, "tracker", key_type=PUBLIC, allowed_origins=("https://a.example",)
        ),
        new_key(
            registry, org.id, "restricted", permissions=frozenset({Permission.AFFILIATES_READ})
        ),
    ]
    issued.append(registry.roll_key(issued[0].key.id, grace=HOUR, actor=ADMIN))
    registry.rename_key(issued[1].key.id, name="renamed", actor=ADMIN)
    registry.revoke_key(issued[2].key.id, actor=ADMIN, reason="replaced")
    store.close_all()

    stored = store.everything_stored()

    for key in issued:
        random_part = key.secret[8:35]
        assert key.secret.encode() not in stored
        assert key.secret.encode().hex().encode() not in stored
        assert random_part.encode() not in stored
        assert random_part.encode().hex().encode() not in stored
        assert hash_key(key.secret, store.pepper).encode() in stored


# -- concurrency: two processes on one store -------------------------------------------------


def hold_first_read(registry: KeyRegistry, method: str, barrier: threading.Barrier) -> None:
    """Make `registry` wait at `barrier` right after its next `method` read.

    With both racers held there, both have read the same version before either writes:
    the race is decided by the store's optimistic-concurrency check, not by luck.
    Only the first read waits; the loser's retry reads again freely.
    """
    original = getattr(type(registry), method).__get__(registry)

    def read_then_wait(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        setattr(registry, method, original)
        barrier.wait(timeout=30)
        return result

    setattr(registry, method, read_then_wait)


def count_conflicts(registry: KeyRegistry) -> list[IntegrityError]:
    """The optimistic-concurrency conflicts `registry` meets when it saves."""
    conflicts: list[IntegrityError] = []
    original = registry.save

    def save(*args: Any, **kwargs: Any) -> Any:
        try:
            return original(*args, **kwargs)
        except IntegrityError as error:
            conflicts.append(error)
            raise

    registry.save = save  # type: ignore[method-assign]
    return conflicts


def at_once(*commands: Callable[[], Any]) -> list[tuple[Any, BaseException | None]]:
    """Run the commands in threads at the same time: each one's (result, error)."""
    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        futures = [pool.submit(command) for command in commands]
        outcomes: list[tuple[Any, BaseException | None]] = []
        for future in futures:
            error = future.exception(timeout=60)
            outcomes.append((None, error) if error else (future.result(), None))
        return outcomes


def test_two_replicas_revoking_one_key_at_once_exactly_one_wins(store: Store) -> None:
    setup, first, second = store.open(), store.open(), store.open()
    first_conflicts, second_conflicts = count_conflicts(first), count_conflicts(second)
    org = new_org(setup)

    for _ in range(RACE_ROUNDS):
        key_id = new_key(setup, org.id).key.id
        barrier = threading.Barrier(2)
        hold_first_read(first, "get_key", barrier)
        hold_first_read(second, "get_key", barrier)
        conflicts_before = len(first_conflicts) + len(second_conflicts)

        outcomes = at_once(
            lambda k=key_id: first.revoke_key(k, actor=user_of(org), reason="first"),
            lambda k=key_id: second.revoke_key(k, actor=user_of(org), reason="second"),
        )

        winners = [result for result, error in outcomes if error is None]
        losers = [error for _, error in outcomes if error is not None]
        assert len(winners) == 1, outcomes
        assert len(losers) == 1 and isinstance(losers[0], KeyRevoked), outcomes
        assert len(first_conflicts) + len(second_conflicts) == conflicts_before + 1
        stored = store.open().get_key(key_id)
        assert stored.is_revoked
        assert stored.revoked_by == winners[0].revoked_by
        assert stored.version == 2  # created, revoked once


def test_revoke_racing_roll_leaves_a_consistent_key(store: Store) -> None:
    setup, revoker, roller = store.open(), store.open(), store.open()
    org = new_org(setup)
    keys_so_far = 0

    for _ in range(RACE_ROUNDS):
        old_id = new_key(setup, org.id).key.id
        keys_so_far += 1
        barrier = threading.Barrier(2)
        hold_first_read(revoker, "get_key", barrier)
        hold_first_read(roller, "get_key", barrier)

        (_, revoke_error), (rolled, roll_error) = at_once(
            lambda k=old_id: revoker.revoke_key(k, actor=ADMIN, reason="compromised"),
            lambda k=old_id: roller.roll_key(k, grace=HOUR, actor=ADMIN),
        )

        assert revoke_error is None, "revoking never fails: a rolled key can still be revoked"
        reader = store.open()
        old = reader.get_key(old_id)
        listed = [k.id for k in reader.list_keys(org.id)]
        assert old.is_revoked
        if roll_error is not None:
            # Revoked first: the roll was refused and left no trace.
            assert isinstance(roll_error, KeyRevoked)
            assert old.successor_id is None
            assert old.expires_at is None
            assert listed[-1] == old_id
        else:
            # Rolled first, then revoked: the successor exists, is listed, and works.
            keys_so_far += 1
            successor = reader.get_key(rolled.key.id)
            assert old.successor_id == successor.id
            assert successor.predecessor_id == old_id
            assert not successor.is_revoked
            assert listed[-2:] == [old_id, successor.id]
            events = list(reader.events.get(old_id))
            assert [type(e).__name__ for e in events] == ["Created", "Rolled", "Revoked"]
        assert len(listed) == keys_so_far
        assert created_key_events(reader) == keys_so_far  # no orphaned successor


def test_two_keys_created_at_once_in_one_org_are_both_kept(store: Store) -> None:
    setup, first, second = store.open(), store.open(), store.open()
    first_conflicts, second_conflicts = count_conflicts(first), count_conflicts(second)
    org = new_org(setup)
    expected: list[UUID] = []

    for round_ in range(RACE_ROUNDS):
        barrier = threading.Barrier(2)
        hold_first_read(first, "get_organization", barrier)
        hold_first_read(second, "get_organization", barrier)
        conflicts_before = len(first_conflicts) + len(second_conflicts)

        outcomes = at_once(
            lambda r=round_: new_key(first, org.id, f"first {r}").key.id,
            lambda r=round_: new_key(second, org.id, f"second {r}").key.id,
        )

        assert [error for _, error in outcomes] == [None, None]
        created = {key_id for key_id, _ in outcomes}
        assert len(first_conflicts) + len(second_conflicts) == conflicts_before + 1
        reader = store.open()
        listed = reader.get_organization(org.id).key_ids
        assert set(listed[-2:]) == created
        expected.extend(listed[-2:])
        assert listed == expected
        assert created_key_events(reader) == len(expected)


def test_a_command_that_keeps_losing_races_gives_up_with_conflict(store: Store) -> None:
    registry, other = store.open(), store.open()
    key_id = new_key(registry, new_org(registry).id).key.id
    interruptions: list[str] = []
    read_key = registry.get_key

    def read_then_someone_else_writes(key_id: UUID) -> ApiKey:
        key = read_key(key_id)
        interruptions.append(f"renamed elsewhere {len(interruptions)}")
        other.rename_key(key_id, name=interruptions[-1], actor=OPERATOR)
        return key

    registry.get_key = read_then_someone_else_writes  # type: ignore[method-assign]

    with pytest.raises(Conflict) as caught:
        registry.rename_key(key_id, name="mine", actor=ADMIN)

    assert caught.value.code == "conflict"
    assert len(interruptions) == COMMAND_ATTEMPTS
    assert store.open().get_key(key_id).name == interruptions[-1]


def test_a_leaked_key_whose_restriction_left_the_plan_is_revoked_not_left_working(
    store: Store,
) -> None:
    registry = store.open()
    org = new_org(registry, Plan.PRO)
    registry.set_leak_policy(org.id, LeakPolicy.ROLL, OPERATOR)
    issued = new_key(registry, org.id, permissions=frozenset({Permission.AUDIT_READ}))
    registry.change_plan(org.id, Plan.FREE, OPERATOR)  # audit:read is no longer the plan's

    done = registry.respond_to_leak(issued.key.id, url="https://gist.example/1", source="x")

    assert done == "revoked"
    assert store.open().get_key(issued.key.id).is_revoked


@pytest.mark.parametrize(
    ("first", "then"),
    [
        (ExposureSource.LEAK_REPORT, ExposureSource.PUBLIC_REVOCATION),
        (ExposureSource.PUBLIC_REVOCATION, ExposureSource.LEAK_REPORT),
    ],
)
def test_a_leak_reported_again_by_another_source_keeps_the_grace_of_the_policys_roll(
    store: Store, first: ExposureSource, then: ExposureSource
) -> None:
    registry = store.open()
    org = new_org(registry, Plan.PRO)
    registry.set_leak_policy(org.id, LeakPolicy.ROLL, OPERATOR)
    issued = new_key(registry, org.id)

    assert registry.respond_to_leak(issued.key.id, url="", source="a", exposure=first) == "rolled"
    assert registry.respond_to_leak(issued.key.id, url="", source="b", exposure=then) == "none"

    key = store.open().get_key(issued.key.id)
    assert not key.is_revoked and key.successor_id is not None
    assert [e["source"] for e in key.exposures] == [first, then]


def test_a_key_rolled_by_hand_before_its_first_leak_report_is_revoked(store: Store) -> None:
    registry = store.open()
    org = new_org(registry, Plan.PRO)
    registry.set_leak_policy(org.id, LeakPolicy.ROLL, OPERATOR)
    issued = new_key(registry, org.id)
    registry.roll_key(issued.key.id, grace=HOUR * 24, actor=OPERATOR)

    done = registry.respond_to_leak(issued.key.id, url="https://gist.example/1", source="x")

    assert done == "revoked"


def test_a_key_quoted_in_a_leak_reports_url_is_stored_as_its_hint_only(store: Store) -> None:
    registry = store.open()
    issued = new_key(registry, new_org(registry, Plan.PRO).id)
    url = f"https://gist.example/raw?k={issued.secret}"

    registry.respond_to_leak(issued.key.id, url=url, source="x")

    key = store.open().get_key(issued.key.id)
    assert issued.secret not in str(key.exposures) and issued.secret not in str(
        key.revocation_reason
    )
    assert issued.secret[-4:] in str(key.exposures)


def test_a_restricted_key_rolled_after_a_downgrade_keeps_what_the_plan_still_grants(
    store: Store,
) -> None:
    registry = store.open()
    org = new_org(registry, Plan.PRO)
    both = frozenset({Permission.AUDIT_READ, Permission.AFFILIATES_READ})
    issued = new_key(registry, org.id, permissions=both)
    registry.change_plan(org.id, Plan.FREE, OPERATOR)

    successor = registry.roll_key(issued.key.id, grace=HOUR, actor=OPERATOR)

    assert successor.key.permissions == {Permission.AFFILIATES_READ}


def test_an_orgs_key_policy_survives_its_snapshot(store: Store) -> None:
    registry = store.open()
    org = new_org(registry, Plan.PRO)
    policy = LifetimePolicy(timedelta(days=90), ExpiryRequirement.LIVE, timedelta(days=30))
    KeyLifetimes(registry).set_policy(OPERATOR, org.id, policy)
    set_at = registry.get_organization(org.id).lifetime_policy_set_at
    for _ in range(KeyRegistry.snapshotting_intervals[Organization] // 2):
        registry.change_plan(org.id, Plan.FREE, OPERATOR)
        registry.change_plan(org.id, Plan.PRO, OPERATOR)
    assert registry.snapshots is not None
    assert list(registry.snapshots.get(org.id)), "a snapshot was taken"

    reread = store.open().get_organization(org.id)
    assert reread.lifetime_policy == policy
    assert reread.lifetime_policy_set_at == set_at
