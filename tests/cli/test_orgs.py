"""`icodrip orgs`: create organizations, change plans and limits; bad input writes nothing.

Every test runs on the embedded default (SQLite under a tmp `--data-dir`) and on PostgreSQL
(`ICODRIP_DATABASE_URL` = the session database, with `ICODRIP_KEY_PEPPER` set).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from adapters.settings import Settings
from application.registry import KeyRegistry
from application.stores import open_registry
from cli.main import cli

ONE_LINE_ERROR = re.compile(r"error: .+ \(([a-z_]+)\)")
UNKNOWN_ORG = "org_" + "0" * 32


class Icodrip:
    """`icodrip` run in-process (click's CliRunner) against one store."""

    def __init__(self, kind: str, env: dict[str, str | None], data_dir: Path) -> None:
        self.kind = kind
        self.env = env
        self.data_dir = data_dir
        self.runner = CliRunner()

    def run(self, *args: str) -> Result:
        argv = ["--data-dir", str(self.data_dir), *args]
        return self.runner.invoke(cli, argv, env=self.env, catch_exceptions=False)

    def __call__(self, *args: str) -> Result:
        result = self.run(*args)
        assert result.exit_code == 0, result.output
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)

    def refused(self, *args: str) -> tuple[str, str]:
        """Run a command that must fail as bad input: (error code, the stderr line)."""
        result = self.run(*args)
        assert result.exit_code == 2, result.output
        assert result.stdout == "", result.stdout
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        match = ONE_LINE_ERROR.fullmatch(lines[0])
        assert match, lines[0]
        return match.group(1), lines[0]

    def events_stored(self) -> int:
        env = {k: v for k, v in self.env.items() if v is not None}
        registry = open_registry(Settings.from_env(env, data_dir=self.data_dir))
        try:
            return registry.recorder.max_notification_id() or 0
        finally:
            registry.close()


@pytest.fixture(params=["sqlite", "postgres"])
def icodrip(request: pytest.FixtureRequest, tmp_path: Path) -> Icodrip:
    env: dict[str, str | None] = {
        "ICODRIP_DATA_DIR": None,
        "ICODRIP_DATABASE_URL": None,
        "ICODRIP_KEY_PEPPER": None,
    }
    if request.param == "postgres":
        env["ICODRIP_DATABASE_URL"] = request.getfixturevalue("postgres_url")
        env["ICODRIP_KEY_PEPPER"] = "cli-test-pepper-0123456789abcdef"
    return Icodrip(request.param, env, tmp_path / "data")


def test_create_prints_the_org_as_one_json_document(icodrip: Icodrip) -> None:
    org = icodrip.json("orgs", "create", "--name", "Acme")
    assert re.fullmatch(r"org_[0-9a-f]{32}", org["id"])
    assert org["object"] == "organization" and org["name"] == "Acme"
    assert org["plan"] == "free" and org["rate_limit_per_minute"] == 100
    assert "audit:read" not in org["permissions"]


def test_create_on_the_pro_plan_grants_audit_read(icodrip: Icodrip) -> None:
    org = icodrip.json("orgs", "create", "--name", "Acme", "--plan", "pro")
    assert org["plan"] == "pro" and "audit:read" in org["permissions"]


def test_create_trims_the_name(icodrip: Icodrip) -> None:
    assert icodrip.json("orgs", "create", "--name", "  Acme  ")["name"] == "Acme"


def test_create_without_json_prints_a_readable_org_with_its_id(icodrip: Icodrip) -> None:
    result = icodrip("orgs", "create", "--name", "Acme")
    assert re.search(r"id: org_[0-9a-f]{32}\n", result.stdout)
    assert "plan: free" in result.stdout and result.stderr == ""


def test_show_reads_back_what_create_printed(icodrip: Icodrip) -> None:
    org = icodrip.json("orgs", "create", "--name", "Acme", "--plan", "agency")
    assert icodrip.json("orgs", "show", org["id"]) == org


def test_set_plan_changes_the_plan_and_the_permissions(icodrip: Icodrip) -> None:
    org = icodrip.json("orgs", "create", "--name", "Acme")
    icodrip("orgs", "set-plan", org["id"], "pro")
    shown = icodrip.json("orgs", "show", org["id"])
    assert shown["plan"] == "pro" and "audit:read" in shown["permissions"]


