"""`icodrip keys`: the secret is printed once, never listed or stored; bad input writes nothing.

In-process tests run on the embedded default (SQLite under a tmp `--data-dir`) and on
PostgreSQL (`ICODRIP_DATABASE_URL` = the session database, with `ICODRIP_KEY_PEPPER` set);
one test runs the real `icodrip` console script.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from adapters.settings import Settings
from application.stores import open_registry
from cli.main import cli
from domain.key_format import Environment, KeyType, parse_key

ICODRIP = Path(sys.executable).parent / "icodrip"
ONE_LINE_ERROR = re.compile(r"error: .+ \(([a-z_]+)\)")
UNKNOWN_ORG = "org_" + "0" * 32
UNKNOWN_KEY = "key_" + "0" * 32


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

    def settings(self) -> Settings:
        env = {k: v for k, v in self.env.items() if v is not None}
        return Settings.from_env(env, data_dir=self.data_dir)

    def events_stored(self) -> int:
        registry = open_registry(self.settings())
        try:
            return registry.recorder.max_notification_id() or 0
        finally:
            registry.close()

    def everything_stored(self) -> bytes:
        """Every byte of the store: the SQLite files, or every row of every table."""
        settings = self.settings()
        if settings.database_url is None:
            files = sorted(self.data_dir.glob("*.sqlite3*"))
            assert files
            return b"\n".join(f.read_bytes() for f in files)
        with psycopg.connect(settings.database_url) as conn:
            tables = [
                name
                for (name,) in conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
                )
            ]
            assert tables
            chunks = [
                bytes(value) if isinstance(value, bytes | memoryview) else str(value).encode()
                for table in tables
                for row in conn.execute(f'SELECT * FROM "{table}"')
                for value in row
            ]
        return b"\n".join(chunks)

    def org(self, plan: str = "free") -> str:
        org_id: str = self.json("orgs", "create", "--name", "Acme", "--plan", plan)["id"]
        return org_id


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


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- create ------------------------------------------------------------------------------


def test_create_json_prints_the_key_object_with_its_secret(icodrip: Icodrip) -> None:
    org = icodrip.org()
    key = icodrip.json("keys", "create", "--org", org, "--name", "Production Backend")
    parsed = parse_key(key["key"])
    assert (parsed.type, parsed.env) == (KeyType.SECRET, Environment.LIVE)
    assert re.fullmatch(r"key_[0-9a-f]{32}", key["id"]) and key["organization"] == org
    assert key["object"] == "api_key" and key["name"] == "Production Backend"
    assert key["hint"] == parsed.hint and key["status"] == "active"
    assert key["expires_at"] is None and "api_keys:write" in key["permissions"]


def test_create_json_stdout_is_one_document_and_the_warning_goes_to_stderr(
    icodrip: Icodrip,
) -> None:
    result = icodrip("keys", "create", "--org", icodrip.org(), "--name", "k", "--json")
    key = json.loads(result.stdout)
    assert "only time the key is shown" in result.stderr
    assert key["key"] not in result.stderr


def test_create_human_output_shows_the_key_and_warns_it_is_shown_once(icodrip: Icodrip) -> None:
    result = icodrip("keys", "create", "--org", icodrip.org(), "--name", "k")
    secret = re.search(r"key: (ak_live_\w+)", result.stdout)
    assert secret and parse_key(secret.group(1))
    assert "only time the key is shown" in result.stderr
    assert "only time" not in result.stdout


def test_create_in_test_env_issues_an_ak_test_key(icodrip: Icodrip) -> None:
    key = icodrip.json("keys", "create", "--org", icodrip.org(), "--name", "k", "--env", "test")
    assert key["key"].startswith("ak_test_") and key["env"] == "test"


def test_a_public_key_carries_events_write_only_and_its_origins(icodrip: Icodrip) -> None:
    key = icodrip.json(
        "keys",
        "create",
        "--org",
        icodrip.org("pro"),
        "--name",
        "Web",
        "--public",
        "--origin",
        "https://app.example.com",
        "--origin",
        "https://Shop.Example.com:8443",
    )
    assert key["key"].startswith("pk_live_") and key["type"] == "public"
    assert key["permissions"] == ["events:write"]
    assert key["allowed_origins"] == ["https://app.example.com", "https://shop.example.com:8443"]


def test_permission_options_restrict_the_key(icodrip: Icodrip) -> None:
    key = icodrip.json(
        "keys",
        "create",
        "--org",
        icodrip.org(),
        "--name",
        "Reader",
        "--permission",
        "affiliates:read",
        "--permission",
        "api_keys:read",
    )
    assert key["permissions"] == ["affiliates:read", "api_keys:read"] and key["restricted"]


def test_expires_in_sets_the_expiry(icodrip: Icodrip) -> None:
    before = datetime.now(UTC)
    key = icodrip.json(
        "keys", "create", "--org", icodrip.org(), "--name", "k", "--expires-in", "7d"
    )
    expires = _moment(key["expires_at"])
    assert before + timedelta(days=7) <= expires <= datetime.now(UTC) + timedelta(days=7)


def test_the_secret_is_not_stored_anywhere(icodrip: Icodrip) -> None:
    org = icodrip.org()
    created = icodrip.json("keys", "create", "--org", org, "--name", "k")["key"]
    rolled = icodrip.json("keys", "roll", only_key_id(icodrip, org))["key"]
    stored = icodrip.everything_stored()
    assert created.encode() not in stored and rolled.encode() not in stored
    assert created[8:].encode() not in stored and rolled[8:].encode() not in stored


def only_key_id(icodrip: Icodrip, org: str) -> str:
    """The id of the org's only key."""
    (key,) = icodrip.json("keys", "list", "--org", org)["data"]
    key_id: str = key["id"]
    return key_id


