"""Running the real `icodrip` command as child processes, and talking to it over real HTTPS.

Every child runs in a process group of its own (so `icodrip serve`'s granian workers and
`icodrip dev`'s NATS server go with it), writes its output to a log file that failures quote,
and is stopped by `Child.stop()`: SIGTERM to its group, then SIGKILL to whatever is left.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import random
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from support.databases import fresh_database

ICODRIP = str(Path(sys.executable).parent / "icodrip")
REDIS_URL = os.environ.get("ICODRIP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@contextlib.contextmanager
def postgres_deployment(nats_url: str, data_dir: Path) -> Iterator[dict[str, str]]:
    """`ICODRIP_*` for a scaled-out deployment: a fresh PostgreSQL database (dropped after),
    the given NATS, the machine's Redis, one pepper, and key-event stream names of its own."""
    stream = f"KEYS_E2E_{uuid.uuid4().hex[:8]}"
    with fresh_database("e2e") as url:
        yield {
            "ICODRIP_DATA_DIR": str(data_dir),
            "ICODRIP_DATABASE_URL": url,
            "ICODRIP_NATS_URL": nats_url,
            "ICODRIP_REDIS_URL": REDIS_URL,
            "ICODRIP_KEY_PEPPER": "e2e-pepper-" + uuid.uuid4().hex,
            "ICODRIP_KEYS_STREAM": stream,
            "ICODRIP_KEYS_SUBJECT": f"e2e.{stream.lower()}",
        }


def child_env(**overrides: str) -> dict[str, str]:
    """This environment without any `ICODRIP_*` of the caller's, plus `overrides`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICODRIP_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


def icodrip_json(env: dict[str, str], *args: str, cwd: Path | None = None) -> dict[str, Any]:
    """Run `icodrip ARGS --json` to completion; its one JSON document."""
    result = subprocess.run(
        [ICODRIP, *args, "--json"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"icodrip {' '.join(args)}: {result.stderr}"
    return json.loads(result.stdout)  # type: ignore[no-any-return]


class Child:
    """One `icodrip …` process (and its process group), its output in `log_path`."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [ICODRIP, *self.args],
                env=self.env,
                cwd=self.log_path.parent,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def describe(self) -> str:
        status = "running" if self.alive else f"exited {self.proc and self.proc.returncode}"
        described = f"{self.name} ({status}); last output:\n{self.output()[-3000:]}"
        if self.alive:
            described += self.stacks()
        return described

    def stacks(self) -> str:
        """Where each process of the group stands (py-spy), for a child stuck on its way up."""
        assert self.proc is not None
        found = subprocess.run(
            ["pgrep", "-g", str(self.proc.pid)], capture_output=True, text=True, check=False
        )
        dumps = []
        for pid in found.stdout.split():
            dump = subprocess.run(
                [str(Path(sys.executable).parent / "py-spy"), "dump", "--pid", pid],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            dumps.append(f"\n--- stacks of {pid}:\n{dump.stdout or dump.stderr}")
        return "".join(dumps)

    def wait_for_output(self, text: str, timeout: float = 30.0) -> str:
        """Block until `text` appears in the output; the output so far."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.output()
            if text in out:
                return out
            if not self.alive:
                break
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not seen in time: {self.describe()}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the child (as `kill PID` would), wait, then SIGKILL to its whole group.

        Only the child is asked to stop: it stops what it started itself (granian's workers,
        `dev`'s NATS server) in its own order. The group's SIGKILL removes any leftover.
        """
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # start_new_session: it leads its group
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


class Children:
    """Children started by one test (or module), stopped in reverse order."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[Child] = []

    def start(self, name: str, env: dict[str, str], *args: str) -> Child:
        """Start `icodrip ARGS` with a data dir of its own (as on a machine of its own)."""
        env = {**env, "ICODRIP_DATA_DIR": str(self.root / name / "data")}
        child = Child(name, list(args), env, self.root / name / "output.log")
        self.started.append(child)
        return child.start()

    def stop_all(self) -> None:
        for child in reversed(self.started):
            child.stop()
        self.started.clear()


# -- HTTPS clients --------------------------------------------------------------------------


def trusting(cafile: Path) -> ssl.SSLContext:
    """A client TLS context that trusts exactly `cafile`."""
    return ssl.create_default_context(cafile=str(cafile))


def loopback_address() -> str:
    """A random 127.x.y.z to connect from: per-address limits of other clients stay apart."""
    return "127." + ".".join(str(random.randint(1, 254)) for _ in range(3))


def client(
    base_url: str,
    verify: ssl.SSLContext | bool,
    *,
    local_address: str | None = None,
    timeout: float = 10.0,
) -> httpx.Client:
    transport = httpx.HTTPTransport(verify=verify, local_address=local_address)
    return httpx.Client(base_url=base_url, transport=transport, timeout=timeout)


def async_client(
    base_url: str,
    verify: ssl.SSLContext | bool,
    *,
    local_address: str | None = None,
    connections: int = 100,
    timeout: float = 20.0,
) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(
        verify=verify,
        local_address=local_address,
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )
    return httpx.AsyncClient(base_url=base_url, transport=transport, timeout=timeout)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def wait_ready(http: httpx.Client, child: Child | None = None, timeout: float = 45.0) -> None:
    """Block until GET /readyz answers 200 (the process is up and its key mirror loaded)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if child is not None and not child.alive:
            break
        try:
            response = http.get("/readyz", timeout=2.0)
            if response.status_code == 200:
                return
            last = response.status_code
        except httpx.TransportError as error:
            last = error
        time.sleep(0.1)
    where = child.describe() if child is not None else ""
    raise AssertionError(f"{http.base_url} not ready ({last!r}). {where}")


def poll(check: Callable[[], bool], timeout: float, interval: float = 0.005) -> float | None:
    """Call `check` every `interval` s until it is true: the seconds taken, or None."""
    started = time.perf_counter()
    deadline = started + timeout
    while True:
        if check():
            return time.perf_counter() - started
        if time.perf_counter() >= deadline:
            return None
        time.sleep(interval)


def minute() -> int:
    """The rate-limit window now (windows are epoch minutes)."""
    return int(time.time()) // 60


def not_at_a_minute_boundary(margin: float = 3.0) -> None:
    """Sleep past the next minute boundary if it is less than `margin` seconds away."""
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.05)


# -- a throwaway certificate authority --------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """A CA of this test run's own and a server certificate it signed for 127.0.0.1/localhost."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


def make_test_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Icodrip e2e test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(
        ca_cert=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server-key.pem",
    )
    pki.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.server_cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    pki.server_key.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pki.server_key.chmod(0o600)
    return pki
