"""The generated TypeScript client (clients/typescript) against a live server, through `npm test`."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "clients" / "typescript"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="node/npm not installed: the TypeScript client test needs Node 20+",
)


async def _run(*args: str, env: dict[str, str], timeout: float) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *args, cwd=PACKAGE, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=timeout)
    return proc.returncode, out.decode()


async def test_npm_test_against_a_live_server(client):
    env = {**os.environ, "LEARNING_ENGINE_URL": f"http://127.0.0.1:{client.app.port}"}
    if not (PACKAGE / "node_modules" / ".bin" / "tsx").exists():
        code, output = await _run("npm", "ci", "--no-audit", "--no-fund", env=env, timeout=300)
        assert code == 0, f"npm ci failed:\n{output}"
    code, output = await _run("npm", "test", env=env, timeout=240)
    assert code == 0, f"npm test failed:\n{output}"
    assert "# pass 3" in output and "# fail 0" in output, output
