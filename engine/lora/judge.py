"""LLM-as-judge: a served model grades each answer of an evaluation against a fixed rubric.

The judge is any model a serving engine serves, asked greedily through the same OpenAI-style contract the
evaluation asks the candidate with (``POST /v1/chat/completions``, engine.serving.client): the base model of the
serving target by default, another model (``eval_judge_model``) or another engine (``eval_judge_url``) by
setting. Each answer is graded once, with one prompt made from :data:`RUBRIC`; the prompt and the judge's raw
reply are kept on the case, in every report.

The rubric asks for a strict format, one ``KEY: value`` line each: RELEVANCE, CORRECTNESS and COMPLETENESS from
1 to 5, SUPPORTED yes/no (only when the case carries its source text) and CORRECT yes/no. Small models ramble,
so the parser is lenient about decoration (``**Relevance:** 4/5``, ``1. relevance = 4``, text around the
lines, a key repeated: the last readable one counts) and strict about values: a value out of range, a range
echoed from the prompt (``<1-5>``) or a key missing makes the verdict *unparseable*. An unparseable verdict
passes nothing and is counted (``judge_unparseable``); when more than ``max_unparseable`` of a suite's verdicts
are unparseable, the judge is not doing its job and the evaluation fails with UNAVAILABLE JUDGE_UNPARSEABLE.
A judge that cannot be asked (down, timing out, not serving that model, refusing the request) fails it with
UNAVAILABLE JUDGE_UNAVAILABLE. Never a silent pass.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from engine import json_input
from engine.errors import EngineError, Unavailable
from engine.serving.client import ServingClient

MAX_SOURCE_CHARS = 6000  # of a case's source text in the judge's prompt (the rest is cut, and the prompt says so)
MAX_ANSWER_CHARS = 2000  # of the graded answer in the prompt
SCORES = ("relevance", "correctness", "completeness")

RUBRIC = """You are grading an answer to a question. Grade it with this rubric:
RELEVANCE (1 to 5): 5 if the answer addresses the question, 1 if it is about something else.
CORRECTNESS (1 to 5): 5 if everything it says agrees with the reference answer, 1 if it contradicts it.
COMPLETENESS (1 to 5): 5 if it says everything the reference answer says, 1 if it says none of it.
{supported_rule}CORRECT (yes or no): yes if the answer gives the reference answer's answer, else no.

Question: {question}
Reference answer: {reference}
{source_block}Answer to grade: {answer}

Reply with exactly these lines and nothing else:
RELEVANCE: <1 to 5>
CORRECTNESS: <1 to 5>
COMPLETENESS: <1 to 5>
{supported_line}CORRECT: <yes or no>
"""
SUPPORTED_RULE = "SUPPORTED (yes or no): yes if every claim of the answer is supported by the source text, else no.\n"
RUBRIC_DIGEST = hashlib.sha256(RUBRIC.encode() + SUPPORTED_RULE.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class JudgeVerdict:
    """One answer's grade: the prompt, the judge's raw reply and what was read from it."""

    prompt: str
    raw: str
    relevance: int | None = None  # 1..5
    correctness: int | None = None
    completeness: int | None = None
    supported: bool | None = None  # None: the case has no source, or the verdict is unparseable
    correct: bool | None = None  # None: unparseable
    problem: str = ""  # why it is unparseable; "" when it is not

    @property
    def parsed(self) -> bool:
        return not self.problem

    @property
    def score(self) -> float | None:
        """The mean of the three rubric scores, from 0 (all 1) to 1 (all 5); None when unparseable."""
        values = (self.relevance, self.correctness, self.completeness)
        if not self.parsed or any(v is None for v in values):
            return None
        return sum((v - 1) / 4 for v in values if v is not None) / 3


def prompt_for(question: str, reference: str, answer: str, source: str = "") -> str:
    """The judge's prompt for one answer: the rubric, the case and the answer."""
    source_block = ""
    if source:
        cut = source[:MAX_SOURCE_CHARS]
        more = f" [... {len(source) - MAX_SOURCE_CHARS} more characters not shown]" if len(source) > len(cut) else ""
        source_block = f"Source text: {cut}{more}\n"
    return RUBRIC.format(
        supported_rule=SUPPORTED_RULE if source else "", question=question, reference=reference,
        source_block=source_block, answer=answer[:MAX_ANSWER_CHARS] or "(empty)",
        supported_line="SUPPORTED: <yes or no>\n" if source else "",
    )


_KEYS = (*SCORES, "supported", "correct")
# A line that gives one key: decoration before it (list numbers, bullets, markdown), the key, decoration, then a
# separator and the value (the rest of the line).
_LINE = re.compile(r"^[\s>*#_`\-\d.)]*(" + "|".join(_KEYS) + r")[\s*_`]*[:=\-–]\s*(.*)$", re.IGNORECASE | re.MULTILINE)
_SCORE = re.compile(r"^[\s*_`\[(]*([1-5])(?:\s*(?:/|out of)\s*5)?(?![.,]?\d)(?!\s*(?:-|to|–)\s*\d)\b",
                    re.IGNORECASE)