# -- list and show -----------------------------------------------------------------------


def test_list_json_shows_every_key_oldest_first_and_never_a_secret(icodrip: Icodrip) -> None:
    org = icodrip.org()
    first = icodrip.json("keys", "create", "--org", org, "--name", "one")
    second = icodrip.json("keys", "create", "--org", org, "--name", "two", "--env", "test")
    result = icodrip("keys", "list", "--org", org, "--json")
    listing = json.loads(result.stdout)
    assert listing["object"] == "list"
    assert [k["id"] for k in listing["data"]] == [first["id"], second["id"]]
    assert all("key" not in k for k in listing["data"])
    assert first["key"] not in result.output and second["key"] not in result.output


def test_list_prints_a_table_with_id_name_type_hint_status_created_expires(
    icodrip: Icodrip,
) -> None:
    org = icodrip.org()
    key = icodrip.json("keys", "create", "--org", org, "--name", "Production Backend")
    table = icodrip("keys", "list", "--org", org).stdout.splitlines()
    assert table[0].split() == [
        "ID", "NAME", "TYPE/ENV", "HINT", "STATUS", "CREATED", "(UTC)", "EXPIRES", "(UTC)"
    ]  # fmt: skip
    row = table[1]
    for cell in (key["id"], "Production Backend", "secret/live", key["hint"], "active"):
        assert cell in row
    assert key["key"] not in "\n".join(table)


def test_list_of_an_org_without_keys_says_so(icodrip: Icodrip) -> None:
    assert "no keys yet" in icodrip("keys", "list", "--org", icodrip.org()).stdout


def test_show_prints_the_key_but_never_its_secret(icodrip: Icodrip) -> None:
    key = icodrip.json("keys", "create", "--org", icodrip.org(), "--name", "k")
    shown = icodrip.json("keys", "show", key["id"])
    assert shown == {k: v for k, v in key.items() if k != "key"}
    human = icodrip("keys", "show", key["id"]).output
    assert key["hint"] in human and key["key"] not in human


# -- revoke, roll, rename ----------------------------------------------------------------


def test_revoke_makes_the_key_revoked(icodrip: Icodrip) -> None:
    key = icodrip.json("keys", "create", "--org", icodrip.org(), "--name", "k")
    result = icodrip("keys", "revoke", key["id"], "--reason", "leaked in CI logs")
    assert key["id"] in result.stdout
    shown = icodrip.json("keys", "show", key["id"])
    assert shown["status"] == "revoked" and shown["revoked_at"] is not None


