"""Decoding stream messages for the usage model: only what a count reads, the same counts as
the audit model's decoding, and nothing a bucket cannot hold."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from adapters.request_events import RequestEvent, RequestEventBatch, new_event_id
from adapters.settings import Settings
from projections.request_audit import Message, decode_messages
from projections.usage import Granularity, fold_usage
from projections.usage_events import decode_usage
from projections.usage_query import UsageQuery, UsageStore
from projections.usage_store import open_usage_store

ORG = f"org_{uuid.uuid4().hex}"
KEYS = [f"key_{uuid.uuid4().hex}" for _ in range(3)]
NOW = 1_780_000_000.0


def event(**fields: Any) -> RequestEvent:
    values: dict[str, Any] = {
        "id": new_event_id(),
        "request_id": new_event_id(),
        "key_id": random.choice(KEYS),
        "key_hint": "…abcd",
        "org_id": ORG,
        "env": random.choice(["live", "test"]),
        "method": "GET",
        "route": "/v1/affiliates",
        "path": "/v1/affiliates?q=é\x00",
        "status": random.choice([200, 201, 401, 403, 404, 429, 500, 503, 302]),
        "client_addr": "203.0.113.9",
        "user_agent": "svc/1.0 ☃",
        "latency_ms": random.uniform(0.0, 900.0),
        "occurred_at": NOW + random.uniform(0, 7_200),
    }
    values.update(fields)
    return RequestEvent(**values)


def message(seq: int, events: list[RequestEvent]) -> Message:
    return Message(seq, msgspec.json.encode(RequestEventBatch(events=events)))


def audit_fold(messages: list[Message]) -> Any:
    decoded, _ = decode_messages(messages)
    return fold_usage(entry for _, entries in decoded for entry in entries)


def usage_fold(messages: list[Message]) -> Any:
    return fold_usage(entry for _, entries in decode_usage(messages) for entry in entries)


def test_usage_counts_what_the_audit_model_decodes() -> None:
    random.seed(7)
    messages = [message(seq, [event() for _ in range(50)]) for seq in range(1, 21)]
    messages.append(message(21, [event(key_id=None, org_id=None, status=401)]))
    assert usage_fold(messages) == audit_fold(messages)


def test_ids_with_text_the_stores_clean_are_decoded_as_the_audit_model_cleans_them() -> None:
    odd = message(1, [event(key_id="key_éx"), event(org_id="org_\x00x"), event()])
    assert usage_fold([odd]) == audit_fold([odd])
    assert len(decode_usage([odd])[0][1]) == 3


def test_an_unreadable_event_leaves_the_rest_of_its_message_counted() -> None:
    good = msgspec.json.encode(event())
    payload = (
        b'{"events": [' + good + b', {"id": 5}, ' + good.replace(b'"id":"', b'"id":"x') + b"]}"
    )
    [(seq, requests)] = decode_usage([Message(4, payload)])
    assert (seq, len(requests)) == (4, 2)


@pytest.mark.parametrize(
    "fields",
    [
        {"occurred_at": 1e300},  # beyond what a bucket start can hold
        {"occurred_at": -60.0},
        {"latency_ms": float("inf")},
        {"key_id": None},
        {"org_id": None},
        {"org_id": ""},
        {"key_id": "*live"},  # no key's id: an organization's own bucket has it
        {"key_id": "key_" + "0" * 200},  # longer than an id the API writes
        {"env": "staging"},
        {"env": None},
    ],
)
def test_a_request_no_bucket_can_hold_is_not_counted(fields: dict[str, Any]) -> None:
    [(_, requests)] = decode_usage([message(1, [event(**fields), event()])])
    assert len(requests) == 1


@pytest.fixture
def store(settings: Settings) -> Iterator[UsageStore]:
    opened = open_usage_store(settings)
    yield opened
    opened.close()


def test_the_store_ingests_a_message_with_odd_requests_and_moves_on(store: UsageStore) -> None:
    odd = [event(occurred_at=1e300), event(latency_ms=float("inf")), event(key_id="key_\x00")]
    result = store.ingest([message(1, [*odd, event(key_id=KEYS[0], occurred_at=NOW)])])
    assert (result.inserted, result.position) == (2, 1)
    query = UsageQuery(ORG, Granularity.DAY, 0, 2**33)
    assert sum(row.counters.requests for row in store.query(query, 100)) == 2


def test_a_message_nested_too_deeply_for_a_parser_is_skipped_not_retried() -> None:
    good = msgspec.json.encode(event())
    deep = b"[" * 5_000 + b"]" * 5_000
    nested = good[:-1] + b', "extra": ' + deep + b"}"
    payload = b'{"events": [' + nested + b"]}"
    assert decode_usage([Message(1, payload)]) == []
