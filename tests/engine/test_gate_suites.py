"""The gate's suites from a lineage: the target is the candidate's data (its eval split when it held one out),
retention the ancestors' and the baseline lineage's data less the candidate's prompts, a stable choice of at most
max_cases, and a note for what is left out. Over real JSONL files read back by VersionDatasets."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from engine.continual.version_data import VersionDatasets
from engine.domain import ChatMessage, DatasetSummary, Example, JsonlSource, LoraSpec, dataset_digest
from engine.errors import NotFound
from engine.lora.suites import LineageSuites, case_of
from engine.registry import AdapterRecord
from engine.splits import Split, SplitRule
from engine.training.datasets import load_jsonl


class Registry:
    def __init__(self, records: list[AdapterRecord]) -> None:
        self.records = {r.version: r for r in records}

    async def get(self, base_model: str, version: str, *, field_path: str = "version") -> AdapterRecord:
        if version not in self.records:
            raise NotFound("ADAPTER_NOT_FOUND", version)
        return self.records[version]

    async def lineage(self, base_model: str, version: str) -> list[AdapterRecord]:
        chain = [self.records[version]]
        while chain[-1].parent_version:
            chain.append(self.records[chain[-1].parent_version])
        return chain


def qa(q: str, a: str) -> dict:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def version(root: Path, name: str, parent: str, rows: list[dict], split: SplitRule | None = None) -> AdapterRecord:
    path = root / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = DatasetSummary(digest=dataset_digest(load_jsonl(path)), example_count=len(rows),
                             source=JsonlSource(path.name))
    return AdapterRecord(base_model="b", version=name, lora=LoraSpec(), create_time=datetime.now(UTC), sha256="",
                         size_bytes=0, parent_version=parent, dataset=summary, eval_split=split)


async def test_suites_of_a_lineage(tmp_path: Path):
    first = [qa(f"First {i}?", f"one {i}") for i in range(6)]
    second = [qa(f"Second {i}?", f"two {i}") for i in range(40)] + [qa("First 0?", "corrected")]
    rule = SplitRule(eval_fraction=0.3, seed=5)
    other = [qa("Other?", "x"), {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                              {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}]
    records = [version(tmp_path, "v1.0", "", first), version(tmp_path, "v1.1", "v1.0", second, rule),
               version(tmp_path, "v2.0", "", other)]
    suites = LineageSuites(Registry(records), VersionDatasets(datasets_dir=tmp_path), max_cases=50)

    target, retention = await suites.suites("b", "v1.1", "v1.0")
    held_out = [e for e in load_jsonl(tmp_path / "v1.1.jsonl") if rule.of(e) is Split.EVAL]
    assert 0 < len(held_out) < 41 and len(target.cases) == len(held_out)
    assert {c.prompt for c in target.cases} == {e.messages[0].content for e in held_out}
    assert target.note.startswith(f"the examples held out of by v1.1 ({len(held_out)} of {len(held_out)} cases)")
    own = {r["messages"][0]["content"] for r in second}
    assert {c.prompt for c in retention.cases} == {f"First {i}?" for i in range(6)} - own  # a correction is not lost

    _, across = await suites.suites("b", "v1.1", "v2.0")  # replacing another lineage: what it serves counts too
    assert {"Other?"} <= {c.prompt for c in across.cases} and "a" not in {c.prompt for c in across.cases}

    small = LineageSuites(Registry(records), VersionDatasets(datasets_dir=tmp_path), max_cases=4)
    once, again = await small.suites("b", "v1.1", "v2.0"), await small.suites("b", "v1.1", "v2.0")
    assert [c.prompt for c in once[1].cases] == [c.prompt for c in again[1].cases] and len(once[1].cases) == 4
    assert {c.prompt for c in once[1].cases} & {"Other?"}  # spread over the versions it draws on

    (tmp_path / "v1.0.jsonl").write_text(json.dumps(qa("Changed?", "x")) + "\n")
    _, changed = await suites.suites("b", "v1.1", "v1.0")
    assert changed.cases == () and "v1.0 left out: v1.0.jsonl changed since v1.0 was trained on it" in changed.note
    assert (await suites.base_retention("b", "v1.1")) is None


def test_case_of():
    assert case_of(Example(prompt="Q:", completion=" A ")).references == ("A",)
    assert not case_of(Example(prompt="Q:", completion=" A ")).chat
    assert case_of(Example(messages=(ChatMessage("system", "s"), ChatMessage("user", "q"),
                                     ChatMessage("assistant", "a")))).prompt == "q"
    assert case_of(Example(messages=(ChatMessage("user", "q"), ChatMessage("assistant", " ")))) is None
