"""A CANARY run resumed after a stop takes what became of the canary it started, whatever is active by then: a canary
that promoted its version while the run's process was down makes the rollout PROMOTED (not ACTIVATED, and no second
activation), one rolled back fails the run even if the version was activated by hand since; a run stopped before its
canary started, whose version is active by now, starts no canary of the active version."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from engine.errors import FailedPrecondition
from engine.lora.canary import CanaryDecision, CanaryOutcome, CanaryPolicy
from engine.pipelines.runner import PipelineRunner
from engine.pipelines.spec import PipelineRunOutput, Rollout, RolloutMode


class Serving:
    """v1.1 is active; the canary of v1.1 ended ``decision`` while the run's process was down (None: it never
    started)."""

    base_model = "tiny"

    def __init__(self, decision: CanaryDecision | None, active: str = "v1.1") -> None:
        self.decision = decision
        self.active = active
        self.activations: list[str] = []
        self.canaries: list[str] = []

    async def status(self):
        return SimpleNamespace(active_version=self.active, base_model="tiny", split=None)

    async def wait_canary(self, version, *, poll_seconds=5.0):
        if self.decision is None:
            raise FailedPrecondition("NO_CANARY_RUNNING", f"no canary of {version} is in force or was decided")
        return CanaryOutcome(version, self.decision, "as the policy decided", None, datetime.now(UTC))

    async def start_canary(self, version, policy, *, actor, reason, force=False):
        self.canaries.append(version)
        raise AssertionError(f"a canary of {version} was started again")

    async def activate(self, version, *, actor, reason, force=False, mark_known_good=False):
        self.activations.append(version)


class Ctx:
    def __init__(self, output: PipelineRunOutput) -> None:
        pipeline = SimpleNamespace(name="pipelines/careful", rollout=Rollout(RolloutMode.CANARY, CanaryPolicy()))
        self.job = SimpleNamespace(spec=SimpleNamespace(pipeline=pipeline), name="pipelineRuns/r1", id="r1",
                                   output=output)
        self.cancel = SimpleNamespace(cancelled=False, reason=None)

    def set_output(self, output) -> None:
        self.job.output = output

    async def persist(self) -> None:
        pass


def _runner(serving: Serving) -> PipelineRunner:
    return PipelineRunner(datasets=None, training=None, serving=serving, suite_path=None, suites=None,
                          poll_seconds=0.01)


def _resumed() -> PipelineRunOutput:
    """As stored before the stop: the canary started (rollout CANARY), its split recorded."""
    return PipelineRunOutput(version="v1.1", parent_version="v1.0", rollout="CANARY", canary_split=7)


async def test_a_resumed_run_takes_its_promoted_canarys_outcome():
    serving = Serving(CanaryDecision.PROMOTED)
    outcome = await _runner(serving)._rollout(Ctx(_resumed()), _resumed())
    assert outcome.output.rollout == "PROMOTED", \
        f"the canary promoted v1.1: the run must say so, not {outcome.output.rollout!r} ({outcome.message})"
    assert "canary promoted" in outcome.message, outcome.message
    assert serving.activations == [], "the canary already made v1.1 active: the run must not activate it again"


async def test_a_resumed_run_whose_canary_rolled_back_fails_though_its_version_is_active_now():
    serving = Serving(CanaryDecision.ROLLED_BACK)  # and someone activated v1.1 by hand since
    with pytest.raises(FailedPrecondition) as caught:
        await _runner(serving)._rollout(Ctx(_resumed()), _resumed())
    assert caught.value.reason == "PIPELINE_CANARY_FAILED", caught.value
    assert serving.activations == [], "a rolled back canary's version must not be activated by the run"


async def test_a_run_stopped_before_its_canary_started_starts_none_of_the_version_active_now():
    serving = Serving(None)  # stopped between storing rollout CANARY and starting the canary; v1.1 active since
    stopped = PipelineRunOutput(version="v1.1", parent_version="v1.0", rollout="CANARY")
    outcome = await _runner(serving)._rollout(Ctx(stopped), stopped)
    assert serving.canaries == [], "a canary of the active version cannot be started"
    assert outcome.output.rollout == "ACTIVATED", outcome
    assert "active already" in outcome.message, \
        f"the message must say v1.1 was active already, not that the run compared nothing: {outcome.message}"
