"""What the JSONL bytes of a dataset version hold, by its kind: training examples (the training path's own
validator, ``load_jsonl``) or golden cases (the golden-case format of evaluations, engine.golden). Either is read
line by line, every bad line a ``line[N].field`` violation (INVALID_ARGUMENT DATASET_INVALID, the first 20),
digested, counted by shape and split by the seeded rule (engine.splits) on each line's prompt.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from engine import golden
from engine.domain import composition, dataset_digest
from engine.errors import FailedPrecondition, FieldViolation, InvalidArgument
from engine.golden import GoldenCase
from engine.splits import Split, SplitRule
from engine.training.datasets import load_jsonl

MAX_VIOLATIONS = 20


class DatasetKind(enum.StrEnum):
    """What a version's lines are."""

    TRAINING = "training"  # examples a job trains on (every version stored before kinds existed)
    GOLDEN = "golden"  # cases an evaluation scores, answer spans and several references kept; never trained on


@dataclass(frozen=True)
class SplitCounts:
    train: int = 0
    eval: int = 0
    test: int = 0


@dataclass(frozen=True)
class DatasetContent:
    """What some JSONL bytes hold: their hash and size, their lines' digest and shapes, the split counts under a
    rule, and their kind (examples or cases: ``example_count`` counts either)."""

    sha256: str
    size_bytes: int
    digest: str
    example_count: int
    composition: tuple[tuple[str, int], ...]
    split: SplitRule
    counts: SplitCounts
    kind: DatasetKind = DatasetKind.TRAINING


def normalised(rule: SplitRule) -> SplitRule:
    """A rule that splits nothing is the one rule without a split, whatever its seed (for identity)."""
    return rule if rule.splits else SplitRule()


def load_golden(path: Path, *, label: str, field_path: str) -> list[GoldenCase]:
    """The golden cases of a JSONL file, read as evaluations read a golden suite; INVALID_ARGUMENT DATASET_INVALID
    with a ``line[N].field`` violation for each bad line (the first 20), DATASET_EMPTY for none (blamed on
    ``field_path``)."""
    with path.open("rb") as handle:
        cases, bad = golden.read_cases(handle)
    if bad:
        summary = "; ".join(f"{v.field}: {v.description}" for v in bad[:5])
        raise InvalidArgument(
            "DATASET_INVALID", f"golden dataset {label} has {len(bad)} bad line(s): {summary}"
            + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""),
            violations=bad[:MAX_VIOLATIONS],
            metadata={"problem_count": str(len(bad)), "problems_not_shown": str(max(0, len(bad) - MAX_VIOLATIONS))},
        )
    if not cases:
        raise InvalidArgument("DATASET_EMPTY", f"golden dataset {label} contains no cases",
                              violations=[FieldViolation(field_path, "the file contains no cases")])
    return cases


def describe(path: Path, *, sha256: str, size: int, split: SplitRule, kind: DatasetKind, label: str,
             field_path: str) -> DatasetContent:
    """Validate ``path`` (whose hash and size the caller measured) as ``kind`` and count it under ``split``."""
    rule = normalised(split)
    if kind is DatasetKind.GOLDEN:
        cases = load_golden(path, label=label, field_path=field_path)
        sides = [rule.of_prompt(c.prompt) for c in cases]
        return DatasetContent(sha256=sha256, size_bytes=size, digest=golden.cases_digest(cases),
                              example_count=len(cases), composition=golden.composition(cases), split=rule,
                              counts=_counts(sides), kind=kind)
    examples = load_jsonl(path, label=label, field_path=field_path)
    return DatasetContent(sha256=sha256, size_bytes=size, digest=dataset_digest(examples),
                          example_count=len(examples), composition=composition(examples), split=rule,
                          counts=_counts([rule.of(e) for e in examples]), kind=kind)


def _counts(sides: Sequence[Split]) -> SplitCounts:
    return SplitCounts(*(sum(1 for s in sides if s is split) for split in (Split.TRAIN, Split.EVAL, Split.TEST)))


def cases_in_test_split(cases: Sequence[GoldenCase], rule: SplitRule) -> list[GoldenCase]:
    """The cases of the test split under ``rule`` (all of them for a rule without a split)."""
    return [c for c in cases if rule.of_prompt(c.prompt) is Split.TEST] if rule.splits else list(cases)


def not_trainable(name: str, field_path: str) -> FailedPrecondition:
    """The refusal of a golden version named where something trains."""
    return FailedPrecondition(
        "GOLDEN_DATASET_NOT_TRAINABLE",
        f"{field_path}: {name} holds golden cases (kind golden): they score evaluations (suite_datasets) and train "
        "nothing; name a dataset version of kind training",
        violations=[FieldViolation(field_path, f"{name} is a golden dataset; only a training dataset is trained on")],
        metadata={"name": name, "kind": DatasetKind.GOLDEN.value, "field": field_path},
    )
