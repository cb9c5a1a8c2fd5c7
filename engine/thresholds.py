"""Comparing a measured rate or drop with a threshold that the docs say holds "at most" or "at least".

A rate or a drop is a float computed from counts (1.0 - 0.95 is 0.050000000000000044, 0.7 + 0.1 is
0.7999999999999999, 35/50 is not 0.7 exactly), so a value on its threshold, which the docs promise passes, would
otherwise fail by a rounding error. Every such comparison (the eval gate's thresholds, a canary's margins and error
spike, auto-rollback's and online learning's negative-feedback margins) goes through these two. The tolerance is
far below any difference one case, request or rating makes.
"""

from __future__ import annotations

_TOLERANCE = 1e-9


def at_most(value: float, limit: float) -> bool:
    """``value <= limit``, a rounding error above ``limit`` counting as on it."""
    return value <= limit + _TOLERANCE


def at_least(value: float, floor: float) -> bool:
    """``value >= floor``, a rounding error below ``floor`` counting as on it."""
    return value >= floor - _TOLERANCE
