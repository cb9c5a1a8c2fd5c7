"""LoraControl faults and guards: bad versions, engine down or refusing, serialised activations,
restart reconciliation after a crash mid-activation, the eval gate, and auto-rollback."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

from engine import telemetry
from engine.lora.auto_rollback import AutoRollback, AutoRollbackConfig
from engine.lora.state import FeedbackCounts
from engine.serving.reference_model import ReferenceModel
from learning.v1 import adapter_pb2 as ad
from learning.v1 import lora_control_pb2 as lc
from tests.fixtures.serving import start_backend
from tests.server.conftest import TINY, error_details
from tests.server.lora_helpers import activate, ask, status, stub, train


def _metric(name: str, **labels: str) -> float:
    return telemetry.REGISTRY.get_sample_value(name, labels) or 0.0


async def _fails(call, code: grpc.StatusCode, reason: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == code, err.value.details()
    info, _ = error_details(err.value)
    assert info.reason == reason, (info.reason, err.value.details())
    return err.value.details()


@pytest.mark.slow
async def test_bad_versions_engine_faults_and_restart(make_server, tiny_model_dir: Path, data_dir: Path):
    backend = await start_backend(ReferenceModel(tiny_model_dir, TINY))
    client = await make_server(serving_url=backend.url)
    v10 = await train(client)
    v11 = await train(client, parent=v10)
    await _fails(activate(client, "v9.9"), grpc.StatusCode.NOT_FOUND, "ADAPTER_NOT_FOUND")
    await _fails(activate(client, "latest"), grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_VERSION")
    await _fails(activate(client, v10, base_model="other-model"), grpc.StatusCode.FAILED_PRECONDITION,
                 "BASE_MODEL_MISMATCH")
    await _fails(stub(client).RollbackAdapter(lc.RollbackAdapterRequest()), grpc.StatusCode.FAILED_PRECONDITION,
                 "NO_KNOWN_GOOD_VERSION")

    # two concurrent activations run one after the other
    first, second = await asyncio.gather(activate(client, v10), activate(client, v11))
    assert first.status.last_operation.version == v10 and second.status.active_version == v11
    async with client.app.owned.pool.acquire() as conn:
        ops = await conn.fetch("SELECT kind, version, start_time, duration_seconds, error FROM lora_operations"
                               " WHERE kind = 'ACTIVATE' ORDER BY id")
    assert [(o["version"], o["error"]) for o in ops[-2:]] == [(v10, None), (v11, None)]
    end_first = ops[-2]["start_time"] + timedelta(seconds=ops[-2]["duration_seconds"])
    assert end_first <= ops[-1]["start_time"] + timedelta(seconds=ops[-1]["duration_seconds"])
    before = await status(client)
    assert (before.active_version, before.known_good_version) == (v11, v10)

    # the engine rejects the adapter (400): clear reason, nothing changes
    cached = {a.version: a.path for a in before.loaded}
    (Path(cached[v11]) / "adapter_model.safetensors").write_bytes(b"not safetensors")
    await stub(client).DisableLora(lc.DisableLoraRequest())
    backend.model.unload(f"{TINY}@{v11}")  # so the engine must read the (now corrupt) files again
    message = await _fails(stub(client).EnableLora(lc.EnableLoraRequest()), grpc.StatusCode.FAILED_PRECONDITION,
                           "SERVING_REJECTED_REQUEST")
    assert "refused load" in message and f"{TINY}@{v11}" in message
    after = await status(client)
    assert (after.active_version, after.enabled) == (v11, False)
    assert after.last_operation.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]

    # the engine is down: UNAVAILABLE and the active adapter unchanged
    await backend.stop()
    await _fails(activate(client, v10), grpc.StatusCode.UNAVAILABLE, "SERVING_UNAVAILABLE")
    down = await status(client)
    assert down.active_version == v11 and not down.serving_reachable

    # a crash mid-activation of v1.2 left its pending marker and its loaded candidate; the engine
    # restarted empty meanwhile. A restart of our server reconciles both.
    shutil.rmtree(cached[v11])  # the corrupt local copy: the restart fetches and verifies it again
    backend = await start_backend(ReferenceModel(tiny_model_dir, TINY), port=backend.port)
    backend.model.load(f"{TINY}@v1.2", cached[v10])
    async with client.app.owned.pool.acquire() as conn:
        await conn.execute("UPDATE lora_targets SET pending_version = 'v1.2', enabled = true")
    await client.app.stop(0)  # one server per data directory: the crashed one is gone before the restart
    restarted = await make_server(serving_url=backend.url)
    st = await status(restarted)
    assert st.active_version == v11 and st.enabled
    assert sorted(a.version for a in st.loaded) == [v10, v11]  # stray gone, known-good and active loaded
    assert st.last_operation.kind == lc.LORA_OPERATION_KIND_RECONCILE and st.last_operation.version == "v1.2"
    assert not st.last_operation.HasField("error")
    async with restarted.app.owned.pool.acquire() as conn:
        assert await conn.fetchval("SELECT pending_version FROM lora_targets") == ""
    served, _ = await ask(restarted)
    assert served == f"{TINY}@{v11}"
    await backend.stop()


async def test_eval_gate_and_evaluate_adapter(make_server, data_dir: Path):
    suite = data_dir / "datasets" / "golden.jsonl"
    suite.write_text("\n".join(json.dumps({"prompt": f"What is the capital of {c}?", "expected": a}) for c, a in
                               (("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"))) + "\n")
    client = await make_server(eval_suite_path="golden.jsonl", eval_max_tokens=6)  # default gate thresholds
    v10 = await train(client)
    message = await _fails(activate(client, v10), grpc.StatusCode.FAILED_PRECONDITION, "EVAL_GATE_FAILED")
    assert "pass rate" in message
    st = await status(client)
    assert st.active_version == "" and st.loaded == []  # the candidate was unloaded again
    forced = await activate(client, v10, force=True, reason="accept known weakness")
    assert forced.status.active_version == v10
    assert not forced.eval.passed and forced.eval.baseline_version == "" and len(forced.eval.suite_digest) == 64
    names = {m.name for m in forced.eval.metrics}
    assert {f"golden.{n}" for n in ("exact_match", "token_f1", "bleu", "pass_rate", "mean_score_drop")} <= names
    golden = forced.eval.suites[0]
    assert [v.name for v in forced.eval.suites] == ["golden"] and golden.kind == ad.EVAL_SUITE_KIND_GOLDEN
    assert golden.cases == 3 and not golden.passed and golden.failed_checks[0].startswith("pass rate 0.000 <")
    assert list(forced.eval.failed_checks) == [f"golden: {c}" for c in golden.failed_checks]
    assert [u.rsplit("/", 1)[1] for u in forced.eval.report_uris] == ["report.json", "report.md", "report.html",
                                                                      "report.png", "lineage.png"]
    assert f"/evaluations/{TINY}/{v10}/{forced.eval.evaluation_id}/" in forced.eval.report_uris[0]
    assert forced.eval.evaluation_id.endswith("-vs-base")
    evaluated = await stub(client).EvaluateAdapter(lc.EvaluateAdapterRequest(version=v10, suite_path="golden.jsonl"))
    assert evaluated.eval.baseline_version == v10 and evaluated.eval.regressions == 0

    # The reports, from the artifact store: the latest evaluation's, or one named by its id.
    def report(fmt: int, evaluation: str = ""):
        return stub(client).GetEvaluationReport(lc.GetEvaluationReportRequest(
            version=v10, evaluation_id=evaluation, format=fmt))
    latest = await report(lc.REPORT_FORMAT_JSON)
    assert latest.content_type == "application/json" and latest.eval.evaluation_id == evaluated.eval.evaluation_id
    doc = json.loads(latest.content)
    assert doc["version"] == v10 and doc["baseline_version"] == v10 and doc["suites"][0]["name"] == "golden"
    first = await report(lc.REPORT_FORMAT_HTML, forced.eval.evaluation_id)
    page = first.content.decode()
    assert first.content_type == "text/html; charset=utf-8" and first.uri == forced.eval.report_uris[2]
    assert "<h1>Eval of v1.0 against the base model</h1>" in page and 'src="data:image/png;base64,' in page
    assert "What is the capital of France?" in page and "FAILED" in page
    chart = await report(lc.REPORT_FORMAT_PNG, forced.eval.evaluation_id)
    assert chart.content[:8] == b"\x89PNG\r\n\x1a\n" and chart.content_type == "image/png"
    assert (await report(lc.REPORT_FORMAT_MARKDOWN)).content.decode().startswith(f"# Eval of {v10} against {v10}")
    await _fails(report(lc.REPORT_FORMAT_HTML, "20200101T000000000000-vs-base"), grpc.StatusCode.NOT_FOUND,
                 "EVALUATION_NOT_FOUND")
    await _fails(report(lc.REPORT_FORMAT_HTML, "../../etc"), grpc.StatusCode.INVALID_ARGUMENT,
                 "INVALID_REPORT_REQUEST")
    await _fails(report(42), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REPORT_REQUEST")
    await _fails(stub(client).EvaluateAdapter(lc.EvaluateAdapterRequest(version=v10, suite_path="../x")),
                 grpc.StatusCode.INVALID_ARGUMENT, "DATASET_PATH_OUTSIDE_ROOT")


class InMemoryRates:
    """FeedbackRates over a dict of counts per version (the Protocol, in memory)."""

    def __init__(self) -> None:
        self.counts_by_version: dict[str, FeedbackCounts] = {}

    async def counts(self, base_model: str, version: str, since: datetime) -> FeedbackCounts:
        assert since <= datetime.now(UTC)
        return self.counts_by_version.get(version, FeedbackCounts())


@pytest.mark.slow
async def test_auto_rollback_on_negative_feedback(make_server):
    client = await make_server()
    v10 = await train(client)
    v11 = await train(client, parent=v10)
    await activate(client, v10, mark_known_good=True)
    await activate(client, v11)
    rates = InMemoryRates()
    controller = client.app.owned.lora.controller
    auto = AutoRollback(controller, rates, AutoRollbackConfig(margin=0.1, min_samples=20),
                        client.app.owned.lora.controller._store.history)
    rates.counts_by_version = {v10: FeedbackCounts(80, 20), v11: FeedbackCounts(5, 5)}
    assert await auto.check_once() == ""  # too few ratings yet
    rates.counts_by_version[v11] = FeedbackCounts(20, 8)  # 28.6% vs 20%: within the margin
    assert await auto.check_once() == ""
    rates.counts_by_version[v11] = FeedbackCounts(14, 16)  # 53% vs 20%
    swaps_before = _metric("learning_engine_adapter_swap_seconds_count", kind="auto_rollback")
    reason = await auto.check_once()
    assert "53.3%" in reason and "20.0%" in reason
    st = await status(client)
    assert st.active_version == v10 and st.last_operation.kind == lc.LORA_OPERATION_KIND_AUTO_ROLLBACK
    assert st.last_operation.actor == "auto-rollback" and st.last_operation.reason == reason
    # no RPC made this change, and the metrics still see it
    assert _metric("learning_engine_adapter_swap_seconds_count", kind="auto_rollback") == swaps_before + 1
    assert _metric("learning_engine_active_adapter", base_model=TINY, version=v10) == 1
    assert _metric("learning_engine_active_adapter", base_model=TINY, version=v11) == 0
    assert await auto.check_once() == ""  # on known-good now: nothing to do


class SlowToLoad(ReferenceModel):
    """A serving engine that takes a second to load an adapter (SmolLM2's gate takes minutes on a CPU)."""

    def load(self, name: str, path: str) -> bool:
        time.sleep(1.0)
        return super().load(name, path)


async def test_an_activation_whose_caller_goes_away_runs_to_its_end(make_server, tiny_model_dir: Path):
    """A client's deadline passes (the SDK's default is 30 s), or its connection drops, while the activation loads
    and evaluates: the activation goes on to its end and is recorded as it ended, not cut off halfway with its
    candidate left loaded and an INTERNAL error on record."""
    backend = await start_backend(SlowToLoad(tiny_model_dir, TINY))
    client = await make_server(serving_url=backend.url)
    v10 = await train(client)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub(client).ActivateAdapter(lc.ActivateAdapterRequest(version=v10, reason="first"), timeout=0.3)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert (await status(client)).active_version == ""  # still loading
    for _ in range(100):
        st = await status(client)
        if st.last_operation.version == v10:
            break
        await asyncio.sleep(0.1)
    assert st.active_version == v10 and not st.last_operation.HasField("error"), st
    assert st.last_operation.reason == "first" and st.last_operation.duration.ToTimedelta() > timedelta(seconds=1)
    assert [a.version for a in st.loaded] == [v10]
    await backend.stop()


async def test_an_activation_interrupted_by_its_server_stopping_is_recorded_as_interrupted(make_server,
                                                                                         tiny_model_dir: Path):
    """The server stops while an activation loads: the operation is cut short (the next start reconciles), and its
    record says so with a catalogued reason, not INTERNAL."""
    backend = await start_backend(SlowToLoad(tiny_model_dir, TINY))
    client = await make_server(serving_url=backend.url)
    v10 = await train(client)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub(client).ActivateAdapter(lc.ActivateAdapterRequest(version=v10, reason="first"), timeout=0.3)
    await client.app.owned.lora.controller.close()  # what a server stop does
    st = await status(client)
    assert st.last_operation.version == v10 and st.last_operation.kind == lc.LORA_OPERATION_KIND_ACTIVATE
    assert st.last_operation.error.code == grpc.StatusCode.UNAVAILABLE.value[0], st.last_operation
    info = error_details_pb2.ErrorInfo()
    assert st.last_operation.error.details[0].Unpack(info) and info.reason == "OPERATION_INTERRUPTED", info
    assert st.active_version == ""
    await backend.stop()
