"""A run that diverges (a step's loss or gradient norm NaN or infinite) stops with FAILED_PRECONDITION
TRAINING_DIVERGED before that step changes the adapter, and saves nothing: a NaN gradient would make every weight of
the adapter NaN, and the job would publish a version that answers nothing. Through the API the job ends FAILED with
that reason and publishes no version (tests/server/test_training_diverged.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from engine.errors import FailedPrecondition
from tests.engine.test_training import make_run, train


def test_a_diverging_run_stops_before_the_step_that_diverged(tiny_model_dir: Path, tmp_path: Path) -> None:
    run = make_run(tiny_model_dir, tmp_path / "adapter", learning_rate=1e30, max_grad_norm=0.0, epochs=30)
    with pytest.raises(FailedPrecondition) as err:
        train(run)
    assert err.value.reason == "TRAINING_DIVERGED"
    meta = err.value.metadata
    assert int(meta["step"]) >= 1 and not (math.isfinite(float(meta["loss"]))
                                           and math.isfinite(float(meta["grad_norm"])))
    assert not (tmp_path / "adapter" / "adapter_model.safetensors").exists()

