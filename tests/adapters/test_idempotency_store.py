"""Both idempotency stores keep a slot's claim and answer the same way."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters import idempotency_store
from adapters.idempotency_store import (
    IdempotencyStore,
    IdempotencyUnavailable,
    RedisIdempotencyStore,
    SqliteIdempotencyStore,
)

FINGERPRINT = b"f" * 32
OTHER = b"o" * 32


@pytest.fixture(params=["redis", "sqlite"])
async def store(
    request: pytest.FixtureRequest, redis_url: str, tmp_path: Path
) -> AsyncIterator[IdempotencyStore]:
    made: IdempotencyStore
    if request.param == "redis":
        made = RedisIdempotencyStore(redis_url, prefix=f"test:{uuid.uuid4().hex}:")
    else:
        made = SqliteIdempotencyStore(tmp_path / "idempotency.sqlite3")
    yield made
    await made.aclose()


async def test_the_first_request_claims_the_slot(store: IdempotencyStore) -> None:
    assert (await store.begin("k:1", FINGERPRINT)).claim is not None


async def test_a_claimed_slot_shows_its_fingerprint_and_no_answer_yet(
    store: IdempotencyStore,
) -> None:
    await store.begin("k:1", FINGERPRINT)
    held = await store.begin("k:1", OTHER)
    assert held.claim is None and held.fingerprint == FINGERPRINT and held.answer is None


async def test_a_finished_slot_holds_its_answer(store: IdempotencyStore) -> None:
    claim = await _claim(store, "k:1")
    await store.finish("k:1", claim, FINGERPRINT, b"sealed answer")
    held = await store.begin("k:1", FINGERPRINT)
    assert held.claim is None and held.answer == b"sealed answer"
    assert held.fingerprint == FINGERPRINT


async def test_a_released_slot_can_be_claimed_again(store: IdempotencyStore) -> None:
    await store.release("k:1", await _claim(store, "k:1"))
    assert (await store.begin("k:1", OTHER)).claim is not None


async def test_slots_are_separate(store: IdempotencyStore) -> None:
    await store.begin("k:1", FINGERPRINT)
    assert (await store.begin("k:2", FINGERPRINT)).claim is not None


async def test_a_claim_abandoned_by_a_killed_process_lapses(
    store: IdempotencyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(idempotency_store, "CLAIM_SECONDS", 1)
    await store.begin("k:1", FINGERPRINT)
    await asyncio.sleep(1.3)
    assert (await store.begin("k:1", OTHER)).claim is not None


async def test_an_extended_claim_does_not_lapse(
    store: IdempotencyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(idempotency_store, "CLAIM_SECONDS", 1)
    claim = await _claim(store, "k:1")
    for _ in range(3):
        await asyncio.sleep(0.5)
        await store.extend("k:1", claim)
    assert (await store.begin("k:1", OTHER)).claim is None


async def test_a_lapsed_claim_changes_nothing_of_the_request_that_took_over(
    store: IdempotencyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(idempotency_store, "CLAIM_SECONDS", 1)
    lapsed = await _claim(store, "k:1")
    await asyncio.sleep(1.3)
    taken = await store.begin("k:1", OTHER)
    assert taken.claim is not None
    await store.finish("k:1", lapsed, FINGERPRINT, b"late answer")
    await store.release("k:1", lapsed)
    await store.finish("k:1", taken.claim, OTHER, b"the answer")
    held = await store.begin("k:1", OTHER)
    assert held.answer == b"the answer" and held.fingerprint == OTHER


async def _claim(store: IdempotencyStore, slot: str) -> bytes:
    claim = (await store.begin(slot, FINGERPRINT)).claim
    assert claim is not None
    return claim


async def test_an_unreachable_redis_is_reported_not_ignored() -> None:
    store = RedisIdempotencyStore("redis://127.0.0.1:1/0")
    try:
        with pytest.raises(IdempotencyUnavailable):
            await store.begin("k:1", FINGERPRINT)
    finally:
        await store.aclose()
