"""Self-instruct QA generation: a served model asked for question-answer pairs grounded in one chunk, its reply
read leniently, and every pair its chunk does not support filtered out.

The generator is asked greedily through the OpenAI-style contract (engine.serving.client), with one prompt made
from :data:`PROMPT` per chunk. Its reply is read like the judge's (engine.lora.judge): lenient about decoration
(``**Q1:**``, ``1. Question -``, a JSON list of ``{"question", "answer"}``), strict about content: a question
without an answer, or an answer without a question, is *unparseable* and counted, never guessed.

A pair is kept only when its chunk supports its answer:

- every number and name the answer claims occurs in the chunk or the question (engine.lora.grounding, the
  hallucination check of evaluations, reused as it is);
- at least :data:`MIN_WORD_SUPPORT` of the answer's content words (three letters or more, not a function word)
  occur in the chunk: grounding's claims miss a wrong answer written in lower case ("it is made of glass"), and
  an answer that shares no words with its source was not read from it;
- its answer says something its question does not: at least one of its content words is not the question's
  (small models echo the question, or part of it);
- its question asks something: it has at least one content word and is not a placeholder of :data:`PROMPT`
  echoed back (``<a question about the text>``: small models copy the format lines); such a pair is counted
  as unsupported, with the reason in its verdict's detail;
- its question is not one kept already for the same document (after normalisation).

Words are compared in Unicode normal form NFC, case-folded, with a final "s" dropped, so "sources" in the
chunk supports "source" and a document whose accents are decomposed (NFD: macOS file names, many PDF text
layers) supports an answer written with precomposed ones. Only the comparison is normalised: pairs and chunks
are kept as written.

The overlap rule is hand-written: it must be deterministic, cheap and explainable per pair, as grounding's is;
an entailment model would need a model download and is itself a model to trust.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from engine import json_input
from engine.lora.grounding import FUNCTION_WORDS, unsupported

MIN_WORD_SUPPORT = 0.5
MAX_QUESTION_CHARS = 500
MAX_ANSWER_CHARS = 2000

PROMPT = """Read the text below and write {n} question-and-answer pairs about it.
Each question must be answerable from the text alone, and each answer must use only facts stated in the text.

Text:
{text}

