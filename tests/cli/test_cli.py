"""The operator CLI: JSON for scripts, one clear line for mistakes, nothing written on error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from adapters.registry import open_registry
from adapters.settings import Settings
from cli.main import cli
from domain.key_format import parse_key

ICODRIP = str(Path(sys.executable).parent / "icodrip")


class Cli:
    """Runs `icodrip` in-process against one store."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.runner = CliRunner()

    def __call__(self, *args: str, ok: bool = True):  # type: ignore[no-untyped-def]
        result = self.runner.invoke(cli, list(args), env=self.env, catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.output
        return result

    def json(self, *args: str) -> dict:  # type: ignore[type-arg]
        return json.loads(self(*args, "--json").stdout)

    def events_stored(self) -> int:
        registry = open_registry(Settings.from_env(self.env))
        try:
            return registry.recorder.max_notification_id() or 0
        finally:
            registry.close()


@pytest.fixture
def icodrip(store_env: dict[str, str]) -> Cli:
    return Cli(store_env)


def test_orgs_create_prints_the_org_as_json(icodrip: Cli) -> None:
    org = icodrip.json("orgs", "create", "--name", "Acme", "--plan", "pro")
    assert org["id"].startswith("org_") and org["plan"] == "pro"
    assert "audit:read" in org["permissions"]


def test_keys_create_prints_the_secret_once_and_list_never_does(icodrip: Cli) -> None:
    org = icodrip.json("orgs", "create", "--name", "Acme")
    key = icodrip.json("keys", "create", "--org", org["id"], "--name", "Production Backend")
    assert parse_key(key["key"]).env.value == "live"
    listing = icodrip("keys", "list", "--org", org["id"], "--json").stdout
    shown = icodrip("keys", "show", key["id"]).stdout
    assert key["key"] not in listing and key["key"] not in shown
    assert json.loads(listing)["data"][0]["hint"] == key["hint"]


def test_human_output_warns_that_the_key_is_shown_only_once(icodrip: Cli) -> None:
    org = icodrip.json("orgs", "create", "--name", "Acme")
    result = icodrip("keys", "create", "--org", org["id"], "--name", "k", "--env", "test")
    assert "ak_test_" in result.stdout
    assert "only time the key is shown" in result.stderr


def test_roll_then_revoke_the_old_key(icodrip: Cli) -> None:
    org = icodrip.json("orgs", "create", "--name", "Acme")
    old = icodrip.json("keys", "create", "--org", org["id"], "--name", "k")
    new = icodrip.json("keys", "roll", old["id"], "--expire-in", "1h")
    assert new["rolled_from"] == old["id"] and parse_key(new["key"])
    icodrip("keys", "revoke", old["id"], "--reason", "rotated")
    listing = icodrip.json("keys", "list", "--org", org["id"])
    assert [k["status"] for k in listing["data"]] == ["revoked", "active"]


def test_set_plan_and_rate_limit(icodrip: Cli) -> None:
    org = icodrip.json("orgs", "create", "--name", "Acme")
    icodrip("orgs", "set-plan", org["id"], "agency")
    icodrip("orgs", "set-rate-limit", org["id"], "5000")
    assert icodrip.json("orgs", "show", org["id"])["rate_limit_per_minute"] == 5000


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["keys", "create", "--org", "org_nope", "--name", "k"], "malformed organization id"),
        (["keys", "create", "--org", "org_" + "0" * 32, "--name", "k"], "no such organization"),
        (["keys", "create", "--org", "{org}", "--name", "  "], "key name must be"),
        (["keys", "create", "--org", "{org}", "--name", "k", "--permission", "root"], "root"),
        (["keys", "roll", "{key}", "--expire-in", "soon"], "bad duration"),
        (["keys", "revoke", "key_123"], "malformed API key id"),
        (["orgs", "set-plan", "{org}", "gold"], "gold"),
        (["orgs", "set-rate-limit", "{org}", "500"], "agency"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    icodrip: Cli, args: list[str], fragment: str
) -> None:
    org = icodrip.json("orgs", "create", "--name", "Acme")
    key = icodrip.json("keys", "create", "--org", org["id"], "--name", "k")
    before = icodrip.events_stored()
    argv = [a.format(org=org["id"], key=key["id"]) for a in args]
    result = subprocess.run(
        [ICODRIP, *argv], env={**_os_env(), **icodrip.env}, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert fragment in result.stderr and "Traceback" not in result.stderr
    assert icodrip.events_stored() == before


def test_the_console_script_works_on_the_embedded_default(tmp_path: Path) -> None:
    env = {**_os_env(), "ICODRIP_DATA_DIR": str(tmp_path / "data")}
    env.pop("ICODRIP_DATABASE_URL", None)
    env.pop("ICODRIP_KEY_PEPPER", None)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([ICODRIP, *args], env=env, capture_output=True, text=True, check=True)

    org = json.loads(run("orgs", "create", "--name", "Acme", "--json").stdout)
    key = json.loads(
        run(
            "keys",
            "create",
            "--org",
            org["id"],
            "--name",
            "Production Backend",
            "--env",
            "live",
            "--json",
        ).stdout
    )
    assert parse_key(key["key"])
    stored = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("*.sqlite3*"))
    assert key["key"].encode() not in stored


def test_every_command_has_help() -> None:
    for argv in (
        [],
        ["orgs"],
        ["orgs", "create"],
        ["orgs", "set-plan"],
        ["orgs", "set-rate-limit"],
        ["keys"],
        ["keys", "create"],
        ["keys", "list"],
        ["keys", "revoke"],
        ["keys", "roll"],
        ["worker"],
        ["serve"],
        ["dev"],
    ):
        result = CliRunner().invoke(cli, [*argv, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output, argv


def _os_env() -> dict[str, str]:
    import os

    return dict(os.environ)
