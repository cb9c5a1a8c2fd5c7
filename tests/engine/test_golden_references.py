"""A golden case's references (engine.golden): ``expected``, ``reference`` or ``references`` is a non-empty
string or a list of non-empty strings, read as ``answer`` is; anything else (a nested list, an empty or blank
string, a number, an empty list, null) is the line's violation on that field, never a reference stringified
from it (a repr no answer matches, or "" which only an empty answer matches)."""

from __future__ import annotations

from engine.golden import read_cases
from engine.lora.evaluation import answered


def test_a_list_as_expected_is_read_as_references():
    cases, bad = read_cases(['{"prompt": "Capital of France?", "expected": ["Paris", "Paris, France"]}'])
    assert not bad
    assert cases[0].references == ("Paris", "Paris, France")
    assert answered("Paris", cases[0])


def test_a_string_as_references_is_one_reference():
    cases, bad = read_cases(['{"prompt": "Capital of France?", "references": "Paris"}',
                             '{"prompt": "Capital of Spain?", "reference": ["Madrid"]}'])
    assert not bad and [c.references for c in cases] == [("Paris",), ("Madrid",)]


BAD = [  # (line, the field its violation names)
    ('{"prompt": "Capital of France?", "expected": ""}', "expected"),
    ('{"prompt": "Capital of France?", "expected": "   "}', "expected"),
    ('{"prompt": "Capital of France?", "expected": [["Paris"]]}', "expected"),
    ('{"prompt": "Capital of France?", "expected": ["Paris", ""]}', "expected"),
    ('{"prompt": "Capital of France?", "expected": 42}', "expected"),
    ('{"prompt": "Capital of France?", "expected": null}', "expected"),
    ('{"prompt": "Capital of France?", "references": []}', "references"),
    ('{"prompt": "Capital of France?", "references": [null]}', "references"),
    ('{"prompt": "Capital of France?", "reference": {"a": 1}}', "reference"),
    ('{"prompt": "Capital of France?"}', "reference"),
]


def test_a_bad_reference_is_the_lines_violation():
    cases, bad = read_cases([line for line, _ in BAD])
    assert [v.field for v in bad] == [f"line[{n}].{field}" for n, (_, field) in enumerate(BAD, start=1)], (
        f"accepted as {cases}")
    assert not cases
