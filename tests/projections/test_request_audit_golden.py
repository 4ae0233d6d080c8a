"""The audit hash chain is pinned: what it hashes, in which order, and the digests it gives.

The digests below were computed by the chain code as it was before `AuditEntry` replaced the
positional tuple (issue 12), and the rows of `LEGACY_ROWS` are what that code chained and
stored: a change to the encoding, to the fields or to their order fails here instead of
silently invalidating every stored chain (docs/adr/0006-audit-trail.md).
"""

from __future__ import annotations

import inspect
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from msgspec.structs import replace

import projections.audit_chain as audit_chain
from adapters.request_events import RequestEvent, RequestEventBatch
from adapters.settings import Settings
from projections.audit_chain import (
    CONTENT_FIELDS,
    GENESIS_HASH,
    HASHED_FIELDS,
    AuditChainer,
    canonical,
    compute_hash,
    row_hash_of,
    verify_rows,
)
from projections.request_audit import (
    COLUMNS,
    AuditEntry,
    AuditRow,
    ChainHead,
    Message,
    Rejected,
    as_columns,
    decode_messages,
)
from projections.request_audit_query import AuditQuery, RequestAuditStore
from projections.request_audit_store import open_request_audit_store

ADR = Path(__file__).resolve().parents[2] / "docs" / "adr" / "0006-audit-trail.md"

#: The hashed fields in hashing order, as ADR 0006 documents them.
DOCUMENTED_HASHED_FIELDS = (
    "org_id", "seq", "event_id", "request_id", "key_id", "key_hint", "env", "method", "route",
    "path", "status", "client_addr", "user_agent", "latency_ms", "occurred_at",
)  # fmt: skip
#: The stored columns in the order the tables have always had them.
LEGACY_COLUMNS = (*DOCUMENTED_HASHED_FIELDS, "prev_hash", "row_hash", "stream_seq")


# -- the hashed fields and their order --------------------------------------------------------


def test_the_hashed_fields_are_the_documented_ones_in_the_documented_order() -> None:
    assert AuditEntry.__struct_fields__ == DOCUMENTED_HASHED_FIELDS
    assert HASHED_FIELDS == DOCUMENTED_HASHED_FIELDS
    assert tuple(f for f in DOCUMENTED_HASHED_FIELDS if f != "seq") == CONTENT_FIELDS
    assert COLUMNS == AuditRow.__struct_fields__ == LEGACY_COLUMNS
    assert issubclass(AuditRow, AuditEntry)


def test_the_adr_documents_the_same_fields_in_the_same_order() -> None:
    text = " ".join(ADR.read_text().split())
    bullet = text[text.index("- Row fields:") : text.index("- `row_hash =")]
    fields = re.findall(r"`([a-z_]+)`", re.sub(r"\([^)]*\)", "", bullet))
    assert tuple(fields) == LEGACY_COLUMNS
    assert "for the 15 fields from `org_id` to `occurred_at` in that order" in text
    assert tuple(fields[: fields.index("occurred_at") + 1]) == HASHED_FIELDS


def test_the_module_comment_documents_the_same_order() -> None:
    source = inspect.getsource(audit_chain)
    [listed] = re.findall(r"#: (org_id, .*?occurred_at)\.", source, re.DOTALL)
    assert tuple(re.split(r",\s*(?:#:\s*)?", listed)) == HASHED_FIELDS


def test_a_row_is_its_entry_then_its_links_and_goes_to_sql_in_column_order() -> None:
    row = AuditRow.chained(MIXED, "p" * 64, "h" * 64, 9)
    assert {f: getattr(row, f) for f in HASHED_FIELDS} == msgspec.structs.asdict(MIXED)
    assert (row.prev_hash, row.row_hash, row.stream_seq) == ("p" * 64, "h" * 64, 9)
    values: tuple[Any, ...] = as_columns(row)
    assert values == tuple(getattr(row, c) for c in COLUMNS)
    assert AuditRow(*values) == row


# -- golden digests ---------------------------------------------------------------------------

