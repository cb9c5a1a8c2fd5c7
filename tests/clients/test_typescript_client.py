"""The generated TypeScript client (clients/typescript) against a live server: its own tests through `npm test`,
and the package as a user gets it: built and packed by `npm pack`, the tarball installed into a fresh project
outside the repository, and the shipped example run there, importing the package by its name."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from learning.v1 import adapter_pb2, adapter_pb2_grpc
from learning.v1 import error_reason_pb2 as reasons
from tests.fixtures.peft_adapters import build_peft_adapter, tar_dir

PACKAGE = Path(__file__).resolve().parents[2] / "clients" / "typescript"
NAME = "@learning-engine/client"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="node/npm not installed: the TypeScript client test needs Node 20+",
)


async def _run(*args: str, env: dict[str, str], timeout: float, cwd: Path = PACKAGE) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *args, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=timeout)
    return proc.returncode, out.decode()


def _sync(*args: str, cwd: Path, timeout: float = 120) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)} failed in {cwd}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _ensure_node_modules() -> None:
    if not (PACKAGE / "node_modules" / ".bin" / "tsc").exists():
        _sync("npm", "ci", "--no-audit", "--no-fund", cwd=PACKAGE, timeout=300)


@pytest.mark.slow
async def test_npm_test_against_a_live_server(client):
    env = {**os.environ, "LEARNING_ENGINE_URL": f"http://127.0.0.1:{client.app.port}"}
    _ensure_node_modules()
    code, output = await _run("npm", "test", env=env, timeout=240)
    assert code == 0, f"npm test failed:\n{output}"
    assert "# pass 25" in output and "# fail 0" in output, output


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh project outside the repository with the packed package installed from its tarball, offline: the
    dependencies come from the npm cache that `make setup` fills (npm ci, and `npm cache add` for the registry
    metadata an install of a tarball resolves them with)."""
    _ensure_node_modules()
    packed = tmp_path_factory.mktemp("ts-pack")
    # `npm pack` runs prepack (`npm run build`: tsc into dist/); --json on stdout, the build's output on stderr.
    report = json.loads(_sync("npm", "pack", "--json", "--silent", "--pack-destination", str(packed), cwd=PACKAGE))
    tarball = packed / report[0]["filename"]
    with tarfile.open(tarball) as archive:
        members = set(archive.getnames())
    for shipped in ("package.json", "dist/index.js", "dist/index.d.ts", "dist/web.js", "dist/web.d.ts",
                    "dist/gen/learning/v1/error_reason_pb.js", "examples/quickstart.mjs"):
        assert f"package/{shipped}" in members, f"{shipped} is not in {tarball.name}: {sorted(members)}"
    assert not any(m.startswith(("package/src/", "package/test/", "package/node_modules/")) for m in members)

    root = tmp_path_factory.mktemp("ts-app")
    assert PACKAGE.parents[1] not in root.parents, "the project must live outside the repository"
    (root / "package.json").write_text(json.dumps({"name": "app", "private": True, "type": "module"}))
    done = subprocess.run(["npm", "install", "--offline", "--no-audit", "--no-fund", str(tarball)], cwd=root,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (
        "npm install --offline of the packed tarball failed; `make setup` caches its dependencies "
        f"(npm ci, npm cache add):\n{done.stdout}\n{done.stderr}"
    )
    installed = root / "node_modules" / NAME
    assert not installed.is_symlink() and (installed / "dist" / "index.js").is_file()
    shutil.copy(installed / "examples" / "quickstart.mjs", root / "quickstart.mjs")
    return root


def test_the_packed_types_check_the_example(app: Path):
    """The example type-checks (// @ts-check) against the .d.ts files the tarball ships, resolved by name."""
    tools = PACKAGE / "node_modules"
    _sync(str(tools / ".bin" / "tsc"), "--noEmit", "--allowJs", "--checkJs", "--strict", "--target", "es2022",
          "--module", "nodenext", "--moduleResolution", "nodenext", "--skipLibCheck",
          "--typeRoots", str(tools / "@types"), "--types", "node", "quickstart.mjs", cwd=app)


BROWSER_APP = """
import { createLearningEngineClient, errorInfo } from "@learning-engine/client%s";
const client = createLearningEngineClient({ baseUrl: "http://127.0.0.1:8080", token: "t" });
export const listed = () => client.adapters.listAdapters({}).catch(errorInfo);
"""


def test_the_web_entry_bundles_for_a_browser_and_the_node_entry_does_not(app: Path):
    """A web app imports `@learning-engine/client/web` (gRPC-Web): bundled for a browser by esbuild from the
    installed package, it resolves through the package's exports and needs nothing of Node. The Node entry, bundled
    the same way, fails on Node's modules (connect-node's HTTP/2), which is what the web entry is for."""
    esbuild = PACKAGE / "node_modules" / ".bin" / "esbuild"
    results = {}
    for entry in ("/web", ""):
        source = app / f"browser{entry.replace('/', '-')}.mjs"
        source.write_text(BROWSER_APP % entry)
        results[entry] = subprocess.run(
            [str(esbuild), source.name, "--bundle", "--platform=browser", "--format=esm", "--outfile=/dev/null",
             "--log-limit=0"],  # every error: the Node entry's own node: imports (TLS) come before connect-node's
            cwd=app, capture_output=True, text=True, timeout=120)
    assert results["/web"].returncode == 0, results["/web"].stderr
    assert results[""].returncode != 0 and '"node:http2"' in results[""].stderr, results[""].stderr


async def test_the_example_from_the_packed_package(app: Path, client, tiny_model_dir: Path, tmp_path: Path):
    stub = adapter_pb2_grpc.AdapterServiceStub(client.channel)
    archive = tar_dir(build_peft_adapter(tiny_model_dir, tmp_path / "peft"))

    def requests():
        yield adapter_pb2.ImportAdapterRequest(metadata=adapter_pb2.ImportAdapterMetadata())
        yield adapter_pb2.ImportAdapterRequest(chunk=archive)

    imported = (await stub.ImportAdapter(requests())).adapter

    env = {**os.environ, "LEARNING_ENGINE_URL": f"http://127.0.0.1:{client.app.port}"}
    code, output = await _run("node", "quickstart.mjs", env=env, timeout=60, cwd=app)
    assert code == 0, f"the example failed:\n{output}"
    lines = output.splitlines()
    assert re.fullmatch(r"server \S+: base model tiny-llama, active adapter \(none\), alias active", lines[0]), output
    assert lines[1:] == [
        "adapters: 1",
        f"  {imported.version} (tiny-llama)",
        "feedback submitted: stored 1, duplicates 0",
        "feedback resent: stored 0, duplicates 1",
        "feedback in the last 7 days: 1",
        "no such adapter: NotFound ADAPTER_NOT_FOUND",
        "refused: InvalidArgument INVALID_FEEDBACK [events[0].rating: must lie in 1..5 for RATING, got 9]",
    ], output


# A user's script in the fresh project: each error as the package types it, as one JSON line.
TYPED_ERRORS = """
import {
  ConnectError, ErrorReason, createLearningEngineClient, errorInfo, fieldViolations,
} from "@learning-engine/client";
const client = createLearningEngineClient({ baseUrl: process.env.LEARNING_ENGINE_URL });
const calls = [
  () => client.training.getTrainingJob({ name: `trainingJobs/${"0".repeat(32)}` }),
  () => client.training.createTrainingJob({ spec: { dataset: { case: "jsonl", value: { path: "missing.jsonl" } } } }),
];
for (const call of calls) {
  try {
    await call();
    console.log(JSON.stringify({ ok: true }));
  } catch (error) {
    const info = errorInfo(error);
    console.log(JSON.stringify({
      connectError: error instanceof ConnectError,
      code: ConnectError.from(error).code,
      reason: info?.reason,
      errorReason: info?.errorReason,
      name: info === undefined ? undefined : ErrorReason[info.errorReason],
      domain: info?.domain,
      fields: fieldViolations(error).map((v) => v.field),
    }));
  }
}
"""


async def test_bad_requests_surface_the_typed_reason(app: Path, client):
    env = {**os.environ, "LEARNING_ENGINE_URL": f"http://127.0.0.1:{client.app.port}"}
    code, output = await _run("node", "--input-type=module", "-e", TYPED_ERRORS, env=env, timeout=60, cwd=app)
    assert code == 0, output
    not_found, invalid = (json.loads(line) for line in output.splitlines())
    # The TypeScript enum carries the catalogue's numbers: the same as the Python generated code's.
    assert not_found == {
        "connectError": True, "code": 5, "reason": "JOB_NOT_FOUND", "errorReason": reasons.ERROR_REASON_JOB_NOT_FOUND,
        "name": "JOB_NOT_FOUND", "domain": "learning-engine", "fields": [],
    }
    assert invalid == {
        "connectError": True, "code": 3, "reason": "DATASET_NOT_FOUND",
        "errorReason": reasons.ERROR_REASON_DATASET_NOT_FOUND, "name": "DATASET_NOT_FOUND",
        "domain": "learning-engine", "fields": ["spec.jsonl.path"],
    }
