"""Eval gate scoring: exact values for exact match, token F1, BLEU, regressions and the thresholds."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from engine.errors import InvalidArgument
from engine.lora import evaluation as ev

T = datetime(2026, 1, 1, tzinfo=UTC)


def test_metrics_exact_values():
    assert ev.exact_match("  Paris. ", ("paris",)) == 1.0
    assert ev.exact_match("Paris, France", ("Paris",)) == 0.0
    assert ev.token_f1("the capital is Paris", ("Paris",)) == pytest.approx(2 * 0.25 * 1 / 1.25)  # 0.4
    assert ev.token_f1("Rome", ("Paris", "rome")) == 1.0
    assert ev.token_f1("", ("Paris",)) == 0.0
    assert ev.corpus_bleu(["the cat sat on the mat"], [("the cat sat on the mat",)]) == pytest.approx(1.0)
    assert ev.corpus_bleu(["dog"], [("the cat sat on the mat",)]) == 0.0


def test_score_counts_regressions_and_applies_thresholds():
    cases = [ev.GoldenCase("q1", ("Paris",)), ev.GoldenCase("q2", ("Rome",)), ev.GoldenCase("q3", ("red green blue",))]
    baseline = ["Paris", "Rome", "red green"]
    candidate = ["Paris", "Milan", "red green blue"]
    report = ev.score(cases, candidate, baseline, ev.GateThresholds(max_regressions=0, max_mean_score_drop=0.5,
                                                                    min_pass_rate=0.5),
                      suite_digest="d", version="v1.1", baseline_version="v1.0", time=T)
    m = dict(report.metrics)
    assert m["exact_match"] == pytest.approx(2 / 3) and m["baseline_exact_match"] == pytest.approx(2 / 3)
    assert m["token_f1"] == pytest.approx(2 / 3)
    assert m["baseline_token_f1"] == pytest.approx((1 + 1 + 0.8) / 3)
    assert m["mean_score_drop"] == pytest.approx(2.8 / 3 - 2 / 3)
    assert m["pass_rate"] == pytest.approx(2 / 3)
    assert report.regressions == 1 and [c.regressed for c in report.cases] == [False, True, False]
    assert not report.passed and report.failed_checks == ("regressions 1 > max_regressions 0",)
    loose = ev.GateThresholds(max_regressions=1, max_mean_score_drop=0.3)
    relaxed = ev.score(cases, candidate, baseline, loose, suite_digest="d", version="v1.1", baseline_version="v1.0",
                       time=T)
    assert relaxed.passed


def test_reports_and_suite_loading(tmp_path: Path):
    suite = tmp_path / "suite.jsonl"
    suite.write_text('{"prompt": "a", "expected": "b"}\n\n{"prompt": "c", "references": ["d", "e"]}\n')
    cases, digest = ev.load_suite(suite)
    assert cases == [ev.GoldenCase("a", ("b",)), ev.GoldenCase("c", ("d", "e"))] and len(digest) == 64
    report = ev.score(cases, ["b", "x"], ["b", "d"], ev.GateThresholds(), suite_digest=digest, version="v2.0",
                      baseline_version="", time=T)
    paths = ev.write_reports(report, tmp_path / "out")
    doc = json.loads(paths[0].read_text())
    assert doc["version"] == "v2.0" and doc["regressions"] == 1 and doc["metrics"]["exact_match"] == 0.5
    assert "| exact_match | 0.5000 | 1.0000 |" in paths[1].read_text()
    assert paths[2].read_bytes()[:4] == b"\x89PNG"
    suite.write_text('{"prompt": "a"}\n')
    with pytest.raises(InvalidArgument) as err:
        ev.load_suite(suite)
    assert err.value.reason == "EVAL_SUITE_INVALID" and "line 1" in err.value.message
