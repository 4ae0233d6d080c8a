"""`icodrip users create`: a dashboard login, password from a prompt or stdin, never echoed."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from adapters.settings import Settings
from adapters.users import verify_password
from application.stores import open_user_directory
from cli.main import cli

PASSWORD = "correct horse battery staple"


def icodrip(data_dir: Path, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        cli, ["--data-dir", str(data_dir), *args], input=stdin, catch_exceptions=False
    )
    return result.exit_code, result.stdout, result.stderr


def new_org(data_dir: Path) -> str:
    code, out, _ = icodrip(data_dir, "orgs", "create", "--name", "Acme", "--json")
    assert code == 0
    return str(json.loads(out)["id"])


def test_users_create_reads_the_password_from_stdin_and_prints_the_user(tmp_path: Path) -> None:
    org = new_org(tmp_path)
    code, out, err = icodrip(
        tmp_path,
        "users", "create", "--org", org, "--email", "Ana@Example.com", "--role", "developer",
        "--password-stdin", "--json",
        stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert code == 0, err
    view = json.loads(out)
    assert view["email"] == "ana@example.com" and view["role"] == "developer"
    assert view["id"].startswith("usr_") and view["organization"] == org
    assert PASSWORD not in out + err
    users = open_user_directory(Settings.from_env({}, data_dir=tmp_path))
    try:
        user = users.find_by_email("ana@example.com")
        assert user is not None and verify_password(user.password_hash, PASSWORD)
    finally:
        users.close()


def test_users_create_prompts_for_the_password_twice(tmp_path: Path) -> None:
    org = new_org(tmp_path)
    code, out, err = icodrip(
        tmp_path,
        "users", "create", "--org", org, "--email", "bo@example.com", "--role", "auditor",
        stdin=f"{PASSWORD}\n{PASSWORD}\n",
    )  # fmt: skip
    assert code == 0, err
    assert "bo@example.com" in out and PASSWORD not in out


def test_a_short_password_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    org = new_org(tmp_path)
    code, _, err = icodrip(
        tmp_path,
        "users", "create", "--org", org, "--email", "cy@example.com", "--role", "admin",
        "--password-stdin",
        stdin="short\n",
    )  # fmt: skip
    assert code == 2
    assert err.strip() == "error: a password needs at least 12 characters (validation_error)"
    assert not (tmp_path / "users.sqlite3").exists()


def test_an_unknown_organization_is_refused(tmp_path: Path) -> None:
    new_org(tmp_path)
    code, _, err = icodrip(
        tmp_path,
        "users", "create", "--org", "org_" + "0" * 32, "--email", "d@example.com",
        "--role", "admin", "--password-stdin",
        stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert code == 2 and "(not_found)" in err


def test_a_taken_email_is_refused(tmp_path: Path) -> None:
    org = new_org(tmp_path)
    args = ["users", "create", "--org", org, "--email", "e@example.com", "--role", "admin",
            "--password-stdin"]  # fmt: skip
    assert icodrip(tmp_path, *args, stdin=PASSWORD + "\n")[0] == 0
    code, _, err = icodrip(tmp_path, *args, stdin=PASSWORD + "\n")
    assert code == 2 and "(email_taken)" in err


def test_users_create_help_shows_an_example_and_the_roles(tmp_path: Path) -> None:
    code, out, _ = icodrip(tmp_path, "users", "create", "--help")
    assert code == 0
    assert "Example: icodrip users create --org" in out
    assert "--password-stdin" in out and "auditor" in out
