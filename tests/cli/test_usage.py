"""`icodrip usage`: the per-key table and the API-shaped `--json` agree with the request events
counted into the usage model; bad input is refused on one line with a non-zero exit."""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner, Result

from adapters.request_events import RequestEventBatch
from adapters.settings import Settings
from application.registry import KeyRegistry
from cli.main import cli
from domain.actors import OPERATOR
from domain.api_key import ApiKey
from domain.ids import format_key_id, format_org_id
from domain.key_format import Environment, KeyType
from domain.organization import Organization
from domain.plans import Plan
from projections.request_audit import Message
from projections.usage import LatencySketch
from projections.usage_query import UsageStore
from projections.usage_store import open_usage_store
from support.request_events import request_event

COUNTERS = ("requests", "success", "client_errors", "server_errors", "rate_limited", "refused")
#: The table's numeric columns, in order, as names of the API's fields.
TABLE_FIELDS = (*COUNTERS, "p50_ms", "p95_ms", "p99_ms")
#: Events of one key: (status, latency in ms, seconds ago) each.
Spec = list[tuple[int, float, float]]


def invoke(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(cli, ["usage", *args], env=env)


@pytest.fixture
def env(store_env: dict[str, str]) -> dict[str, str]:
    """The store's variables, and none of the machine's naming another store."""
    values: dict[str, Any] = {**store_env}
    values.setdefault("ICODRIP_DATABASE_URL", None)  # CliRunner unsets a None
    return values


@pytest.fixture
def store(settings: Settings) -> Iterator[UsageStore]:
    opened = open_usage_store(settings)
    yield opened
    opened.close()


class Fed:
    """Events fed into the usage model, and what each key should show."""

    def __init__(self) -> None:
        self.counts: dict[str, Counter[str]] = defaultdict(Counter)
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.seq = 0

    def feed(self, store: UsageStore, key: ApiKey, spec: Spec) -> None:
        """One message of events of `key`: (status, latency ms, seconds ago) each."""
        now = time.time()
        events = [
            request_event(
                key_id=format_key_id(key.id),
                org_id=format_org_id(key.org_id),
                env=key.env.value,
                status=status,
                latency_ms=latency,
                occurred_at=now - ago,
            )
            for status, latency, ago in spec
        ]
        self.seq += 1
        payload = msgspec.json.encode(RequestEventBatch(events=events))
        result = store.ingest([Message(self.seq, payload)])
        assert result.inserted == len(events)

    def expect(self, key_id: str, spec: Spec) -> None:
        counts, latencies = self.counts[key_id], self.latencies[key_id]
        for status, latency, _ in spec:
            counts["requests"] += 1
            counts["success"] += 200 <= status < 300
            counts["client_errors"] += 400 <= status < 500
            counts["server_errors"] += status >= 500
            counts["rate_limited"] += status == 429
            counts["refused"] += status in (401, 403)
            latencies.append(latency)


def percentiles(latencies: list[float]) -> dict[str, float | None]:
    sketch = LatencySketch()
    for latency in latencies:
        sketch.add(latency)
    return {
        name: round(value, 3) if (value := sketch.quantile(q)) is not None else None
        for name, q in (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99))
    }


def summary(counts: Counter[str], latencies: list[float]) -> dict[str, Any]:
    return {**{f: counts[f] for f in COUNTERS}, **percentiles(latencies)}


def cell(value: int | float | None) -> str:
    """How the table prints a number."""
    if value is None:
        return "-"
    return f"{value:,.1f}" if isinstance(value, float) else f"{value:,}"


def new_key(registry: KeyRegistry, org: Organization, name: str, env: Environment) -> ApiKey:
    issued = registry.create_key(
        org.id, name=name, env=env, key_type=KeyType.SECRET, actor=OPERATOR
    )
    return issued.key


@pytest.fixture
def acme(registry: KeyRegistry, store: UsageStore) -> dict[str, Any]:
    """An organization with three keys that served requests, and a stranger's busy key."""
    org = registry.register_organization("Acme", Plan.PRO, OPERATOR)
    backend = new_key(registry, org, "Backend", Environment.LIVE)
    billing = new_key(registry, org, "Billing service", Environment.LIVE)
    sandbox = new_key(registry, org, "Sandbox", Environment.TEST)
    idle = new_key(registry, org, "Idle", Environment.LIVE)
    other_org = registry.register_organization("Other", Plan.PRO, OPERATOR)
    stranger = new_key(registry, other_org, "Stranger", Environment.LIVE)

    fed = Fed()
    ids = {key.id: format_key_id(key.id) for key in (backend, billing, sandbox)}
    recent: dict[str, Spec] = {
        ids[backend.id]: [(200, 10.0, 120.0)] * 5
        + [(404, 20.0, 130), (404, 25.0, 140), (429, 1.0, 150), (401, 2.0, 160)]
        + [(503, 900.0, 170)],
        ids[billing.id]: [(200, 5.0, 100), (201, 6.0, 200), (204, 7.0, 300)],
        ids[sandbox.id]: [(200, 3.0, 60), (500, 40.0, 70)],
    }
    earlier: dict[str, Spec] = {
        ids[backend.id]: [(200, 50.0, 3 * 3600)],
        ids[billing.id]: [(500, 80.0, 4 * 3600)],
    }
    by_id = {format_key_id(key.id): key for key in (backend, billing, sandbox)}
    for key_id, spec in [*recent.items(), *earlier.items()]:
        fed.feed(store, by_id[key_id], spec)
    fed.feed(store, stranger, [(200, 1.0, 60)] * 20)  # busier than any of Acme's keys
    return {
        "org": org,
        "backend": backend,
        "billing": billing,
        "sandbox": sandbox,
        "idle": idle,
        "stranger": stranger,
        "recent": recent,
        "earlier": earlier,
    }


