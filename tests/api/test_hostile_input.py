"""Hostile input never gets a 500: odd Authorization headers are refused with the contract's
codes, oversized bodies with 413, and every documented operation, fuzzed by schemathesis from
the served OpenAPI document with a valid key, answers within its schema.

One API process per module on the embedded store (no NATS, in-process limiter), driven over
ASGI through a blocking portal so that hypothesis can call it from synchronous tests.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from adapters.settings import Settings
from api.json_body import MAX_JSON_DEPTH
from api.process import ApiProcess
from application.registry import IssuedKey
from bootstrap.api import api_process
from domain.actors import OPERATOR
from domain.key_format import (
    ALPHABET,
    CHECKSUM_LENGTH,
    KEY_LENGTH,
    Environment,
    KeyType,
    generate_key,
    hint_for,
)
from domain.plans import Plan

BASE_URL = "https://api.test"
#: What a refused key may be answered with (the last once an address sends too many bad keys).
REFUSALS = {
    "missing_api_key",
    "malformed_api_key",
    "invalid_api_key",
    "too_many_failed_attempts",
}
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.generate],
)


@dataclass
class Served:
    process: ApiProcess
    client: TestClient[Any]
    key: IssuedKey
    """A valid live key of a pro org with a limit high enough never to be reached here."""
    victim: IssuedKey
    """Another key of the same org that the fuzzer may rename, roll or revoke."""
    affiliate_id: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data = tmp_path_factory.mktemp("hostile")
    settings_ = Settings.from_env(
        {
            "ICODRIP_DATA_DIR": str(data),
            "ICODRIP_KEY_PEPPER": "hostile-" + uuid.uuid4().hex,
            # Nothing here may reach GitHub: its scanning keys are "fetched" from a closed port.
            "ICODRIP_GITHUB_SCANNING_KEYS_URL": "https://127.0.0.1:9/keys",
        }
    )
    with pytest.MonkeyPatch.context() as patch:
        # Every example here comes from one client address: lift the per-address limit on
        # failed keys so that the refusals keep their own codes (it is tested elsewhere).
        patch.setattr("api.auth.FAILED_ATTEMPTS_PER_MINUTE", 1_000_000)
        process = api_process(settings_)
        registry = process.services.registry
        org = registry.register_organization("Hostile", Plan.AGENCY, OPERATOR)
        registry.set_rate_limit(org.id, 1_000_000, OPERATOR)

        def key(name: str) -> IssuedKey:
            return registry.create_key(
                org.id, name=name, env=Environment.LIVE, key_type=KeyType.SECRET, actor=OPERATOR
            )

        main, victim = key("fuzzer"), key("victim")
        with TestClient(app=process.app, base_url=BASE_URL) as client:
            created = client.post(
                "/v1/affiliates",
                json={"name": "Acme", "email": "a@example.com"},
                headers={"Authorization": f"Bearer {main.secret}"},
            )
            assert created.status_code == 201, created.text
            yield Served(process, client, main, victim, created.json()["id"])


def assert_refused(response: httpx.Response, *codes: str) -> str:
    """A 401 (or the 429 for too many bad keys) in the contract's error shape; its code."""
    assert response.status_code in (401, 429), (response.status_code, response.text[:300])
    body = response.json()
    code = body["error"]["code"]
    assert code in (codes or REFUSALS), body
    assert body["error"]["message"]
    assert body["error"]["request_id"] == response.headers["x-request-id"]
    if response.status_code == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
    return str(code)


def get(served: Served, headers: Any = None, path: str = "/v1/affiliates") -> httpx.Response:
    return served.client.get(path, headers=headers)


# -- the Authorization header --------------------------------------------------------------

header_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"),
    max_size=300,
)


@FUZZ
@given(value=header_text)
def test_any_authorization_text_is_refused_with_a_contract_code(served: Served, value: str) -> None:
    response = get(served, [(b"authorization", value.encode("utf-8"))])
    assert_refused(response)


@FUZZ
@given(value=st.binary(max_size=300).filter(lambda b: not set(b) & {10, 13, 0}))
def test_any_authorization_bytes_are_refused_with_a_contract_code(
    served: Served, value: bytes
) -> None:
    response = get(served, [(b"authorization", value)])
    assert_refused(response)


@FUZZ
@given(token=header_text)
def test_any_bearer_token_that_is_not_a_key_is_refused(served: Served, token: str) -> None:
    response = get(served, [(b"authorization", b"Bearer " + token.encode("utf-8"))])
    assert_refused(response, "malformed_api_key", "invalid_api_key")


