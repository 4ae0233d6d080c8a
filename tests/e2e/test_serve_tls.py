"""`icodrip serve` as operators run it: TLS with their own certificate, or behind a TLS proxy."""

from __future__ import annotations

import httpx
import pytest

from e2e.harness import (
    Children,
    Pki,
    bearer,
    child_env,
    client,
    icodrip_json,
    trusting,
    wait_ready,
)
from support.servers import free_port


def test_serve_terminates_tls_with_the_operators_certificate_or_trusts_only_its_proxy(
    children: Children, deployment_env: dict[str, str], pki: Pki
) -> None:
    env = child_env(**deployment_env)
    tls_port, proxied_port = free_port(), free_port()
    # Rolled out one after the other (an empty database's tables are created by the first
    # comer; components started all at once race to create them).
    org = icodrip_json(env, "orgs", "create", "--name", "E2E TLS", "--plan", "pro")
    key = icodrip_json(env, "keys", "create", "--org", org["id"], "--name", "e2e")["key"]
    assert key.startswith("ak_live_")
    worker = children.start("worker", env, "worker")
    worker.wait_for_output("relay.started", timeout=30)
    worker.wait_for_output("key_lookup.started", timeout=30)
    tls = children.start(
        "serve-tls",
        env,
        "serve",
        "--port",
        str(tls_port),
        "--workers",
        "1",
        "--certfile",
        str(pki.server_cert),
        "--keyfile",
        str(pki.server_key),
    )
    with client(f"https://127.0.0.1:{tls_port}", trusting(pki.ca_cert)) as https:
        wait_ready(https, tls)
    proxied = children.start(
        "serve-proxied",
        env,
        "serve",
        "--port",
        str(proxied_port),
        "--workers",
        "1",
        "--trusted-proxy",
        "127.0.0.1/32",
    )
    with client(f"http://127.0.0.1:{proxied_port}", False) as plain:
        wait_ready(plain, proxied)  # probes are answered over plain HTTP

    # TLS here: a client trusting the operator's CA gets through, by IP and by name.
    for host in ("127.0.0.1", "localhost"):
        with client(f"https://{host}:{tls_port}", trusting(pki.ca_cert)) as https:
            response = https.get("/v1/affiliates", headers=bearer(key))
            assert response.status_code == 200, response.text
            assert response.headers["x-ratelimit-limit"] == "100"
            assert response.headers["strict-transport-security"].startswith("max-age=")

    # A client that does not trust that CA (the system's roots only) refuses the server.
    with (
        client(f"https://127.0.0.1:{tls_port}", True) as untrusting,
        pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        untrusting.get("/v1/affiliates", headers=bearer(key))

    # TLS at a proxy on 127.0.0.1: plain HTTP is refused unless that proxy says it was HTTPS.
    with client(f"http://127.0.0.1:{proxied_port}", False) as plain:
        refused = plain.get("/v1/affiliates", headers=bearer(key))
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["code"] == "https_required"
        forwarded = plain.get(
            "/v1/affiliates", headers={**bearer(key), "X-Forwarded-Proto": "https"}
        )
        assert forwarded.status_code == 200, forwarded.text
        assert forwarded.json()["data"] == []

    # The same header from an address that is not the trusted proxy is not believed.
    with client(f"http://127.0.0.1:{proxied_port}", False, local_address="127.0.0.2") as other:
        spoofed = other.get("/v1/affiliates", headers={**bearer(key), "X-Forwarded-Proto": "https"})
        assert spoofed.status_code == 400, spoofed.text
        assert spoofed.json()["error"]["code"] == "https_required"

    for child in (worker, tls, proxied):
        assert child.alive, child.describe()
