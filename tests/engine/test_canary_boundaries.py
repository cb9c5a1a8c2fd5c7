"""A candidate exactly on the active version's rate plus the margin is promoted, as the docs and the proto say ("at
most"), also where the float sum rounds below it (0.7 + 0.1, 0.06 + 0.01); an error rate exactly on the spike
threshold rolls back ("reaches")."""

from __future__ import annotations

from engine.lora.canary import CanaryDecision, CanaryPolicy, TrafficFigures, VersionFigures, decide


def _figures(*, c_neg: int, a_neg: int, c_err: int = 0, a_err: int = 0, c_requests: int = 100) -> TrafficFigures:
    return TrafficFigures(
        active=VersionFigures("v1.0", requests=900, errors=a_err, positive=20 - a_neg, negative=a_neg),
        candidate=VersionFigures("v1.1", requests=c_requests, errors=c_err, positive=20 - c_neg, negative=c_neg),
        elapsed_seconds=60.0,
    )


def test_a_negative_rate_on_the_active_plus_the_margin_promotes() -> None:
    policy = CanaryPolicy(min_requests=100, min_feedback=20, feedback_margin=0.1)
    decided = decide(policy, _figures(c_neg=16, a_neg=14))  # 80% against 70% + 10%
    assert decided is not None and decided[0] is CanaryDecision.PROMOTED, decided
    decided = decide(policy, _figures(c_neg=17, a_neg=14))  # 85%: beyond it
    assert decided is not None and decided[0] is CanaryDecision.ROLLED_BACK, decided


def test_an_error_rate_on_the_active_plus_the_default_margin_promotes() -> None:
    policy = CanaryPolicy(min_requests=100, min_feedback=20)  # error_margin 1%
    decided = decide(policy, _figures(c_neg=4, a_neg=4, c_err=7, a_err=54))  # 7.0% against 6.0% + 1.0%
    assert decided is not None and decided[0] is CanaryDecision.PROMOTED, decided
    decided = decide(policy, _figures(c_neg=4, a_neg=4, c_err=8, a_err=54))
    assert decided is not None and decided[0] is CanaryDecision.ROLLED_BACK, decided


def test_an_error_rate_on_the_spike_threshold_rolls_back() -> None:
    policy = CanaryPolicy(min_requests=100, min_feedback=20, error_spike=0.3, error_spike_min_requests=10)
    decided = decide(policy, _figures(c_neg=0, a_neg=0, c_err=3, c_requests=10))  # 0.1 * 3 is 0.30000000000000004
    assert decided is not None and decided[0] is CanaryDecision.ROLLED_BACK and "spike" in decided[1], decided
