"""A number JSON cannot hold (a diverged loss is NaN, an overflowed gradient norm infinite) is stored so that it
reads back: pydantic's own dump_json writes it as null, which its validation then refuses, so one such step event
made a job's log unreadable (every Watch and GetTrainingMetrics of it INTERNAL). engine.jobs.codec.dump_json is what
the job store, its events and the other stores write with."""

from __future__ import annotations

import math

from pydantic import TypeAdapter

from engine.jobs.codec import EventCodec, dump_json
from engine.training.spec import StepMetrics


def metrics(**numbers: float) -> StepMetrics:
    base = {"step": 1, "total_steps": 2, "epoch": 1.0, "loss": 1.0, "task_loss": 1.0, "ewc_penalty": 0.0,
            "learning_rate": 1e-3, "grad_norm": 1.0, "tokens_per_second": 10.0, "eta_seconds": 3.0}
    return StepMetrics(**{**base, **numbers})


def test_a_diverged_step_event_reads_back() -> None:
    codec = EventCodec([StepMetrics])
    kind, data = codec.encode(metrics(loss=math.nan, task_loss=math.nan, grad_norm=math.inf, ewc_penalty=-math.inf))
    back = codec.decode(kind, data)
    assert isinstance(back, StepMetrics)
    assert math.isnan(back.loss) and math.isnan(back.task_loss)
    assert back.grad_norm == math.inf and back.ewc_penalty == -math.inf
    assert back.learning_rate == 1e-3 and back.step == 1


def test_finite_values_are_written_as_pydantic_writes_them() -> None:
    adapter = TypeAdapter(dict[str, list[float | str]])
    value = {"a": [1.5, "x\u00e9", 0.1], "b": []}
    assert dump_json(adapter, value) == adapter.dump_json(value)
    assert adapter.validate_json(dump_json(adapter, {"a": [math.nan, 2.0]}))["a"][1] == 2.0