PREV = "0123456789abcdef" * 4
FULL = AuditEntry(
    org_id="org_0123456789abcdef0123456789abcdef",
    seq=42,
    event_id="0190a1b2c3d4e5f60718293a4b5c6d7e",
    request_id="req-ß-1",
    key_id="key_" + "7" * 32,
    key_hint="ak_live_…9fQ2",
    env="live",
    method="GET",
    route="/v1/affiliates/{id}",
    path="/v1/affiliates/é漢字😀?q=a,b:c",
    status=200,
    client_addr="2001:db8::1",
    user_agent="Mozilla/5.0 (ü) \t tab\n",
    latency_ms=0.5,
    occurred_at=1e-05,
)
NULLS = AuditEntry(
    org_id="none",
    seq=1,
    event_id="0190a1b2c3d4e5f60718293a4b5c6d7f",
    request_id="",
    key_id=None,
    key_hint=None,
    env=None,
    method="POST",
    route="",
    path="/",
    status=401,
    client_addr=None,
    user_agent=None,
    latency_ms=1712345678.123456,
    occurred_at=12.0,
)
MIXED = AuditEntry(
    org_id="org_0123456789abcdef0123456789abcdef",
    seq=7,
    event_id="0190a1b2c3d4e5f60718293a4b5c6d80",
    request_id="req-ß-2",
    key_id=None,
    key_hint="ak_test_…Zz09",
    env="test",
    method="PATCH",
    route="/v1/affiliates/{id}",
    path="/v1/affiliates/naïve 漢字 😀",
    status=404,
    client_addr=None,
    user_agent="curl/8.5 «ü»",
    latency_ms=0.5,
    occurred_at=1e-05,
)
GOLDEN = [
    (
        FULL,
        "36:org_0123456789abcdef0123456789abcdef,2:42,32:0190a1b2c3d4e5f60718293a4b5c6d7e,"
        "8:req-\u00df-1,36:key_77777777777777777777777777777777,15:ak_live_\u20269fQ2,4:live,"
        "3:GET,19:/v1/affiliates/{id},35:/v1/affiliates/\u00e9\u6f22\u5b57\U0001f600?q=a,b:c,"
        "3:200,11:2001:db8::1,23:Mozilla/5.0 (\u00fc) \t tab\n,3:0.5,5:1e-05,",
        {
            PREV: "2fee945aedbf3050c16087ff611fd7b841c63c195907a6b97eaa560b0b5a1fad",
            GENESIS_HASH: "328250948511cdd33ab42fa2a5f899cb708ea3edad00015d5937b21bd68d6486",
        },
    ),
    (
        NULLS,
        "4:none,1:1,32:0190a1b2c3d4e5f60718293a4b5c6d7f,0:,---4:POST,0:,1:/,3:401,--"
        "17:1712345678.123456,4:12.0,",
        {
            PREV: "2a75d7225cf749fb68fbd633d9e3661ed041b4ba9bea3169352b1b9a337f8aab",
            GENESIS_HASH: "24a964e58d11cf3af7d42413c52246c84126e1b6176dcd520f8bb3c7ac35369d",
        },
    ),
    (
        MIXED,
        "36:org_0123456789abcdef0123456789abcdef,1:7,32:0190a1b2c3d4e5f60718293a4b5c6d80,"
        "8:req-\u00df-2,-15:ak_test_\u2026Zz09,4:test,5:PATCH,19:/v1/affiliates/{id},"
        "33:/v1/affiliates/na\u00efve \u6f22\u5b57 \U0001f600,3:404,-"
        "15:curl/8.5 \u00ab\u00fc\u00bb,3:0.5,5:1e-05,",
        {PREV: "de81e3cc99de489183f9caf4dec681b600621af8aa7b1922e7e04a0dbdfdd164"},
    ),
]


@pytest.mark.parametrize(("entry", "fields", "digests"), GOLDEN, ids=["full", "nulls", "mixed"])
def test_golden_digests(entry: AuditEntry, fields: str, digests: dict[str, str]) -> None:
    assert canonical(entry) == fields
    for prev_hash, digest in digests.items():
        assert compute_hash(prev_hash, entry) == digest
        row = AuditRow.chained(entry, prev_hash, digest, 1)
        assert row_hash_of(row) == digest
        assert row_hash_of(replace(row, stream_seq=2)) == digest  # provenance, not hashed


# -- a chain stored before the typed entry ----------------------------------------------------