Reply with exactly {n} pairs in this format and nothing else:
Q: <a question about the text>
A: <its answer, taken from the text>
"""

# Scripts written without spaces (CJK ideographs, kana, hangul): each character is a word.
_UNSPACED = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_WORD = re.compile(rf"[{_UNSPACED}]|(?:(?![{_UNSPACED}])[^\W\d_]){{3,}}", re.UNICODE)
_ANY_WORD = re.compile(rf"[{_UNSPACED}]|[^\s{_UNSPACED}]+")
_KEY = re.compile(r"^[\s>*#_`\-\d.)]*(q|question|a|answer)(?:\s*\d+)?[\s*_`]*[:=.)\-–]\s*(.*)$",
                  re.IGNORECASE)


@dataclass(frozen=True)
class Pair:
    question: str
    answer: str


@dataclass(frozen=True)
class Reading:
    """What a reply held: its pairs, and how many pieces of it were unparseable."""

    pairs: tuple[Pair, ...]
    unparseable: int


@dataclass(frozen=True)
class Verdict:
    """Why a pair is kept or not: ``problem`` is "" for a kept pair, else "unsupported" or "duplicate";
    ``detail`` names what its chunk lacks."""

    pair: Pair
    problem: str = ""
    detail: str = ""

    @property
    def kept(self) -> bool:
        return not self.problem


def prompt_for(text: str, n: int) -> str:
    return PROMPT.format(n=n, text=text)


def _clean(value: str) -> str:
    return value.strip().strip("*_`").strip()


def _from_json(raw: str) -> list[Pair] | None:
    start, end = raw.find("["), raw.rfind("]")
    if start < 0 or end <= start:
        return None
    try:
        doc = json_input.loads(raw[start:end + 1])
    except ValueError:
        return None
    if not isinstance(doc, list):
        return None
    pairs = []
    for item in doc:
        if isinstance(item, dict):
            q, a = item.get("question", item.get("q")), item.get("answer", item.get("a"))
            if isinstance(q, str) and isinstance(a, str) and q.strip() and a.strip():
                pairs.append(Pair(q.strip(), a.strip()))
    return pairs


def parse(raw: str) -> Reading:
    """The pairs of a reply: each ``Q:`` line (with the lines that continue it) followed by an ``A:`` line; a
    JSON list of objects with ``question`` and ``answer`` when there are no such lines."""
    pairs: list[Pair] = []
    unparseable = 0
    question: list[str] | None = None
    answer: list[str] | None = None

    def close() -> None:
        nonlocal question, answer, unparseable
        q = _clean(" ".join(question or []))
        a = _clean(" ".join(answer or []))
        if q and a:
            pairs.append(Pair(q[:MAX_QUESTION_CHARS], a[:MAX_ANSWER_CHARS]))
        elif question is not None or answer is not None:
            unparseable += 1
        question = answer = None

    for line in raw.splitlines():
        match = _KEY.match(line)
        if match:
            key, rest = match.group(1).lower()[0], match.group(2)
            if key == "q":
                close()
                question = [rest]
            elif question is not None and answer is None:
                answer = [rest]
            else:  # an answer without its question
                close()
                unparseable += 1
            continue
        if not line.strip():
            continue
        if answer is not None:
            answer.append(line.strip())
        elif question is not None:
            question.append(line.strip())
    close()
    if not pairs and not unparseable:
        from_json = _from_json(raw)
        if from_json:
            return Reading(tuple(from_json), 0)
    return Reading(tuple(pairs), unparseable + (0 if pairs or not raw.strip() else 1))


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _fold(text: str) -> str:
    """``text`` case-folded in NFC: the same characters, however composed and in whatever case, give one string."""
    return _nfc(_nfc(text).casefold())


def content_words(text: str) -> list[str]:
    """The words of three letters or more that are not function words, case-folded in NFC (a decomposed accent
    would split a word in two)."""
    return [w for w in (_fold(m.group()) for m in _WORD.finditer(_nfc(text))) if w not in FUNCTION_WORDS]


def word_count(text: str) -> int:
    """The words of ``text``: whitespace-separated runs, each character of a script written without spaces counted
    as one (a chunk of Chinese has no spaces at all)."""
    return len(_ANY_WORD.findall(text))


def _key(word: str) -> str:
    return word.removesuffix("s")


def _placeholders(template: str) -> frozenset[str]:
    """The normalised placeholders of the template's format lines (``Q: <a question about the text>``)."""
    return frozenset(normalised_question(m.group(1)) for m in re.finditer(r"<([^<>{}]+)>", template))


def check(pair: Pair, chunk: str) -> Verdict:
    """Whether ``chunk`` supports the pair's answer and the pair's question asks something (see the module
    docstring)."""
    missing = unsupported(_nfc(pair.answer), _nfc(chunk), _nfc(pair.question))
    if missing:
        return Verdict(pair, "unsupported", "claims the text lacks: " + ", ".join(missing))
    words = content_words(pair.answer)
    known = {_key(w) for w in content_words(chunk)}
    if not words:
        return Verdict(pair, "unsupported", "the answer has no content words to check")
    if not content_words(pair.question):
        return Verdict(pair, "unsupported", "the question has no content words")
    if normalised_question(pair.question) in _PLACEHOLDERS:
        return Verdict(pair, "unsupported", "the question is the prompt's placeholder, echoed")
    if {_key(w) for w in words} <= {_key(w) for w in content_words(pair.question)}:
        return Verdict(pair, "unsupported", "the answer only repeats words of the question")
    absent = [w for w in words if _key(w) not in known]
    if len(words) - len(absent) < MIN_WORD_SUPPORT * len(words):
        return Verdict(pair, "unsupported", f"{len(absent)} of {len(words)} of its words are not in the text: "
                                            + ", ".join(dict.fromkeys(absent)))
    return Verdict(pair)


def normalised_question(question: str) -> str:
    """The question's words, case-folded in NFC: the duplicate key of a question."""
    return " ".join(re.findall(r"\w+", _fold(question)))


_PLACEHOLDERS = _placeholders(PROMPT)


def select(pairs: Sequence[Pair], chunk: str, seen: set[str]) -> list[Verdict]:
    """Every pair's verdict; kept questions join ``seen``."""
    verdicts = []
    for pair in pairs:
        key = normalised_question(pair.question)
        if key in seen:
            verdicts.append(Verdict(pair, "duplicate", "asked already about this document"))
            continue
        verdict = check(pair, chunk)
        if verdict.kept:
            seen.add(key)
        verdicts.append(verdict)
    return verdicts
