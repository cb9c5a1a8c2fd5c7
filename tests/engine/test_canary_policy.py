"""A canary's policy: what it accepts, and what it decides on given figures (engine/lora/canary.py)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from engine.errors import InvalidArgument
from engine.lora.canary import CanaryDecision, CanaryPolicy, TrafficFigures, VersionFigures, decide

POLICY = CanaryPolicy(share=0.1, min_requests=100, duration_seconds=60, max_duration_seconds=600,
                      feedback_margin=0.05, error_margin=0.01, min_feedback=20, error_spike=0.5,
                      error_spike_min_requests=10)


def figures(*, requests: int = 100, errors: int = 0, positive: int = 16, negative: int = 4, active_errors: int = 0,
            active_positive: int = 80, active_negative: int = 20, elapsed: float = 60.0) -> TrafficFigures:
    return TrafficFigures(
        active=VersionFigures("v1.0", requests=900, errors=active_errors, positive=active_positive,
                              negative=active_negative),
        candidate=VersionFigures("v1.1", requests=requests, errors=errors, positive=positive, negative=negative),
        elapsed_seconds=elapsed,
    )


def test_the_defaults_pass_and_each_bad_field_is_named() -> None:
    CanaryPolicy().check()
    POLICY.check()
    with pytest.raises(InvalidArgument) as err:
        CanaryPolicy(share=1.0, min_requests=-1, feedback_margin=2, error_spike=0, error_spike_min_requests=0,
                     check_interval_seconds=0, duration_seconds=30, max_duration_seconds=10).check()
    assert err.value.reason == "INVALID_CANARY_POLICY"
    assert [v.field for v in err.value.violations] == [
        "policy.share", "policy.min_requests", "policy.max_duration", "policy.feedback_margin", "policy.error_spike",
        "policy.error_spike_min_requests", "policy.check_interval"]
    for bad in (CanaryPolicy(share=0.0), CanaryPolicy(share=-0.5), CanaryPolicy(share=math.nan)):
        with pytest.raises(InvalidArgument) as err:
            bad.check()
        assert [v.field for v in err.value.violations] == ["policy.share"]
    with pytest.raises(InvalidArgument) as err:  # no evidence asked for at all
        CanaryPolicy(min_requests=0, duration_seconds=0).check()
    assert [v.field for v in err.value.violations] == ["policy.min_requests"]


def test_it_waits_for_requests_time_and_ratings_on_both_sides() -> None:
    assert decide(POLICY, figures(requests=99)) is None
    assert decide(POLICY, figures(elapsed=59)) is None
    assert decide(POLICY, figures(positive=10, negative=9)) is None  # 19 ratings of the candidate
    assert decide(POLICY, figures(active_positive=10, active_negative=9)) is None
    decision, reason = decide(POLICY, figures(requests=99, elapsed=600)) or (None, "")
    assert decision is CanaryDecision.ROLLED_BACK
    assert reason.startswith("not enough evidence after 600 s: 99 of 100 candidate requests;")


def test_it_promotes_within_the_margins_and_rolls_back_beyond_them() -> None:
    decision, reason = decide(POLICY, figures(positive=15, negative=5)) or (None, "")  # 25% vs 20%: at the margin
    assert decision is CanaryDecision.PROMOTED
    assert reason.startswith("not worse than the active version: negative feedback 25.0% vs 20.0% (margin 5.0%)")
    assert "candidate v1.1: 100 requests, 0 errors (0.0%)" in reason and "active v1.0: 900 requests" in reason
    decision, reason = decide(POLICY, figures(positive=14, negative=6)) or (None, "")  # 30% vs 20%
    assert decision is CanaryDecision.ROLLED_BACK
    assert reason.startswith("worse than the active version: negative feedback 30.0% > the active's 20.0% + margin")
    decision, reason = decide(POLICY, figures(errors=2)) or (None, "")  # 2% vs 0% errors
    assert decision is CanaryDecision.ROLLED_BACK and "error rate 2.0% > the active's 0.0% + margin 1.0%" in reason
    assert decide(POLICY, figures(errors=2, active_errors=18))[0] is CanaryDecision.PROMOTED  # type: ignore[index]
    assert decide(replace(POLICY, min_feedback=0), figures(positive=0, negative=0, active_positive=0,
                                                           active_negative=0))[0] is CanaryDecision.PROMOTED  # type: ignore[index]


def test_an_error_spike_rolls_back_at_any_time() -> None:
    assert decide(POLICY, figures(requests=9, errors=9, elapsed=1)) is None  # fewer than 10 requests
    decision, reason = decide(POLICY, figures(requests=10, errors=5, elapsed=1)) or (None, "")
    assert decision is CanaryDecision.ROLLED_BACK
    assert reason.startswith("error spike: the candidate failed 50.0% of 10 requests (spike threshold 50.0%)")
