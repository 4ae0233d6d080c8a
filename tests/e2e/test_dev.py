"""The README's first command, as a newcomer runs it: `icodrip dev`, then curl over HTTPS."""

from __future__ import annotations

import os
import re
import stat
import time
from pathlib import Path

import httpx

from e2e.harness import (
    Child,
    Children,
    bearer,
    child_env,
    client,
    loopback_address,
    trusting,
    wait_ready,
)
from support.servers import free_port

TEST_KEY_LINE = re.compile(r"Test API key \(shown once, keep it now\): (ak_test_\S+)")


def start_dev(children: Children, name: str, data_dir: Path, port: int) -> tuple[Child, str]:
    """`icodrip --data-dir DIR dev --port PORT`; the child and its announcement."""
    dev = children.start(name, child_env(), "--data-dir", str(data_dir), "dev", "--port", str(port))
    announced = dev.wait_for_output("Icodrip Keys is running at", timeout=45)
    return dev, announced


def test_dev_serves_https_with_a_test_key_rate_limits_and_keeps_its_data(
    children: Children, tmp_path: Path
) -> None:
    data_dir = tmp_path / "icodrip"
    port = free_port()
    dev, announced = start_dev(children, "dev-1", data_dir, port)
    dev.wait_for_output("  Try: curl", timeout=10)
    found = TEST_KEY_LINE.search(dev.output())
    assert found, dev.describe()
    test_key = found.group(1)
    cert = data_dir / "tls" / "cert.pem"
    assert cert.exists()
    base = f"https://127.0.0.1:{port}"
    assert f"running at {base}" in announced

    # The per-address limit of failed attempts stays ours: connect from an address of our own.
    with client(base, trusting(cert), local_address=loopback_address()) as https:
        wait_ready(https, dev)
        assert https.get("/readyz").status_code == 200

        first = https.get("/v1/affiliates", headers=bearer(test_key))
        assert first.status_code == 200, first.text
        assert first.json()["data"] == []
        assert first.headers["x-ratelimit-limit"] == "100"
        assert first.headers["x-ratelimit-remaining"] == "99"
        assert time.time() < int(first.headers["x-ratelimit-reset"]) <= time.time() + 61
        assert "retry-after" not in first.headers

        # Keep calling: the 429 comes at the 101st request of a window. A window turning
        # mid-way (visible as a new X-RateLimit-Reset) restarts the count.
        window_reset, count, refused = first.headers["x-ratelimit-reset"], 1, None
        for _ in range(250):
            response = https.get("/v1/affiliates", headers=bearer(test_key))
            reset = response.headers["x-ratelimit-reset"]
            if reset != window_reset:
                window_reset, count = reset, 0
            count += 1
            if response.status_code == 429:
                refused = response
                break
            assert response.status_code == 200, response.text
            assert int(response.headers["x-ratelimit-remaining"]) == 100 - count
        assert refused is not None, "never refused"
        assert count == 101, f"refused at request {count} of the window"
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert refused.headers["x-ratelimit-remaining"] == "0"
        retry_after = int(refused.headers["retry-after"])
        assert 1 <= retry_after <= 60
        assert abs(int(window_reset) - time.time() - retry_after) <= 2

    # The port speaks TLS only: a plain-HTTP request (even to a probe that the API would
    # answer over plain HTTP behind a proxy) does not get an answer.
    try:
        plain = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
    except httpx.TransportError:
        pass
    else:
        assert not plain.is_success, f"plain HTTP was served on the TLS port: {plain.text}"

    dev.stop()
    assert not dev.alive

    # Second start on the same data dir: no new key is printed, the first one still works
    # (and, the limiter being in-process on the embedded default, with a fresh count).
    port = free_port()
    again, announced = start_dev(children, "dev-2", data_dir, port)
    again.wait_for_output("Bootstrap org and key were printed at first start", timeout=10)
    assert "Test API key" not in again.output()
    assert "ak_test_" not in again.output()
    with client(f"https://127.0.0.1:{port}", trusting(cert)) as https:
        wait_ready(https, again)
        response = https.get("/v1/affiliates", headers=bearer(test_key))
        assert response.status_code == 200, response.text
        assert response.headers["x-ratelimit-limit"] == "100"


def test_dev_keeps_its_data_dir_readable_by_its_owner_only(
    children: Children, tmp_path: Path
) -> None:
    data_dir = tmp_path / "icodrip"
    data_dir.mkdir(mode=0o755)
    (data_dir / "pepper").write_text("a pepper an older version wrote 0644")
    (data_dir / "pepper").chmod(0o644)
    port = free_port()
    previous = os.umask(0o022)  # the usual default, under which files come out 0644
    try:
        dev, _ = start_dev(children, "dev", data_dir, port)
    finally:
        os.umask(previous)
    with client(f"https://127.0.0.1:{port}", trusting(data_dir / "tls" / "cert.pem")) as https:
        wait_ready(https, dev)
    dev.stop()

    loose = {
        str(path.relative_to(data_dir)): oct(stat.S_IMODE(path.lstat().st_mode))
        for path in [data_dir, *data_dir.rglob("*")]
        if stat.S_IMODE(path.lstat().st_mode) != (0o700 if path.is_dir() else 0o600)
    }
    assert loose == {}
    made = {path.name for path in data_dir.iterdir()}
    assert {"events.sqlite3", "users.sqlite3", "pepper", "tls", "nats"} <= made, made