def test_set_rate_limit_gives_an_agency_org_n_requests_per_minute(icodrip: Icodrip) -> None:
    org = icodrip.json("orgs", "create", "--name", "Acme", "--plan", "agency")
    icodrip("orgs", "set-rate-limit", org["id"], "5000")
    assert icodrip.json("orgs", "show", org["id"])["rate_limit_per_minute"] == 5000


def test_clear_rate_limit_returns_to_the_default(icodrip: Icodrip) -> None:
    org = icodrip.json("orgs", "create", "--name", "Acme", "--plan", "agency")
    icodrip("orgs", "set-rate-limit", org["id"], "5000")
    icodrip("orgs", "clear-rate-limit", org["id"])
    assert icodrip.json("orgs", "show", org["id"])["rate_limit_per_minute"] == 100


BAD_INPUT = [
    ("orgs create --name '   '", "validation_error", "organization name must be"),
    (f"orgs create --name {'x' * 101}", "validation_error", "1 to 100 characters"),
    ("orgs create --name Acme --plan gold", "usage_error", "'gold'"),
    ("orgs create", "usage_error", "Missing option '--name'"),
    ("orgs show org_123", "validation_error", "malformed organization id"),
    (f"orgs show key_{'0' * 32}", "validation_error", "malformed organization id"),
    (f"orgs show {UNKNOWN_ORG}", "not_found", "no such organization"),
    ("orgs set-plan {org} gold", "usage_error", "'gold'"),
    ("orgs set-plan org_zz pro", "validation_error", "malformed organization id"),
    (f"orgs set-plan {UNKNOWN_ORG} pro", "not_found", "no such organization"),
    ("orgs set-rate-limit {org} 500", "plan_does_not_allow", "agency"),
    ("orgs set-rate-limit {agency} 0", "validation_error", "rate limit must be"),
    ("orgs set-rate-limit {agency} many", "usage_error", "'many'"),
    (f"orgs clear-rate-limit {UNKNOWN_ORG}", "not_found", "no such organization"),
]


@pytest.mark.parametrize(
    ("command", "code", "fragment"), BAD_INPUT, ids=[c[:50] for c, *_ in BAD_INPUT]
)
def test_bad_input_is_one_stderr_line_exit_2_and_writes_nothing(
    icodrip: Icodrip, command: str, code: str, fragment: str
) -> None:
    org = icodrip.json("orgs", "create", "--name", "Free Org")
    agency = icodrip.json("orgs", "create", "--name", "Agency Org", "--plan", "agency")
    before = icodrip.events_stored()
    argv = shlex.split(command.format(org=org["id"], agency=agency["id"]))
    got, line = icodrip.refused(*argv)
    assert got == code and fragment in line
    assert icodrip.events_stored() == before


def test_data_dir_option_decides_which_embedded_store_is_used(tmp_path: Path) -> None:
    env: dict[str, str | None] = {"ICODRIP_DATABASE_URL": None, "ICODRIP_KEY_PEPPER": None}
    first = Icodrip("sqlite", env, tmp_path / "first")
    second = Icodrip("sqlite", env, tmp_path / "second")
    org = first.json("orgs", "create", "--name", "Acme")
    assert (tmp_path / "first" / "events.sqlite3").exists()
    assert second.refused("orgs", "show", org["id"])[0] == "not_found"


def test_postgres_without_a_pepper_is_a_settings_error(tmp_path: Path) -> None:
    env: dict[str, str | None] = {
        "ICODRIP_DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/postgres",
        "ICODRIP_KEY_PEPPER": None,
    }
    code, line = Icodrip("postgres", env, tmp_path).refused("orgs", "create", "--name", "Acme")
    assert code == "settings_error" and "ICODRIP_KEY_PEPPER" in line


def test_an_unreachable_store_is_one_line_and_exit_1(tmp_path: Path) -> None:
    env: dict[str, str | None] = {
        "ICODRIP_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/postgres",
        "ICODRIP_KEY_PEPPER": "cli-test-pepper-0123456789abcdef",
    }
    result = Icodrip("postgres", env, tmp_path).run("orgs", "show", UNKNOWN_ORG)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: the event store is unavailable")
    assert result.stderr.strip().endswith("(store_unavailable)")
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.output


