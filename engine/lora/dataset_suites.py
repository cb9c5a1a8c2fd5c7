"""Golden suites from stored dataset versions (engine.training.stored_datasets), for evaluation jobs and
EvaluateAdapter: a remote user evaluates on data they uploaded, not only on files below the server's data root.

A version named ``datasets/{dataset}`` (its newest) or ``datasets/{dataset}/versions/{n}`` becomes one golden
suite, named by the version it resolved to (``datasets/{dataset}/versions/{n}``: never a file's stem or one of the
gate's own suites), of the cases of its test split, the part no training job reads. A version without a split
rule has no held-out part: its suite is all its examples, and its note says a job naming that version trains on
every one of them. A rule whose test split is empty is refused (DATASET_EMPTY), never silently widened.

An example becomes a case the way the gate's target and retention suites make one (engine.lora.suites.case_of):
a chat example's user turn is the prompt and its assistant answer the reference, asked as a chat turn; a
prompt-completion example is asked as a raw completion of its prompt, as it was trained. A conversation of
several turns is left out (a case is one question and its answer; its last turn alone lacks its context), and
counted in the note. Two examples of one prompt make one case with both answers as references.

A golden version (kind golden) holds cases already, in the golden-case format of a file suite (engine.golden):
they are scored as a file suite's are, with their answer spans, every reference and their source texts (so the
hallucination check runs on those that have one); nothing trains on such a version, so its note says only which
part of it is scored. The suite's digest is that of its cases, so it enters the evaluation basis
(engine.lora.evaluation.evaluation_basis) as a file suite does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from engine.domain import Example
from engine.errors import FieldViolation, InvalidArgument
from engine.golden import GoldenCase, cases_digest
from engine.lora.evaluation import MAX_CASES, Suite, SuiteKind
from engine.lora.suites import case_of


class StoredVersion(Protocol):  # engine.training.dataset_records.StoredDataset
    @property
    def name(self) -> str: ...


class ScoredPart(Protocol):  # engine.training.dataset_records.ScoredPart
    @property
    def record(self) -> StoredVersion: ...

    @property
    def examples(self) -> Sequence[Example]:
        """A training version's examples scored (none of a golden one)."""

    @property
    def cases(self) -> Sequence[GoldenCase]:
        """A golden version's cases scored (none of a training one)."""

    @property
    def held_out(self) -> bool:
        """True: its test split; False: all of it (no split rule)."""


class StoredExamples(Protocol):  # engine.training.stored_datasets.StoredDatasets
    async def scored_part(self, name: str, field_path: str) -> ScoredPart: ...


def dataset_cases(examples: Sequence[Example]) -> tuple[list[GoldenCase], int]:
    """One case per question, in order (the answers to a prompt asked twice are its references), and how many
    examples made no case (conversations of several turns)."""
    cases: dict[tuple[str, bool], GoldenCase] = {}
    skipped = 0
    for example in examples:
        case = case_of(example)
        if case is None:
            skipped += 1
            continue
        key = (case.prompt, case.chat)
        seen = cases.get(key)
        if seen is None:
            cases[key] = case
        elif case.references[0] not in seen.references:
            cases[key] = GoldenCase(seen.prompt, (*seen.references, *case.references), chat=seen.chat)
    return list(cases.values()), skipped


class DatasetSuites:
    """Stored dataset versions as golden suites."""

    def __init__(self, datasets: StoredExamples) -> None:
        self._datasets = datasets

    async def suite(self, name: str, field_path: str) -> Suite:
        """The golden suite of the version ``name`` names (see the module docstring): MALFORMED_NAME and
        NOT_FOUND (STORED_DATASET_NOT_FOUND) as the datasets say; DATASET_EMPTY for an empty test split;
        EVAL_SUITE_INVALID when it makes no case or more than a suite holds; each naming ``field_path``."""
        part = await self._datasets.scored_part(name, field_path)
        record = part.record
        cases, skipped = (list(part.cases), 0) if part.cases else dataset_cases(part.examples)
        if not cases or len(cases) > MAX_CASES:
            raise InvalidArgument(
                "EVAL_SUITE_INVALID", f"{record.name} must give 1..{MAX_CASES} cases, gives {len(cases)}"
                + (f" ({_conversations(skipped)} left out)" if skipped else ""),
                violations=[FieldViolation(field_path, f"gives {len(cases)} cases (1..{MAX_CASES}): a case is one "
                                                       "question and its answer")],
                metadata={"name": record.name})
        if part.cases:
            what = f"the test split of {record.name} (golden cases)" if part.held_out else \
                f"all of {record.name} (golden cases, no split rule)"
            note = f"{what}: {len(cases)} cases"
        else:
            what = f"the test split of {record.name}" if part.held_out else \
                f"all of {record.name}, which has no split rule (a job naming it trains on every example)"
            note = f"{what}: {len(cases)} cases of {len(part.examples)} examples"
        if skipped:
            note += f", {_conversations(skipped)} left out"
        return Suite(name=record.name, kind=SuiteKind.GOLDEN, cases=tuple(cases), digest=cases_digest(cases),
                     note=note)


def _conversations(n: int) -> str:
    return f"{n} conversation{'' if n == 1 else 's'} of several turns"
