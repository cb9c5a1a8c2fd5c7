"""The TypeScript client's errors for a lost connection and for a bearer token no header can carry, through the
packed package installed in a fresh project (the `app` fixture of test_typescript_client.py), against live servers.

A connection that drops under a call (a network cut, a server crash) reached the caller as Code.Canceled (the
HTTP/2 stream reset with CANCEL when its session closes) or Code.Aborted (ECONNRESET): the codes of the caller's
own abort and of a server's refusal, so a "retry on Unavailable, resume after the last sequence" loop never
retried. It is Code.Unavailable now, the original error its `cause`, as grpc-core's clients (the Python SDK) report
it; the caller's own abort stays Canceled and a status the server sends (ABORTED with its ErrorInfo, CANCELLED)
stays as it was.

A token with a line break inside made every call fail with an error whose message quoted it (Node's Headers
refuses the value and quotes it; connect wraps that into the ConnectError's message). The token is checked once,
when the client is created, as the Python SDK checks it: trimmed (a token read from a file ends with a newline),
and a TypeError that names the character, never the token, for anything but printable ASCII."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_status import rpc_status

from learning.v1 import adapter_pb2, adapter_pb2_grpc
from server import access, roles
from server.errors import status_proto
from server.settings import AuthToken
from tests.clients.test_typescript_client import _run, app, pytestmark  # noqa: F401 - fixture, skip marker
from tests.server.conftest import make_memory_server  # noqa: F401 - the fixture

TOKEN = "operator-token-for-tests-0123456789"


async def _server_env(make_memory_server) -> dict[str, str]:  # noqa: F811
    token = AuthToken(name="op", role=roles.Role.OPERATOR.value, sha256=access.hash_token(TOKEN))
    server = await make_memory_server(auth_tokens=(token,))
    return {**os.environ, "UPSTREAM_PORT": str(server.app.port), "TOKEN": TOKEN,
            "LEARNING_ENGINE_URL": f"http://127.0.0.1:{server.app.port}"}


def _last_json(output: str) -> dict:
    return json.loads(output.splitlines()[-1])


# A TCP proxy in front of the server (UPSTREAM_PORT) whose connections the script can cut (`sockets`).
PROXY = r"""
import net from "node:net";
const sockets = new Set();
const proxy = net.createServer((down) => {
  const up = net.connect(Number(process.env.UPSTREAM_PORT), "127.0.0.1");
  down.pipe(up); up.pipe(down);
  sockets.add(down); sockets.add(up);
  const kill = () => { down.destroy(); up.destroy(); sockets.delete(down); sockets.delete(up); };
  for (const s of [down, up]) { s.on("error", kill); s.on("close", kill); }
});
await new Promise((resolve) => proxy.listen(0, "127.0.0.1", resolve));
"""

# A watch through a TCP proxy that cuts the connection (both sockets closed, or reset) at the first event, once,
# resumed by hand over the client's plain watch call: on Unavailable, watch again after the last sequence seen (what
# the package's watch helpers do, docs/clients.md; test_typescript_resume.py). The caller never aborts. At the end,
# a watch of the finished job from the start lists every event, to compare.
DROPPED_WATCH = PROXY + r"""
import { Code, ConnectError, JobState, createLearningEngineClient } from "@learning-engine/client";
const how = process.argv[2];
const client = createLearningEngineClient({ baseUrl: `http://127.0.0.1:${proxy.address().port}`,
                                            token: process.env.TOKEN });
const { trainingJob } = await client.training.createTrainingJob({ spec: {
  dataset: { case: "jsonl", value: { path: "capitals.jsonl" } },
  hyperparameters: { epochs: 1, batchSize: 4, learningRate: 5e-3, maxSeqLength: 64, seed: 7n } } });