@pytest.mark.parametrize("size", [8 * 1024, 60 * 1024])
def test_a_huge_authorization_header_is_refused_as_malformed(served: Served, size: int) -> None:
    huge = "ak_live_" + "A" * size
    assert_refused(get(served, {"Authorization": f"Bearer {huge}"}), "malformed_api_key")


def test_a_non_ascii_key_is_refused_as_malformed(served: Served) -> None:
    key = served.key.secret
    lookalike = key[:10] + "é" + key[11:]  # same length, one character outside base62
    response = get(served, [(b"authorization", f"Bearer {lookalike}".encode())])
    assert_refused(response, "malformed_api_key")


@FUZZ
@given(copies=st.integers(2, 20), valid=st.booleans())
def test_repeated_authorization_headers_are_refused(
    served: Served, copies: int, valid: bool
) -> None:
    token = served.key.secret if valid else generate_key(KeyType.SECRET, Environment.LIVE)
    response = get(served, [("Authorization", f"Bearer {token}")] * copies)
    assert_refused(response, "malformed_api_key")


@FUZZ
@given(scheme=st.sampled_from(["bearer", "BEARER", "Bearer", "bEaReR", "BeArEr", "bearER"]))
def test_bearer_in_any_case_is_accepted(served: Served, scheme: str) -> None:
    response = get(served, {"Authorization": f"{scheme} {served.key.secret}"})
    assert response.status_code == 200, response.text


@FUZZ
@given(scheme=st.sampled_from(["Basic", "Token", "Bearer:", "Bearerr", "Bear", "ApiKey", ""]))
def test_a_scheme_other_than_bearer_is_refused_as_malformed(served: Served, scheme: str) -> None:
    response = get(served, {"Authorization": f"{scheme} {served.key.secret}".strip()})
    assert_refused(response, "malformed_api_key")


@FUZZ
@given(
    position=st.integers(KEY_LENGTH - CHECKSUM_LENGTH, KEY_LENGTH - 1),
    replacement=st.sampled_from(ALPHABET),
)
def test_a_key_with_a_wrong_checksum_is_refused_as_malformed(
    served: Served, position: int, replacement: str
) -> None:
    key = served.key.secret
    if key[position] == replacement:
        replacement = "0" if replacement != "0" else "1"
    wrong = key[:position] + replacement + key[position + 1 :]
    assert_refused(get(served, {"Authorization": f"Bearer {wrong}"}), "malformed_api_key")


@FUZZ
@given(param=st.sampled_from(["api_key", "key", "access_token", "token", "authorization"]))
def test_a_key_in_the_query_string_is_refused_and_not_echoed(served: Served, param: str) -> None:
    key = served.key.secret
    response = served.client.get("/v1/affiliates", params={param: key})
    assert_refused(response, "missing_api_key")
    assert key not in response.text
    assert key[8:-CHECKSUM_LENGTH] not in response.text


def test_a_key_in_the_query_string_does_not_replace_a_bad_header(served: Served) -> None:
    response = served.client.get(
        "/v1/affiliates",
        params={"api_key": served.key.secret},
        headers={"Authorization": "Bearer nope"},
    )
    assert_refused(response, "malformed_api_key")


# -- oversized bodies ----------------------------------------------------------------------

MAX_BODY = 64 * 1024


@pytest.mark.parametrize("path", ["/v1/affiliates", "/v1/api-keys"])
def test_a_body_over_the_limit_is_413_payload_too_large(served: Served, path: str) -> None:
    body = json.dumps({"name": "x" * (MAX_BODY + 1)}).encode()
    response = served.client.post(
        path,
        content=body,
        headers={
            "Authorization": f"Bearer {served.key.secret}",
            "Content-Type": "application/json",
        },
    )
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "payload_too_large"
    assert response.json()["error"]["request_id"] == response.headers["x-request-id"]


def test_a_streamed_body_over_the_limit_is_413_too(served: Served) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(20):
            yield b"x" * 8192
        yield b'"}'

    response = served.client.post(
        "/v1/affiliates",
        content=chunks(),
        headers={
            "Authorization": f"Bearer {served.key.secret}",
            "Content-Type": "application/json",
        },
    )
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "payload_too_large"


def test_a_body_just_under_the_limit_is_read(served: Served) -> None:
    """The limit is the one refused above, not something smaller: a big body is validated."""
    body = json.dumps({"name": "x" * (MAX_BODY - 100)}).encode()
    assert len(body) < MAX_BODY
    response = served.client.post(
        "/v1/affiliates",
        content=body,
        headers={
            "Authorization": f"Bearer {served.key.secret}",
            "Content-Type": "application/json",
        },
    )
    assert response.status_code == 422, response.text  # too long a name, but read and judged
    assert response.json()["error"]["code"] == "validation_error"


