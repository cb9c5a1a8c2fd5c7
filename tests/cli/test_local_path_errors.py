"""A local path the CLI is given that it cannot read (missing, or a directory where a file goes) exits 3 (USAGE)
with one line naming the path, and under --json the JSON error object on stdout, as docs/cli.md says: never
typer's usage box with exit 2. The same for --tls-cert without --tls-key (and the other way round).

No server is needed: each is refused before any call (the target is a port nothing listens on)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.test_local_input_errors import cli, one_line_error

# Each command with its local path argument last ("{path}" stands for it).
COMMANDS = [
    ["feedback", "import", "{path}"],
    ["online", "send", "s1", "{path}"],
    ["datasets", "upload", "--name", "d1", "{path}"],
    ["datasets", "validate", "{path}"],
    ["datasets", "prepare", "d1", "{path}"],
    ["adapters", "import", "{path}"],
]


def _args(command: list[str], path: Path) -> list[str]:
    return [str(path) if a == "{path}" else a for a in command]


def _refused(args: list[str], path: Path | None) -> None:
    line = one_line_error(cli(*args), 3, "USAGE")
    assert path is None or str(path) in line, line
    scripted = cli("--json", *args)
    assert scripted.returncode == 3 and "Traceback" not in scripted.stderr, (scripted.returncode, scripted.stderr)
    error = json.loads(scripted.stdout)["error"]
    assert error["code"] == "INVALID_ARGUMENT" and error["reason"] == "USAGE", error
    assert path is None or error["metadata"]["path"] == str(path), error


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_missing_file_is_a_usage_error(command: list[str], tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    _refused(_args(command, missing), missing)


@pytest.mark.parametrize("command", [c for c in COMMANDS if c[:2] != ["adapters", "import"]],
                         ids=lambda c: " ".join(c[:2]))
@pytest.mark.slow
def test_a_directory_where_a_file_goes_is_a_usage_error(command: list[str], tmp_path: Path) -> None:
    _refused(_args(command, tmp_path), tmp_path)


@pytest.mark.parametrize("option", ["--tls-cert", "--tls-key"])
def test_one_of_tls_cert_and_key_alone_is_a_usage_error(option: str, tmp_path: Path) -> None:
    pem = tmp_path / "client.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    _refused([option, str(pem), "health"], None)
