"""`datasets prepare NAME ./docs... --watch` from a directory that is not the server's: the local documents are
sent with the request, the job is followed chunk by chunk, and the stored version is listed and trains by name."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from tests.cli.test_cli_e2e import CLI, Result, cli
from tests.engine.test_judge import judge_engine
from tests.fixtures.pdf import text_pdf
from tests.server.test_preparation import ATLAS, HANDBOOK, writer


async def cli_in(cwd: Path, port: int, *args: str) -> Result:
    env = {**os.environ, "LEARNING_ENGINE_TARGET": f"127.0.0.1:{port}", "COLUMNS": "120"}
    env.pop("LEARNING_ENGINE_TOKEN", None)
    proc = await asyncio.create_subprocess_exec(str(CLI), *args, env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    return Result(proc.returncode, out.decode(), err.decode())


async def test_datasets_prepare_sends_local_documents_and_follows_the_job(make_server, tmp_path: Path) -> None:
    runner, url, asked = await judge_engine(writer)
    try:
        port = (await make_server(prepare_generator_url=url)).app.port
        docs = tmp_path / "docs"
        docs.mkdir()
        (docs / "handbook.md").write_text(HANDBOOK)
        (docs / "atlas.pdf").write_bytes(text_pdf([ATLAS]))
        done = await cli_in(tmp_path, port, "datasets", "prepare", "handbook", "docs/handbook.md", "docs/atlas.pdf",
                            "--questions-per-chunk", "2", "--chunk-chars", "200", "--eval-fraction", "0.3",
                            "--watch")
        assert done.code == 0, done.err
        assert len(asked) == 3
        assert "SUCCEEDED: 3 kept of 6 pairs from 3 chunks (3 unsupported, 0 duplicate, 3 unparseable)" in done.out
        assert "stored datasets/handbook/versions/1 (train --dataset handbook)" in done.out
        missing = await cli_in(tmp_path, port, "datasets", "prepare", "handbook")
        assert missing.code == 3 and "name at least one document" in missing.err  # INVALID_ARGUMENT, no call
        bad = await cli_in(tmp_path, port, "datasets", "prepare", "other", "--server-path", "../../etc/passwd.md")
        assert bad.code == 3 and "must not contain '..'" in bad.err
        again = await cli_in(tmp_path, port, "--json", "datasets", "prepare", "handbook", "docs/handbook.md",
                             "docs/atlas.pdf", "--questions-per-chunk", "2", "--chunk-chars", "200",
                             "--eval-fraction", "0.3", "--watch")
    finally:
        await runner.cleanup()
    assert again.code == 0, again.err
    updates = again.json_lines()
    assert [u["event"]["chunk"]["done"] for u in updates if "chunk" in u.get("event", {})] == [1, 2, 3]
    listed = await cli(port, "preparation-jobs", "list")
    rows = [line.split() for line in listed.out.splitlines()[1:]]
    assert [row[1:] for row in rows] == [["SUCCEEDED", "100%", "datasets/handbook/versions/1"]] * 2, listed.out
    versions = await cli(port, "--json", "datasets", "list")
    stored = json.loads(versions.out)["datasets"]
    assert len(stored) == 1 and stored[0]["prepared"]["documents"] == ["handbook.md", "atlas.pdf"]
    assert stored[0]["prepared"]["preparation_job"] == rows[-1][0]  # the first job stored it; the second found it
