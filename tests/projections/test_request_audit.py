"""The request-audit model: hash chains per organization, idempotent ingestion, verification."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import psycopg
import pytest
from click.testing import CliRunner
from msgspec.structs import replace

from adapters.request_events import RequestEvent, RequestEventBatch, new_event_id
from adapters.settings import Settings
from cli.audit import audit
from domain.key_format import Environment, KeyType, generate_key, hint_for
from projections.audit_chain import (
    GENESIS_HASH,
    canonical,
    compute_hash,
    row_hash_of,
)
from projections.request_audit import AuditEntry, AuditRow, Message, decode_messages
from projections.request_audit_query import AuditQuery, RequestAuditStore
from projections.request_audit_store import open_request_audit_store

ORG_A = f"org_{uuid.uuid4().hex}"
ORG_B = f"org_{uuid.uuid4().hex}"


def event(org: str | None = ORG_A, **fields: Any) -> RequestEvent:
    values: dict[str, Any] = {
        "id": new_event_id(),
        "request_id": new_event_id(),
        "key_id": None if org is None else "key_" + "1" * 32,
        "key_hint": "ak_live_…abcd",
        "org_id": org,
        "env": None if org is None else "live",
        "method": "GET",
        "route": "/v1/affiliates",
        "path": "/v1/affiliates",
        "status": 200 if org else 401,
        "client_addr": "203.0.113.9",
        "user_agent": "svc/1.0",
        "latency_ms": 2.25,
        "occurred_at": 1_772_366_400.123456,
    }
    values.update(fields)
    return RequestEvent(**values)


def message(seq: int, events: list[RequestEvent], redelivered: bool = False) -> Message:
    return Message(seq, msgspec.json.encode(RequestEventBatch(events=events)), redelivered)


@pytest.fixture
def store(settings: Settings) -> Iterator[RequestAuditStore]:
    opened = open_request_audit_store(settings)
    yield opened
    opened.close()


class Sql:
    """Direct access to the store's tables, as someone tampering with them would have."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.table = "audit_rows" if settings.is_embedded else "requestaudit_rows"

    def __call__(self, statement: str, *params: Any) -> None:
        statement = statement.replace("ROWS", self.table)
        if self.settings.is_embedded:
            with sqlite3.connect(self.settings.data_dir / "requestaudit.sqlite3") as conn:
                conn.execute(statement, params)
        else:
            assert self.settings.database_url is not None
            with psycopg.connect(self.settings.database_url, autocommit=True) as conn:
                conn.execute(statement.replace("?", "%s"), params)  # type: ignore[arg-type]


@pytest.fixture
def sql(settings: Settings) -> Sql:
    return Sql(settings)


def verify_cli(settings: Settings, *args: str) -> tuple[int, dict[str, Any]]:
    env: dict[str, str | None] = {
        "ICODRIP_DATA_DIR": str(settings.data_dir),
        "ICODRIP_KEY_PEPPER": settings.key_pepper.decode(),
        "ICODRIP_DATABASE_URL": settings.database_url,
    }
    result = CliRunner().invoke(audit, ["verify", "--json", *args], env=env, obj={})
    return result.exit_code, json.loads(result.stdout)


# -- the chain's definition -------------------------------------------------------------------


def test_the_row_hash_is_the_documented_sha256() -> None:
    fields = AuditEntry(
        org_id="org_x", seq=2, event_id="e1", request_id="r1", key_id=None,
        key_hint="ak_live_…ab", env="live", method="GET", route="/a", path="/a?b", status=200,
        client_addr=None, user_agent="ua", latency_ms=0.5, occurred_at=1712345678.25,
    )  # fmt: skip
    expected_fields = (
        "5:org_x,1:2,2:e1,2:r1,-13:ak_live_…ab,4:live,3:GET,2:/a,4:/a?b,3:200,-2:ua,3:0.5,"
        "13:1712345678.25,"
    )
    assert canonical(fields) == expected_fields  # "…" is 3 bytes in UTF-8: 11 + 2
    text = f"icodrip-audit-v1\n{'f' * 64}\n{expected_fields}"
    assert compute_hash("f" * 64, fields) == hashlib.sha256(text.encode()).hexdigest()


DOCUMENTED_HASHED_FIELDS = (
    "org_id", "seq", "event_id", "request_id", "key_id", "key_hint", "env", "method", "route",
    "path", "status", "client_addr", "user_agent", "latency_ms", "occurred_at",
)  # fmt: skip


def test_every_field_and_the_position_are_inside_the_hash() -> None:
    row = AuditRow(
        org_id=ORG_A, seq=1, event_id="e", request_id="r", key_id="k", key_hint="h", env="live",
        method="GET", route="/a", path="/a", status=200, client_addr="ip", user_agent="ua",
        latency_ms=1.0, occurred_at=2.0, prev_hash=GENESIS_HASH, row_hash="", stream_seq=7,
    )  # fmt: skip
    row = replace(row, row_hash=row_hash_of(row))
    for field in DOCUMENTED_HASHED_FIELDS:
        value = getattr(row, field)
        changed = value + 1 if isinstance(value, int | float) else f"{value}x"
        assert row_hash_of(replace(row, **{field: changed})) != row.row_hash, field
    assert row_hash_of(replace(row, prev_hash="1" * 64)) != row.row_hash
    assert row_hash_of(replace(row, stream_seq=8)) == row.row_hash  # delivery, not content


