"""A pipeline run cancelled during its EVALUATE stage stops at the next answer, as an evaluation job does
(engine.lora.evaluation_jobs: its progress callback raises Cancelled). LoraController.evaluate is shielded
(engine.lora.operation.to_the_end), so a progress callback is the only way to stop it. The serving side here plays
the scorer's contract (every answer reported to ``progress``; an error raised there stops the evaluation:
tests/engine/test_evaluation_cancel.py holds it for the real scorer)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from engine.errors import Cancelled
from engine.jobs.ports import CancelToken, StopReason
from engine.lora.state import EvalSummary
from engine.pipelines.runner import PipelineRunner
from engine.pipelines.spec import PipelineRunOutput

CASES = 60


class Serving:
    """LoraController.evaluate as the scorer runs it: every answer is reported to ``progress``; a progress that
    raises stops the evaluation with that error (tests/engine/test_evaluation_cancel.py)."""

    base_model = "tiny"

    def __init__(self, on_answer) -> None:
        self.answered = 0
        self.on_answer = on_answer

    async def evaluate(self, version, baseline_version, suites=(), *, progress=None, reuse=False):
        for _ in range(CASES):
            await asyncio.sleep(0.001)  # one answer from the serving engine
            self.answered += 1
            self.on_answer(self.answered)
            if progress is not None:
                progress("golden", self.answered, CASES)
        return EvalSummary(suite_digest="d", version=version, baseline_version="v1.0", metrics=(), regressions=0,
                           passed=True, failed_checks=(), report_uris=(), time=datetime.now(UTC), id="e1")


class Ctx:
    def __init__(self) -> None:
        pipeline = SimpleNamespace(name="pipelines/p", base_model="tiny", suite_paths=(), suite_datasets=())
        self.job = SimpleNamespace(spec=SimpleNamespace(pipeline=pipeline), name="pipelineRuns/r1", id="r1",
                                   output=PipelineRunOutput(version="v1.1", parent_version="v1.0"))
        self.cancel = CancelToken()
        self.sink = SimpleNamespace(emit=lambda payload: None)

    def set_output(self, output) -> None:
        self.job.output = output

    def record(self, payload) -> None:
        pass

    async def persist(self) -> None:
        pass


async def test_a_run_cancelled_during_its_evaluation_stops_at_the_next_answer():
    ctx = Ctx()

    def cancel_at_fifth(answered: int) -> None:
        if answered == 5:
            ctx.cancel.cancel(StopReason.CANCEL)  # CancelPipelineRun, while the suites are being answered

    serving = Serving(cancel_at_fifth)
    runner = PipelineRunner(datasets=None, training=None, serving=serving, suite_path=None, suites=None,
                            poll_seconds=0.01)
    outcome = None
    with pytest.raises(Cancelled):
        outcome = await runner._evaluate(ctx, ctx.job.output)
    assert serving.answered <= 6, f"cancelled at answer 5, it answered {serving.answered} of {CASES} ({outcome})"
