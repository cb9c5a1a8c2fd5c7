"""EWC against the base model in the product space (engine.continual.base_ewc): the base model's Fisher of each
adapted weight, whatever adapter the job's model holds, and a penalty that is 0 at the base model's weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.continual.base_ewc import BaseEwc, lora_b_zeroed
from engine.continual.fisher import trainable_parameters
from engine.continual.rehearsal import SelfRehearsal
from engine.jobs.ports import CancelToken
from engine.training.loading import load_for_training
from tests.engine.test_training import make_run

pytestmark = pytest.mark.model


def _penalty(loaded, base_dir: Path, cache: Path, ewc_lambda: float = 2.0):
    prompts = [f"Name a colour number {i}." for i in range(6)]
    base_ewc = BaseEwc(cache, SelfRehearsal(cache, prompts, max_new_tokens=6))
    return base_ewc.penalty(ewc_lambda, model=loaded.model, tokenizer=loaded.tokenizer, plan=loaded.plan,
                            base_model_dir=base_dir, quantization="NONE", max_seq_length=64, cancel=CancelToken())


def test_the_base_models_fisher_is_measured_whatever_the_adapter_and_the_adapter_is_kept(
        tiny_model_dir: Path, tmp_path: Path) -> None:
    fresh = load_for_training(make_run(tiny_model_dir, tmp_path / "a"))
    penalty, answers = _penalty(fresh, tiny_model_dir, tmp_path / "fresh")
    assert answers == 6
    assert float(penalty(fresh.model).detach()) == 0  # a fresh adapter: B = 0, the base model's weights

    moved = load_for_training(make_run(tiny_model_dir, tmp_path / "b"))
    params = trainable_parameters(moved.model)
    with torch.no_grad():
        for name, p in params.items():
            if ".lora_B." in name:
                p.add_(torch.randn_like(p) * 0.05)
    before = {n: p.detach().clone() for n, p in params.items()}
    held, _ = _penalty(moved, tiny_model_dir, tmp_path / "moved")  # another cache: measured again, on this model
    for n, p in trainable_parameters(moved.model).items():
        assert torch.equal(p, before[n]), n  # B was zeroed only while measuring
    for name, fisher in penalty.raw_fisher.items():  # B zeroed: the same base model, the same Fisher
        torch.testing.assert_close(held.raw_fisher[name], fisher, rtol=1e-4, atol=1e-10)
    assert float(held(moved.model).detach()) > 0


def test_the_fisher_is_kept_and_read_again(tiny_model_dir: Path, tmp_path: Path) -> None:
    loaded = load_for_training(make_run(tiny_model_dir, tmp_path / "a"))
    first, _ = _penalty(loaded, tiny_model_dir, tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("base-fisher-*.safetensors"))) == 1
    again, _ = _penalty(loaded, tiny_model_dir, tmp_path / "cache", ewc_lambda=4.0)
    for name, fisher in first.raw_fisher.items():
        assert torch.equal(again.raw_fisher[name], fisher)
    assert again.ewc_lambda == 4.0


def test_lora_b_zeroed_restores_every_b_even_when_the_block_fails(tiny_model_dir: Path, tmp_path: Path) -> None:
    loaded = load_for_training(make_run(tiny_model_dir, tmp_path / "a"))
    params = trainable_parameters(loaded.model)
    with torch.no_grad():
        for p in params.values():
            p.fill_(0.5)
    with pytest.raises(RuntimeError), lora_b_zeroed(loaded.model):
        assert all(float(p.abs().sum()) == 0 for n, p in params.items() if ".lora_B." in n)
        raise RuntimeError("stop")
    assert all(bool((p == 0.5).all()) for p in params.values())