KEY = "key_" + "1" * 32
LEGACY_ROWS: list[tuple[Any, ...]] = [
    ("org_a", 1, "0190a1b2c3d4e5f60718293a4b5c6d01", "req-1", KEY, "ak_live_…abcd", "live",
     "GET", "/v1/affiliates", "/v1/affiliates", 200, "203.0.113.9", "svc/1.0", 2.25,
     1772366400.123456, GENESIS_HASH,
     "df5187f82e542e29fa4f9dae37f8e6189ff8051e4b02d99750bfc948fea52edb", 1),
    ("org_b", 1, "0190a1b2c3d4e5f60718293a4b5c6d02", "req-2", KEY, "ak_live_…abcd", "live",
     "GET", "/v1/affiliates", "/v1/a\tb\nc\\d\r\ufffde", 200, "203.0.113.9", "é 漢字 😀", 0.0,
     1772366400.123456, GENESIS_HASH,
     "2138270bf708cd27df849fa438065f7432f6f0113def8a57dcccfaf95087e2ee", 1),
    ("none", 1, "0190a1b2c3d4e5f60718293a4b5c6d03", "req-3", None, "ak_live_…abcd", None,
     "GET", "/v1/affiliates", "/v1/affiliates", 401, None, "svc/1.0", 0.0, 1e-05, GENESIS_HASH,
     "84bcfb9138b9755ba175a7e29636f29d132888332e2405f9be7e809fdb7ee595", 1),
    ("org_a", 2, "0190a1b2c3d4e5f60718293a4b5c6d04", "req-4", KEY, "ak_live_…abcd", "live",
     "DELETE", "/v1/affiliates", "/v1/affiliates", 204, "203.0.113.9", "svc/1.0", 12.346,
     1712345678.25, "df5187f82e542e29fa4f9dae37f8e6189ff8051e4b02d99750bfc948fea52edb",
     "0cfb63bc55b87f1de4bf2d9a28033a4ac51850ebdfe384987fc1a1851323cec4", 2),
    ("org_a", 3, "0190a1b2c3d4e5f60718293a4b5c6d06", "req-6", KEY, None, "live", "GET",
     "/v1/affiliates", "/v1/affiliates", 200, "203.0.113.9", None, 2.25, 1712345679.0,
     "0cfb63bc55b87f1de4bf2d9a28033a4ac51850ebdfe384987fc1a1851323cec4",
     "b7731b038d3628b9c393931f9ebf32eee3d118cbce5a9ebceac27891e0b56adf", 2),
]  # fmt: skip
LEGACY_HEADS = {
    "org_a": ChainHead(3, "b7731b038d3628b9c393931f9ebf32eee3d118cbce5a9ebceac27891e0b56adf"),
    "org_b": ChainHead(1, "2138270bf708cd27df849fa438065f7432f6f0113def8a57dcccfaf95087e2ee"),
    "none": ChainHead(1, "84bcfb9138b9755ba175a7e29636f29d132888332e2405f9be7e809fdb7ee595"),
}
REJECT_PAYLOAD = (
    b'{"v":1,"id":"0190a1b2c3d4e5f60718293a4b5c6d05","request_id":"req-5","key_id":"key_'
    + b"1" * 32
    + b'","key_hint":"ak_live_\xe2\x80\xa6abcd","org_id":"org_a","env":"live","method":"GET",'
    b'"route":"/v1/affiliates","path":"/v1/affiliates","status":7000,'
    b'"client_addr":"203.0.113.9","user_agent":"svc/1.0","latency_ms":2.25,'
    b'"occurred_at":1772366400.123456}'
)


def legacy_rows() -> list[AuditRow]:
    return [AuditRow(**dict(zip(LEGACY_COLUMNS, values, strict=True))) for values in LEGACY_ROWS]


def legacy_event(i: int, org: str | None, **fields: Any) -> RequestEvent:
    values: dict[str, Any] = {
        "id": f"0190a1b2c3d4e5f60718293a4b5c6d{i:02x}",
        "request_id": f"req-{i}",
        "key_id": KEY,
        "key_hint": "ak_live_…abcd",
        "org_id": org,
        "env": "live",
        "method": "GET",
        "route": "/v1/affiliates",
        "path": "/v1/affiliates",
        "status": 200,
        "client_addr": "203.0.113.9",
        "user_agent": "svc/1.0",
        "latency_ms": 2.25,
        "occurred_at": 1_772_366_400.123456,
    }
    values.update(fields)
    return RequestEvent(**values)


