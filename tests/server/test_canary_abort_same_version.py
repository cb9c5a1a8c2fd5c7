"""A cancelled pipeline run leaves alone a canary of its version that is not its own
(an operator aborted the run's and started their own of the same version, at a smaller share): it aborts by the split
it opened, not by the version alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from learning.v1 import common_pb2 as common
from learning.v1 import lora_control_pb2 as lc
from learning.v1 import pipeline_pb2 as pp
from tests.server.lora_helpers import ACTOR, status, stub
from tests.server.test_canary_abort_scope import _ended, undecided
from tests.server.test_pipelines import from_file, pipelines
from tests.server.test_pipelines_canary import canary_of


@pytest.mark.slow
async def test_a_cancelled_run_leaves_alone_an_operators_canary_of_the_same_version(make_server, data_dir: Path,
                                                                                     tmp_path: Path):
    client = await make_server(pipeline_poll_seconds=0.2, serving_follow_seconds=600)
    await pipelines(client).CreatePipeline(pp.CreatePipelineRequest(pipeline_id="careful", pipeline=from_file(
        rollout=pp.RolloutPolicy(mode=pp.ROLLOUT_MODE_CANARY, canary=undecided()))))
    first = (await pipelines(client).RunPipeline(pp.RunPipelineRequest(name="pipelines/careful"))).run
    assert (await _ended(client, first.name)).rollout == "ACTIVATED"
    run = (await pipelines(client).RunPipeline(pp.RunPipelineRequest(name="pipelines/careful"))).run
    mine = await canary_of(client, run.name)

    # On another serving process, an operator ends the run's canary and starts their own of the same version.
    (tmp_path / "replica2").mkdir()
    two = await make_server(data_dir=tmp_path / "replica2", datasets_path=data_dir / "datasets",
                            artifacts_path=data_dir / "artifacts")
    await stub(two).AbortCanary(lc.AbortCanaryRequest(reason="not this share"), metadata=ACTOR)
    theirs = lc.CanaryPolicy(share=0.2, min_requests=100_000, check_interval=undecided().check_interval)
    await stub(two).StartCanary(lc.StartCanaryRequest(version=mine, policy=theirs), metadata=ACTOR)

    await pipelines(client).CancelPipelineRun(pp.CancelPipelineRunRequest(name=run.name))
    ended = await _ended(client, run.name)
    controller = two.app.owned.lora.controller
    aborts = [(op.version, op.actor, op.error.reason if op.error else "")
              for op in await controller._store.history(controller.target, 50) if op.kind.value == "CANARY_ABORT"]
    split = (await status(two)).traffic_split
    assert (split.kind, split.candidate_version, round(split.share, 2)) == (
        lc.TRAFFIC_SPLIT_KIND_CANARY, mine, 0.2), (ended.state, aborts, split)
    assert ended.state == common.JOB_STATE_CANCELLED
