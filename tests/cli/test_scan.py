"""`icodrip scan`: keys in files and git history, by hint only; exit 1 when found."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cli.main import cli
from domain.key_format import Environment, KeyType, generate_key, hint_for

REPO_ROOT = Path(__file__).resolve().parents[2]
ICODRIP = Path(sys.executable).parent / "icodrip"


def scan(*args: str) -> Result:
    return CliRunner().invoke(cli, ["scan", *args], catch_exceptions=False)


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=T", "-c", "user.email=t@example.com", *args],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def key() -> str:
    return generate_key(KeyType.SECRET, Environment.LIVE)


@pytest.fixture
def repo_with_deleted_key(tmp_path: Path, key: str) -> Path:
    """A git repository where a key was committed, then deleted in a later commit."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "README.md").write_text("# shop\n")
    (repo / "settings.py").write_text(f'DEBUG = True\nICODRIP_KEY = "{key}"\n')
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "add settings")
    (repo / "settings.py").write_text("DEBUG = True\n")
    git(repo, "commit", "-q", "-am", "remove the key")
    return repo


def test_a_key_in_a_file_is_reported_as_file_line_and_hint(tmp_path: Path, key: str) -> None:
    config = tmp_path / "config.env"
    config.write_text(f"# settings\nICODRIP_KEY={key}\n")
    result = scan(str(tmp_path))
    assert result.exit_code == 1
    assert f"{config}:2: {hint_for(key)}" in result.output


def test_the_full_key_is_never_printed(tmp_path: Path, key: str) -> None:
    (tmp_path / "config.env").write_text(f"ICODRIP_KEY={key}\n")
    result = scan(str(tmp_path))
    assert key not in result.output
    assert key not in scan(str(tmp_path), "--json").output


def test_a_clean_tree_exits_0(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("print('hello')\n")
    result = scan(str(tmp_path))
    assert result.exit_code == 0, result.output


def test_a_key_shaped_string_with_a_bad_checksum_is_not_reported(tmp_path: Path, key: str) -> None:
    typo = key[:-1] + ("A" if key[-1] != "A" else "B")
    (tmp_path / "docs.md").write_text(f"Example: {typo}\n")
    assert scan(str(tmp_path)).exit_code == 0


def test_a_key_deleted_from_the_tree_is_still_found_in_git_history(
    repo_with_deleted_key: Path, key: str
) -> None:
    result = scan(str(repo_with_deleted_key), "--json")
    assert result.exit_code == 1
    (finding,) = json.loads(result.output)["findings"]
    assert (finding["source"], finding["path"], finding["line"], finding["hint"]) == (
        "git",
        "settings.py",
        2,
        hint_for(key),
    )


def test_without_history_a_deleted_key_is_not_found(repo_with_deleted_key: Path) -> None:
    assert scan(str(repo_with_deleted_key), "--no-history").exit_code == 0


def test_json_output_is_one_document(tmp_path: Path, key: str) -> None:
    (tmp_path / "a.txt").write_text(f"{key}\n{key}\n")
    document = json.loads(scan(str(tmp_path), "--json").output)
    assert (document["found"], document["keys"]) == (2, 1)


def test_help_shows_an_example() -> None:
    result = scan("--help")
    assert result.exit_code == 0
    assert "Example" in result.output and "icodrip scan ." in result.output


def test_the_console_script_exits_1_on_a_finding(tmp_path: Path, key: str) -> None:
    (tmp_path / "leak.txt").write_text(key)
    completed = subprocess.run([str(ICODRIP), "scan", str(tmp_path)], capture_output=True)
    assert completed.returncode == 1
    assert key.encode() not in completed.stdout + completed.stderr


def test_the_repository_ships_a_pre_commit_hook_running_the_scanner() -> None:
    lines = [
        line.strip() for line in (REPO_ROOT / ".pre-commit-hooks.yaml").read_text().splitlines()
    ]
    assert "- id: icodrip-scan" in lines
    assert "entry: icodrip scan --no-history" in lines
    assert "language: python" in lines
