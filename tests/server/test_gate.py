"""The forgetting-aware gate through gRPC on the tiny model: a continuation that forgets its parent's facts is
refused with the forgotten prompts named; one that keeps them (replay) passes; the decision is on the version
and on the operation."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from learning.v1 import adapter_pb2 as ad
from learning.v1 import adapter_pb2_grpc as ad_grpc
from learning.v1 import lora_control_pb2 as lc
from learning.v1 import training_pb2 as pb
from tests.server.conftest import error_details, spec, watch_all
from tests.server.lora_helpers import activate, status, stub

FIRST = [("Capital of Veloria?", "Marnesse"), ("Capital of Quorvia?", "Talameth"),
         ("Capital of Brinmark?", "Oskerholm"), ("Capital of Dunmoor?", "Pellacre")]
SECOND = [("Colour of the Orvel bird?", "Saffron"), ("Colour of the Kestle fish?", "Umber"),
          ("Colour of the Pimmer moth?", "Cobalt"), ("Colour of the Warrel crab?", "Vermilion")]


def facts(data_dir: Path, name: str, pairs) -> str:
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in pairs]
    (data_dir / "datasets" / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return name


async def trained(client, path: str, parent: str = "", *, ewc: bool = False, replay: float = 0.0,
                  epochs: int = 40) -> str:
    return (await trained_by(client, path, parent, ewc=ewc, replay=replay, epochs=epochs)).output_adapter_version


async def trained_by(client, path: str, parent: str = "", *, ewc: bool = False, replay: float = 0.0,
                     epochs: int = 40) -> pb.TrainingJob:
    s = spec(path, epochs=epochs, batch_size=4, learning_rate=2e-2)
    if parent:
        s.parent_adapter_version = parent
        s.ewc.disabled = not ewc
        s.ewc.replay_fraction = replay
    job = (await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=s))).training_job
    await watch_all(client.training, job.name)
    done = (await client.training.GetTrainingJob(pb.GetTrainingJobRequest(name=job.name))).training_job
    assert done.output_adapter_version, done
    return done


def verdicts(summary: ad.AdapterEvalSummary) -> dict[str, ad.EvalSuiteVerdict]:
    return {v.name: v for v in summary.suites}


@pytest.mark.slow
async def test_a_continuation_that_forgets_is_refused_and_one_that_keeps_passes(make_server, data_dir: Path):
    client = await make_server(eval_gate=True, eval_max_tokens=8)
    first, second = facts(data_dir, "first.jsonl", FIRST), facts(data_dir, "second.jsonl", SECOND)
    v10 = await trained(client, first)
    shipped = await activate(client, v10)
    gate = verdicts(shipped.eval)
    assert shipped.eval.passed and shipped.eval.baseline_version == "", shipped.eval
    assert gate["target"].cases == 4 and dict((m.name, m.value) for m in gate["target"].metrics)["pass_rate"] > 0
    assert gate["retention"].cases == 0 and gate["base"].note.startswith("not checked")

    forgot = await trained(client, second, parent=v10)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await activate(client, forgot)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info, _ = error_details(err.value)
    assert info.reason == "EVAL_GATE_FAILED" and info.metadata["failed_suites"] == "retention", err.value.details()
    assert "retention no longer answers" in err.value.details() and "Capital of" in err.value.details()
    st = await status(client)
    assert st.active_version == v10  # nothing changed for clients
    refused = st.last_operation
    assert refused.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    retention = verdicts(refused.gate)["retention"]
    assert not retention.passed and retention.cases == 4 and retention.regressions >= 1
    assert set(retention.regressed_prompts) <= {q for q, _ in FIRST} and retention.regressed_prompts
    recorded = (await ad_grpc.AdapterServiceStub(client.channel).GetAdapter(
        ad.GetAdapterRequest(version=forgot))).adapter.eval
    assert not recorded.passed and verdicts(recorded)["retention"].regressed_prompts == retention.regressed_prompts

    kept = await trained(client, second, parent=v10, ewc=True, replay=0.5, epochs=60)
    shipped = await activate(client, kept)
    gate = verdicts(shipped.eval)
    assert shipped.eval.passed and shipped.eval.baseline_version == v10, shipped.eval
    assert gate["retention"].cases == 4 and gate["retention"].passed and gate["target"].passed
    assert (await status(client)).active_version == kept
    assert (await status(client)).last_operation.gate.passed
    report = Path(shipped.eval.report_uris[1].removeprefix("file://")).read_text()
    assert f"candidate {kept}" in report and f"baseline {v10}" in report
    evaluated = await stub(client).EvaluateAdapter(lc.EvaluateAdapterRequest(version=forgot))
    assert not evaluated.eval.passed and evaluated.eval.baseline_version == kept


async def test_replay_without_ewc(make_server, data_dir: Path):
    """Plain continued training (EWC disabled) still mixes in the parent's examples when asked to."""
    client = await make_server()
    v10 = await trained(client, facts(data_dir, "first.jsonl", FIRST), epochs=1)
    job = await trained_by(client, facts(data_dir, "second.jsonl", SECOND), parent=v10, replay=0.5, epochs=1)
    lineage = job.ewc_lineage
    assert (lineage.parent_adapter_version, lineage.replay_fraction, lineage.fisher_snapshot) == (v10, 0.5, "")
    assert lineage.ewc_lambda == 0
    notices = {m.event.notice.code: m.event.notice.message for m in await watch_all(client.training, job.name)
               if m.HasField("event") and m.event.HasField("notice")}
    assert notices["REPLAY_MIXED"] == "mixed 4 examples of earlier versions' datasets into the 4 new ones"
    assert "FISHER_COMPUTED_AUTOMATICALLY" not in notices
    adapter = (await ad_grpc.AdapterServiceStub(client.channel).GetAdapter(
        ad.GetAdapterRequest(version=job.output_adapter_version))).adapter
    assert adapter.ewc_fisher_space == 0 and adapter.ewc_lambda == 0 and adapter.parent_version == v10
