"""A KTO job warns when its desirable and undesirable examples are weighted outside the range the KTO paper
recommends for lambda_D * n_D / (lambda_U * n_U), [1, 4/3], as TRL's KTOTrainer does (engine.training.kto,
engine.training.runner)."""

from __future__ import annotations

import pytest

from engine.domain import Example
from engine.jobs.core import Warned
from engine.training.kto import weight_balance
from engine.training.runner import _check_kto_balance


class _Context:
    """Enough of a job context to record what the check says."""

    def __init__(self) -> None:
        self.recorded: list = []

    def record(self, event) -> None:
        self.recorded.append(event)


def _examples(weights: list[float]) -> list[Example]:
    return [Example(prompt=f"Question {n}? ", completion=f"Answer {n}.", weight=w) for n, w in enumerate(weights)]


def test_the_balance_is_the_desirable_examples_summed_weight_over_the_undesirable_ones() -> None:
    assert weight_balance([2.0, 2.0, 1.0, 0.5, 0.5], [True, True, True, False, False]) == pytest.approx(5.0)
    assert weight_balance([1.0, 1.0, 1.0], [True, False, False]) == pytest.approx(0.5)
    assert weight_balance([1.0, 1.0], [True, True]) is None  # nothing to balance against
    assert weight_balance([1.0, 0.0], [True, False]) is None


@pytest.mark.parametrize(("weights", "desirable", "leaning"), [
    ([2.0, 2.0, 0.5, 0.5], [True, True, False, False], "desirable"),  # the thumbs' default weights: 4
    ([1.0, 1.0, 1.0], [True, False, False], "undesirable"),  # 0.5
])
def test_weights_outside_the_papers_range_are_warned_about(weights, desirable, leaning) -> None:
    ctx = _Context()
    _check_kto_balance(ctx, _examples(weights), desirable)
    [warned] = ctx.recorded
    assert isinstance(warned, Warned) and warned.code == "KTO_WEIGHTS_UNBALANCED"
    assert f"leans on the {leaning} examples" in warned.message and "thumbs_up_weight" in warned.message


@pytest.mark.parametrize(("weights", "desirable"), [
    ([1.0, 1.0], [True, False]),  # 1: the range's low end
    ([1.0, 1.0, 0.5, 0.5, 0.5], [True, True, False, False, False]),  # 4/3: its high end
    ([2.0, 2.0], [True, True]),  # desirable examples only
])
def test_weights_within_the_range_or_of_one_kind_are_not(weights, desirable) -> None:
    ctx = _Context()
    _check_kto_balance(ctx, _examples(weights), desirable)
    assert ctx.recorded == []


class _Sink:
    def __init__(self) -> None:
        self.emitted: list = []

    def emit(self, payload) -> None:
        self.emitted.append(payload)


@pytest.mark.parametrize(("batch_size", "accumulation", "processes", "warned"), [
    (2, 1, 2, True),  # one example a process: z0 = 0 on every step
    (3, 1, 2, True),  # one process gets one
    (2, 2, 2, False),  # four a step: two each
    (4, 1, 2, False),
])
def test_a_kto_run_on_several_processes_warns_when_a_share_holds_one_example(
        tmp_path, batch_size: int, accumulation: int, processes: int, warned: bool) -> None:
    """KTO's z0 comes from each process's share of a step; a share of one example has none (z0 = 0), which the
    creation check of one example a step (batch_size 1) cannot see, since the processes are the worker's."""
    from engine.domain import JsonlSource
    from engine.training.distributed import _warn_kto_shares
    from engine.training.kto import KtoObjective
    from engine.training.run import TrainingRun
    from engine.training.spec import Hyperparameters, TrainingJobSpec

    spec = TrainingJobSpec(base_model="tiny", dataset=JsonlSource("x.jsonl"),
                           hyperparameters=Hyperparameters(batch_size=batch_size,
                                                           gradient_accumulation_steps=accumulation))
    run = TrainingRun(spec=spec, base_model_dir=tmp_path, examples=_examples([1.0] * 4), output_dir=tmp_path / "out",
                      objective=KtoObjective([True, False, True, False]))
    sink = _Sink()
    _warn_kto_shares(run, processes, sink)
    assert [w.code for w in sink.emitted] == (["KTO_SHARES_OF_ONE"] if warned else [])
    sft = TrainingRun(spec=spec, base_model_dir=tmp_path, examples=_examples([1.0] * 4), output_dir=tmp_path / "o")
    _warn_kto_shares(sft, processes, sink)  # SFT has no reference point
    assert len(sink.emitted) == (1 if warned else 0)
