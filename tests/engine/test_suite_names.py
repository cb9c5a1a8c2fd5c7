"""A golden file's suite is named by its file's stem, and the suites of an evaluation are told apart by name alone
(its failed checks, its report, the learning curve of engine.lora.lineage, which keys a version's scores by suite
name): a suite path whose name is one of the gate's own suites (target, retention, base) or repeats another's is
refused before anything runs, INVALID_ARGUMENT naming the path (engine.lora.evaluation.check_suite_names, which
the planner, evaluation jobs and pipelines all call). gRPC entry points: tests/server/test_suite_names.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from engine.errors import InvalidArgument, ViolationCollector
from engine.lora import evaluation as ev
from engine.lora.operation import ControlConfig
from engine.lora.scoring import EvalScorer


class Client:
    target = "fake"

    def __init__(self) -> None:
        self.calls = 0

    async def complete(self, model: str, prompt: str, *, max_tokens: int, chat: bool = True) -> SimpleNamespace:
        self.calls += 1
        return SimpleNamespace(text="Paris")


class Gate:
    async def suites(self, base_model: str, candidate: str, baseline: str) -> list[ev.Suite]:
        return [ev.Suite("target", ev.SuiteKind.TARGET, (), ev.cases_digest([])),
                ev.Suite("retention", ev.SuiteKind.RETENTION, (), ev.cases_digest([]))]

    async def base_retention(self, base_model: str, version: str) -> None:
        return None


def golden(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"prompt": "Capital of France?", "expected": "Paris"}\n')
    return path


def fields(paths, field="suite_paths") -> list[str]:
    issues = ViolationCollector()
    ev.check_suite_names(issues, paths, field)
    return [v.field for v in issues.violations]


def test_names_of_the_gates_suites_and_repeated_stems_are_refused():
    assert fields(["golden.jsonl", "week2/quiz.jsonl", "facts"]) == []
    assert fields(["week2/retention.jsonl", "target.jsonl", "base", "ok.jsonl"]) == \
        ["suite_paths[0]", "suite_paths[1]", "suite_paths[2]"]
    assert fields(["a/golden.jsonl", "b/golden.jsonl", "golden.json"], "spec.suite_paths") == \
        ["spec.suite_paths[1]", "spec.suite_paths[2]"]


async def test_the_planner_refuses_a_golden_file_named_like_a_gate_suite_before_anything_runs(tmp_path: Path):
    client = Client()
    scorer = EvalScorer(ControlConfig(base_model="b", alias="a"), client, SimpleNamespace(base_model_name="b"),
                        None, None, None, Gate())  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument) as caught:
        await scorer.plan("b", "v1.1", "v1.0", [golden(tmp_path / "week2" / "retention.jsonl")], None)
    assert caught.value.reason == "INVALID_EVALUATION_SPEC"
    assert [v.field for v in caught.value.violations] == ["suite_paths[0]"]
    assert "retention" in caught.value.violations[0].description
    assert client.calls == 0


async def test_the_planner_refuses_two_golden_files_of_one_stem(tmp_path: Path):
    scorer = EvalScorer(ControlConfig(base_model="b", alias="a", gate=False), Client(),
                        SimpleNamespace(base_model_name="b"), None, None, None)  # type: ignore[arg-type]
    goldens = [golden(tmp_path / "a" / "quiz.jsonl"), golden(tmp_path / "b" / "quiz.jsonl")]
    with pytest.raises(InvalidArgument) as caught:
        await scorer.plan("b", "", "", goldens, None)  # the base model itself: the gate's names are reserved too
    assert [v.field for v in caught.value.violations] == ["suite_paths[1]"]
    plan = await scorer.plan("b", "", "", [golden(tmp_path / "quiz.jsonl"), golden(tmp_path / "facts.jsonl")], None)
    assert [s.name for s in plan.suites] == ["quiz", "facts"]
