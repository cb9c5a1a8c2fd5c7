"""Answers are compared without their punctuation, Unicode's as well as ASCII's: typographic quotes and apostrophes,
a CJK full stop are dropped as '"', "'" and "." are, so a right answer written with them is right; and the
hallucination check reads any apostrophe as ASCII's, so "It’s" opens a sentence as "It's" does and is no name.
The earlier rule stands: a reference normalisation empties (the option "A") is compared with its articles kept, and
an answer without words is never right (tests/engine/test_evaluation_empty_normalised.py)."""

from __future__ import annotations

import pytest

from engine.lora import evaluation as ev
from engine.lora.grounding import claims, unsupported

CASE = ev.GoldenCase("What is the capital of Varnia?", ("The capital of Varnia is Tegusu.",), answers=("Tegusu",))
SOURCE = "Varnia is a small country. The capital of Varnia is Tegusu."
LETTER = ev.GoldenCase("Which option is right? A, B, C or D", ("A",))


@pytest.mark.parametrize("answer", ["The capital of Varnia is “Tegusu”.", "It is ‘Tegusu’.", "Tegusu。",
                                    "«Tegusu»", "「Tegusu」", "Tegusu！"])
def test_a_right_answer_in_typographic_quotes_or_with_a_cjk_full_stop_is_right(answer: str) -> None:
    # the same answers with ASCII quotes or a full stop are right; "no punctuation" covered only string.punctuation
    assert ev.answered(answer.replace("“", '"').replace("”", '"').replace("‘", "'").replace("’", "'")
                       .replace("。", ".").replace("«", '"').replace("»", '"').replace("「", '"').replace("」", '"')
                       .replace("！", "!"), CASE)
    assert ev.answered(answer, CASE), ev.normalise(answer)
    assert ev.normalise(answer) in ("capital of varnia is tegusu", "it is tegusu", "tegusu")


def test_typographic_punctuation_is_dropped_as_asciis_is() -> None:
    assert ev.normalise("It’s “Tegusu” — the capital。") == ev.normalise("It's \"Tegusu\" - the capital.") == \
        "its tegusu capital"
    assert ev.exact_match("“Tegusu”.", ("Tegusu",)) == 1.0
    assert ev.token_f1("“Tegusu”.", ("Tegusu",)) == 1.0
    assert not ev.answered("“Tegusux”.", CASE)  # whole words still


def test_a_reference_of_one_article_is_still_compared_by_its_letters() -> None:
    assert ev.answered("The answer is “A”.", LETTER)
    assert ev.answered("「A」", LETTER)
    for wordless in ("", "“”", "。", "‘’ …", "The", "“An”."):
        assert not ev.answered(wordless, LETTER), wordless
        assert ev.token_f1(wordless, LETTER.references) == 0.0, wordless


def test_its_with_a_typographic_apostrophe_is_no_unsupported_claim() -> None:
    assert unsupported("It's Tegusu.", SOURCE, CASE.prompt) == ()
    assert unsupported("It’s Tegusu.", SOURCE, CASE.prompt) == ()  # was ('It',): "It" counted as a name
    assert unsupported("Itʼs Tegusu. I’m sure.", SOURCE, CASE.prompt) == ()
    assert unsupported("It’s Hefupa’s.", SOURCE, CASE.prompt) == ("Hefupa",)  # a wrong name is still one


def test_a_name_with_an_apostrophe_is_supported_however_the_apostrophe_is_written() -> None:
    source = "O'Brien founded Tegusu."
    assert claims("Tegusu’s founder is O’Brien.") == ["Tegusu", "O’Brien"]
    assert unsupported("Tegusu’s founder is O’Brien.", source) == ()
    assert unsupported("It was O'Brien.", "O’Brien founded Tegusu.") == ()


def test_the_gate_does_not_refuse_a_suite_for_typographic_apostrophes() -> None:
    cases = [ev.GoldenCase(f"What is the capital of country {i}?", (f"City{i}",), source=f"The capital is City{i}.")
             for i in range(5)]
    suite = ev.Suite("golden", ev.SuiteKind.GOLDEN, tuple(cases), ev.cases_digest(cases))
    answers = [f"It’s City{i}." for i in range(5)]
    verdict, _ = ev.score_suite(suite, answers, answers, ev.GateThresholds())
    assert verdict.passed, verdict.failed_checks  # was: hallucination rate 1.000 of 5 sourced cases > 0.2
    assert dict(verdict.metrics)["hallucination_rate"] == 0.0
