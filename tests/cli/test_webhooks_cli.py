"""`icodrip webhooks`: the signing secret is printed once, never listed; URLs are judged as the
API judges them; bad input is refused on one line with exit status 2 and writes nothing."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from click.testing import CliRunner, Result

from cli.main import cli

ONE_LINE_ERROR = re.compile(r"error: .+ \(([a-z_]+)\)")
#: A public address written as one: judging it needs no DNS (tests have none).
PUBLIC_URL = "https://93.184.215.14/hook"


@pytest.fixture
def env(store_env: dict[str, str]) -> dict[str, Any]:
    """The store's variables, and none of the machine's naming another store or setting."""
    values: dict[str, Any] = {**store_env}
    values.setdefault("ICODRIP_DATABASE_URL", None)  # CliRunner unsets a None
    values["ICODRIP_WEBHOOKS_ALLOW_PRIVATE"] = None
    return values


def run(env: dict[str, Any], *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


def ok(env: dict[str, Any], *args: str) -> Result:
    result = run(env, *args)
    assert result.exit_code == 0, result.output
    return result


def as_json(env: dict[str, Any], *args: str) -> Any:
    return json.loads(ok(env, *args, "--json").stdout)


def refused(env: dict[str, Any], *args: str) -> str:
    """Run a command that must be refused as bad input; its error code."""
    result = run(env, *args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    match = ONE_LINE_ERROR.fullmatch(lines[0])
    assert match, lines[0]
    return match.group(1)


@pytest.fixture
def org(env: dict[str, Any]) -> str:
    org_id: str = as_json(env, "orgs", "create", "--name", "Acme")["id"]
    return org_id


def create(env: dict[str, Any], org: str, *extra: str) -> dict[str, Any]:
    args = ["webhooks", "create", "--org", org, "--url", PUBLIC_URL, "--event", "api_key.revoked"]
    document: dict[str, Any] = as_json(env, *args, *extra)
    return document


def test_create_prints_the_endpoint_with_its_secret_once(env: dict[str, Any], org: str) -> None:
    result = ok(
        env,
        "webhooks", "create", "--org", org, "--url", PUBLIC_URL,
        "--event", "api_key.revoked", "--event", "api_key.exposed",
        "--description", "Ops pager", "--json",
    )  # fmt: skip
    created = json.loads(result.stdout)  # exactly one document on stdout
    assert created["object"] == "webhook_endpoint"
    assert created["organization"] == org and created["env"] == "live"
    assert created["url"] == PUBLIC_URL and created["description"] == "Ops pager"
    assert created["events"] == ["api_key.exposed", "api_key.revoked"]
    assert created["secret"].startswith("whsec_")
    assert "only time" in result.stderr and created["secret"] not in result.stderr

    listed = ok(env, "webhooks", "list", "--org", org, "--json").stdout
    assert [w["id"] for w in json.loads(listed)["data"]] == [created["id"]]
    table = ok(env, "webhooks", "list", "--org", org).stdout
    assert created["id"] in table and PUBLIC_URL in table
    assert created["secret"] not in listed + table


def test_create_without_json_shows_the_secret_in_the_readout(env: dict[str, Any], org: str) -> None:
    args = ["webhooks", "create", "--org", org, "--url", PUBLIC_URL, "--event", "api_key.created"]
    result = ok(env, *args, "--env", "test")
    assert re.search(r"secret: whsec_\S+", result.stdout)
    assert re.search(r"env: test", result.stdout)


def test_delete_removes_the_endpoint_from_the_list(env: dict[str, Any], org: str) -> None:
    webhook = create(env, org)
    deleted = as_json(env, "webhooks", "delete", webhook["id"])
    assert deleted["id"] == webhook["id"] and deleted["deleted"] is True
    assert "secret" not in deleted
    assert as_json(env, "webhooks", "list", "--org", org)["data"] == []
    assert refused(env, "webhooks", "delete", webhook["id"]) == "not_found"


def test_an_empty_list_says_how_to_add_one(env: dict[str, Any], org: str) -> None:
    assert "icodrip webhooks create" in ok(env, "webhooks", "list", "--org", org).stdout


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://169.254.169.254/latest",
        "http://93.184.215.14/hook",
        "https://[::ffff:127.0.0.1]/",
        "https://localhost/hook",
    ],
)
def test_an_internal_url_is_refused_and_nothing_is_stored(
    env: dict[str, Any], org: str, url: str
) -> None:
    code = refused(
        env, "webhooks", "create", "--org", org, "--url", url, "--event", "api_key.created"
    )
    assert code == "webhook_url_not_allowed"
    assert as_json(env, "webhooks", "list", "--org", org)["data"] == []


def test_private_urls_are_allowed_when_the_settings_allow_them(
    env: dict[str, Any], org: str
) -> None:
    allowing = {**env, "ICODRIP_WEBHOOKS_ALLOW_PRIVATE": "1"}
    created = as_json(
        allowing,
        "webhooks", "create", "--org", org, "--url", "http://127.0.0.1:8080/hook",
        "--event", "api_key.created",
    )  # fmt: skip
    assert created["url"] == "http://127.0.0.1:8080/hook"


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["create", "--org", "{org}", "--url", PUBLIC_URL, "--event", "nope"], "usage_error"),
        (["create", "--org", "{org}", "--url", PUBLIC_URL], "usage_error"),
        (["create", "--org", "org_x", "--url", PUBLIC_URL, "--event", "api_key.created"],
         "validation_error"),
        (["create", "--org", "org_" + "0" * 32, "--url", PUBLIC_URL, "--event", "api_key.created"],
         "not_found"),
        (["create", "--org", "{org}", "--url", PUBLIC_URL, "--event", "api_key.created",
          "--description", "d" * 501], "validation_error"),
        (["list", "--org", "org_" + "0" * 32], "not_found"),
        (["delete", "we_nothex"], "validation_error"),
        (["delete", "we_" + "0" * 32], "not_found"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_on_one_line(
    env: dict[str, Any], org: str, args: list[str], code: str
) -> None:
    argv = [arg.replace("{org}", org) for arg in args]
    assert refused(env, "webhooks", *argv) == code
    assert as_json(env, "webhooks", "list", "--org", org)["data"] == []
