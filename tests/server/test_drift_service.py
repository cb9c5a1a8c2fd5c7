"""DriftService over the real engine on PostgreSQL with the tiny Llama: feedback posted through FeedbackService,
a version trained on the capitals sample and activated, and GetDriftReport over windows holding prompts of the
same distribution and of another; its gauge in Prometheus; its bad input."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from engine import telemetry
from learning.v1 import drift_pb2 as dp
from learning.v1 import drift_pb2_grpc as dp_grpc
from learning.v1 import feedback_pb2 as fb
from learning.v1 import feedback_pb2_grpc as fb_grpc
from learning.v1 import lora_control_pb2 as lc
from tests.fixtures.drift_prompts import recipes_and_code
from tests.server.conftest import TINY, error_details
from tests.server.lora_helpers import stub, train

SAMPLE = Path(__file__).resolve().parents[2] / "scripts" / "samples" / "capitals.jsonl"


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def days(n: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromTimedelta(timedelta(days=n))
    return out


def events(prompts: list[str], kind: int, at: datetime, tag: str) -> list[fb.FeedbackEvent]:
    return [fb.FeedbackEvent(client_event_id=f"{tag}-{i}", kind=kind, user_id=f"user-{i % 7}", tenant_id="t",
                             time=ts(at + timedelta(seconds=i)),
                             interaction=fb.Interaction(interaction_id=f"{tag}-{i}", prompt=p, response="..."))
            for i, p in enumerate(prompts)]


def same_kind_of_prompts(count: int) -> list[str]:
    """New questions in the sample's own form ("What is the capital of <made-up country>?")."""
    names = ("Arvenna", "Belmoral", "Corvesse", "Delphine Isles", "Eskaria", "Fennmark", "Galdoria", "Hesperon",
             "Ilvany", "Jorvik Reach", "Kastoria", "Lumbria", "Morvaine", "Nordhavn", "Orlesse", "Pravia",
             "Quellmark", "Rosvald", "Sylvaria", "Tarnholm", "Ulmstead", "Vesperia", "Wyndale", "Yarrowmere")
    return [f"What is the capital of {n}?" for n in names[:count]]


