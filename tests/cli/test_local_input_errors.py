"""Local input the CLI reads that is not what it should be is one line and a documented exit code, never a
Python traceback: a JSONL file that is not UTF-8 text (``feedback import``, ``online send``) exits 3 with USAGE
naming the file; ``metrics --url`` that is no URL exits 3 with USAGE, and one that answers something that is not
Prometheus text exits 14 with METRICS_UNREACHABLE. Under --json each is the JSON error object on stdout.

No server is needed: each is refused before any call (the target is a port nothing listens on)."""

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
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LEARNING_ENGINE_TARGET": dead_target(), "COLUMNS": "120"}
    env.pop("LEARNING_ENGINE_TOKEN", None)
    return subprocess.run([str(CLI), *args], env=env, capture_output=True, text=True, timeout=60)


def one_line_error(result: subprocess.CompletedProcess[str], code: int, reason: str) -> str:
    assert "Traceback" not in result.stderr, result.stderr[-600:]
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and reason in lines[0], result.stderr
    return lines[0]


@pytest.mark.parametrize("command", [["feedback", "import"], ["online", "send", "s1"]])
def test_a_file_that_is_not_utf8_text_is_refused_with_one_line(command, tmp_path):
    binary = tmp_path / "events.jsonl"
    binary.write_bytes(b"\xff\xfe\x00\x01not text\n")
    line = one_line_error(cli(*command, str(binary)), 3, "USAGE")
    assert str(binary) in line and "UTF-8" in line, line
    scripted = cli("--json", *command, str(binary))
    assert scripted.returncode == 3 and "Traceback" not in scripted.stderr, scripted.stderr[-600:]
    assert json.loads(scripted.stdout)["error"]["reason"] == "USAGE"


def test_metrics_from_a_url_that_answers_no_prometheus_text_is_one_line(tmp_path):
    page = tmp_path / "page.html"
    page.write_text("<html>not metrics</html>\n")
    line = one_line_error(cli("metrics", "--url", page.as_uri()), 14, "METRICS_UNREACHABLE")
    assert "Prometheus" in line, line
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00")
    one_line_error(cli("metrics", "--url", binary.as_uri()), 14, "METRICS_UNREACHABLE")
    scripted = cli("--json", "metrics", "--url", page.as_uri())
    assert json.loads(scripted.stdout)["error"]["reason"] == "METRICS_UNREACHABLE", scripted.stderr[-600:]


@pytest.mark.parametrize("url", ["127.0.0.1:9464/metrics", "localhost/metrics"])
def test_metrics_url_that_is_no_url_is_a_usage_error(url):
    line = one_line_error(cli("metrics", "--url", url), 3, "USAGE")
    assert "--url" in line, line
