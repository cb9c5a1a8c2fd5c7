"""A --tls-ca, --tls-cert or --tls-key that cannot be read (missing, a directory) is a usage error naming the
flag: one line on stderr (or the JSON error object on stdout under --json), exit 3 with USAGE, before any call;
never a Python traceback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

CLI = Path(sys.executable).with_name("learning-engine")


def dead_target() -> str:
    with socket.socket() as s:  # a port nothing listens on: nothing here may get as far as calling
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LEARNING_ENGINE_TARGET": dead_target(), "COLUMNS": "120"}
    for name in ("LEARNING_ENGINE_TOKEN", "LEARNING_ENGINE_TLS_CA", "LEARNING_ENGINE_TLS_CERT",
                 "LEARNING_ENGINE_TLS_KEY"):
        env.pop(name, None)
    return subprocess.run([str(CLI), *args], env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def pem(tmp_path: Path) -> Path:
    path = tmp_path / "ok.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["--tls-ca", "--tls-cert", "--tls-key"])
@pytest.mark.parametrize("what", ["missing", "directory"])
def test_an_unreadable_tls_file_is_a_usage_error_naming_its_flag(flag, what, tmp_path, pem):
    bad = tmp_path / "missing.pem" if what == "missing" else tmp_path
    args = [flag, str(bad)] + {"--tls-ca": [], "--tls-cert": ["--tls-key", str(pem)],
                               "--tls-key": ["--tls-cert", str(pem)]}[flag]
    result = cli(*args, "health")
    assert "Traceback" not in result.stderr, result.stderr[-600:]
    assert result.returncode == 3, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and flag in lines[0] and "USAGE" in lines[0], result.stderr

    scripted = cli("--json", *args, "health")
    assert scripted.returncode == 3 and "Traceback" not in scripted.stderr, scripted.stderr[-600:]
    error = json.loads(scripted.stdout)["error"]
    assert (error["code"], error["reason"]) == ("INVALID_ARGUMENT", "USAGE") and flag in error["message"], error