const name = trainingJob.name;
const caller = new AbortController();   // never aborted: the caller does not cancel
const failures = [], sequences = [];
let after = 0n, attempt = 0, snapshots = 0, cut = false;
for (;;) {
  try {
    for await (const m of client.training.watchTrainingJob({ name, afterSequence: after },
                                                           { signal: caller.signal })) {
      attempt = 0;
      if (m.update.case === "snapshot") { snapshots++; continue; }
      const sequence = m.update.value.sequence;
      if (sequence <= after) continue;
      after = sequence;
      sequences.push(Number(sequence));
      if (!cut) {   // drop the connection under the open stream
        cut = true;
        for (const s of sockets) how === "reset" ? s.resetAndDestroy() : s.destroy();
      }
    }
    break;
  } catch (error) {
    const e = ConnectError.from(error);
    failures.push({ code: Code[e.code], message: e.message,
                    cause: e.cause instanceof ConnectError ? Code[e.cause.code] : String(e.cause) });
    if (e.code !== Code.Unavailable || ++attempt > 10) break;
    await new Promise((resolve) => setTimeout(resolve, 200 * attempt));
  }
}
const all = [];
for await (const m of client.training.watchTrainingJob({ name })) {
  if (m.update.case === "event") all.push(Number(m.update.value.sequence));
}
const { trainingJob: job } = await client.training.getTrainingJob({ name });
console.log(JSON.stringify({ failures, sequences, all, snapshots, state: JobState[job.state],
                             callerAborted: caller.signal.aborted }));
for (const s of sockets) s.destroy();   // the client's idle session through the proxy too: the process can exit
proxy.close();
"""


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_a_dropped_connection_is_unavailable_and_the_watch_resumes(app: Path, make_memory_server, how):  # noqa: F811
    env = await _server_env(make_memory_server)
    (app / "dropped_watch.mjs").write_text(DROPPED_WATCH)
    code, output = await _run("node", "dropped_watch.mjs", how, env=env, timeout=180, cwd=app)
    assert code == 0, output
    result = _last_json(output)
    assert result["callerAborted"] is False, output
    # One failure, the transient one a resume loop retries; the transport's own error is its cause.
    assert [f["code"] for f in result["failures"]] == ["Unavailable"], f"connection {how}: {result}"
    assert result["failures"][0]["cause"] in ("Canceled", "Aborted"), result
    assert result["failures"][0]["message"].startswith("[unavailable] the connection was lost: "), result
    # Resumed after the last sequence seen: every event once, in order, then the end of the job.
    assert result["snapshots"] == 2, result
    assert result["sequences"] == result["all"] and len(result["all"]) > 1, result
    assert result["state"] == "SUCCEEDED", result


# The caller's own abort stays Canceled, a unary call's and a stream's (its signal aborted under the open watch of
# a running job, at its first message).
CALLER_ABORTS = r"""
import { Code, ConnectError, createLearningEngineClient } from "@learning-engine/client";
const client = createLearningEngineClient({ baseUrl: process.env.LEARNING_ENGINE_URL, token: process.env.TOKEN });
const codes = {};
try {
  await client.adapters.listAdapters({}, { signal: AbortSignal.abort() });
} catch (error) { codes.unary = Code[ConnectError.from(error).code]; }
const { trainingJob } = await client.training.createTrainingJob({ spec: {
  dataset: { case: "jsonl", value: { path: "capitals.jsonl" } },
  hyperparameters: { epochs: 1, batchSize: 4, learningRate: 5e-3, maxSeqLength: 64, seed: 7n } } });
