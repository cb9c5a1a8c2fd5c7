"""Continuing a KTO version trained on feedback that was all thumbs-down, with EWC on (the default for a continuation).

Nothing of its feedback was deleted: the version never had a wanted answer, so EWC has nothing of it to protect. The
continuation trains without EWC, saying so in a warning, rather than failing while preparing with
PARENT_FEEDBACK_GONE, whose message says the feedback was deleted (which stays the error of a parent whose wanted
answers were deleted since: test_feedback_service)."""

from __future__ import annotations

from learning.v1 import common_pb2 as common
from learning.v1 import feedback_pb2 as fb
from learning.v1 import training_pb2 as pb
from tests.server.conftest import spec, watch_all
from tests.server.test_feedback_service import CAPITALS, _feedback_spec, ev, feedback


async def test_continuing_a_kto_version_trained_only_on_rejected_answers_skips_ewc(client) -> None:
    events = [ev(f"down{n}", fb.FEEDBACK_KIND_THUMBS_DOWN, prompt=f"Name the capital of {country}. ",
                 response="I do not know.", minutes_ago=50 - n) for n, (country, _) in enumerate(CAPITALS)]
    assert (await feedback(client).SubmitFeedback(fb.SubmitFeedbackRequest(events=events))).stored == len(events)
    created = await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(
        spec=_feedback_spec(pb.OBJECTIVE_KTO, days=1, min_samples=4)))
    await watch_all(client.training, created.training_job.name)
    v10 = (await client.training.GetTrainingJob(
        pb.GetTrainingJobRequest(name=created.training_job.name))).training_job
    assert v10.state == common.JOB_STATE_SUCCEEDED, v10.error
    assert dict(v10.dataset.composition) == {"thumbs_down": len(CAPITALS)}

    child = spec(epochs=1)
    child.parent_adapter_version = v10.output_adapter_version
    made = await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=child))
    events = [m.event for m in await watch_all(client.training, made.training_job.name) if m.HasField("event")]
    done = (await client.training.GetTrainingJob(pb.GetTrainingJobRequest(name=made.training_job.name))).training_job
    assert done.state == common.JOB_STATE_SUCCEEDED, (done.error.code, done.error.message)
    [skipped] = [e.warning.message for e in events if e.warning.code == "EWC_SKIPPED"]
    assert skipped.startswith(f"{v10.output_adapter_version} was trained on no wanted answer")
    # trained as with EWC disabled: no snapshot measured, none anchoring it
    assert done.ewc_lineage.parent_adapter_version == v10.output_adapter_version
    assert not done.ewc_lineage.fisher_snapshot and done.ewc_lineage.ewc_lambda == 0
