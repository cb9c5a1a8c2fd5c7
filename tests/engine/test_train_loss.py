"""A training job's train loss (what ``train --watch`` shows as "final loss" and the version it publishes records as
``Adapter.train_loss``): the ``train_end`` evaluation's, the loss on the examples every epoch trains measured after
the last step; without such examples, the mean task loss of the last epoch's steps. Never the last optimiser step's
loss alone, which is one (often small) batch's."""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from engine.training.batching import Rotation
from engine.training.run import TrainingResult
from engine.training.runner import TrainingRunner
from engine.training.spec import EvalReported
from tests.engine.test_training import make_run, train


def _train_end(sink) -> list[float]:
    return [dict(e.metrics)["loss"] for e in sink.events if isinstance(e, EvalReported) and e.split == "train_end"]


def test_the_train_loss_is_the_train_end_evaluation_not_the_last_steps(tiny_model_dir: Path, tmp_path: Path) -> None:
    # 5 examples two at a time: every epoch's last step is a batch of one example.
    result, sink = train(make_run(tiny_model_dir, tmp_path / "adapter", epochs=2, batch_size=2))
    [train_end] = _train_end(sink)
    assert result.train_loss == train_end
    assert result.final_task_loss == sink.steps[-1].task_loss != pytest.approx(train_end)  # that one small batch


def test_without_examples_every_epoch_trains_it_is_the_last_epochs_mean_task_loss(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # All 5 examples in the rotating pool, 4 an epoch two at a time: 2 steps an epoch, no train_end evaluation.
    run = make_run(tiny_model_dir, tmp_path / "adapter", epochs=3, batch_size=2)
    result, sink = train(replace(run, rotation=Rotation(pool=5, per_epoch=4)))
    assert _train_end(sink) == [] and len(sink.steps) == 6
    assert result.train_loss == pytest.approx(math.fsum(s.task_loss for s in sink.steps[-2:]) / 2)


class _Registry:
    def __init__(self) -> None:
        self.requests: list = []

    async def publish(self, request):
        self.requests.append(request)
        return request


def _job() -> SimpleNamespace:
    spec = SimpleNamespace(base_model="tiny", major_version_bump=False, base_protection=None, labels=())
    output = SimpleNamespace(ewc_lineage=None, dataset=None, eval_split=None, base_rehearsed_examples=0)
    return SimpleNamespace(name="trainingJobs/j1", spec=spec, output=output)


@pytest.mark.parametrize(("train_loss", "published"), [(1.654, 1.654), (math.nan, 0.0341)])
def test_the_published_version_records_the_train_loss(train_loss: float, published: float) -> None:
    result = TrainingResult(Path("adapter"), steps=12, final_loss=0.0341, final_task_loss=0.0341,
                            dataset=None, device="cpu", train_loss=train_loss)  # type: ignore[arg-type]
    runner = SimpleNamespace(_registry=_Registry())
    asyncio.run(TrainingRunner._publish(runner, _job(), None, result, fence=("w", "t")))  # type: ignore[arg-type]
    [request] = runner._registry.requests
    assert request.train_loss == published