const caller = new AbortController();
try {
  for await (const m of client.training.watchTrainingJob({ name: trainingJob.name }, { signal: caller.signal })) {
    caller.abort();
  }
} catch (error) { codes.stream = Code[ConnectError.from(error).code]; }
await client.training.cancelTrainingJob({ name: trainingJob.name }).catch(() => {});   // done with it
console.log(JSON.stringify(codes));
"""


async def test_the_callers_own_abort_stays_canceled(app: Path, make_memory_server):  # noqa: F811
    env = await _server_env(make_memory_server)
    code, output = await _run("node", "--input-type=module", "-e", CALLER_ABORTS, env=env, timeout=60, cwd=app)
    assert code == 0, output
    assert _last_json(output) == {"unary": "Canceled", "stream": "Canceled"}, output


class _Refusing(adapter_pb2_grpc.AdapterServiceServicer):
    """A server that refuses with the statuses a lost connection must not be mistaken for."""

    async def ListAdapters(self, request, context):  # noqa: N802 - ABORTED with its ErrorInfo, as the server sends
        status = status_proto(grpc.StatusCode.ABORTED, "the reservation of v1.0 was lost", reason="RESERVATION_LOST")
        await context.abort_with_status(rpc_status.to_status(status))

    async def GetAdapter(self, request, context):  # noqa: N802 - a bare CANCELLED status
        await context.abort(grpc.StatusCode.CANCELLED, "cancelled on the server")

    async def DownloadAdapter(self, request, context) -> AsyncIterator[adapter_pb2.DownloadAdapterResponse]:  # noqa: N802
        yield adapter_pb2.DownloadAdapterResponse(chunk=b"x")  # then ABORTED, under the open stream
        status = status_proto(grpc.StatusCode.ABORTED, "the reservation of v1.0 was lost", reason="RESERVATION_LOST")
        await context.abort_with_status(rpc_status.to_status(status))


    async def DeleteAdapter(self, request, context):  # noqa: N802 - answers late: its connection drops first
        await asyncio.sleep(30)
        return adapter_pb2.DeleteAdapterResponse()


async def _refusing_server() -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    adapter_pb2_grpc.add_AdapterServiceServicer_to_server(_Refusing(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


SERVER_STATUSES = r"""
import { Code, ConnectError, createLearningEngineClient, errorInfo } from "@learning-engine/client";
const client = createLearningEngineClient({ baseUrl: process.env.LEARNING_ENGINE_URL });
const seen = (error) => ({ code: Code[ConnectError.from(error).code], reason: errorInfo(error)?.reason ?? null });
const results = {};
try { await client.adapters.listAdapters({}); } catch (error) { results.unary = seen(error); }
try { await client.adapters.getAdapter({ version: "v1.0" }); } catch (error) { results.cancelled = seen(error); }
try {
  for await (const m of client.adapters.downloadAdapter({ version: "v1.0" })) {}
} catch (error) { results.stream = seen(error); }
console.log(JSON.stringify(results));
"""


async def test_a_status_the_server_sends_stays_as_sent(app: Path):  # noqa: F811
    server, port = await _refusing_server()
    try:
        env = {**os.environ, "LEARNING_ENGINE_URL": f"http://127.0.0.1:{port}"}
        code, output = await _run("node", "--input-type=module", "-e", SERVER_STATUSES, env=env, timeout=60,
                                  cwd=app)
    finally:
        await server.stop(0)
    assert code == 0, output
    assert _last_json(output) == {
        "unary": {"code": "Aborted", "reason": "RESERVATION_LOST"},
        "cancelled": {"code": "Canceled", "reason": None},
        "stream": {"code": "Aborted", "reason": "RESERVATION_LOST"},
    }, output


# A unary call whose connection drops (closed, then reset) while the server works on it.
DROPPED_UNARY = PROXY + r"""
import { Code, ConnectError, createLearningEngineClient } from "@learning-engine/client";
const client = createLearningEngineClient({ baseUrl: `http://127.0.0.1:${proxy.address().port}` });
const results = {};
for (const how of ["close", "reset"]) {
  const call = client.adapters.deleteAdapter({ version: "v1.0" });
  await new Promise((resolve) => setTimeout(resolve, 500));
  for (const s of sockets) how === "reset" ? s.resetAndDestroy() : s.destroy();
  try { await call; results[how] = { ok: true }; } catch (error) {
    const e = ConnectError.from(error);
    results[how] = { code: Code[e.code], cause: e.cause instanceof ConnectError ? Code[e.cause.code] : null };
  }
}
proxy.close();
console.log(JSON.stringify(results));
"""


async def test_a_unary_call_whose_connection_drops_is_unavailable(app: Path):  # noqa: F811
    server, port = await _refusing_server()
    try:
        env = {**os.environ, "UPSTREAM_PORT": str(port)}
        code, output = await _run("node", "--input-type=module", "-e", DROPPED_UNARY, env=env, timeout=60, cwd=app)
    finally:
        await server.stop(0)
    assert code == 0, output
    results = _last_json(output)
    for how in ("close", "reset"):
        assert results[how]["code"] == "Unavailable", results
        assert results[how]["cause"] in ("Canceled", "Aborted"), results


# Tokens no header can carry, through both entries: refused when the client is created, without the token in the
# message or the stack; the reviewer's form (the call in the same try) as well.
BAD_TOKENS = r"""
import * as node from "@learning-engine/client";
import * as web from "@learning-engine/client/web";
const results = [];
for (const secret of ["s3cr3t-AAAA\nBBBB", "s3cr3t\u0000", "s3cr3t\u007f", "s3cr3t-\u00e9", "s3cr3t\r\nX-Other: 1"]) {
  for (const [entry, lib] of [["node", node], ["web", web]]) {
    try {
      await lib.createLearningEngineClient({ baseUrl: process.env.LEARNING_ENGINE_URL, token: secret })
        .adapters.listAdapters({});
      results.push({ entry, ok: true });
    } catch (error) {
      const text = `${error.message} ${error.stack} ${node.ConnectError.from(error).message}`;
      results.push({ entry, typeError: error instanceof TypeError, message: String(error.message),
                     leaks: text.includes("s3cr3t") });
    }
  }
}
try { node.bearerToken("s3cr3t\n\u0001"); } catch (error) { results.push({ entry: "bearerToken", typeError:
  error instanceof TypeError, message: error.message, leaks: `${error.message} ${error.stack}`.includes("s3cr3t") }); }
