"""A golden suite file is UTF-8: a line that is not (a file saved as Latin-1, say) is refused EVAL_SUITE_INVALID
naming the line, ``line[N]``, as engine.golden.read_cases refuses it in a golden dataset's bytes; it is never read
with its bad bytes replaced (U+FFFD), which would make its cases impossible to answer right."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import InvalidArgument
from engine.lora import evaluation as ev


def test_a_latin1_golden_file_is_refused_naming_its_line(tmp_path: Path) -> None:
    path = tmp_path / "cities.jsonl"
    path.write_bytes(b'{"prompt": "Largest city of Switzerland?", "expected": "Zurich"}\n' +
                     '{"prompt": "Capital of Bavaria?", "expected": "München"}\n'.encode("latin-1"))
    with pytest.raises(InvalidArgument) as caught:
        cases, _ = ev.load_suite(path)
        pytest.fail(f"accepted: {[c.references for c in cases]}; 'München' answered right: "
                    f"{ev.answered('München', cases[1])}")
    assert caught.value.reason == "EVAL_SUITE_INVALID"
    assert [(v.field, v.description) for v in caught.value.violations] == [("line[2]", "is not valid UTF-8")]
    assert "cities.jsonl line 2: is not valid UTF-8" in caught.value.message
    assert caught.value.metadata["line"] == "2"


def test_a_utf8_golden_file_keeps_its_lines_and_line_endings(tmp_path: Path) -> None:
    path = tmp_path / "cities.jsonl"
    raw = ('{"prompt": "Capital of Bavaria?", "expected": "München"}\r\n\r\n'
           '{"prompt": "Largest city of Switzerland?", "expected": "Zürich"}').encode()
    path.write_bytes(raw)
    cases, digest = ev.load_suite(path)
    assert [c.references for c in cases] == [("München",), ("Zürich",)]
    assert ev.answered("München", cases[0])
    path.write_bytes(raw.replace(b"\r\n\r\n", b"\n{\n"))  # a bad line is still numbered as the file's lines are
    with pytest.raises(InvalidArgument) as caught:
        ev.load_suite(path)
    assert [v.field for v in caught.value.violations] == ["line[2]"]
