"""``train --watch`` / ``jobs watch`` end with "<job> SUCCEEDED -> adapter v2.0 (final loss X)": X is the job's
train loss, the loss on its training set after the last step (its "train_end" evaluation, which the version it
publishes records as its train loss), not the last optimiser step's loss, which is one (often small) batch's. A job
that never got that far shows its last step's loss, labelled as such."""

from __future__ import annotations

import asyncio

from learning.v1 import adapter_pb2
from learning.v1 import common_pb2 as common
from learning.v1 import training_pb2 as training
from learning_engine.cli.training_watch import follow_training

NAME = "trainingJobs/j1"


def _step(step: int, loss: float) -> training.WatchTrainingJobResponse:
    metrics = training.TrainingStepMetrics(step=step, total_steps=3, loss=loss, task_loss=loss)
    return training.WatchTrainingJobResponse(event=training.TrainingJobEvent(sequence=step, step_metrics=metrics))


def _train_end(loss: float) -> training.WatchTrainingJobResponse:
    metric = common.EvalMetric(name="loss", value=loss)
    result = training.TrainingEvalResult(step=3, split="train_end", metrics=[metric])
    return training.WatchTrainingJobResponse(event=training.TrainingJobEvent(sequence=4, eval_result=result))


class FakeClient:
    def __init__(self, messages: list[training.WatchTrainingJobResponse], job: training.TrainingJob,
                 adapter_train_loss: float = 0.0) -> None:
        self.messages, self.job, self.adapter_train_loss = messages, job, adapter_train_loss
        self.adapters: list[tuple[str, str]] = []

    async def watch_training_job(self, name: str, *, after_sequence: int = 0):
        for message in self.messages:
            yield message

    async def get_training_job(self, name: str) -> training.TrainingJob:
        return self.job

    async def get_adapter(self, version: str, *, base_model: str = "") -> adapter_pb2.Adapter:
        self.adapters.append((base_model, version))
        return adapter_pb2.Adapter(base_model=base_model, version=version, train_loss=self.adapter_train_loss)


def _job(state: int, version: str = "") -> training.TrainingJob:
    return training.TrainingJob(
        name=NAME, state=state, output_adapter_version=version,
        spec=training.TrainingJobSpec(base_model="tiny"),
        latest_metrics=training.TrainingStepMetrics(step=3, total_steps=3, loss=0.0341, task_loss=0.0341),
    )


def _summary(client: FakeClient, capsys) -> str:
    asyncio.run(follow_training(client, False, NAME))  # type: ignore[arg-type]
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_the_final_loss_is_the_train_end_evaluation_not_the_last_step(capsys) -> None:
    client = FakeClient([_step(1, 1.5), _step(2, 1.2), _step(3, 0.0341), _train_end(1.654)],
                        _job(common.JOB_STATE_SUCCEEDED, "v2.0"))
    assert _summary(client, capsys) == f"{NAME} SUCCEEDED -> adapter v2.0 (final loss 1.6540)"
    assert client.adapters == []  # the stream had it


def test_watching_after_the_evaluation_takes_the_published_versions_train_loss(capsys) -> None:
    client = FakeClient([], _job(common.JOB_STATE_SUCCEEDED, "v2.0"), adapter_train_loss=1.258)
    assert _summary(client, capsys) == f"{NAME} SUCCEEDED -> adapter v2.0 (final loss 1.2580)"
    assert client.adapters == [("tiny", "v2.0")]


def test_a_job_that_did_not_finish_training_shows_its_last_step_loss_as_such(capsys) -> None:
    client = FakeClient([_step(1, 1.5)], _job(common.JOB_STATE_FAILED))
    assert _summary(client, capsys) == f"{NAME} FAILED (last step loss 0.0341)"