# -- deeply nested JSON -----------------------------------------------------------------------

#: What each route answers a body it cannot read as JSON with (events: a bad event is a
#: `validation_error`, 400, whatever is wrong with it).
MALFORMED_BODY_CODE = {"/v1/events": "validation_error"}
DEEP = [MAX_JSON_DEPTH + 1, 1_000, 2_500]  # the last up to 15 KB: under every body limit


def nested(depth: int, kind: str) -> bytes:
    """JSON that opens `depth` arrays (or objects) at once, in a field or at the top."""
    if kind == "array":
        return b"[" * depth + b"]" * depth
    if kind == "object":
        return b'{"a":' * depth + b"1" + b"}" * depth
    return b'{"name": ' + nested(depth - 1, "array") + b"}"


def json_operations(served: Served) -> list[tuple[str, str]]:
    """(method, path) of every operation of the served schema that takes a JSON body."""
    schema = served.client.get("/schema/openapi.json").json()
    operations = []
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            content = (operation.get("requestBody") or {}).get("content", {})
            label = f"{method.upper()} {path}"
            if "application/json" in content and label not in NOT_CONFIGURED_HERE:
                operations.append((method.upper(), path))
    return operations


def concrete(served: Served, path: str) -> str:
    """`path` with real ids in its parameters (so the body is read, not a 404 first)."""
    real = {"key_id": f"key_{served.victim.key.id.hex}", "affiliate_id": served.affiliate_id}
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: real.get(m.group(1), "x"), path)


def send_json(served: Served, method: str, path: str, body: bytes) -> httpx.Response:
    return served.client.request(
        method,
        concrete(served, path),
        content=body,
        headers={
            "Authorization": f"Bearer {served.key.secret}",
            "Content-Type": "application/json",
        },
    )


