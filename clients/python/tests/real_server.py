"""A real Icodrip server for the client's tests: `icodrip serve` over HTTPS on a free port.

The server is the one `tests/e2e` runs (`e2e.harness`): a child process in its own process
group, TLS with a certificate from a CA of the test run's own, the embedded SQLite store in a
data dir of its own (no NATS, no Redis: the cheapest whole server). The test process plays the
operator on the same data dir through the key registry, as `icodrip orgs …`/`keys …` would,
but without a process per command. Make the organizations and keys a module needs before
`start()`: the server loads them as it starts (a change made later reaches it within about a
second, when its key mirror next polls the store).
"""

from __future__ import annotations

import ssl
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.settings import Settings
from application.registry import KeyRegistry
from application.stores import open_registry
from domain.actors import OPERATOR
from domain.key_format import Environment, KeyType
from domain.organization import Organization
from domain.plans import Permission, Plan
from e2e.harness import Children, Pki, child_env, client, trusting, wait_ready
from icodrip_client import AsyncIcodrip, Icodrip
from support.servers import free_port


@dataclass(frozen=True)
class RealServer:
    """Where the started server answers, and the TLS context that trusts it."""

    base_url: str
    tls: ssl.SSLContext

    def client(self, api_key: str, **options: Any) -> Icodrip:
        return Icodrip(api_key=api_key, base_url=self.base_url, verify=self.tls, **options)

    def async_client(self, api_key: str, **options: Any) -> AsyncIcodrip:
        return AsyncIcodrip(api_key=api_key, base_url=self.base_url, verify=self.tls, **options)


class Stage:
    """One server's data dir, its operator (the registry), and the server once started."""

    def __init__(self, root: Path, pki: Pki) -> None:
        self.pki = pki
        self.env = child_env(
            ICODRIP_KEY_PEPPER="sdk-tests-" + uuid.uuid4().hex,
            # Webhook endpoints on 127.0.0.1 are accepted, as under `icodrip dev`.
            ICODRIP_WEBHOOKS_ALLOW_PRIVATE="1",
        )
        self.children = Children(root)
        # `Children.start` gives the child this data dir; the registry opens the same one.
        data_dir = root / "serve" / "data"
        self.registry: KeyRegistry = open_registry(
            Settings.from_env({**self.env, "ICODRIP_DATA_DIR": str(data_dir)})
        )
        self.server: RealServer | None = None

    def org(self, plan: Plan = Plan.PRO, *, rate_limit: int | None = None) -> Organization:
        """A new organization; a custom per-minute limit makes it an agency one."""
        name = f"SDK {uuid.uuid4().hex[:6]}"
        org = self.registry.register_organization(name, plan, OPERATOR)
        if rate_limit is not None:
            self.registry.change_plan(org.id, Plan.AGENCY, OPERATOR)
            org = self.registry.set_rate_limit(org.id, rate_limit, OPERATOR)
        return org

    def key(
        self,
        org: Organization,
        *,
        env: Environment = Environment.LIVE,
        permissions: set[Permission] | None = None,
        public: bool = False,
        name: str = "sdk test key",
    ) -> str:
        """A new key's secret (made before `start()`, so the server loads it as it starts)."""
        issued = self.registry.create_key(
            org.id,
            name=name,
            env=env,
            key_type=KeyType.PUBLIC if public else KeyType.SECRET,
            actor=OPERATOR,
            permissions=None if permissions is None else frozenset(permissions),
        )
        return issued.secret

    def start(self) -> RealServer:
        port = free_port()
        child = self.children.start(
            "serve",
            self.env,
            "serve",
            "--port",
            str(port),
            "--workers",
            "1",
            "--certfile",
            str(self.pki.server_cert),
            "--keyfile",
            str(self.pki.server_key),
        )
        base_url = f"https://127.0.0.1:{port}"
        with client(base_url, trusting(self.pki.ca_cert)) as probe:
            wait_ready(probe, child)
        self.server = RealServer(base_url, trusting(self.pki.ca_cert))
        return self.server

    def stop(self) -> None:
        self.children.stop_all()
        self.registry.close()
