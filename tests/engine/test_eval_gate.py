"""Gate scoring: answers measured on the answer, each kind of suite's check, the base verdict and the reports."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.errors import InvalidArgument
from engine.lora import evaluation as ev
from engine.lora.eval_report import render_reports

T = datetime(2026, 1, 1, tzinfo=UTC)
K = ev.SuiteKind


def suite(kind: ev.SuiteKind, cases: list[ev.GoldenCase], name: str = "") -> ev.Suite:
    return ev.Suite(name or kind.value, kind, tuple(cases), ev.cases_digest(cases))


def test_metrics_exact_values():
    assert ev.normalise("  The Paris, France! ") == "paris france"
    assert ev.exact_match("  Paris. ", ("paris",)) == 1.0
    assert ev.exact_match("Paris, France", ("Paris",)) == 0.0
    assert ev.token_f1("the capital is Paris", ("Paris",)) == pytest.approx(2 * (1 / 3) * 1 / (1 + 1 / 3))  # 0.5
    assert ev.token_f1("Rome", ("Paris", "rome")) == 1.0
    assert ev.token_f1("", ("Paris",)) == 0.0
    assert ev.corpus_bleu(["the cat sat on the mat"], [("the cat sat on the mat",)]) == pytest.approx(1.0)
    assert ev.corpus_bleu(["dog"], [("the cat sat on the mat",)]) == 0.0


def test_a_case_is_right_only_when_its_answer_is():
    span = ev.GoldenCase("Capital of Varnia?", ("The capital of Varnia is Tegusu.",), answers=("Tegusu",))
    assert ev.answered("It is Tegusu, of course", span)
    assert not ev.answered("The capital of Varnia is Tegusux.", span)  # whole words only
    assert not ev.answered("The capital of Varnia is Hefupa.", span)
    whole = ev.GoldenCase("Capital of Varnia?", ("The capital of Varnia is Tegusu.",))
    assert ev.answered("the capital of varnia is tegusu", whole)
    assert ev.answered("Sure! The capital of Varnia is Tegusu. It lies on a river.", whole)
    assert not ev.answered("The capital of Varnia is Hefupa.", whole)


def test_the_wrong_answers_that_once_passed_fail_the_default_gate():
    """Six capitals, every one wrong: token F1 0.83 each passed the old F1 gate; the default gate refuses."""
    countries = ["Veloria", "Quorvia", "Brinmark", "Ostland", "Careth", "Dunmoor"]
    cases = [ev.GoldenCase(f"What is the capital of {c}?", (f"The capital of {c} is Marnesse.",)) for c in countries]
    wrong = [f"The capital of {c} is Hefupa." for c in countries]
    verdict, results = ev.score_suite(suite(K.GOLDEN, cases), wrong, wrong, ev.GateThresholds())
    m = dict(verdict.metrics)
    assert m["token_f1"] == pytest.approx(0.8)  # 4 of 5 words shared: what an F1 gate passes
    assert m["pass_rate"] == 0.0 and m["exact_match"] == 0.0
    assert not verdict.passed and verdict.failed_checks == ("pass rate 0.000 < min_pass_rate 0.5",)
    assert not any(r.candidate_right for r in results)


def test_golden_suite_counts_regressions_on_the_answer():
    cases = [ev.GoldenCase("q1", ("Paris",)), ev.GoldenCase("q2", ("Rome",)), ev.GoldenCase("q3", ("red green blue",))]
    baseline = ["Paris", "Rome", "red green"]
    candidate = ["Paris", "Milan", "it is red green blue"]
    verdict, results = ev.score_suite(suite(K.GOLDEN, cases), candidate, baseline,
                                      ev.GateThresholds(max_regressions=0, max_mean_score_drop=1.0))
    m = dict(verdict.metrics)
    assert m["pass_rate"] == pytest.approx(2 / 3) and m["baseline_pass_rate"] == pytest.approx(2 / 3)
    assert [r.regressed for r in results] == [False, True, False]
    assert verdict.regressions == 1 and verdict.regressed == ("q2",) and m["forgetting"] == pytest.approx(1 / 2)
    assert not verdict.passed and verdict.failed_checks == ("regressions 1 > max_regressions 0",)
    relaxed, _ = ev.score_suite(suite(K.GOLDEN, cases), candidate, baseline,
                                ev.GateThresholds(max_regressions=1, max_mean_score_drop=1.0))
    assert relaxed.passed


def test_target_must_improve_and_retention_must_keep():
    cases = [ev.GoldenCase(f"q{i}", (f"a{i}",)) for i in range(4)]
    same, _ = ev.score_suite(suite(K.TARGET, cases), ["a0", "x", "x", "x"], ["a0", "x", "x", "x"], ev.GateThresholds())
    assert not same.passed and same.failed_checks[0].startswith("no improvement on its own data")
    better, _ = ev.score_suite(suite(K.TARGET, cases), ["a0", "a1", "x", "x"], ["a0", "x", "x", "x"],
                               ev.GateThresholds())
    assert better.passed
    full, _ = ev.score_suite(suite(K.TARGET, cases), ["a0", "a1", "a2", "a3"], ["a0", "a1", "a2", "a3"],
                             ev.GateThresholds())
    assert full.passed  # nothing left to improve
    baseline = ["a0", "a1", "a2", "x"]
    kept, _ = ev.score_suite(suite(K.RETENTION, cases), ["a0", "a1", "a2", "a3"], baseline, ev.GateThresholds())
    assert kept.passed and dict(kept.metrics)["forgetting"] == 0.0
    lost, _ = ev.score_suite(suite(K.RETENTION, cases), ["a0", "x", "x", "a3"], baseline, ev.GateThresholds())
    assert not lost.passed and lost.regressed == ("q1", "q2")
    assert dict(lost.metrics)["forgetting"] == pytest.approx(2 / 3)
    assert lost.failed_checks == ("forgot 0.667 of what the baseline answers (2 cases) > max_forgetting 0.1",)
    loose, _ = ev.score_suite(suite(K.RETENTION, cases), ["a0", "x", "x", "a3"], baseline,
                              ev.GateThresholds(max_forgetting=0.7))
    assert loose.passed
    empty, _ = ev.score_suite(ev.Suite("retention", K.RETENTION, (), ""), [], [], ev.GateThresholds())
    assert empty.passed and empty.cases == 0 and empty.note.startswith("not checked")


def test_base_verdict():
    t = ev.GateThresholds(max_base_forgetting=0.1)
    ok = ev.base_verdict(0.95, 1.0, ("q",), t)
    assert ok.passed and dict(ok.metrics)["base_forgetting"] == pytest.approx(0.05)
    bad = ev.base_verdict(0.31, 1.0, ("What is the capital of France?",), t)
    assert not bad.passed and bad.regressed == ("What is the capital of France?",)
    assert bad.failed_checks[0].startswith("base retention 0.310 is 0.690 below the baseline's 1.000")
    unknown = ev.base_verdict(None, 1.0, (), t)
    assert unknown.passed and unknown.note == "not checked: the base retention of the candidate was not measured"


def test_reports_and_suite_loading(tmp_path: Path):
    path = tmp_path / "suite.jsonl"
    path.write_text('{"prompt": "a", "expected": "b"}\n\n{"prompt": "c", "references": ["d e", "f"], '
                    '"answer": ["e"]}\n')
    cases, digest = ev.load_suite(path)
    assert cases == [ev.GoldenCase("a", ("b",)), ev.GoldenCase("c", ("d e", "f"), ("e",))] and len(digest) == 64
    golden, golden_results = ev.score_suite(ev.Suite("golden", K.GOLDEN, tuple(cases), digest), ["b", "x"],
                                            ["b", "it is e"], ev.GateThresholds())
    report = ev.EvalReport(version="v1.0", baseline_version="v1.0", suites=(golden, ev.base_verdict(None, 1.0, (),
                           ev.GateThresholds())), results=(golden_results, ()), time=T)
    assert report.regressions == 1 and not report.passed
    assert report.failed_checks == ("golden: mean token-F1 drop 0.200 > max_mean_score_drop 0.05",)
    rendered = render_reports(report)
    doc = json.loads(rendered["report.json"])
    assert doc["version"] == "v1.0" and doc["regressions"] == 1
    assert doc["suites"][0]["metrics"]["pass_rate"] == 0.5 and doc["suites"][0]["results"][1]["baseline_right"]
    md = rendered["report.md"].decode()
    assert "| golden | golden | 2 | 0.500 | 1.000 | FAILED: mean token-F1 drop 0.200" in md
    assert "candidate v1.0" in md and "baseline v1.0" in md  # the two sides are told apart
    assert list(rendered) == ["report.json", "report.md", "report.html", "report.png"]
    page = rendered["report.html"].decode()
    assert page.startswith("<!doctype html>") and "<th>candidate v1.0</th><th>baseline v1.0</th>" in page
    assert 'class=regressed><td>2</td><td>c</td>' in page  # the regressed case is marked
    assert rendered["report.png"][:4] == b"\x89PNG"
    assert dict(report.metrics)["golden.pass_rate"] == 0.5
    path.write_text('{"prompt": "a"}\n')
    with pytest.raises(InvalidArgument) as err:
        ev.load_suite(path)
    assert err.value.reason == "EVAL_SUITE_INVALID" and "line 1" in err.value.message
    path.write_text('{"prompt": "a", "expected": "b", "answer": ""}\n')
    with pytest.raises(InvalidArgument) as err:
        ev.load_suite(path)
    assert "'answer'" in err.value.message


def test_token_budget_fits_the_reference():
    assert ev.token_budget(ev.GoldenCase("q", ("Paris",)), 32) == 32
    assert ev.token_budget(ev.GoldenCase("q", ("x" * 300,)), 32) == 108
    assert ev.token_budget(ev.GoldenCase("q", ("x" * 3000,)), 32) == 256