# -- ingestion ---------------------------------------------------------------------------------


def test_ingest_chains_each_organization_and_unknown_keys_apart(
    store: RequestAuditStore, settings: Settings
) -> None:
    result = store.ingest(
        [
            message(1, [event(ORG_A), event(ORG_B), event(None)]),
            message(2, [event(ORG_A), event(ORG_A)]),
        ]
    )
    assert (result.inserted, result.duplicates, result.position) == (5, 0, 2)
    heads = store.heads()
    assert {org: h.seq for org, h in heads.items()} == {ORG_A: 3, ORG_B: 1, "none": 1}
    reports = {r.org_id: r for r in store.verify()}
    assert all(r.broken is None for r in reports.values()) and reports[ORG_A].rows == 3
    assert verify_cli(settings)[0] == 0


def test_a_message_delivered_again_or_an_event_published_twice_inserts_nothing(
    store: RequestAuditStore,
) -> None:
    first = [event(), event(ORG_B), event()]
    assert store.ingest([message(1, first)]).inserted == 3
    again = store.ingest([message(1, first, redelivered=True)])
    assert (again.inserted, again.duplicates) == (0, 3)
    # The same batch published again after the stream's duplicate window: a new message.
    republished = store.ingest([message(2, [*first, event()]), message(3, [first[1]])])
    assert (republished.inserted, republished.duplicates, republished.position) == (1, 4, 3)
    assert store.count() == 4 and store.position() == 3
    # Redelivery of an older message after a newer one: nothing, and the position holds.
    assert store.ingest([message(1, first, redelivered=True)]).position == 3
    assert all(r.broken is None for r in store.verify())
    assert store.heads()[ORG_A].seq == 3


def test_unreadable_messages_and_events_are_kept_aside_not_chained(
    store: RequestAuditStore,
) -> None:
    good = json.loads(msgspec.json.encode(event()))
    mixed = json.dumps(
        {
            "events": [
                good,
                {**good, "id": new_event_id(), "status": "teapot"},  # wrong type
                {**good, "id": new_event_id(), "path": "/a\ud800"},  # kept, made storable
                {**good, "id": new_event_id(), "status": 7000},  # not an HTTP status
            ]
        }
    ).encode()
    result = store.ingest([Message(1, b"{not json"), Message(2, mixed)])
    assert (result.inserted, result.rejected, result.position) == (2, 3, 2)
    assert {r.path for r in store.page(_query(ORG_A), 10)} == {"/v1/affiliates", "/a?"}
    again = store.ingest([Message(1, b"{not json", True), Message(2, mixed, True)])
    assert (again.inserted, again.duplicates, again.rejected) == (0, 2, 3)
    assert all(r.broken is None for r in store.verify())


def test_awkward_text_is_stored_and_verified_exactly(store: RequestAuditStore) -> None:
    odd = event(
        path="/v1/a\tb\nc\\d\r\x00e", user_agent="é 漢字 😀", key_hint=None, client_addr=None
    )
    store.ingest([message(1, [odd])])
    [row] = store.page(_query(ORG_A), 10)
    assert row.path == "/v1/a\tb\nc\\d\r\ufffde"
    assert row.user_agent == "é 漢字 😀"
    assert row.key_hint is None and row.latency_ms == 2.25
    assert row.occurred_at == 1_772_366_400.123456
    assert all(r.broken is None for r in store.verify())


PLANTED = generate_key(KeyType.SECRET, Environment.LIVE)


def test_a_key_in_an_event_already_in_the_stream_is_stored_only_as_its_hint(
    store: RequestAuditStore,
) -> None:
    """Events published before the API redacted them: the model redacts what the client chose."""
    planted = event(
        method=f"GET{PLANTED}",
        route=f"/v1/affiliates/{PLANTED}",
        path=f"/v1/affiliates/{PLANTED}",
        client_addr=PLANTED,
        user_agent="x" * 4090 + PLANTED,  # redacted before the text is capped at 4096
    )
    store.ingest([message(1, [planted])])
    [row] = store.page(_query(ORG_A), 10)
    assert row.path == row.route == f"/v1/affiliates/{hint_for(PLANTED)}"
    assert (row.method, row.client_addr) == (f"GET{hint_for(PLANTED)}", hint_for(PLANTED))
    assert row.user_agent == ("x" * 4090 + hint_for(PLANTED))[:4096]
    assert PLANTED[8:-6] not in repr(row)
    assert all(r.broken is None for r in store.verify())


