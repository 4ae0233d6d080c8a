"""`icodrip orgs set-leak-policy` and `icodrip keys … --allow-ip` / `set-allowed-ips`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from cli.main import cli


class Icodrip:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def run(self, *args: str) -> Result:
        env = {"ICODRIP_DATABASE_URL": None, "ICODRIP_KEY_PEPPER": None}
        argv = ["--data-dir", str(self.data_dir), *args]
        return CliRunner().invoke(cli, argv, env=env, catch_exceptions=False)

    def json(self, *args: str) -> Any:
        result = self.run(*args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)


def test_an_org_revokes_leaked_keys_unless_set_to_roll(tmp_path: Path) -> None:
    icodrip = Icodrip(tmp_path)
    org = icodrip.json("orgs", "create", "--name", "Acme")
    assert org["leak_policy"] == "revoke"
    changed = icodrip.json("orgs", "set-leak-policy", org["id"], "roll")
    assert changed["leak_policy"] == "roll"
    assert icodrip.json("orgs", "show", org["id"])["leak_policy"] == "roll"


def test_an_unknown_leak_policy_is_refused(tmp_path: Path) -> None:
    icodrip = Icodrip(tmp_path)
    org = icodrip.json("orgs", "create", "--name", "Acme")
    result = icodrip.run("orgs", "set-leak-policy", org["id"], "ignore")
    assert result.exit_code == 2


def test_a_key_created_with_allow_ip_carries_the_allowlist(tmp_path: Path) -> None:
    icodrip = Icodrip(tmp_path)
    org = icodrip.json("orgs", "create", "--name", "Acme")
    key = icodrip.json(
        "keys", "create", "--org", org["id"], "--name", "office", "--allow-ip", "203.0.113.0/24"
    )
    assert key["allowed_ips"] == ["203.0.113.0/24"]


def test_the_allowlist_can_be_replaced_and_cleared(tmp_path: Path) -> None:
    icodrip = Icodrip(tmp_path)
    org = icodrip.json("orgs", "create", "--name", "Acme")
    key = icodrip.json("keys", "create", "--org", org["id"], "--name", "office")
    changed = icodrip.json("keys", "set-allowed-ips", key["id"], "198.51.100.7")
    assert changed["allowed_ips"] == ["198.51.100.7/32"]
    assert icodrip.json("keys", "set-allowed-ips", key["id"])["allowed_ips"] == []


def test_a_bad_cidr_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    icodrip = Icodrip(tmp_path)
    org = icodrip.json("orgs", "create", "--name", "Acme")
    result = icodrip.run(
        "keys", "create", "--org", org["id"], "--name", "x", "--allow-ip", "10.0.0.0/99"
    )
    assert result.exit_code == 2
    assert "validation_error" in result.output
    assert icodrip.json("keys", "list", "--org", org["id"])["data"] == []
