"""An evaluation cancelled, or one of its requests failing, stops asking the serving engine
(engine.lora.scoring): the answers and the judge's grades still waiting for their turn are cancelled, and those
in flight are waited for, before the error is raised; none is sent after the evaluation has ended and the
caller has unloaded the adapters."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from engine.errors import Cancelled, FailedPrecondition
from engine.lora import evaluation as ev
from engine.lora.operation import ControlConfig
from engine.lora.scoring import EvalScorer


class Client:
    target = "fake"

    def __init__(self, fail_at: int = 0) -> None:
        self.calls = 0
        self.running = 0
        self.fail_at = fail_at

    async def complete(self, model: str, prompt: str, *, max_tokens: int, chat: bool = True) -> SimpleNamespace:
        self.calls += 1
        if self.calls == self.fail_at:
            raise FailedPrecondition("ENGINE_UNAVAILABLE", "the serving engine is down")
        self.running += 1
        try:
            await asyncio.sleep(0.01)
        finally:
            self.running -= 1
        return SimpleNamespace(text="an answer")


def scorer(client: Client) -> EvalScorer:
    config = ControlConfig(base_model="b", alias="a", gate=False, eval_concurrency=2)
    return EvalScorer(config, client, SimpleNamespace(base_model_name="b"), None, None, None)  # type: ignore[arg-type]


def suite() -> ev.Suite:
    cases = tuple(ev.GoldenCase(f"Question {i}?", (f"answer {i}",)) for i in range(40))
    return ev.Suite("golden", ev.SuiteKind.GOLDEN, cases, "d")


async def test_a_cancelled_evaluation_stops_asking_the_engine():
    client = Client()
    scoring = scorer(client)
    plan = await scoring.plan("b", "v1.0", "", [suite()], None)

    def progress(name: str, answered: int, total: int) -> None:
        if answered >= 2:
            raise Cancelled("JOB_CANCELLED", "cancelled")

    with pytest.raises(Cancelled):
        await scoring.score(plan, progress)
    at_cancel = client.calls
    assert client.running == 0  # those in flight were ended before it raised
    await asyncio.sleep(0.5)
    assert client.calls == at_cancel, f"{client.calls - at_cancel} requests sent after the evaluation was cancelled"

    # the task scoring cancelled from outside: the same
    client.calls = 0
    task = asyncio.create_task(scoring.score(plan))
    while client.calls < 3:
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    at_cancel = client.calls
    await asyncio.sleep(0.5)
    assert client.calls == at_cancel and client.running == 0


async def test_one_failed_request_stops_the_others_and_its_error_is_raised():
    client = Client(fail_at=3)
    scoring = scorer(client)
    plan = await scoring.plan("b", "v1.0", "", [suite()], None)
    with pytest.raises(FailedPrecondition) as caught:
        await scoring.score(plan)
    assert caught.value.reason == "ENGINE_UNAVAILABLE"
    at_failure = client.calls
    await asyncio.sleep(0.5)
    assert client.calls == at_failure < 40


class Judge:
    def __init__(self) -> None:
        self.grades = 0

    async def grade(self, prompt: str, reference: str, answer: str, source: str) -> object:
        self.grades += 1
        if self.grades == 2:
            raise FailedPrecondition("JUDGE_UNAVAILABLE", "the judge is down")
        await asyncio.sleep(0.01)
        return object()


async def test_a_judge_failing_stops_the_other_grades():
    judge = Judge()
    cases = suite().cases
    with pytest.raises(FailedPrecondition) as caught:
        await scorer(Client())._graded(judge, cases, ["x"] * len(cases), lambda: None)  # type: ignore[arg-type]
    assert caught.value.reason == "JUDGE_UNAVAILABLE"
    at_failure = judge.grades
    await asyncio.sleep(0.5)
    assert judge.grades == at_failure < len(cases)