def test_a_key_in_a_rejected_event_or_message_is_kept_aside_only_as_its_hint() -> None:
    good = json.loads(msgspec.json.encode(event(path=f"/v1/{PLANTED}")))
    batch = json.dumps(
        {
            "events": [
                {**good, "status": PLANTED},  # undecodable
                {**good, "id": new_event_id(), "status": 7000},  # not an HTTP status
            ]
        }
    ).encode()
    unreadable = b'{"events": "' + PLANTED.encode() + b"\xff"
    _, rejected = decode_messages([Message(1, batch), Message(2, unreadable)])
    assert len(rejected) == 3
    for reject in rejected:
        assert PLANTED.encode() not in reject.payload and PLANTED not in reject.reason
        assert PLANTED[8:-6].encode() not in reject.payload
        assert hint_for(PLANTED).encode() in reject.payload
    [whole] = [r for r in rejected if r.item == -1]
    assert whole.payload.endswith(b"\xff")  # the rest of the raw bytes kept as they were


def test_last_used_keeps_each_keys_latest_use(store: RequestAuditStore) -> None:
    k1, k2 = "key_" + "a" * 32, "key_" + "b" * 32
    store.ingest(
        [
            message(1, [event(key_id=k1, occurred_at=100.0, client_addr="10.0.0.1")]),
            message(2, [event(key_id=k1, occurred_at=300.0, client_addr="10.0.0.3")]),
            message(3, [event(key_id=k1, occurred_at=200.0, client_addr="10.0.0.2")]),
            message(4, [event(key_id=k2, occurred_at=50.0, client_addr=None)]),
        ]
    )
    store.ingest([message(5, [event(key_id=k1, occurred_at=250.0)])])  # older than known
    used = store.last_used([k1, k2, uuid.UUID(int=3)])
    assert used[k1].at == 300.0 and used[k1].addr == "10.0.0.3"
    assert used[k2].at == 50.0 and used[k2].addr is None
    assert uuid.UUID(int=3) not in used
    assert store.last_used([uuid.UUID(hex="a" * 32)])[uuid.UUID(hex="a" * 32)].at == 300.0


def _query(org: str) -> AuditQuery:
    return AuditQuery(org_id=org)


# -- verification ------------------------------------------------------------------------------


@pytest.fixture
def chain(store: RequestAuditStore) -> list[RequestEvent]:
    events = [event(ORG_A, occurred_at=1000.0 + i) for i in range(6)]
    store.ingest([message(1, events[:3]), message(2, [event(ORG_B), *events[3:]])])
    return events


def test_verify_catches_an_edited_row(
    store: RequestAuditStore, settings: Settings, sql: Sql, chain: list[RequestEvent]
) -> None:
    sql("UPDATE ROWS SET status = 204 WHERE event_id = ?", chain[2].id)
    reports = {r.org_id: r for r in store.verify()}
    broken = reports[ORG_A].broken
    assert broken is not None
    assert (broken.seq, broken.event_id, broken.problem) == (3, chain[2].id, "hash_mismatch")
    assert reports[ORG_B].broken is None
    code, document = verify_cli(settings)
    assert code == 1 and not document["intact"]
    assert document["broken"][0]["break"]["event_id"] == chain[2].id
    assert verify_cli(settings, "--org", ORG_B)[0] == 0


def test_verify_catches_an_edit_that_recomputed_its_own_hash(
    store: RequestAuditStore, sql: Sql, chain: list[RequestEvent]
) -> None:
    [row] = [r for r in store.page(_query(ORG_A), 10) if r.event_id == chain[1].id]
    forged = replace(row, client_addr="198.51.100.1")
    sql(
        "UPDATE ROWS SET client_addr = ?, row_hash = ? WHERE event_id = ?",
        forged.client_addr,
        row_hash_of(forged),
        row.event_id,
    )
    [report] = store.verify(ORG_A)
    assert report.broken is not None
    assert (report.broken.seq, report.broken.problem) == (3, "prev_hash_mismatch")
    assert report.broken.event_id == chain[2].id


def test_verify_catches_a_deleted_row(
    store: RequestAuditStore, settings: Settings, sql: Sql, chain: list[RequestEvent]
) -> None:
    sql("DELETE FROM ROWS WHERE event_id = ?", chain[3].id)
    [report] = store.verify(ORG_A)
    assert report.broken is not None
    assert (report.broken.seq, report.broken.problem) == (4, "sequence_gap")
    assert report.broken.event_id == chain[4].id  # the row found where seq 4 should be
    code, document = verify_cli(settings, "--org", ORG_A)
    assert code == 1 and document["broken"][0]["break"]["seq"] == 4


def test_verify_catches_a_deleted_last_row(
    store: RequestAuditStore, sql: Sql, chain: list[RequestEvent]
) -> None:
    sql("DELETE FROM ROWS WHERE event_id = ?", chain[5].id)
    [report] = store.verify(ORG_A)
    assert report.broken is not None
    assert (report.broken.seq, report.broken.problem) == (6, "missing_rows")


def test_verify_rejects_a_malformed_org(settings: Settings) -> None:
    result = CliRunner().invoke(
        audit,
        ["verify", "--org", "acme"],
        env={
            "ICODRIP_DATA_DIR": str(settings.data_dir),
            "ICODRIP_KEY_PEPPER": "p" * 20,
            "ICODRIP_DATABASE_URL": None,
        },
        obj={},
    )
    assert result.exit_code == 2 and "validation_error" in result.output
