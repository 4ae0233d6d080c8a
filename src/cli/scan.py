"""`icodrip scan PATH…`: find leaked Icodrip keys in files and in git history.

Candidates matching the key pattern count only when their checksum holds, so random strings
that look like keys are not reported. Output names the place and the key's hint only, never
the key. Exit status: 1 when a key was found, 0 when none, 2 on bad usage. Needs no settings,
store or network.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from cli.common import CliError, emit, json_option
from domain.leak_scan import GIT_LOG_FORMAT, find_keys, find_keys_in_patches

#: Files larger than this are skipped (keys live in source and config, not in big blobs).
MAX_FILE_BYTES = 10 * 1024 * 1024
SKIPPED_DIRS = frozenset({".git", ".hg", ".svn", ".venv", "node_modules", "__pycache__"})


def _files(path: Path) -> Iterator[Path]:
    if path.is_file():
        yield path
        return
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        for name in sorted(names):
            yield Path(root) / name


def _scan_file(path: Path) -> list[dict[str, Any]]:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return []
        data = path.read_bytes()
    except OSError:
        return []
    if b"\x00" in data[:8192]:
        return []  # binary
    text = data.decode("utf-8", errors="replace")
    return [
        {
            "source": "file",
            "path": str(path),
            "line": f.line,
            "hint": f.hint,
            "type": f.type,
            "env": f.env,
            "fingerprint": f.fingerprint,
        }
        for f in find_keys(text.splitlines())
    ]


def _scan_history(repo: Path) -> list[dict[str, Any]]:
    """Keys added by any commit of any ref (`git log -p --all`), deleted since or not."""
    try:
        process = subprocess.Popen(
            [
                "git",
                "-C",
                str(repo),
                "log",
                "-p",
                "--all",
                "--no-color",
                "--no-ext-diff",
                "--no-textconv",
                GIT_LOG_FORMAT,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
    except OSError as error:
        raise CliError(f"cannot run git to scan {repo}: {error}", "git_unavailable") from None
    assert process.stdout is not None
    found = [
        {
            "source": "git",
            "commit": h.commit,
            "path": h.path,
            "line": h.finding.line,
            "hint": h.finding.hint,
            "type": h.finding.type,
            "env": h.finding.env,
            "fingerprint": h.finding.fingerprint,
        }
        for h in find_keys_in_patches(process.stdout)
    ]
    process.stdout.close()
    process.wait()
    return found


def _where(finding: dict[str, Any]) -> str:
    if finding["source"] == "git":
        return f"{finding['commit'][:12]}:{finding['path']}:{finding['line']}"
    return f"{finding['path']}:{finding['line']}"


def _print(findings: list[dict[str, Any]]) -> None:
    for f in findings:
        click.echo(f"{_where(f)}: {f['hint']} ({f['type']} key, {f['env']})")
    if findings:
        keys = len({f["fingerprint"] for f in findings})
        click.echo(
            f"found {keys} Icodrip key(s) in {len(findings)} place(s): revoke or roll each "
            "one (icodrip keys roll KEY_ID), then remove it from the code and its history",
            err=True,
        )


@click.command(
    "scan",
    epilog=(
        "\b\nExamples:\n"
        "  icodrip scan .       # the working tree and, in a git repository, its history\n"
        "  icodrip scan src config.yaml --no-history --json\n"
        "\n"
        "Exit status: 1 when a key was found, 0 when none. As a pre-commit hook: see "
        ".pre-commit-hooks.yaml (id: icodrip-scan)."
    ),
)
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--history/--no-history",
    default=True,
    show_default=True,
    help="Also scan every commit (git log -p --all) of each PATH that is a git repository root.",
)
@json_option
def scan(paths: tuple[Path, ...], history: bool, as_json: bool) -> None:
    """Find Icodrip API keys in files and git history (checksum-validated; hints only)."""
    findings: list[dict[str, Any]] = []
    for path in paths:
        for file in _files(path):
            findings.extend(_scan_file(file))
        if history and path.is_dir() and (path / ".git").exists():
            findings.extend(_scan_history(path))
    document = {
        "object": "scan",
        "found": len(findings),
        "keys": len({f["fingerprint"] for f in findings}),
        "findings": findings,
    }
    emit(document, as_json, lambda: _print(findings))
    if findings:
        raise SystemExit(1)
