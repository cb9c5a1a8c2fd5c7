"""The deterministic half of the hallucination check: which claims of an answer its source does not support.

A case of a suite may carry its ``source`` (the text the answer should come from). An answer's *checkable
claims* are its numbers and its names: a word that starts with a capital letter, unless it opens a sentence and
is one of a closed list of English function words ("The", "It", "It's", "Yes", ...). A claim is supported when
the same token (case-insensitively, any apostrophe as ASCII's: "It’s" is "It's"; numbers without their thousands
separators) occurs in the source or in the question itself (an answer may repeat what it was asked). An answer
with at least one unsupported claim counts as hallucinated.

Why these rules and not a library: the check must be deterministic, cheap and explainable in a report (the
unsupported tokens are listed per case). Named-entity recognisers (spaCy, Stanza) need a model download and
change with their versions; NLTK's stopword list needs its corpus fetched. What this misses: a wrong claim
written in lower case ("it is hefupa"), or a wrong word that is neither a number nor a name ("north" for
"south"); the judge, when it is on, reads the answer against the source too (engine.lora.judge).
"""

from __future__ import annotations

import re

# The characters written as an apostrophe: ASCII's, the typographic one (U+2019, as word processors and many models
# write it), the left single quote, the modifier letter apostrophe (U+02BC), the full-width one and the acute accent.
# Words are compared with each of them as ASCII's (:func:`folded`): "It’s" is "it's", "O’Brien" "o'brien".
APOSTROPHES = "'\u2019\u2018\u02bc\uff07\u00b4"
_AS_ASCII = str.maketrans(dict.fromkeys(APOSTROPHES, "'"))

# Words that open English sentences without naming anything; a capitalised one of these is not a claim (each as
# folded() gives it: with ASCII's apostrophe).
FUNCTION_WORDS = frozenset("""
a an the this that these those there here it its it's i i'm me my we our you your he she his her they their them
yes no not sure certainly of in on at to for from by with as and or but so if then than when where what which who
whom whose why how is are was were be been being do does did has have had can could will would shall should may
might must answer well also however because although while after before since until please ok okay
""".split())

_TOKEN = re.compile(rf"\w+(?:[.,{APOSTROPHES}]\w+)*")
_SENTENCE_END = re.compile(r"[.!?:;]\s*$|\n\s*$")


# A number as written in prose: digits, a decimal part (thousands commas are dropped first). Not what float()
# reads, which takes words ("Infinity", "nan", "inf") and "1_000": a name such as "Nan" is no number.
_NUMERIC = re.compile(r"\d+(?:\.\d+)*")


def folded(word: str) -> str:
    """``word`` as words are compared: lower case, every apostrophe (APOSTROPHES) ASCII's."""
    return word.lower().translate(_AS_ASCII)


def _number(token: str) -> str | None:
    plain = token.replace(",", "").rstrip(".")
    return plain if _NUMERIC.fullmatch(plain) else None


def claims(answer: str) -> list[str]:
    """The answer's numbers and names, in order, each once (as written)."""
    found: dict[str, str] = {}
    for match in _TOKEN.finditer(answer):
        token = match.group()
        number = _number(token)
        if number is not None:
            found.setdefault(number, number)
            continue
        if not token[0].isupper():
            continue
        opens = not answer[:match.start()].strip() or bool(_SENTENCE_END.search(answer[:match.start()]))
        if opens and folded(token) in FUNCTION_WORDS:
            continue
        token = re.sub(rf"[{APOSTROPHES}]s$", "", token)  # "Tegusu's" claims "Tegusu"
        if folded(token) in {"i", "i'm"}:
            continue
        found.setdefault(folded(token), token)
    return list(found.values())


def _vocabulary(*texts: str) -> set[str]:
    words: set[str] = set()
    for text in texts:
        for token in _TOKEN.findall(text):
            number = _number(token)
            words.add(number if number is not None else folded(token))
            # "Tegusu's" holds "tegusu"
            words.update(part.lower() for part in re.split(rf"[.,{APOSTROPHES}]", token) if part)
    return words


def unsupported(answer: str, source: str, question: str = "") -> tuple[str, ...]:
    """The answer's claims that neither ``source`` nor ``question`` contains."""
    known = _vocabulary(source, question)
    return tuple(c for c in claims(answer) if (_number(c) or folded(c)) not in known)