def assert_contract_error(response: httpx.Response) -> str:
    """A 4xx in the contract's error shape; its code."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    error = response.json()["error"]
    assert error["code"] and error["message"], error
    assert error["request_id"] == response.headers["x-request-id"]
    return str(error["code"])


def test_every_json_route_is_found_in_the_schema(served: Served) -> None:
    labels = {f"{m} {p}" for m, p in json_operations(served)}
    assert {
        "POST /v1/api-keys",
        "PATCH /v1/api-keys/{key_id}",
        "POST /v1/affiliates",
        "POST /v1/events",
    } <= labels


@pytest.mark.parametrize("kind", ["array", "object", "field"])
@pytest.mark.parametrize("depth", DEEP)
def test_json_nested_too_deep_is_400_malformed_json_on_every_json_route(
    served: Served, depth: int, kind: str
) -> None:
    answers = {}
    for method, path in json_operations(served):
        response = send_json(served, method, path, nested(depth, kind))
        answers[f"{method} {path}"] = (response.status_code, assert_contract_error(response))
    assert answers == {
        f"{m} {p}": (400, MALFORMED_BODY_CODE.get(p, "malformed_json"))
        for m, p in json_operations(served)
    }


@pytest.mark.parametrize("body", [b'{"name": "x"', b"{not json", b'{"name": "x"}}'])
def test_a_body_that_is_not_json_is_400_malformed_json(served: Served, body: bytes) -> None:
    """Whatever is wrong with the JSON, the same code as for JSON nested too deep."""
    for method, path in json_operations(served):
        response = send_json(served, method, path, body)
        assert response.status_code == 400, (method, path, response.text)
        assert assert_contract_error(response) == MALFORMED_BODY_CODE.get(path, "malformed_json")


def test_nesting_up_to_the_limit_and_brackets_inside_strings_are_read(served: Served) -> None:
    deep_but_allowed = nested(MAX_JSON_DEPTH - 2, "object").decode()
    bracketed = '\\\\\\"' + "[{" * 60  # after an escaped backslash and an escaped quote
    response = send_json(
        served,
        "POST",
        "/v1/events",
        f'{{"event": "{bracketed}", "properties": {{"p": {deep_but_allowed}}}}}'.encode(),
    )
    assert response.status_code == 202, response.text
    response = send_json(served, "POST", "/v1/affiliates", f'{{"name": "{bracketed}"}}'.encode())
    assert response.status_code == 201, response.text
    assert response.json()["name"] == '\\"' + "[{" * 60


# -- keys in invalid bodies --------------------------------------------------------------------

PLANTED = generate_key(KeyType.SECRET, Environment.LIVE)
#: Bodies whose error message quotes what was sent (a value, a field name).
ECHOING_BODIES = [
    ("POST", "/v1/api-keys", {"name": "x", "env": PLANTED}),
    ("POST", "/v1/api-keys", {"name": "x", "type": PLANTED}),
    ("POST", "/v1/api-keys", {"name": "x", "permissions": [PLANTED]}),
    ("POST", "/v1/api-keys", {"name": "x", "allowed_ips": [PLANTED]}),
    ("POST", "/v1/api-keys", {"name": "x", "type": "public", "allowed_origins": [PLANTED]}),
    ("POST", "/v1/api-keys", {"name": "x", "expires_at": PLANTED}),
    ("POST", "/v1/api-keys", {"name": "x", PLANTED: 1}),
    ("PATCH", "/v1/api-keys/{key_id}", {"allowed_ips": [f"10.0.0.0/8,{PLANTED}"]}),
    ("POST", "/v1/affiliates", {"name": "x", "email": PLANTED}),
    ("POST", "/v1/events", {"event": "x", "timestamp": PLANTED}),
    ("POST", "/v1/events", {"event": "x", "properties": {"p": 1}, PLANTED: 2}),
]


@pytest.mark.parametrize(("method", "path", "body"), ECHOING_BODIES)
def test_a_key_in_an_invalid_body_is_not_echoed_only_its_hint(
    served: Served, method: str, path: str, body: dict[str, Any]
) -> None:
    response = send_json(served, method, path, json.dumps(body).encode())
    assert_contract_error(response)
    assert PLANTED not in response.text
    assert PLANTED[8:-CHECKSUM_LENGTH] not in response.text


def test_an_echoed_key_is_shown_as_its_hint(served: Served) -> None:
    body = json.dumps({"name": "x", "env": PLANTED}).encode()
    message = send_json(served, "POST", "/v1/api-keys", body).json()["error"]["message"]
    assert hint_for(PLANTED) in message


# -- times without a time zone -----------------------------------------------------------------


@pytest.mark.parametrize("naive", ["2030-01-01T00:00:00", "2030-01-01T00:00:00.123456"])
def test_an_expires_at_without_a_time_zone_is_422_validation_error(
    served: Served, naive: str
) -> None:
    response = send_json(
        served, "POST", "/v1/api-keys", json.dumps({"name": "x", "expires_at": naive}).encode()
    )
    assert response.status_code == 422, response.text
    assert assert_contract_error(response) == "validation_error"
    message = response.json()["error"]["message"]
    assert message.startswith("expires_at:") and "timezone" in message


def test_an_expires_at_with_an_offset_is_accepted(served: Served) -> None:
    body = {"name": "expiring", "expires_at": "2030-01-01T00:00:00+02:00"}
    response = send_json(served, "POST", "/v1/api-keys", json.dumps(body).encode())
    assert response.status_code == 201, response.text
    expires_at = datetime.fromisoformat(response.json()["expires_at"].replace("Z", "+00:00"))
    assert expires_at == datetime(2029, 12, 31, 22, tzinfo=UTC)


# -- any JSON route, any field: deep nesting or a naive time never makes a 5xx ---------------

naive_times = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.none()
).map(lambda moment: moment.isoformat())
hostile_values = st.one_of(
    naive_times,
    st.builds(
        lambda depth, kind: json.loads(nested(depth, kind)),
        st.integers(1, 400),
        st.sampled_from(["array", "object"]),
    ),
)
#: A body each route accepts, for the hostile value to be the only thing wrong with it.
VALID_BODY = {
    "POST /v1/api-keys": {"name": "fuzzed"},
    "POST /v1/affiliates": {"name": "fuzzed"},
    "POST /v1/events": {"event": "fuzzed"},
    # A documentation address: refused as not public without a DNS lookup, after every other
    # field was decoded and judged.
    "POST /v1/webhooks": {"url": "https://198.51.100.7/hook", "events": ["api_key.revoked"]},
}


@pytest.mark.slow
def test_deep_nesting_and_naive_times_in_any_field_of_any_json_route_make_no_5xx(
    served: Served,
) -> None:
    schema = served.client.get("/schema/openapi.json").json()
    failures: dict[str, str] = {}
    for method, path in json_operations(served):
        try:
            _fuzz_hostile_bodies(served, method, path, _body_fields(schema, method, path))
        except Exception as error:
            failures[f"{method} {path}"] = str(error)[:2000]
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())


def _fuzz_hostile_bodies(served: Served, method: str, path: str, fields: list[str]) -> None:
    """One field of a valid body made hostile (or the whole body nested): never a 5xx."""

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
        database=None,
    )
    @given(
        field=st.sampled_from(fields or ["name"]),
        value=hostile_values,
        depth=st.integers(1, 3_000),
        wrap=st.booleans(),
    )
    def check(field: str, value: Any, depth: int, wrap: bool) -> None:
        body = {**VALID_BODY.get(f"{method} {path}", {}), field: value}
        encoded = json.dumps(body).encode()
        if wrap:  # the whole body inside `depth` arrays
            encoded = b"[" * depth + encoded + b"]" * depth
        response = send_json(served, method, path, encoded)
        assert response.status_code < 500, (response.status_code, response.text[:300])
        if response.status_code >= 400:
            assert_contract_error(response)

    check()


def _body_fields(schema: dict[str, Any], method: str, path: str) -> list[str]:
    """The property names of the operation's JSON body schema (followed through `$ref`s)."""
    body = schema["paths"][path][method.lower()]["requestBody"]["content"]["application/json"]
    fields: list[str] = []
    pending = [body["schema"]]
    while pending:
        node = pending.pop()
        if "$ref" in node:
            pending.append(schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]])
        fields += node.get("properties", {})
        pending += node.get("oneOf", []) + node.get("anyOf", [])
    return sorted(set(fields))


