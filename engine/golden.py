"""The golden-case format, shared by the evaluations that score it (engine.lora.evaluation) and the dataset versions
that store it (engine.training.stored_datasets, kind golden).

JSONL, one case per line: ``{"prompt": ..., "expected": ...}`` or ``{"prompt": ..., "references": [...]}``
(``reference`` works too; each a non-empty string or a list of non-empty strings, as ``answer`` is), optionally
with ``"answer"`` (a string or a list): the answer-bearing span, e.g. ``"Tegusu"`` for the reference "The capital
of X is Tegusu"; and ``"source"`` (or ``"context"``): the text the
answer should come from, for the hallucination check. Blank lines are skipped. A bad line is one ``line[N].field``
violation (``line[N]`` alone when the line is no JSON object at all, nested too deeply included, or holds a string
that is no Unicode text: a lone UTF-16 surrogate escape such as ``"\\ud800"``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from engine import json_input
from engine.errors import FieldViolation


@dataclass(frozen=True)
class GoldenCase:
    prompt: str
    references: tuple[str, ...]
    answers: tuple[str, ...] = ()  # answer-bearing spans; () means the references themselves
    chat: bool = True  # asked as a chat turn; False: as a raw completion of ``prompt``
    source: str = ""  # the text the answer should come from, for the hallucination check; "": none


def _strings(value: object, field: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) and v.strip() for v in items):
        raise ValueError(f"'{field}' must be a non-empty string or a list of them")
    return tuple(items)


class _BadField(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _case(doc: object) -> GoldenCase:
    """One case from one line's JSON; _BadField naming the field that is wrong."""
    if not isinstance(doc, dict):
        raise _BadField("", "must be a JSON object")
    prompt = doc.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise _BadField("prompt", "needs a non-empty 'prompt'")
    field = "references" if "references" in doc else "expected" if "expected" in doc else "reference"
    if field not in doc:
        raise _BadField(field, "needs 'expected' or 'references'")
    try:
        refs = _strings(doc[field], field)
    except ValueError as exc:
        raise _BadField(field, str(exc)) from exc
    try:
        answers = _strings(doc["answer"], "answer") if "answer" in doc else ()
    except ValueError as exc:
        raise _BadField("answer", str(exc)) from exc
    if "source" in doc and "context" in doc:
        raise _BadField("context", "give the source text once, as 'source' or as 'context'")
    key = "source" if "source" in doc else "context"
    source = doc.get(key, "")
    if not isinstance(source, str) or (key in doc and not source.strip()):
        raise _BadField(key, f"'{key}' must be a non-empty string (the text the answer should come from)")
    return GoldenCase(prompt, refs, answers, source=source)


def read_cases(lines: Iterable[str | bytes]) -> tuple[list[GoldenCase], list[FieldViolation]]:
    """The cases of JSONL lines numbered from 1, and a ``line[N].field`` violation for each bad line (every one:
    callers show the first few). A line given as bytes that are not UTF-8 is a bad line."""
    cases: list[GoldenCase] = []
    bad: list[FieldViolation] = []
    for number, line in enumerate(lines, start=1):
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError:
                bad.append(FieldViolation(f"line[{number}]", "is not valid UTF-8"))
                continue
        if not line.strip():
            continue
        try:
            doc = json_input.loads(line)  # a line nested too deeply, or no Unicode text, is a ValueError too
        except ValueError as exc:
            bad.append(FieldViolation(f"line[{number}]", f"not JSON: {exc}"))
            continue
        try:
            cases.append(_case(doc))
        except _BadField as exc:
            bad.append(FieldViolation(f"line[{number}]" + (f".{exc.field}" if exc.field else ""), str(exc)))
    return cases, bad


def cases_digest(cases: Sequence[GoldenCase]) -> str:
    """sha256 of the cases' canonical JSON, for suites built rather than read from a file."""
    doc = [{k: v for k, v in asdict(c).items() if k != "source" or v} for c in cases]  # digests as before sources
    return hashlib.sha256(json.dumps(doc, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def composition(cases: Sequence[GoldenCase]) -> tuple[tuple[str, int], ...]:
    """How many cases carry an answer span (``answer``), more than one reference (``several_references``) and a
    source text (``source``); a case counts under each it carries, a count of 0 is left out."""
    counts = (("answer", sum(1 for c in cases if c.answers)),
              ("several_references", sum(1 for c in cases if len(c.references) > 1)),
              ("source", sum(1 for c in cases if c.source)))
    return tuple((k, n) for k, n in counts if n)