def test_revoking_a_revoked_key_is_refused_and_writes_nothing(icodrip: Icodrip) -> None:
    key = icodrip.json("keys", "create", "--org", icodrip.org(), "--name", "k")
    icodrip("keys", "revoke", key["id"])
    before = icodrip.events_stored()
    assert icodrip.refused("keys", "revoke", key["id"])[0] == "api_key_revoked"
    assert icodrip.events_stored() == before


def test_roll_prints_the_successor_with_its_secret_and_the_old_key_expires_later(
    icodrip: Icodrip,
) -> None:
    old = icodrip.json("keys", "create", "--org", icodrip.org(), "--name", "k")
    before = datetime.now(UTC)
    new = icodrip.json("keys", "roll", old["id"], "--expire-in", "1h")
    assert parse_key(new["key"]) and new["key"] != old["key"]
    assert new["rolled_from"] == old["id"] and new["name"] == "k"
    old_now = icodrip.json("keys", "show", old["id"])
    assert old_now["status"] == "expiring" and old_now["rolled_to"] == new["id"]
    expires = _moment(old_now["expires_at"])
    assert before + timedelta(hours=1) <= expires <= datetime.now(UTC) + timedelta(hours=1)


def test_roll_gives_the_old_key_24h_by_default(icodrip: Icodrip) -> None:
    old = icodrip.json("keys", "create", "--org", icodrip.org(), "--name", "k")
    before = datetime.now(UTC)
    icodrip.json("keys", "roll", old["id"])
    expires = _moment(icodrip.json("keys", "show", old["id"])["expires_at"])
    assert before + timedelta(hours=24) <= expires <= datetime.now(UTC) + timedelta(hours=24)


def test_roll_with_expire_in_0_expires_the_old_key_at_once(icodrip: Icodrip) -> None:
    old = icodrip.json("keys", "create", "--org", icodrip.org(), "--name", "k")
    icodrip.json("keys", "roll", old["id"], "--expire-in", "0")
    assert icodrip.json("keys", "show", old["id"])["status"] == "expired"


def test_roll_human_output_warns_the_new_key_is_shown_once(icodrip: Icodrip) -> None:
    old = icodrip.json("keys", "create", "--org", icodrip.org(), "--name", "k")
    result = icodrip("keys", "roll", old["id"], "--expire-in", "30m")
    assert re.search(r"key: ak_live_\w+", result.stdout)
    assert "only time the key is shown" in result.stderr


def test_create_list_roll_revoke_is_the_zero_downtime_rotation(icodrip: Icodrip) -> None:
    org = icodrip.org()
    old = icodrip.json("keys", "create", "--org", org, "--name", "Production Backend")
    new = icodrip.json("keys", "roll", old["id"], "--expire-in", "24h")
    icodrip("keys", "revoke", old["id"], "--reason", "rotated")
    listing = icodrip.json("keys", "list", "--org", org)["data"]
    assert [(k["id"], k["status"]) for k in listing] == [
        (old["id"], "revoked"),
        (new["id"], "active"),
    ]


def test_rename_gives_the_key_a_new_name(icodrip: Icodrip) -> None:
    key = icodrip.json("keys", "create", "--org", icodrip.org(), "--name", "k")
    icodrip("keys", "rename", key["id"], "  Billing service ")
    assert icodrip.json("keys", "show", key["id"])["name"] == "Billing service"


# -- bad input ---------------------------------------------------------------------------


