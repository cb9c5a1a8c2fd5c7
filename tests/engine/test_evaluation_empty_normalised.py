"""A reference that SQuAD normalisation empties (a multiple-choice letter "A", "The", "An.") is compared by its
letters, articles kept: an empty answer (or one of articles and punctuation) is never right and scores token F1 0,
while "The answer is A." contains it as a whole word. Against a reference with no letter or digit at all ("...",
which golden suites still accept) nothing is right. References that normalise to something keep SQuAD's behaviour
(tests/engine/test_eval_gate.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.lora import evaluation as ev

LETTER = ev.GoldenCase("Which option is right? A, B, C or D", ("A",))


def multiple_choice(n: int) -> ev.Suite:
    cases = [ev.GoldenCase(f"Question {i}: which option is right? A, B, C or D", ("A",)) for i in range(n)]
    return ev.Suite("golden", ev.SuiteKind.GOLDEN, tuple(cases), ev.cases_digest(cases))


@pytest.mark.parametrize("answer", ["", "   ", "the", "The.", "...", "an"])
def test_an_empty_answer_is_not_a_right_answer(answer: str):
    assert not ev.answered(answer, LETTER), f"{answer!r} counts as answering 'A'"
    assert ev.exact_match(answer, ("A",)) == 0.0
    assert ev.token_f1(answer, ("A",)) == 0.0


@pytest.mark.parametrize("answer", ["A", "a.", " (A) ", "The answer is A.", "It's option A, of course"])
def test_a_letter_reference_is_compared_by_its_letters(answer: str):
    assert ev.answered(answer, LETTER), f"{answer!r} does not count as answering 'A'"


def test_an_article_reference_is_matched_by_its_own_words_only():
    assert ev.exact_match("A", ("A",)) == 1.0 and ev.exact_match("a!", ("A.",)) == 1.0
    assert ev.exact_match("The", ("A",)) == 0.0 and ev.exact_match("B", ("A",)) == 0.0
    assert not ev.answered("The answer is B.", LETTER) and not ev.answered("an apple", LETTER)
    assert ev.answered("the", ev.GoldenCase("Which article is definite?", ("The",)))
    assert ev.answered("B", ev.GoldenCase("q", ("B",), answers=("A", "B")))
    assert ev.token_f1("A", ("A",)) == 1.0
    assert ev.token_f1("The answer is A", ("A",)) == pytest.approx(0.4)  # 1 of 4 words, the reference's one


def test_an_empty_answer_scores_nothing_against_any_reference():
    assert ev.token_f1("", ("A", "Paris", "...")) == 0.0
    assert ev.exact_match("", ("...",)) == 0.0 and not ev.answered("", ev.GoldenCase("q", ("...",)))


def test_a_candidate_answering_nothing_fails_the_golden_suite():
    verdict, _ = ev.score_suite(multiple_choice(10), [""] * 10, ["A"] * 10, ev.GateThresholds())
    metrics = dict(verdict.metrics)
    assert metrics["pass_rate"] == 0.0 and metrics["token_f1"] == 0.0 and not verdict.passed, (
        f"a candidate that answered nothing at all: pass_rate {metrics['pass_rate']}, token_f1 {metrics['token_f1']}, "
        f"passed {verdict.passed}")
    assert verdict.regressions == 10 and metrics["baseline_pass_rate"] == 1.0


def test_a_letter_reference_read_from_a_suite_file_is_scored_by_its_letters(tmp_path: Path):
    path = tmp_path / "choices.jsonl"
    path.write_text('{"prompt": "Which option?", "expected": "A"}\n{"prompt": "Which article?", "expected": "The"}\n')
    cases, digest = ev.load_suite(path)
    verdict, results = ev.score_suite(ev.Suite("choices", ev.SuiteKind.GOLDEN, tuple(cases), digest),
                                      ["The answer is A.", "the"], ["", "a"], ev.GateThresholds())
    assert [(r.candidate_right, r.baseline_right) for r in results] == [(True, False), (True, False)]
    assert dict(verdict.metrics)["baseline_token_f1"] == 0.0
