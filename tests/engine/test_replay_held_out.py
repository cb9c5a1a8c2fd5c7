"""Replay and the job's eval split: what a continuation holds out is never trained on, not even through replay.

A job holds its eval split out of its data by a rule (the dataset's own, else its ``eval_fraction`` and seed) and
says so ("never trained on", EVAL_SPLIT); its eval loss and the gate's target suite are measured on that split.
Replay mixes in examples of every earlier version's data, held out differently or not at all, so the same rule
decides what replay may add: only what it puts in the train split (engine.continual.planner ``_replay``).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from engine.continual.planner import EwcPlanner
from engine.continual.version_data import VersionData
from engine.domain import ChatMessage, Example
from engine.jobs.core import Noticed
from engine.splits import Split, SplitRule
from engine.training.ports import ContinualPlan, PlanRequest
from engine.training.runner import TrainingRunner
from engine.training.spec import EwcSpec, Hyperparameters, TrainingJobSpec
from learning.v1 import training_pb2 as pb
from tests.conftest import data_dir, tiny_model_dir  # noqa: F401  (fixtures)
from tests.server.conftest import make_memory_server, spec, watch_all  # noqa: F401  (fixtures)

OLD = [(f"Capital of Veloria {i}?", f"Marnesse {i}") for i in range(8)]
NEW = [(f"Colour of the Orvel bird {i}?", f"Saffron {i}") for i in range(24)]


def example(question: str, answer: str) -> Example:
    return Example(messages=(ChatMessage("user", question), ChatMessage("assistant", answer)))


class _Lineage:
    """The registry and version data of a parent whose one version was trained on ``examples``."""

    def __init__(self, examples: list[Example]) -> None:
        self.examples = examples

    async def lineage(self, base_model: str, version: str) -> list[Any]:
        return [SimpleNamespace(version=version, base_model=base_model)]

    async def of(self, record: Any) -> VersionData:
        return VersionData(list(self.examples))


class _Sink:
    def __init__(self) -> None:
        self.events: list[object] = []

    def emit(self, event: object) -> None:
        self.events.append(event)


async def plan(earlier: list[Example], new: list[Example], split: SplitRule | None) -> tuple[ContinualPlan, _Sink]:
    lineage, sink = _Lineage(earlier), _Sink()
    planner = EwcPlanner(registry=lineage, snapshots=None, versions=lineage)  # type: ignore[arg-type]
    job = TrainingJobSpec(base_model="tiny", dataset=None,  # type: ignore[arg-type]
                          hyperparameters=Hyperparameters(seed=7), ewc=EwcSpec(replay_fraction=0.5, disabled=True))
    request = PlanRequest(spec=job, parent=SimpleNamespace(version="1.0.0", base_model="tiny"),  # type: ignore[arg-type]
                          parent_dir=Path("."), model_dir=Path("."), examples=new, model=None,  # type: ignore[arg-type]
                          in_worker=None, sink=sink, cancel=None, split=split)  # type: ignore[arg-type]
    return await planner.plan(request), sink


def notice(sink: _Sink, code: str) -> str:
    return next(e.message for e in sink.events if isinstance(e, Noticed) and e.code == code)


async def test_replay_adds_only_what_the_jobs_split_rule_trains() -> None:
    rule = SplitRule(eval_fraction=0.5, seed=7)
    earlier = [example(f"Capital of Veloria {i}?", f"Marnesse {i}") for i in range(40)]
    new = [e for e in (example(f"Colour of bird {i}?", f"Saffron {i}") for i in range(40))
           if rule.of(e) is Split.TRAIN][:6]
    held = sum(1 for e in earlier if rule.of(e) is not Split.TRAIN)
    assert 0 < held < len(earlier) - 6

    planned, sink = await plan(earlier, new, rule)

    replayed = planned.examples[len(new):]
    assert planned.examples[:len(new)] == new
    assert [e for e in replayed if rule.of(e) is not Split.TRAIN] == []
    assert len(replayed) == planned.replayed == planned.lineage.replayed_examples == 6
    assert planned.earlier == [e for e in earlier if rule.of(e) is Split.TRAIN]
    assert notice(sink, "REPLAY_MIXED") == (
        f"mixed 6 examples of earlier versions' datasets into the 6 new ones; left out {held} of theirs that this "
        "job holds out of training (its eval split)")
    again, _ = await plan(earlier, new, rule)
    assert again.examples == planned.examples  # a resumed job draws the same replay set


async def test_replay_without_a_split_rule_draws_from_every_earlier_example() -> None:
    earlier = [example(f"Capital of Veloria {i}?", f"Marnesse {i}") for i in range(8)]
    new = [example(f"Colour of bird {i}?", f"Saffron {i}") for i in range(4)]

    planned, sink = await plan(earlier, new, None)

    assert planned.replayed == 4 and planned.earlier == earlier
    assert notice(sink, "REPLAY_MIXED") == "mixed 4 examples of earlier versions' datasets into the 4 new ones"


def write(data_dir: Path, name: str, pairs: list[tuple[str, str]]) -> str:  # noqa: F811
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in pairs]
    (data_dir / "datasets" / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return name


async def test_a_continuation_never_replays_the_examples_it_holds_out(make_memory_server, data_dir,  # noqa: F811
                                                                      monkeypatch) -> None:
    """The parent trained on OLD with no eval split. The continuation trains on OLD + NEW holding out an eval split
    and replays the parent's data: what it holds out stays out of its training set, and its REPLAY_MIXED notice
    counts what was replayed and what was left out."""
    seen: list[tuple[list[Example], list[Example]]] = []
    original = TrainingRunner._rehearse

    async def spy(self, ctx, run, loaded):
        seen.append((list(run.examples), list(run.eval_examples)))
        return await original(self, ctx, run, loaded)

    monkeypatch.setattr(TrainingRunner, "_rehearse", spy)
    client = await make_memory_server()

    parent = (await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(
        spec=spec(write(data_dir, "old.jsonl", OLD), epochs=1)))).training_job
    await watch_all(client.training, parent.name)
    v10 = (await client.training.GetTrainingJob(pb.GetTrainingJobRequest(name=parent.name))).training_job
    assert v10.output_adapter_version

    s = spec(write(data_dir, "both.jsonl", OLD + NEW), epochs=1, eval_fraction=0.5)
    s.parent_adapter_version = v10.output_adapter_version
    s.ewc.disabled = True
    s.ewc.replay_fraction = 0.5
    child = (await client.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=s))).training_job
    messages = await watch_all(client.training, child.name)

    trained, held_out = seen[-1]
    assert held_out, "the continuation held nothing out"
    held = {e.messages[0].content for e in held_out}
    leaked = sorted(held & {e.messages[0].content for e in trained})
    assert leaked == [], f"{len(leaked)} of the {len(held)} held-out examples are trained on through replay: {leaked}"
    rule = SplitRule(eval_fraction=0.5, seed=7)
    left_out = sum(1 for q, a in OLD if rule.of(example(q, a)) is not Split.TRAIN)
    notices = {m.event.notice.code: m.event.notice.message for m in messages
               if m.HasField("event") and m.event.HasField("notice")}
    assert f"left out {left_out} of theirs that this job holds out" in notices["REPLAY_MIXED"]
    replayed = len(trained) - (len(OLD) + len(NEW) - len(held_out))
    assert replayed > 0 and f"mixed {replayed} examples" in notices["REPLAY_MIXED"]
