"""The gate's suites built from the registry: a candidate's own data (target) and what the versions before it
were taught (retention), with the base retention measured on each version (base).

- target: the examples the candidate was trained on, as recorded on it (a JSONL file, verified by digest, or
  its feedback window rebuilt), each asked as the training asked it;
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
        mine, own_note = await self._cases(chain[:1], set())
        own = mine[0] if mine else []
        earlier = chain[1:]
        if baseline and baseline != candidate:
            seen = {r.version for r in chain}
            earlier += [r for r in await self._registry.lineage(base_model, baseline) if r.version not in seen]
        asked = {c.prompt for c in own}
        kept, kept_note = await self._cases(earlier, exclude=asked)
        target = self._pick([own])
        retention = self._pick(kept)
        names = ", ".join(r.version for r in earlier) or "none"
        return [
            Suite(name="target", kind=SuiteKind.TARGET, cases=tuple(target), digest=cases_digest(target),
                  note=f"what {candidate} was trained on ({len(target)} of {len(own)} cases){own_note}"),
            Suite(name="retention", kind=SuiteKind.RETENTION, cases=tuple(retention), digest=cases_digest(retention),
                  note=f"what the versions before it were trained on ({names}; {len(retention)} cases, prompts "
                       f"{candidate} is trained on left out){kept_note}"),
        ]

    async def base_retention(self, base_model: str, version: str) -> BaseRetention | None:
        return (await self._registry.get(base_model, version)).base_retention

    async def _cases(self, records: Iterable[AdapterRecord], exclude: set[str]) -> tuple[list[list[GoldenCase]], str]:
        """The cases of each version's data (prompts in ``exclude`` or asked before left out), and a note."""
        per_version: list[list[GoldenCase]] = []
        notes: list[str] = []
        seen = set(exclude)
        for record in records:
            try:
                data = await self._versions.of(record)
            except FailedPrecondition as exc:
                notes.append(f"{record.version} left out: {exc.message}")
                continue
            cases = []
            for example in data.examples:
                case = case_of(example)
                if case is not None and case.prompt not in seen:
                    seen.add(case.prompt)
                    cases.append(case)
            per_version.append(cases)
            if data.note:
                notes.append(f"{record.version}: {data.note}")
        return per_version, "".join(f"; {n}" for n in notes)

    def _pick(self, groups: list[list[GoldenCase]]) -> list[GoldenCase]:
        """Up to ``max_cases`` cases in a stable order, taking from each group in turn."""
        ordered = [sorted(g, key=lambda c: _stable(c.prompt)) for g in groups]
        picked: list[GoldenCase] = []
        for depth in range(max((len(g) for g in ordered), default=0)):
            for group in ordered:
                if depth < len(group) and len(picked) < self.max_cases:
                    picked.append(group[depth])
        return picked