@pytest.mark.parametrize(
    "command", ["create", "show", "set-plan", "set-rate-limit", "clear-rate-limit"]
)
def test_every_orgs_command_has_help_with_an_example(command: str) -> None:
    result = CliRunner().invoke(cli, ["orgs", command, "--help"])
    assert result.exit_code == 0
    assert "Usage: " in result.stdout and "Example: icodrip orgs " + command in result.stdout


@pytest.mark.parametrize("org", ["{org}", UNKNOWN_ORG], ids=["succeeds", "fails"])
def test_the_registry_is_closed_when_the_command_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, org: str
) -> None:
    env: dict[str, str | None] = {"ICODRIP_DATABASE_URL": None, "ICODRIP_KEY_PEPPER": None}
    icodrip = Icodrip("sqlite", env, tmp_path / "data")
    org_id = icodrip.json("orgs", "create", "--name", "Acme")["id"]
    closed: list[bool] = []

    def tracked(settings: Settings) -> KeyRegistry:
        registry = open_registry(settings)
        close = registry.close

        def close_and_record() -> None:
            close()
            closed.append(True)

        registry.close = close_and_record  # type: ignore[method-assign]
        return registry

    monkeypatch.setattr("cli.common.open_registry", tracked)
    icodrip.run("orgs", "show", org.format(org=org_id))
    assert closed == [True]


# -- the key-lifetime policy ---------------------------------------------------------------


def test_set_policy_sets_the_rules_given_and_keeps_the_others(icodrip: Icodrip) -> None:
    org = icodrip.json("orgs", "create", "--name", "Acme")
    icodrip("orgs", "set-policy", org["id"], "--max-lifetime", "90d", "--require-expiry", "live")
    icodrip("orgs", "set-policy", org["id"], "--revoke-unused-after", "30d")
    assert icodrip.json("orgs", "show", org["id"])["key_policy"] == {
        "max_lifetime_seconds": 90 * 86400,
        "require_expiry": "live",
        "revoke_unused_after_seconds": 30 * 86400,
    }
    shown = icodrip("orgs", "show", org["id"]).stdout
    assert "keys live at most 90 days; expiry required on live keys" in shown
    assert "unused keys revoked after 30 days" in shown


def test_set_policy_off_turns_a_rule_off(icodrip: Icodrip) -> None:
    org = icodrip.json("orgs", "create", "--name", "Acme")
    icodrip("orgs", "set-policy", org["id"], "--max-lifetime", "90d")
    policy = icodrip.json("orgs", "set-policy", org["id"], "--max-lifetime", "off")["key_policy"]
    assert policy["max_lifetime_seconds"] is None


def test_a_rule_out_of_bounds_is_refused_and_stores_nothing(icodrip: Icodrip) -> None:
    org = icodrip.json("orgs", "create", "--name", "Acme")
    before = icodrip.events_stored()
    code, line = icodrip.refused("orgs", "set-policy", org["id"], "--max-lifetime", "5m")
    assert code == "validation_error" and "max_lifetime" in line
    assert icodrip.events_stored() == before


def test_a_key_that_breaks_the_policy_is_refused_naming_it(icodrip: Icodrip) -> None:
    org = icodrip.json("orgs", "create", "--name", "Acme")
    icodrip("orgs", "set-policy", org["id"], "--max-lifetime", "90d")
    code, line = icodrip.refused("keys", "create", "--org", org["id"], "--name", "forever")
    assert code == "policy_violation" and "90 days" in line
    created = icodrip.json(
        "keys", "create", "--org", org["id"], "--name", "quarterly", "--expires-in", "30d"
    )
    assert created["expires_at"] is not None


def test_a_roll_that_breaks_the_policy_is_refused_until_the_successor_expires_in_time(
    icodrip: Icodrip,
) -> None:
    org = icodrip.json("orgs", "create", "--name", "Acme")
    key = icodrip.json("keys", "create", "--org", org["id"], "--name", "old")
    icodrip("orgs", "set-policy", org["id"], "--require-expiry", "all")
    code, _ = icodrip.refused("keys", "roll", key["id"])
    assert code == "policy_violation"
    rolled = icodrip.json(
        "keys", "roll", key["id"], "--successor-expires-in", "30d", "--revoke-when-idle", "15m"
    )
    assert rolled["expires_at"] is not None
    assert icodrip.json("keys", "show", key["id"])["revoke_when_idle_seconds"] == 15 * 60