async def test_drift_report_moves_with_prompts_from_elsewhere(make_server, data_dir: Path) -> None:
    (data_dir / "datasets" / "golden.jsonl").write_text("\n".join(
        json.dumps({"prompt": f"What is the capital of {c}?", "expected": a})
        for c, a in (("Veloria", "Marnesse"), ("Quorvia", "Tal Ammeth"))))
    client = await make_server(drift_min_samples=10, drift_permutations=300, eval_max_tokens=4)
    drift = dp_grpc.DriftServiceStub(client.channel)
    feedback = fb_grpc.FeedbackServiceStub(client.channel)
    now = datetime.now(UTC)

    # Users asked questions like the training data five days ago (thumbs up), and other things in the last hour
    # (thumbs down).
    alike = same_kind_of_prompts(24)
    elsewhere = recipes_and_code(30, seed=2)
    await feedback.SubmitFeedback(fb.SubmitFeedbackRequest(
        events=events(alike, fb.FEEDBACK_KIND_THUMBS_UP, now - timedelta(days=5), "alike")))
    await feedback.SubmitFeedback(fb.SubmitFeedbackRequest(
        events=events(elsewhere, fb.FEEDBACK_KIND_THUMBS_DOWN, now - timedelta(hours=1), "elsewhere")))

    # No version is active yet: nothing to compare with, and the report says so, with the feedback series.
    before = (await drift.GetDriftReport(dp.GetDriftReportRequest())).report
    assert before.outcome == dp.DRIFT_OUTCOME_NO_REFERENCE and not before.drifted
    assert before.base_model == TINY and "serves alone" in before.note
    assert before.incoming_total == 54 and before.statistic == 0 and before.p_value == 1
    window = before.window_end_time.ToDatetime(UTC) - before.window_start_time.ToDatetime(UTC)
    assert window == timedelta(days=30) and len(before.negative_rate) == 10
    assert sum(b.positive for b in before.negative_rate) == 24 and sum(b.negative for b in before.negative_rate) == 30
    assert before.negative_rate[-1].negative == 30 and before.negative_rate[-1].negative_rate == 1.0

    version = await train(client)
    await stub(client).ActivateAdapter(lc.ActivateAdapterRequest(version=version, reason="drift test"))
    await stub(client).EvaluateAdapter(lc.EvaluateAdapterRequest(version=version, suite_path="golden.jsonl"))

    # The window of the questions alike: no drift.
    same = (await drift.GetDriftReport(dp.GetDriftReportRequest(
        base_model=TINY, window=days(2), end_time=ts(now - timedelta(days=4))))).report
    assert same.outcome == dp.DRIFT_OUTCOME_NO_DRIFT and not same.drifted, same
    assert same.reference_version == version and same.statistic < same.threshold and same.p_value > 0.2
    assert (same.incoming_samples, same.reference_samples, same.reference_total) == (24, 24, 24)
    assert [b.positive for b in same.negative_rate].count(0) == 9 and sum(b.positive for b in same.negative_rate) == 24
    assert list(same.eval_scores) == []  # the evaluation came later than this window

    # The last day: prompts from elsewhere drift, and the farthest of them are listed.
    moved = (await drift.GetDriftReport(dp.GetDriftReportRequest(window=days(1)))).report
    assert moved.outcome == dp.DRIFT_OUTCOME_DRIFTED and moved.drifted, moved
    assert moved.statistic > moved.threshold and moved.p_value < 0.01
    assert moved.statistic_name == "mmd2_rbf_base_model_embeddings" and moved.permutations == 300
    assert (moved.incoming_samples, moved.incoming_total) == (30, 30)
    trained_on = {json.loads(line)["messages"][0]["content"] for line in SAMPLE.read_text().splitlines()}
    assert len(moved.moved) == 10
    assert all(m.prompt in elsewhere and m.nearest_reference in trained_on for m in moved.moved)
    assert [m.distance for m in moved.moved] == sorted((m.distance for m in moved.moved), reverse=True)
    [evaluation] = moved.eval_scores
    assert evaluation.version == version and {m.name for m in evaluation.metrics} >= {"golden.pass_rate"}
    assert telemetry.REGISTRY.get_sample_value("learning_engine_drift_statistic", {"base_model": TINY}) == \
        pytest.approx(moved.statistic)
    assert telemetry.REGISTRY.get_sample_value("learning_engine_drifted", {"base_model": TINY}) == 1.0


@pytest.mark.parametrize(("request_", "code", "reason", "field_path"), [
    (dp.GetDriftReportRequest(window=days(-1)), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_DRIFT_REQUEST", "window"),
    (dp.GetDriftReportRequest(window=duration_pb2.Duration()), grpc.StatusCode.INVALID_ARGUMENT,
     "INVALID_DRIFT_REQUEST", "window"),
    (dp.GetDriftReportRequest(window=days(400)), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_DRIFT_REQUEST", "window"),
    (dp.GetDriftReportRequest(end_time=ts(datetime.now(UTC) + timedelta(days=2))), grpc.StatusCode.INVALID_ARGUMENT,
     "INVALID_DRIFT_REQUEST", "end_time"),
    (dp.GetDriftReportRequest(base_model="no-such-model"), grpc.StatusCode.NOT_FOUND, "BASE_MODEL_NOT_FOUND", ""),
])
async def test_bad_drift_requests(client, request_, code, reason, field_path) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await dp_grpc.DriftServiceStub(client.channel).GetDriftReport(request_)
    assert err.value.code() == code
    info, violations = error_details(err.value)
    assert info.reason == reason
    assert [f for f, _ in violations] == ([field_path] if field_path else [])
