"""Leaving a `for await` loop over a server stream of the TypeScript client ends the call, as it does in the
Python SDK: the Node script (clients/typescript/test/stream-break.ts) takes the first message of WatchLoraStatus
against a live server and breaks out, throws out, or aborts its signal; it must then exit at once, which it
cannot while the HTTP/2 stream stays open (connect-es's promise client drops the response iterator's return())."""

from __future__ import annotations

import os

import pytest

from tests.clients.test_typescript_client import (
    PACKAGE,
    _ensure_node_modules,
    _run,
    pytestmark,  # noqa: F401 - skip without node/npm
)


@pytest.mark.parametrize(("mode", "ended"), [
    ("break", "the loop ended"),
    ("throw", "the loop threw: not a ConnectError: thrown in the loop"),
    ("abort", "the loop threw: Canceled: "),
], ids=["break", "throw", "abort"])
async def test_leaving_the_loop_ends_the_stream(client, mode: str, ended: str):
    _ensure_node_modules()
    env = {**os.environ, "LEARNING_ENGINE_URL": f"http://127.0.0.1:{client.app.port}"}
    # The script exits with 3 five seconds after its loop if the stream is still open.
    code, output = await _run("node", "--import", "tsx", "test/stream-break.ts", mode, env=env, timeout=60,
                              cwd=PACKAGE)
    lines = output.splitlines()
    assert code == 0, f"the process did not exit after it stopped reading the stream (exit code {code}):\n{output}"
    assert lines[0] == "first status: alias active", output
    assert lines[1].startswith(ended), output
    assert lines[2:] == ["stopped reading; listeners left on the caller's signal: 0"], output
