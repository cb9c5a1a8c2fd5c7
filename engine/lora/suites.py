"""The gate's suites built from the registry: a candidate's own data (target) and what the versions before it
were taught (retention), with the base retention measured on each version (base).

- target: the examples of the candidate's dataset, as recorded on it (a JSONL file, verified by digest, or its
  feedback window rebuilt), each asked as the training asked it: its held-out eval split when its job held one
  out (engine.splits), else what it was trained on;
- retention: the examples of the candidate's ancestors and of the baseline's lineage (what is served now and
  what it came from), less the prompts the candidate's own data answers anew (a correction is not
  forgetting).

A suite takes at most ``max_cases`` cases, chosen by a stable hash of the prompt so the same cases are asked
every time, spread evenly over the versions it draws on. A version whose data is not known here (imported,
or its feedback deleted) is named in the suite's note and left out. Multi-turn conversations are left out
too: a case is one question and its answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Protocol

from engine.domain import BaseRetention, Example
from engine.errors import FailedPrecondition
from engine.lora.evaluation import GoldenCase, Suite, SuiteKind, cases_digest
from engine.registry import AdapterRecord


class Lineages(Protocol):  # AdapterRegistry
    async def get(self, base_model: str, version: str, *, field_path: str = "version") -> AdapterRecord: ...

    async def lineage(self, base_model: str, version: str) -> list[AdapterRecord]: ...


class TrainedOn(Protocol):  # engine.continual.version_data.VersionData
    @property
    def examples(self) -> Sequence[Example]: ...
    @property
    def note(self) -> str: ...
    @property
    def held_out(self) -> Sequence[Example]: ...


class VersionExamples(Protocol):  # engine.continual.version_data.VersionDatasets
    async def of(self, record: AdapterRecord) -> TrainedOn: ...


def case_of(example: Example) -> GoldenCase | None:
    """One question and its answer, or None for a conversation of several turns."""
    if not example.is_chat:
        completion = example.completion.strip()
        return GoldenCase(example.prompt, (completion,), chat=False) if example.prompt and completion else None
    turns = [m for m in example.messages if m.role != "system"]
    if len(turns) != 2 or turns[0].role != "user" or turns[1].role != "assistant" or not turns[1].content.strip():
        return None
    return GoldenCase(turns[0].content, (turns[1].content.strip(),))


def _cases(examples: Iterable[Example], exclude: set[str]) -> list[GoldenCase]:
    """One case per question (the first answer to a prompt asked twice), less the prompts in ``exclude``."""
    cases: dict[str, GoldenCase] = {}
    for example in examples:
        case = case_of(example)
        if case is not None and case.prompt not in exclude:
            cases.setdefault(case.prompt, case)
    return list(cases.values())


def _stable(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()


class LineageSuites:
    def __init__(self, registry: Lineages, versions: VersionExamples, *, max_cases: int) -> None:
        self._registry = registry
        self._versions = versions
        self.max_cases = max_cases

    async def suites(self, base_model: str, candidate: str, baseline: str) -> list[Suite]:
        """The target suite of ``candidate`` and its retention suite against ``baseline`` ("" = the base model)."""
        chain = await self._registry.lineage(base_model, candidate)
        trained, held_out, own_note = await self._examples(chain[0])
        own = _cases(held_out or trained, set())
        earlier = chain[1:]
        if baseline and baseline != candidate:
            seen = {r.version for r in chain}
            earlier += [r for r in await self._registry.lineage(base_model, baseline) if r.version not in seen]
        asked = {c.prompt for c in _cases([*trained, *held_out], set())}  # a correction is not forgetting
        kept: list[list[GoldenCase]] = []
        kept_note = ""
        for record in earlier:
            theirs, _, note = await self._examples(record)
            kept.append(_cases(theirs, asked))
            asked |= {c.prompt for c in kept[-1]}
            kept_note += note
        target, retention = self._pick([own]), self._pick(kept)
        what = "held out of" if held_out else "trained on"
        names = ", ".join(r.version for r in earlier) or "none"
        return [
            Suite(name="target", kind=SuiteKind.TARGET, cases=tuple(target), digest=cases_digest(target),
                  note=f"the examples {what} by {candidate} ({len(target)} of {len(own)} cases){own_note}"),
            Suite(name="retention", kind=SuiteKind.RETENTION, cases=tuple(retention), digest=cases_digest(retention),
                  note=f"what the versions before it were trained on ({names}; {len(retention)} cases, prompts "
                       f"{candidate} is trained on left out){kept_note}"),
        ]

    async def base_retention(self, base_model: str, version: str) -> BaseRetention | None:
        return (await self._registry.get(base_model, version)).base_retention

    async def _examples(self, record: AdapterRecord) -> tuple[Sequence[Example], Sequence[Example], str]:
        """What the version was trained on, what its job held out, and a note ("; ..."); none and why, when its
        data is not known here."""
        try:
            data = await self._versions.of(record)
        except FailedPrecondition as exc:
            return [], [], f"; {record.version} left out: {exc.message}"
        return data.examples, data.held_out, f"; {record.version}: {data.note}" if data.note else ""

    def _pick(self, groups: list[list[GoldenCase]]) -> list[GoldenCase]:
        """Up to ``max_cases`` cases in a stable order, taking from each group in turn."""
        ordered = [sorted(g, key=lambda c: _stable(c.prompt)) for g in groups]
        picked: list[GoldenCase] = []
        for depth in range(max((len(g) for g in ordered), default=0)):
            for group in ordered:
                if depth < len(group) and len(picked) < self.max_cases:
                    picked.append(group[depth])
        return picked