console.log(JSON.stringify(results));
"""


async def test_a_token_no_header_can_carry_is_refused_without_echoing_it(app: Path, make_memory_server):  # noqa: F811
    env = await _server_env(make_memory_server)
    code, output = await _run("node", "--input-type=module", "-e", BAD_TOKENS, env=env, timeout=60, cwd=app)
    assert code == 0, output
    results = _last_json(output)
    assert len(results) == 11, output
    for result in results:
        assert result.get("typeError") is True and result["leaks"] is False, result
        assert "printable ASCII" in result["message"] and "U+" in result["message"], result


# A token read from a file ends with a newline: trimmed, it authenticates. Nothing left is no token.
TRIMMED_TOKENS = r"""
import { Code, ConnectError, createLearningEngineClient } from "@learning-engine/client";
const results = {};
for (const [label, token] of [["newline", `${process.env.TOKEN}\n`], ["spaces", `  ${process.env.TOKEN}\r\n`],
                              ["blank", " \n"]]) {
  try {
    const { adapters } = await createLearningEngineClient({ baseUrl: process.env.LEARNING_ENGINE_URL, token })
      .adapters.listAdapters({});
    results[label] = { ok: true, adapters: adapters.length };
  } catch (error) {
    results[label] = { code: Code[ConnectError.from(error).code] };
  }
}
console.log(JSON.stringify(results));
"""


async def test_a_token_read_from_a_file_is_trimmed_and_authenticates(app: Path, make_memory_server):  # noqa: F811
    env = await _server_env(make_memory_server)
    code, output = await _run("node", "--input-type=module", "-e", TRIMMED_TOKENS, env=env, timeout=60, cwd=app)
    assert code == 0, output
    assert _last_json(output) == {
        "newline": {"ok": True, "adapters": 0},
        "spaces": {"ok": True, "adapters": 0},
        "blank": {"code": "Unauthenticated"},
    }, output
