"""The TypeScript client's self-resuming watches (clients/typescript/src/watch.ts: watchTrainingJob and the other
watch helpers over resumableWatch), against a live server: clients/typescript/test/resume.ts breaks real streams
through a TCP proxy (connections closed or reset under an open watch, re-opens refused, or accepted and never
answered) and checks the Python SDK's policy (learning_engine/calls.py, Calls._resumable): every event once, in
order, across a break; the re-open's snapshot delivered; the count of failed re-opens in a row, its pauses and its
restart with each message; only Unavailable re-opens; the caller's signal ends a pause."""

from __future__ import annotations

import os

import pytest

from tests.clients.test_typescript_client import (
    PACKAGE,
    _ensure_node_modules,
    _run,
    pytestmark,  # noqa: F401 - skip without node/npm
)


@pytest.mark.slow
async def test_watches_resume_after_a_broken_stream(client):
    """The server over the real engine (every service: the helpers of the evaluation, preparation, pipeline, online
    and LoRA watches call theirs; the in-memory one lacks them)."""
    _ensure_node_modules()
    env = {**os.environ, "UPSTREAM_PORT": str(client.app.port)}
    code, output = await _run("node", "--import", "tsx", "--test", "test/resume.ts", env=env, timeout=240,
                              cwd=PACKAGE)
    assert code == 0, f"the resume tests failed:\n{output}"
    assert "# pass 10" in output and "# fail 0" in output, output
