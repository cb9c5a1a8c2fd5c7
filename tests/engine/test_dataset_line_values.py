"""The line readers (engine.training.datasets.load_jsonl, engine.golden.read_cases) turn a line holding valid JSON
syntax but no usable value into a line[N] violation: a weight no float holds (a 400-digit integer overflowed
math.isfinite) and a string with a lone UTF-16 surrogate (no Unicode text: it failed later, in a digest)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import InvalidArgument
from engine.golden import read_cases
from engine.training.datasets import load_jsonl

GOOD = '{"prompt": "3+3=", "completion": "6"}\n'


@pytest.mark.parametrize(("line", "field", "says"), [
    ('{"prompt": "2+2=", "completion": "4", "weight": ' + "1" * 400 + "}", "line[2].weight", "finite number > 0"),
    ('{"prompt": "2+2=", "completion": "4", "weight": -' + "7" * 400 + "}", "line[2].weight", "finite number > 0"),
    ('{"prompt": "2+2=", "completion": "4", "weight": 1e400}', "line[2].weight", "finite number > 0"),
    ('{"prompt": "caf\\ud800", "completion": "4"}', "line[2]", "lone UTF-16 surrogate (U+D800)"),
    ('{"prompt": "2+2=", "completion": "4", "note\\udc00": 1}', "line[2]", "lone UTF-16 surrogate (U+DC00)"),
], ids=["huge-integer-weight", "huge-negative-weight", "float-overflow-weight", "surrogate-value", "surrogate-key"])
def test_a_training_line_without_a_usable_value_is_a_line_violation(tmp_path: Path, line: str, field: str,
                                                                     says: str) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(GOOD + line + "\n")
    with pytest.raises(InvalidArgument) as err:
        load_jsonl(path)
    assert err.value.reason == "DATASET_INVALID", err.value
    assert [v.field for v in err.value.violations] == [field], err.value.violations
    assert says in err.value.violations[0].description, err.value.violations


def test_large_but_finite_integer_weights_are_floats(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"prompt": "2+2=", "completion": "4", "weight": ' + "9" * 300 + "}\n")
    (example,) = load_jsonl(path)
    assert example.weight == float("9" * 300), example


@pytest.mark.parametrize("line", ['{"prompt": "capital of France\\udc00?", "expected": "Paris"}',
                                  '{"prompt": "capital of France?", "references": ["Paris", "\\ud83d"]}'])
def test_a_golden_line_with_a_lone_surrogate_is_a_line_violation(line: str) -> None:
    cases, bad = read_cases(['{"prompt": "capital of Peru?", "expected": "Lima"}', line])
    assert len(cases) == 1 and [v.field for v in bad] == ["line[2]"], (cases, bad)
    assert "lone UTF-16 surrogate" in bad[0].description, bad