_YES_NO = re.compile(r"^[\s*_`\[(\"']*(yes|no|true|false)\b", re.IGNORECASE)


def _score(value: object) -> int | None:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    return value if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 5 else None


def _yes_no(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    said = _YES_NO.match(value) if isinstance(value, str) else None
    return said.group(1).lower() in {"yes", "true"} if said else None


def _from_json(raw: str) -> dict[str, int | bool]:
    """The keys of the JSON objects in the reply (a model asked for lines may answer ``{"relevance": 4, ...}``);
    a later object's keys win."""
    values: dict[str, int | bool] = {}
    for block in re.findall(r"\{[^{}]*\}", raw):
        try:
            doc = json_input.loads(block)
        except ValueError:
            continue
        for name, value in doc.items() if isinstance(doc, dict) else ():
            key = str(name).strip().lower()
            read = _score(value) if key in SCORES else _yes_no(value) if key in _KEYS else None
            if read is not None:
                values[key] = read
    return values


def parse(prompt: str, raw: str, *, with_source: bool) -> JudgeVerdict:
    """Read a verdict from the judge's reply: the last readable line of each key counts; a key no line gives is
    taken from a JSON object in the reply, if there is one."""
    values: dict[str, int | bool] = {}
    for key, rest in _LINE.findall(raw):
        key = key.lower()
        if key in SCORES:
            number = _SCORE.match(rest)
            if number:
                values[key] = int(number.group(1))
        else:
            said = _YES_NO.match(rest)
            if said:
                values[key] = said.group(1).lower() in {"yes", "true"}
    values = {**_from_json(raw), **values} if "{" in raw else values
    wanted = [*SCORES, *(("supported",) if with_source else ()), "correct"]
    missing = [k.upper() for k in wanted if k not in values]
    if missing:
        return JudgeVerdict(prompt, raw, problem="no readable " + ", ".join(missing))

    def score(key: str) -> int:
        value = values[key]
        assert isinstance(value, int)
        return int(value)

    return JudgeVerdict(
        prompt, raw, relevance=score("relevance"), correctness=score("correctness"),
        completeness=score("completeness"), supported=bool(values["supported"]) if with_source else None,
        correct=bool(values["correct"]),
    )


@dataclass(frozen=True)
class JudgeConfig:
    enabled: bool = False  # whether evaluations are judged unless they say otherwise (JudgeChoice)
    model: str = ""  # the served model id; "": the serving target's base model
    max_tokens: int = 64
    max_unparseable: float = 0.2  # the largest share of a suite's verdicts that may be unparseable


@dataclass(frozen=True)
class JudgeChoice:
    """One evaluation's own choice, over the server's: judged or not, and by which model ("": the configured)."""

    on: bool
    model: str = ""


@dataclass(frozen=True)
class JudgeInfo:
    """Who judged an evaluation, recorded on its report."""

    model: str
    target: str
    rubric_digest: str = RUBRIC_DIGEST


class Judge:
    """Grades answers with one served model; every failure to ask it is UNAVAILABLE JUDGE_UNAVAILABLE."""

    def __init__(self, client: ServingClient, model: str, config: JudgeConfig) -> None:
        self._client = client
        self.model = model
        self.config = config

    @property
    def info(self) -> JudgeInfo:
        return JudgeInfo(self.model, self._client.target)

    async def grade(self, question: str, reference: str, answer: str, source: str = "") -> JudgeVerdict:
        prompt = prompt_for(question, reference, answer, source)
        try:
            reply = await self._client.complete(self.model, prompt, max_tokens=self.config.max_tokens)
        except EngineError as exc:
            raise Unavailable(
                "JUDGE_UNAVAILABLE", f"the judge {self.model} at {self._client.target} could not grade an answer: "
                f"{exc.message}", metadata={"judge_model": self.model, "target": self._client.target,
                                           "cause": exc.reason},
            ) from exc
        return parse(prompt, reply.text, with_source=bool(source))

    def check(self, suite: str, verdicts: Sequence[JudgeVerdict]) -> None:
        """UNAVAILABLE JUDGE_UNPARSEABLE when more than ``max_unparseable`` of a suite's verdicts are unparseable."""
        bad = [v for v in verdicts if not v.parsed]
        if verdicts and len(bad) / len(verdicts) > self.config.max_unparseable:
            sample = bad[0].raw.strip().replace("\n", " ")[:160]
            raise Unavailable(
                "JUDGE_UNPARSEABLE",
                f"the judge {self.model} answered {len(bad)} of {len(verdicts)} verdicts of suite {suite} in no "
                f"readable format (more than eval_judge_max_unparseable {self.config.max_unparseable:g}); "
                f"first: {bad[0].problem}: {sample!r}",
                metadata={"judge_model": self.model, "suite": suite, "unparseable": str(len(bad)),
                          "verdicts": str(len(verdicts))},
            )
