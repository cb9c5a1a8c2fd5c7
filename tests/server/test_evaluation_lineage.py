"""The learning curve across the lineage through gRPC on the tiny model: an evaluation job of v1.2 (which continues
v1.1, which continues v1.0) charts what the stored evaluations of v1.0 and of the base model itself recorded on its
suites, v1.1 (never evaluated) as a gap, and its own scores last; the chart is stored as PNG beside the other
reports and returned by GetEvaluationReport."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from learning.v1 import common_pb2 as common
from learning.v1 import evaluation_pb2 as pb
from learning.v1 import evaluation_pb2_grpc as pb_grpc
from learning.v1 import lora_control_pb2 as lc
from tests.server.conftest import error_details
from tests.server.lora_helpers import stub
from tests.server.test_evaluation_base_model import quiz
from tests.server.test_gate import FIRST, SECOND, facts, trained


def scores(summary) -> dict[str, float]:
    """Each suite's point as the curve takes it: pass_rate (base: base_retention), when the suite was scored."""
    out = {}
    for s in summary.suites:
        metrics = {m.name: m.value for m in s.metrics}
        key = "base_retention" if s.name == "base" else "pass_rate"
        if key in metrics:
            out[s.name] = metrics[key]
    return out


@pytest.mark.slow
async def test_an_evaluation_charts_the_learning_curve_across_its_lineage(make_server, data_dir: Path):
    quiz(data_dir)
    client = await make_server(eval_gate=True, eval_max_tokens=4)
    v10 = await trained(client, facts(data_dir, "first.jsonl", FIRST), epochs=1)
    v11 = await trained(client, facts(data_dir, "second.jsonl", SECOND), parent=v10, epochs=1)
    v12 = await trained(client, "first.jsonl", parent=v11, epochs=1)
    control = stub(client)
    base = (await control.EvaluateAdapter(lc.EvaluateAdapterRequest(base_model_itself=True,
                                                                    suite_path="quiz.jsonl"))).eval
    parent = (await control.EvaluateAdapter(lc.EvaluateAdapterRequest(version=v10, suite_path="quiz.jsonl"))).eval
    assert {"quiz", "target"} <= set(scores(parent))  # what v1.0's line points are made of

    jobs = pb_grpc.EvaluationServiceStub(client.channel)
    job = (await jobs.CreateEvaluationJob(pb.CreateEvaluationJobRequest(
        spec=pb.EvaluationJobSpec(version=v12, suite_paths=["quiz.jsonl"])))).evaluation_job
    [_ async for _ in jobs.WatchEvaluationJob(pb.WatchEvaluationJobRequest(name=job.name))]
    done = (await jobs.GetEvaluationJob(pb.GetEvaluationJobRequest(name=job.name))).evaluation_job
    assert done.state == common.JOB_STATE_SUCCEEDED, done.error
    mine = done.eval

    report = await control.GetEvaluationReport(lc.GetEvaluationReportRequest(
        version=v12, evaluation_id=mine.evaluation_id, format=lc.REPORT_FORMAT_JSON))
    curve = json.loads(report.content)["lineage"]
    assert curve["candidate"] == v12 and curve["versions"] == ["", v10, v11, v12] and curve["left_out"] == 0
    lines = {c["suite"]: c for c in curve["suites"]}
    assert list(lines) == [s.name for s in mine.suites] == ["quiz", "target", "retention", "base"]
    for name, line in lines.items():
        expected = [scores(base).get(name), scores(parent).get(name), None, scores(mine).get(name)]
        assert line["scores"] == pytest.approx(expected), (name, line)
        made_by = [base.evaluation_id, parent.evaluation_id, "", mine.evaluation_id]
        assert line["evaluations"] == [e if s is not None else "" for e, s in zip(made_by, expected, strict=True)]
    assert lines["quiz"]["scores"][0] is not None and lines["target"]["scores"][0] is None  # the base model: quiz only
    assert all(line["scores"][2] is None for line in lines.values())  # v1.1 was never evaluated: a gap, no zero

    chart = await control.GetEvaluationReport(lc.GetEvaluationReportRequest(
        version=v12, evaluation_id=mine.evaluation_id, format=lc.REPORT_FORMAT_LINEAGE_PNG))
    assert chart.content_type == "image/png" and chart.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert chart.uri.endswith(f"/{v12}/{mine.evaluation_id}/lineage.png") and chart.uri in mine.report_uris
    page = (await control.GetEvaluationReport(lc.GetEvaluationReportRequest(
        version=v12, evaluation_id=mine.evaluation_id, format=lc.REPORT_FORMAT_HTML))).content.decode()
    assert f"Learning curve across the lineage of {v12}" in page and "<img id=lineage" in page

    # An evaluation stored without the chart (before it existed): a clear NOT_FOUND, not INTERNAL.
    Path(chart.uri.removeprefix("file://")).unlink()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await control.GetEvaluationReport(lc.GetEvaluationReportRequest(
            version=v12, evaluation_id=mine.evaluation_id, format=lc.REPORT_FORMAT_LINEAGE_PNG))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and error_details(err.value)[0].reason == "ARTIFACT_MISSING"