# -- schemathesis over the served OpenAPI document -------------------------------------------


#: Operations this module's process has deliberately not configured (they answer 503 by design:
#: leak reports need a signing secret of their own).
NOT_CONFIGURED_HERE = {"POST /v1/leaks"}


@pytest.mark.slow
def test_every_operation_fuzzed_from_the_served_schema_answers_within_it(
    served: Served,
) -> None:
    """No 5xx, every status documented, every body matching its schema, for each operation."""
    import schemathesis
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    served_schema = served.client.get("/schema/openapi.json")
    assert served_schema.status_code == 200
    schema = schemathesis.openapi.from_dict(served_schema.json())
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    real_ids = {
        "key_id": [f"key_{served.victim.key.id.hex}"],
        "affiliate_id": [served.affiliate_id],
    }
    seen: Counter[tuple[str, int]] = Counter()
    failures: dict[str, str] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12, [op.label for op in operations]
    operations = [op for op in operations if op.label not in NOT_CONFIGURED_HERE]

    for operation in operations:

        @settings(
            max_examples=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate],
            database=None,
        )
        @given(case=operation.as_strategy(), real=st.integers(0, 3))
        def check(case: Any, real: int) -> None:
            # A quarter of the examples name an id that exists, so the fuzzer also reaches
            # the handlers past their 404 (the key used to authenticate is never revoked).
            for name, ids in real_ids.items():
                if name in (case.path_parameters or {}) and real < len(ids):
                    case.path_parameters[name] = ids[real]
            response = served.client.request(
                **_request_kwargs(case, served.key.secret),
            )
            seen[(case.operation.label, response.status_code)] += 1
            case.validate_response(response, checks=checks)

        try:
            check()
        except Exception as error:
            failures[operation.label] = str(error)[:2000]

    print("\n" + "\n".join(f"{label} {status}: {n}" for (label, status), n in sorted(seen.items())))
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())
    assert not [k for k in seen if k[1] >= 500]


def _request_kwargs(case: Any, secret: str) -> dict[str, Any]:
    """The httpx request for a schemathesis case, with the valid key."""
    kwargs = case.as_transport_kwargs(base_url=BASE_URL)
    headers = dict(kwargs.get("headers") or {})
    headers["Authorization"] = f"Bearer {secret}"
    request: dict[str, Any] = {
        "method": kwargs["method"],
        "url": kwargs["url"],
        "headers": headers,
        "params": kwargs.get("params"),
    }
    if "json" in kwargs:
        request["json"] = kwargs["json"]
    elif "data" in kwargs:
        request["content"] = kwargs["data"]
    return request


def test_the_schema_documents_the_error_shape_for_every_operation(served: Served) -> None:
    schema = served.client.get("/schema/openapi.json").json()
    assert "Error" in schema["components"]["schemas"]
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method not in ("get", "post", "patch", "put", "delete"):
                continue
            responses = operation["responses"]
            if operation.get("security"):
                for status in ("401", "403", "429"):
                    ref = responses[status]["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/Error"), (path, method, status)