def expected(*groups: dict[str, Spec]) -> dict[str, Any]:
    """key id → its expected summary, over the events of `groups` (key id → events)."""
    fed = Fed()
    for group in groups:
        for key_id, spec in group.items():
            fed.expect(key_id, spec)
    return {k: summary(fed.counts[k], fed.latencies[k]) for k in fed.counts}


def total(summaries: dict[str, Any], latencies: list[float]) -> dict[str, Any]:
    counts = Counter({f: sum(s[f] for s in summaries.values()) for f in COUNTERS})
    return summary(counts, latencies)


def all_latencies(*groups: dict[str, Spec]) -> list[float]:
    return [latency for group in groups for spec in group.values() for _, latency, _ in spec]


def table_lines(stdout: str) -> dict[str, list[str]]:
    """First column → the line's cells (split on runs of two or more spaces)."""
    import re

    lines = stdout.splitlines()
    assert lines[0].startswith("usage of ") and lines[1].split()[0] == "KEY"
    return {line.split()[0]: re.split(r"\s{2,}", line.strip()) for line in lines[2:]}


# -- the table and --json agree with the events ---------------------------------------------------


def test_json_has_the_apis_shape_and_the_fed_counts(
    env: dict[str, str], acme: dict[str, Any]
) -> None:
    org = format_org_id(acme["org"].id)
    result = invoke(env, "--org", org, "--since", "1h", "--granularity", "hour", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert list(document) == [
        "object",
        "granularity",
        "from",
        "to",
        "env",
        "totals",
        "data",
        "next_cursor",
    ]  # as GET /v1/usage answers, with every row at once
    assert document["object"] == "usage" and document["granularity"] == "hour"
    assert document["env"] is None and document["next_cursor"] is None

    by_key: dict[str, Counter[str]] = defaultdict(Counter)
    for row in document["data"]:
        assert set(row) == {"start", "key_id", *COUNTERS, "p50_ms", "p95_ms", "p99_ms"}
        assert document["from"] <= row["start"] < document["to"]
        by_key[row["key_id"]].update({f: row[f] for f in COUNTERS})
    want = expected(acme["recent"])
    assert {k: dict(c) for k, c in by_key.items()} == {
        k: {f: s[f] for f in COUNTERS} for k, s in want.items()
    }  # neither the stranger's key nor the events of hours ago
    assert document["totals"] == total(want, all_latencies(acme["recent"]))
    keys = [row["key_id"] for row in document["data"]]
    assert keys == sorted(keys)  # by key, then time


def test_the_table_lists_each_key_busiest_first_with_a_total_line(
    env: dict[str, str], acme: dict[str, Any]
) -> None:
    org = format_org_id(acme["org"].id)
    result = invoke(env, "--org", org, "--since", "6h")
    assert result.exit_code == 0, result.output
    assert "by minute" in result.stdout.splitlines()[0]
    lines = table_lines(result.stdout)
    want = expected(acme["recent"], acme["earlier"])
    names = {format_key_id(acme[k].id): acme[k].name for k in ("backend", "billing", "sandbox")}
    assert list(lines)[:-1] == sorted(want, key=lambda k: -want[k]["requests"])
    for key_id, cells in list(lines.items())[:-1]:
        assert cells[1] == names[key_id]
        assert cells[2:] == [cell(want[key_id][f]) for f in TABLE_FIELDS], key_id
    everything = total(want, all_latencies(acme["recent"], acme["earlier"]))
    assert lines["TOTAL"] == ["TOTAL", "3 keys", *(cell(everything[f]) for f in TABLE_FIELDS)]
    assert format_key_id(acme["idle"].id) not in result.stdout  # no requests: no line
    assert format_key_id(acme["stranger"].id) not in result.stdout


def test_the_table_and_json_agree(env: dict[str, str], acme: dict[str, Any]) -> None:
    org = format_org_id(acme["org"].id)
    for since in ("30m", "24h", "30d"):
        table = table_lines(invoke(env, "--org", org, "--since", since).stdout)
        document = json.loads(invoke(env, "--org", org, "--since", since, "--json").stdout)
        requests: Counter[str] = Counter()
        for row in document["data"]:
            requests[row["key_id"]] += row["requests"]
        assert {k: cells[2] for k, cells in table.items() if k != "TOTAL"} == {
            k: cell(n) for k, n in requests.items()
        }, since
        assert table["TOTAL"][2:] == [cell(document["totals"][f]) for f in TABLE_FIELDS]


def test_one_key_only(env: dict[str, str], acme: dict[str, Any]) -> None:
    org, backend = format_org_id(acme["org"].id), format_key_id(acme["backend"].id)
    result = invoke(env, "--org", org, "--key", backend, "--since", "1d", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert {row["key_id"] for row in document["data"]} == {backend}
    assert document["totals"] == expected(acme["recent"], acme["earlier"])[backend]

    table = table_lines(invoke(env, "--org", org, "--key", backend, "--since", "1d").stdout)
    assert list(table) == [backend, "TOTAL"]


def test_the_granularity_follows_since_unless_named(
    env: dict[str, str], acme: dict[str, Any]
) -> None:
    org = format_org_id(acme["org"].id)

    def granularity(*args: str) -> str:
        result = invoke(env, "--org", org, *args, "--json")
        assert result.exit_code == 0, result.output
        return str(json.loads(result.stdout)["granularity"])

    assert granularity("--since", "30m") == "minute"
    assert granularity("--since", "6h") == "minute"
    assert granularity("--since", "7h") == "hour"
    assert granularity() == "hour"  # 24h by default
    assert granularity("--since", "7d") == "hour"
    assert granularity("--since", "8d") == "day"
    assert granularity("--since", "30d", "--granularity", "hour") == "hour"  # hours: ≤ 90 days
    # The longest windows, widened to whole buckets (one more than asked): answered.
    assert granularity("--since", "7d", "--granularity", "minute") == "minute"
    assert granularity("--since", "90d", "--granularity", "hour") == "hour"
    assert granularity("--since", "1h", "--granularity", "DAY") == "day"

    minutes = json.loads(invoke(env, "--org", org, "--since", "30m", "--json").stdout)
    assert minutes["totals"]["requests"] == sum(
        s["requests"] for s in expected(acme["recent"]).values()
    )  # the events of hours ago are outside the window


def test_an_organization_without_requests_has_an_empty_report(
    env: dict[str, str], registry: KeyRegistry
) -> None:
    org = format_org_id(registry.register_organization("Quiet", Plan.FREE, OPERATOR).id)
    table = invoke(env, "--org", org)
    assert table.exit_code == 0, table.output
    assert "(no requests in this window)" in table.stdout
    document = json.loads(invoke(env, "--org", org, "--json").stdout)
    assert document["data"] == [] and document["totals"]["requests"] == 0
    assert document["totals"]["p50_ms"] is None


# -- refusals -------------------------------------------------------------------------------


def test_bad_input_is_refused_on_one_line(
    env: dict[str, str], acme: dict[str, Any], registry: KeyRegistry
) -> None:
    org = format_org_id(acme["org"].id)
    unknown_org = "org_" + "0" * 32
    cases = {
        ("--org", org, "--since", "yesterday"): "usage_error",
        ("--org", org, "--since", "-1h"): "usage_error",
        ("--org", org, "--since", "0"): "validation_error",
        ("--org", org, "--granularity", "week"): "usage_error",
        ("--org", org, "--since", "8d", "--granularity", "minute"): "validation_error",
        ("--org", org, "--since", "91d", "--granularity", "hour"): "validation_error",
        ("--org", org, "--since", "99999d"): "validation_error",
        ("--org", "acme"): "validation_error",
        ("--org", unknown_org): "not_found",
        ("--org", org, "--key", "key_nope"): "validation_error",
        ("--org", org, "--key", format_key_id(acme["stranger"].id)): "not_found",
        ("--since", "1h"): "usage_error",  # --org is required
    }
    for args, code in cases.items():
        result = invoke(env, *args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stdout == "", args
        (line,) = result.stderr.splitlines()
        assert line.startswith("error: ") and line.endswith(f"({code})"), (args, line)
    window = invoke(env, "--org", org, "--since", "8d", "--granularity", "minute")
    assert "at most 7 days" in window.stderr


def test_usage_has_help_and_is_a_command_of_icodrip() -> None:
    result = CliRunner().invoke(cli, ["usage", "--help"])
    assert result.exit_code == 0 and "Usage: icodrip usage" in result.output
    assert "--since" in result.output and "GET /v1/usage" in result.output
    assert "usage" in CliRunner().invoke(cli, ["--help"]).output