LEGACY_MESSAGES = [
    (
        1,
        [
            legacy_event(1, "org_a"),
            legacy_event(2, "org_b", path="/v1/a\tb\nc\\d\r\x00e", user_agent="é 漢字 😀",
                         latency_ms=0.0004999),
            legacy_event(3, None, key_id=None, env=None, status=401, client_addr=None,
                         latency_ms=1e-05, occurred_at=1e-05),
        ],
    ),
    (
        2,
        [
            legacy_event(4, "org_a", method="DELETE", status=204, latency_ms=12.3456789,
                         occurred_at=1712345678.25),
            legacy_event(5, "org_a", status=7000),
            legacy_event(6, "org_a", user_agent=None, key_hint=None, occurred_at=1712345679.0),
        ],
    ),
]  # fmt: skip


def test_a_chain_hashed_before_the_typed_entry_still_verifies() -> None:
    rows = legacy_rows()
    for org, head in LEGACY_HEADS.items():
        chain = [r for r in rows if r.org_id == org]
        assert verify_rows(org, chain, head) == (head.seq, None)
    forged = [replace(r, status=201) if r.seq == 2 else r for r in rows if r.org_id == "org_a"]
    rows_checked, broken = verify_rows("org_a", forged, LEGACY_HEADS["org_a"])
    assert rows_checked == 3
    assert broken is not None and (broken.seq, broken.problem) == (2, "hash_mismatch")


def test_the_same_events_still_chain_to_the_same_rows() -> None:
    messages = [
        Message(seq, msgspec.json.encode(RequestEventBatch(events=events)))
        for seq, events in LEGACY_MESSAGES
    ]
    decoded, rejected = decode_messages(messages)
    chained = AuditChainer({}, set()).chain(decoded)
    assert chained.rows == legacy_rows()
    assert [as_columns(r) for r in chained.rows] == LEGACY_ROWS
    assert chained.heads == LEGACY_HEADS
    assert rejected == [Rejected(2, 1, "status 7000 is not an HTTP status", REJECT_PAYLOAD)]
    assert (chained.inserted, chained.duplicates, chained.position) == (5, 0, 2)


# -- the same chain in the stores -------------------------------------------------------------


@pytest.fixture
def store(settings: Settings) -> Iterator[RequestAuditStore]:
    opened = open_request_audit_store(settings)
    yield opened
    opened.close()


def _sql(settings: Settings, statement: str, params: list[tuple[Any, ...]] | None = None) -> Any:
    """A statement straight on the store's tables (`T_` = the table prefix): executed for each
    of `params`, or queried (its rows) without."""
    statement = statement.replace("T_", "audit_" if settings.is_embedded else "requestaudit_")
    if settings.is_embedded:
        with sqlite3.connect(settings.data_dir / "requestaudit.sqlite3") as lite:
            if params is None:
                return lite.execute(statement).fetchall()
            return lite.executemany(statement, params)
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url, autocommit=True) as pg, pg.cursor() as cur:
        sql: Any = statement.replace("?", "%s")
        if params is None:
            return cur.execute(sql).fetchall()
        return cur.executemany(sql, params)


def test_the_tables_columns_are_the_rows_fields(
    store: RequestAuditStore, settings: Settings
) -> None:
    if settings.is_embedded:
        columns = [r[1] for r in _sql(settings, "PRAGMA table_info(T_rows)")]
    else:
        query = (
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'T_rows' "
            "ORDER BY ordinal_position"
        )
        columns = [r[0] for r in _sql(settings, query)]
    assert tuple(columns) == COLUMNS == LEGACY_COLUMNS


def test_a_stored_legacy_chain_verifies_and_reads_back_exactly(
    store: RequestAuditStore, settings: Settings
) -> None:
    placeholders = ", ".join("?" * len(LEGACY_COLUMNS))
    columns = ", ".join(LEGACY_COLUMNS)
    _sql(settings, f"INSERT INTO T_rows ({columns}) VALUES ({placeholders})", LEGACY_ROWS)
    heads = [(org, h.seq, h.row_hash) for org, h in LEGACY_HEADS.items()]
    _sql(settings, "INSERT INTO T_heads (org_id, seq, row_hash) VALUES (?, ?, ?)", heads)
    reports = {r.org_id: r for r in store.verify()}
    assert {org: (r.rows, r.broken) for org, r in reports.items()} == {
        org: (head.seq, None) for org, head in LEGACY_HEADS.items()
    }
    assert store.heads() == LEGACY_HEADS
    read = [row for org in LEGACY_HEADS for row in store.page(AuditQuery(org_id=org), 10)]
    assert sorted(read, key=lambda r: r.event_id) == legacy_rows()
    with store.rows_by_event_id(10) as rows:
        assert list(rows) == legacy_rows()
