"""A drift report's decision and its numbers agree: drifted exactly when p_value <= significance, and exactly when
statistic > threshold. The threshold was the interpolated (1 - significance) quantile of the null statistics while
the p-value counts them (with scipy's +1 correction for random splits, exactly over every split for few prompts), so
a report could say drifted with a p-value over the significance. Now the p-value's count decides and the threshold
is the null statistic that decision flips at (engine.drift.statistic.decision_threshold)."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pytest

from engine.drift import statistic
from engine.drift.detector import DriftDetector
from engine.drift.report import DriftConfig, DriftOutcome, TwoSampleTest
from engine.drift.statistic import two_sample_test
from tests.engine.test_drift import BASE, NOW, Registry, Serving, Source, TrainingData, chat


@pytest.mark.parametrize(("seed", "n", "m", "loc", "width"), [
    (74, 20, 20, 0.12, 8),  # the default settings: 20 prompts a side (drift_min_samples), 500 random splits
    (29, 3, 4, 0.3, 4),  # few prompts: scipy tests all 35 splits exactly (no +1 correction)
], ids=["random-splits", "every-split"])
def test_drifted_means_a_p_value_under_the_significance(seed: int, n: int, m: int, loc: float, width: int) -> None:
    """The two cases the review found: statistic over the old quantile threshold, p-value over 0.05."""
    rng = np.random.default_rng(seed)
    incoming, reference = rng.normal(size=(n, width)), rng.normal(loc=loc, size=(m, width))
    result = two_sample_test(incoming, reference, permutations=500, significance=0.05, seed=0)
    assert (result.statistic > result.threshold) == (result.p_value <= 0.05), (
        f"statistic {result.statistic} > threshold {result.threshold} says "
        f"{result.statistic > result.threshold}, p_value {result.p_value} <= 0.05 says {result.p_value <= 0.05}")


@pytest.mark.parametrize("significance", [0.01, 0.05, 0.1])
@pytest.mark.parametrize(("n", "m", "permutations"), [(20, 20, 500), (12, 9, 199), (3, 4, 500), (4, 4, 500)])
def test_statistic_over_threshold_and_p_value_agree_over_many_samples(n: int, m: int, permutations: int,
                                                                       significance: float) -> None:
    disagree = []
    for seed in range(40):
        rng = np.random.default_rng(seed)
        shift = (seed % 4) * 0.15
        x, y = rng.normal(size=(n, 6)), rng.normal(loc=shift, size=(m, 6))
        r = two_sample_test(x, y, permutations=permutations, significance=significance, seed=seed)
        if (r.statistic > r.threshold) != (r.p_value <= significance):
            disagree.append((seed, r.statistic, r.threshold, r.p_value))
    assert not disagree, f"statistic > threshold and p_value <= {significance} disagree on (seed, s, t, p): {disagree}"


def test_the_threshold_is_the_null_statistic_the_count_flips_at() -> None:
    decision_threshold = statistic.decision_threshold
    null = np.arange(1.0, 100.0)  # 99 random splits: p = (k + 1) / 100, k of them at least the statistic
    # p <= 0.05 means k <= 4: the statistic must be over the 5th largest, 95.
    assert decision_threshold(null, 96.0, True, significance=0.05, adjustment=1) == 95.0
    assert decision_threshold(null, 95.0, False, significance=0.05, adjustment=1) == 95.0
    # every split (no +1): 20 of them, p = k / 20 <= 0.05 means k <= 1: over the largest but one, 19
    assert decision_threshold(np.arange(1.0, 21.0), 20.0, True, significance=0.05, adjustment=0) == 19.0


def test_too_few_splits_for_the_significance_can_never_drift() -> None:
    rng = np.random.default_rng(0)
    far_apart = rng.normal(size=(30, 8)), rng.normal(loc=3.0, size=(30, 8))
    r = two_sample_test(*far_apart, permutations=20, significance=0.01, seed=0)  # the smallest p-value is 1/21
    assert r.p_value > 0.01 and r.threshold == math.inf, r
    few = two_sample_test(far_apart[0][:3], far_apart[1][:2], permutations=500, significance=0.05, seed=0)
    assert few.permutations == 10 and few.p_value > 0.05 and not few.statistic > few.threshold, few  # all 10 splits


class FixedTest(DriftDetector):
    """A detector whose test gives the numbers the old code disagreed on."""

    def __init__(self, test: TwoSampleTest, **kwargs) -> None:
        super().__init__(**kwargs)
        self.fixed = test

    def _test(self, base_model, incoming, reference) -> TwoSampleTest:
        return self.fixed


@pytest.mark.parametrize(("p_value", "outcome"), [(0.052, DriftOutcome.NO_DRIFT), (0.05, DriftOutcome.DRIFTED),
                                                  (0.002, DriftOutcome.DRIFTED)])
async def test_the_detector_decides_by_the_p_value(p_value: float, outcome: DriftOutcome) -> None:
    prompts = [f"question {i}?" for i in range(20)]
    detector = FixedTest(
        TwoSampleTest(statistic=0.03, threshold=0.029, p_value=p_value, permutations=500),
        config=DriftConfig(permutations=500, min_samples=20), source=Source(prompts), serving=Serving("v1.0"),
        versions=Registry(), training_data=TrainingData([chat(p) for p in prompts]), embedder=None,
        base_models=lambda: {BASE}, clock=lambda: NOW)
    report = await detector.report(BASE, window=timedelta(days=30))
    assert report.outcome is outcome, f"p_value {p_value} against significance 0.05 gave {report.outcome}"
    assert report.drifted == (report.p_value <= report.significance), report
