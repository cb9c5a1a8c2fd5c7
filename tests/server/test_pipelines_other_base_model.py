"""A publish-only pipeline of another base model than the served one: this server's serving engine scores versions
of the base model it serves, so asked to evaluate the run's version (tiny-other's v1.0) it scored the served base
model's adapter of the same number (tiny-llama's v1.0, another adapter altogether), or found none. Such a run skips
EVALUATE, saying so, and publishes its version unevaluated; golden suites named on such a pipeline, which could never
be scored, are refused when it is created or changed (FAILED_PRECONDITION PIPELINE_NOT_SERVED naming the field)."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import grpc
import pytest

from learning.v1 import common_pb2 as common
from learning.v1 import pipeline_pb2 as pp
from tests.server.conftest import TINY
from tests.server.lora_helpers import train
from tests.server.test_pipelines import finished, from_file, pipelines, refused

OTHER = "tiny-other"
PUBLISH_ONLY = pp.RolloutPolicy(mode=pp.ROLLOUT_MODE_NONE)


@pytest.mark.slow
async def test_a_run_of_another_base_model_skips_evaluate_instead_of_scoring_the_served_models_version(
        make_pg_server, tiny_model_dir: Path, database_url: str):
    client = await make_pg_server(base_models={TINY: tiny_model_dir, OTHER: tiny_model_dir}, eval_gate=True,
                                  eval_max_tokens=4)
    assert await train(client, epochs=1) == "v1.0"  # the served base model's v1.0: the number the run will train
    await pipelines(client).CreatePipeline(pp.CreatePipelineRequest(
        pipeline_id="other", pipeline=from_file(base_model=OTHER, rollout=PUBLISH_ONLY)))
    run = (await pipelines(client).RunPipeline(pp.RunPipelineRequest(name="pipelines/other"))).run
    done = await finished(client, run.name)
    assert (done.state, done.version, done.rollout) == (common.JOB_STATE_SUCCEEDED, "v1.0", "NONE"), done
    evaluate = next(s for s in done.stages if s.stage == pp.PIPELINE_STAGE_EVALUATE)
    assert evaluate.state == pp.STAGE_STATE_SKIPPED, evaluate
    assert f"this server evaluates versions of {TINY}, not of {OTHER}" in evaluate.message, evaluate.message
    assert not done.evaluation_id, done
    connection = await asyncpg.connect(database_url)
    try:
        evaluated = await connection.fetch("SELECT base_model, version FROM lora_evals")
    finally:
        await connection.close()
    assert [tuple(r) for r in evaluated] == []  # no verdict on tiny-llama's v1.0 reported as the run's


async def test_golden_suites_on_a_pipeline_of_another_base_model_are_refused(make_pg_server, data_dir: Path,
                                                                            tiny_model_dir: Path):
    (data_dir / "datasets" / "quiz.jsonl").write_text(
        json.dumps({"prompt": "Capital of Veloria?", "expected": "Marnesse"}) + "\n")
    client = await make_pg_server(base_models={TINY: tiny_model_dir, OTHER: tiny_model_dir})
    for fields, field in [({"suite_paths": ["quiz.jsonl"]}, "pipeline.suite_paths"),
                          ({"suite_datasets": ["datasets/quiz"]}, "pipeline.suite_datasets")]:
        got = await refused(pipelines(client).CreatePipeline(pp.CreatePipelineRequest(
            pipeline_id="other", pipeline=from_file(base_model=OTHER, rollout=PUBLISH_ONLY, **fields))))
        assert got[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "PIPELINE_NOT_SERVED"), (fields, got)
        assert [f for f, _ in got[2]] == [field], (fields, got)
    made = (await pipelines(client).CreatePipeline(pp.CreatePipelineRequest(
        pipeline_id="other", pipeline=from_file(base_model=OTHER, rollout=PUBLISH_ONLY)))).pipeline
    got = await refused(pipelines(client).UpdatePipeline(pp.UpdatePipelineRequest(
        pipeline=pp.Pipeline(name=made.name, suite_paths=["quiz.jsonl"]), update_mask={"paths": ["suite_paths"]})))
    assert got[:2] == (grpc.StatusCode.FAILED_PRECONDITION, "PIPELINE_NOT_SERVED"), got
    # the served base model's pipelines name golden suites as ever
    served = (await pipelines(client).CreatePipeline(pp.CreatePipelineRequest(
        pipeline_id="served", pipeline=from_file(suite_paths=["quiz.jsonl"], rollout=PUBLISH_ONLY)))).pipeline
    assert list(served.suite_paths) == ["quiz.jsonl"]
