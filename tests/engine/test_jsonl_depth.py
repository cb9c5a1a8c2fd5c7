"""A JSONL line nested deeper than the parser goes (``"[" * 100000``: json.loads raises RecursionError, not
ValueError) is a bad line like any other: a golden suite's (engine.golden.read_cases) and a training dataset's
(engine.training.datasets.load_jsonl) name it as not JSON, never an internal error."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import InvalidArgument
from engine.golden import read_cases
from engine.training.datasets import load_jsonl

DEEP = "[" * 100_000


def test_a_deeply_nested_golden_line_is_a_bad_line():
    cases, bad = read_cases(['{"prompt": "Capital of France?", "expected": "Paris"}', DEEP, "{" * 50_000])
    assert len(cases) == 1
    assert [v.field for v in bad] == ["line[2]", "line[3]"] and "not JSON" in bad[0].description


def test_a_deeply_nested_training_line_is_a_bad_line(tmp_path: Path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"prompt": "Capital of France?", "completion": "Paris"}\n' + DEEP + "\n")
    with pytest.raises(InvalidArgument) as caught:
        load_jsonl(path)
    assert caught.value.reason == "DATASET_INVALID"
    assert len(caught.value.violations) == 1 and "invalid JSON" in caught.value.violations[0].description
    assert caught.value.violations[0].field == "line[2]"
