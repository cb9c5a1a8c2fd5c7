"""Two server processes (`python -m server`, each serving and running its pipelines' triggers) on one PostgreSQL
and one artifact folder: feedback arrives through one of them, and the negative-count trigger fires exactly once
for the pair, its run trains a continuation's dataset into a version and activates it, and neither process fires
it again while both keep ticking. tests/server/test_pipelines.py covers the same with two servers in one process
and each tick called by hand; here the processes tick on their own clocks."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from learning.v1 import common_pb2 as common
from learning.v1 import feedback_pb2 as fb
from learning.v1 import pipeline_pb2 as pp
from tests.e2e.test_grpcurl import _free_port
from tests.e2e.test_start_and_stop import FAST_RECONNECT
from tests.fixtures.server_settings import server_env, write_config
from tests.server.test_pipelines import FACTS, event, finished, from_feedback, pipelines, send

ROOT = Path(__file__).resolve().parents[2]
TICK = 0.3  # pipeline_trigger_interval_seconds of both processes
pytestmark = pytest.mark.full_stack


async def _serving(root: Path, name: str, database_url: str, tiny_model_dir: Path, shared: dict[str, object]):
    data_dir = root / name
    data_dir.mkdir(parents=True)
    config = write_config(data_dir / "config.yaml", tiny_model_dir, **shared, gateway_port=_free_port())
    port = _free_port()
    env = server_env(DATABASE_URL=database_url, LEARNING_ENGINE_PORT=str(port))
    log = data_dir / "server.log"
    proc = subprocess.Popen([sys.executable, "-m", "server", "--data-dir", str(data_dir), "--config", str(config)],
                            cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=FAST_RECONNECT)
    health = health_pb2_grpc.HealthStub(channel)
    for _ in range(600):
        assert proc.poll() is None, f"{name} exited: {log.read_text()[-3000:]}"
        try:
            answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
            if answer.status == health_pb2.HealthCheckResponse.SERVING:
                return proc, SimpleNamespace(channel=channel), log
        except grpc.aio.AioRpcError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"{name} did not become healthy: {log.read_text()[-3000:]}")


@pytest.mark.slow
async def test_two_server_processes_fire_a_trigger_once(database_url: str, tmp_path: Path, tiny_model_dir: Path):
    shared = {"artifacts_path": str(tmp_path / "artifacts"), "datasets_path": str(tmp_path / "datasets"),
              "pipeline_trigger_interval_seconds": TICK,
              "eval_gate": False}  # the tiny model learns nothing a gate would pass in one epoch
    (tmp_path / "datasets").mkdir()
    started = await asyncio.gather(*(_serving(tmp_path, f"replica-{i}", database_url, tiny_model_dir, shared)
                                     for i in (1, 2)))
    try:
        (_, one, _), (_, two, _) = started
        trigger = pp.PipelineTrigger(feedback=pp.FeedbackCountTrigger(count=2, negative_only=True))
        await pipelines(one).CreatePipeline(pp.CreatePipelineRequest(pipeline_id="loop",
                                                                     pipeline=from_feedback(triggers=[trigger])))
        await send(two, *(event(f"up{i}", fb.FEEDBACK_KIND_THUMBS_UP, f"{q} Tell me.", a)
                          for i, (q, a) in enumerate(FACTS)),
                   event("down0", fb.FEEDBACK_KIND_THUMBS_DOWN, "Capital of Nowhere?", "I do not know."),
                   event("down1", fb.FEEDBACK_KIND_THUMBS_DOWN, "Capital of Elsewhere?", "No idea."))

        async def runs() -> list[pp.PipelineRun]:
            listed = await pipelines(two).ListPipelineRuns(pp.ListPipelineRunsRequest(pipeline="pipelines/loop"))
            return list(listed.runs)

        for _ in range(240):
            if await runs():
                break
            await asyncio.sleep(0.25)
        first = (await runs())[0]
        run = await finished(one, first.name)
        assert run.state == common.JOB_STATE_SUCCEEDED, (run.error, [(s.stage, s.state, s.message) for s in run.stages])
        assert run.trigger == pp.TRIGGER_KIND_NEGATIVE_FEEDBACK and run.version == "v1.0"
        assert run.rollout == "ACTIVATED"

        await asyncio.sleep(10 * TICK)  # both processes tick again on what is now an old occasion
        assert [r.name for r in await runs()] == [run.name]
        decisions = (await pipelines(one).ListTriggerDecisions(
            pp.ListTriggerDecisionsRequest(pipeline="pipelines/loop"))).decisions
        assert [d.run for d in decisions if d.fired] == [run.name], decisions
    finally:
        for proc, client, _ in started:
            await client.channel.close()
            proc.terminate()
        for proc, _, _ in started:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
