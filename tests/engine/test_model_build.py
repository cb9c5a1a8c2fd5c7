"""transformers builds a model under process-wide patches (engine.model_build): no two builds at once."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from engine.model_build import BUILDING
from engine.training.models import load_base_model, select_device
from engine.training.spec import Precision, Quantization


def another_thread_could_build() -> bool:
    """Whether a thread other than this one takes the build lock now."""
    taken: list[bool] = []

    def attempt() -> None:
        got = BUILDING.acquire(blocking=False)
        if got:
            BUILDING.release()
        taken.append(got)

    thread = threading.Thread(target=attempt)
    thread.start()
    thread.join()
    return taken[0]


def test_a_base_model_is_built_while_no_other_thread_may_build(tiny_model_dir: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoModelForCausalLM

    build = AutoModelForCausalLM.from_pretrained
    seen: list[bool] = []

    def watched(*args, **kwargs):
        seen.append(another_thread_could_build())
        return build(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", watched)
    assert another_thread_could_build()  # free before
    model, _ = load_base_model(tiny_model_dir, plan=select_device(Precision.FP32), quantization=Quantization.NONE)
    assert seen == [False]
    assert not any(p.is_meta for p in model.parameters())
    assert another_thread_could_build()  # and free again after
