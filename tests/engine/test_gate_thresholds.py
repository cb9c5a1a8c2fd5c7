"""The gate's thresholds at their boundaries (engine.lora.evaluation): a value exactly on an "at most" or "at
least" threshold passes, as docs/serving.md promises, even when it is computed as a difference of floats
(1.0 - 0.95 is 0.050000000000000044, 0.8 - 0.7 is 0.10000000000000009); a value past it by one case fails."""

from __future__ import annotations

from engine.lora import evaluation as ev


def golden(n: int) -> ev.Suite:
    cases = tuple(ev.GoldenCase(f"Capital of country {i}?", (f"City{i}",)) for i in range(n))
    return ev.Suite("golden", ev.SuiteKind.GOLDEN, cases, "d")


def test_a_base_retention_exactly_max_base_forgetting_below_passes():
    # base retention is kept/cases: 35 and 40 of a 50-question probe, a drop of 0.1 (0.10000000000000009 in floats)
    verdict = ev.base_verdict(35 / 50, 40 / 50, (), ev.GateThresholds())
    assert verdict.passed, verdict.failed_checks


def test_a_base_retention_on_a_configured_threshold_passes_and_one_question_more_fails():
    thresholds = ev.GateThresholds(max_base_forgetting=0.3)
    assert ev.base_verdict(0.7, 1.0, (), thresholds).passed  # 1.0 - 0.7 is 0.30000000000000004
    failed = ev.base_verdict(34 / 50, 1.0, (), thresholds)
    assert not failed.passed and "max_base_forgetting 0.3" in failed.failed_checks[0]


def test_one_miss_in_twenty_is_a_mean_f1_drop_of_exactly_max_mean_score_drop():
    baseline = [f"City{i}" for i in range(20)]  # all right, token F1 1.0 each
    candidate = [*baseline[:19], "I do not know"]  # one miss (F1 0): mean 0.95, a drop of 0.05
    verdict, _ = ev.score_suite(golden(20), candidate, baseline, ev.GateThresholds())
    assert verdict.passed, verdict.failed_checks  # pass rate 0.95 >= 0.5, 1 regression <= 3, drop 0.05 <= 0.05
    verdict, _ = ev.score_suite(golden(20), [*baseline[:18], "I do not know", "No idea"], baseline,
                                ev.GateThresholds())  # two misses: a drop of 0.1
    assert not verdict.passed
    assert [c.split(" ", 1)[0] for c in verdict.failed_checks] == ["mean"]


def test_every_threshold_goes_through_the_shared_comparisons(monkeypatch):
    assert ev.at_most(1.0 - 0.95, 0.05) and ev.at_most(0.8 - 0.7, 0.1)
    assert not ev.at_most(0.051, 0.05)
    assert ev.at_least(0.1 + 0.2 - 0.3 + 0.7, 0.7) and not ev.at_least(0.69, 0.7)
    compared: list[float] = []  # the thresholds compared, through at_most or at_least
    at_most, at_least = ev.at_most, ev.at_least
    monkeypatch.setattr(ev, "at_most", lambda value, limit: compared.append(limit) or at_most(value, limit))
    monkeypatch.setattr(ev, "at_least", lambda value, floor: compared.append(floor) or at_least(value, floor))
    t = ev.GateThresholds(min_pass_rate=0.7, max_mean_score_drop=0.31, max_forgetting=0.11,
                          max_hallucination_rate=0.21, max_base_forgetting=0.12, min_judge_score=0.0)
    cases = tuple(ev.GoldenCase(f"Capital of country {i}?", (f"City{i}",), source=f"The capital is City{i}.")
                  for i in range(10))
    baseline = [f"City{i}" for i in range(10)]
    candidate = [*baseline[:7], "no", "no", "no"]  # pass rate 7/10 on min_pass_rate 0.7
    verdict, _ = ev.score_suite(ev.Suite("golden", ev.SuiteKind.GOLDEN, cases, "d"), candidate, baseline, t)
    assert verdict.passed, verdict.failed_checks
    ev.score_suite(ev.Suite("retention", ev.SuiteKind.RETENTION, cases, "d"), candidate, baseline, t)
    ev.base_verdict(0.9, 1.0, (), t)
    assert sorted(compared) == sorted([0.7, 0.31, 0.21, 0.11, 0.21, 0.12])
