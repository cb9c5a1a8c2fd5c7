"""The Python SDK snippet of docs/clients.md, run as it is written (a script: top-level code, the target and token
from the environment) against a live server: it trains on the sample, writes the loss curve and prints what it
says."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parents[2] / "docs" / "clients.md"


def python_snippet() -> str:
    section = PAGE.read_text().split("## Python SDK\n", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert found, "docs/clients.md: the Python SDK section has no python block"
    return found.group(1)


async def test_the_documented_python_snippet_runs(client, data_dir: Path, tmp_path: Path) -> None:
    (data_dir / "datasets" / "samples").mkdir()
    shutil.copy(data_dir / "datasets" / "capitals.jsonl", data_dir / "datasets" / "samples")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEARNING_ENGINE_")}
    env["LEARNING_ENGINE_TARGET"] = f"127.0.0.1:{client.app.port}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", python_snippet(), env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=240)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    steps = [int(line.split()[1]) for line in lines if line.startswith("step ")]
    assert steps == list(range(1, len(steps) + 1)) and steps, lines
    assert "adapter v1.0" in lines and "SERVING" in lines and "['v1.0']" in lines, lines
    assert any(line.startswith("ADAPTER_NOT_FOUND ") for line in lines), lines
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