BAD_INPUT = [
    ("keys create --org org_nope --name k", "validation_error", "malformed organization id"),
    (f"keys create --org {UNKNOWN_ORG} --name k", "not_found", "no such organization"),
    ("keys create --org {org} --name '  '", "validation_error", "key name must be"),
    ("keys create --org {org}", "usage_error", "Missing option '--name'"),
    ("keys create --org {org} --name k --env prod", "usage_error", "'prod'"),
    ("keys create --org {org} --name k --permission root", "usage_error", "'root'"),
    ("keys create --org {org} --name k --permission audit:read", "insufficient_permissions",
     "audit:read"),
    ("keys create --org {org} --name k --public --permission affiliates:read",
     "validation_error", "events:write"),
    ("keys create --org {org} --name k --origin https://a.com", "validation_error", "--public"),
    ("keys create --org {org} --name k --public --origin javascript:alert(1)",
     "validation_error", "allowed origin"),
    ("keys create --org {org} --name k --expires-in soon", "usage_error", "bad duration"),
    ("keys create --org {org} --name k --expires-in 0", "validation_error", "--expires-in"),
    (f"keys list --org org_{'g' * 32}", "validation_error", "not hexadecimal"),
    (f"keys list --org {UNKNOWN_ORG}", "not_found", "no such organization"),
    ("keys show key_123", "validation_error", "malformed API key id"),
    ("keys show {org}", "validation_error", "malformed API key id"),
    (f"keys show {UNKNOWN_KEY}", "not_found", "no such API key"),
    ("keys revoke key_123", "validation_error", "malformed API key id"),
    (f"keys revoke {UNKNOWN_KEY}", "not_found", "no such API key"),
    (f"keys revoke {{key}} --reason {'x' * 501}", "validation_error", "500"),
    ("keys roll {key} --expire-in soon", "usage_error", "bad duration"),
    ("keys roll {key} --expire-in -1h", "usage_error", "bad duration"),
    ("keys roll {key} --expire-in 31d", "validation_error", "30d"),
    ("keys roll {key} --expire-in 99999999999d", "usage_error", "bad duration"),
    (f"keys roll {UNKNOWN_KEY}", "not_found", "no such API key"),
    ("keys rename {key} ''", "validation_error", "key name must be"),
    ("keys rename key_ x", "validation_error", "malformed API key id"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("command", "code", "fragment"), BAD_INPUT, ids=[c[:50] for c, *_ in BAD_INPUT]
)
def test_bad_input_is_one_stderr_line_exit_2_and_writes_nothing(
    icodrip: Icodrip, command: str, code: str, fragment: str
) -> None:
    org = icodrip.org()
    key = icodrip.json("keys", "create", "--org", org, "--name", "k")
    before = icodrip.events_stored()
    got, line = icodrip.refused(*shlex.split(command.format(org=org, key=key["id"])))
    assert got == code and fragment in line
    assert icodrip.events_stored() == before


def test_rolling_a_rolled_key_is_refused_and_writes_nothing(icodrip: Icodrip) -> None:
    key = icodrip.json("keys", "create", "--org", icodrip.org(), "--name", "k")
    icodrip("keys", "roll", key["id"])
    before = icodrip.events_stored()
    assert icodrip.refused("keys", "roll", key["id"])[0] == "api_key_already_rolled"
    assert icodrip.events_stored() == before


# -- the console script and help ---------------------------------------------------------


def test_the_console_script_prints_a_valid_key_once_and_never_stores_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICODRIP_")}

    def icodrip(*args: str) -> Any:
        argv = [str(ICODRIP), "--data-dir", str(data_dir), *args]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    org = icodrip("orgs", "create", "--name", "Acme", "--json")
    key = icodrip(
        "keys",
        "create",
        "--org",
        org["id"],
        "--name",
        "Production Backend",
        "--env",
        "live",
        "--json",
    )
    parsed = parse_key(key["key"])
    assert (parsed.type, parsed.env) == (KeyType.SECRET, Environment.LIVE)
    listing = icodrip("keys", "list", "--org", org["id"], "--json")
    assert key["key"] not in json.dumps(listing)
    assert [k["id"] for k in listing["data"]] == [key["id"]]
    stored = b"".join(p.read_bytes() for p in data_dir.glob("*.sqlite3*"))
    assert stored and key["key"].encode() not in stored


@pytest.mark.parametrize("command", ["create", "list", "show", "revoke", "roll", "rename"])
def test_every_keys_command_has_help_with_an_example(command: str) -> None:
    result = CliRunner().invoke(cli, ["keys", command, "--help"])
    assert result.exit_code == 0
    assert "Usage: icodrip keys " + command in result.stdout
    assert "icodrip keys " + command + " " in result.stdout.split("Options:")[1]
