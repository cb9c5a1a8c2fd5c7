"""EWC against the base model with a Kronecker-factored Fisher (engine.continual.base_ewc): the penalty is the K-FAC
formula, it estimates the mean KL(base || adapted) per answer token, and its factors are the base model's whatever
adapter the job's model holds, cached and read again."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from engine.continual import base_ewc as base_ewc_module
from engine.continual.base_ewc import BaseEwc, KfacPenalty, kfac_factors, lora_b_zeroed
from engine.continual.fisher import trainable_parameters
from engine.continual.rehearsal import SelfRehearsal
from engine.errors import Cancelled, FailedPrecondition
from engine.jobs.ports import CancelToken
from engine.training.datasets import IGNORE_INDEX, encode_dataset
from engine.training.loading import load_for_training
from engine.training.tensor_cache import save_tensors
from tests.engine.test_training import make_run

pytestmark = pytest.mark.model

PROMPTS = [f"Name a colour number {i}." for i in range(6)]


def _rehearsal(cache: Path, prompts: list[str] = PROMPTS) -> SelfRehearsal:
    return SelfRehearsal(cache, prompts, max_new_tokens=6)


def _penalty(loaded, base_dir: Path, cache: Path, ewc_lambda: float = 2.0,
             prompts: list[str] = PROMPTS) -> tuple[KfacPenalty, int]:
    return BaseEwc(cache, _rehearsal(cache, prompts)).penalty(
        ewc_lambda, model=loaded.model, tokenizer=loaded.tokenizer, plan=loaded.plan, base_model_dir=base_dir,
        quantization="NONE", max_seq_length=64, cancel=CancelToken())


def _move(model, scale: float, *, sides: tuple[str, ...] = ("B",), seed: int = 0) -> None:
    """Add seeded noise of ``scale`` to the LoRA weights of ``sides``."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in trainable_parameters(model).items():
            if any(f".lora_{side}." in name for side in sides):
                p.add_(torch.randn(p.shape, generator=generator) * scale)


def _dense(penalty: KfacPenalty, params: dict[str, torch.Tensor],
           anchor: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """lambda / 2 * sum tr(G dW X dW^T), dW = B A (- B* A* with an anchor), with every product formed."""
    total = torch.zeros(())
    for prefix, (g, x) in penalty.factors.items():
        w = params[f"{prefix}.lora_B.weight"] @ params[f"{prefix}.lora_A.weight"]
        if anchor is not None:
            w = w - anchor[f"{prefix}.lora_B.weight"] @ anchor[f"{prefix}.lora_A.weight"]
        total = total + torch.trace(g @ w @ x @ w.T)
    return 0.5 * penalty.ewc_lambda * total


def _same_value_and_gradients(value: torch.Tensor, dense: torch.Tensor, params: dict[str, torch.Tensor]) -> None:
    """The penalty (> 0) equals the dense formula, and so do their gradients with respect to every LoRA weight."""
    assert float(value.detach()) > 0
    torch.testing.assert_close(value, dense, rtol=1e-5, atol=0)
    names = list(params)
    grads = torch.autograd.grad(value, [params[n] for n in names])
    expected = torch.autograd.grad(dense, [params[n] for n in names])
    for name, grad, want in zip(names, grads, expected, strict=True):
        torch.testing.assert_close(grad, want, rtol=1e-4, atol=1e-7, msg=name)


def test_the_penalty_is_the_kfac_formula_and_so_is_its_gradient(tiny_model_dir: Path, tmp_path: Path) -> None:
    loaded = load_for_training(make_run(tiny_model_dir, tmp_path / "a"))
    penalty, answers = _penalty(loaded, tiny_model_dir, tmp_path / "cache", ewc_lambda=3.0)
    assert answers == len(PROMPTS)
    assert float(penalty(loaded.model).detach()) == 0  # a fresh adapter: B = 0, the base model's weights
    for g, x in penalty.factors.values():  # second moments: symmetric, positive semi-definite
        for factor in (g, x):
            torch.testing.assert_close(factor, factor.T)
            assert float(torch.linalg.eigvalsh(factor.double()).min()) > -1e-6 * float(factor.abs().max())

    _move(loaded.model, 0.05)
    params = trainable_parameters(loaded.model)
    value = penalty(loaded.model)
    dense = _dense(penalty, params)
    _same_value_and_gradients(value, dense, params)


def test_anchored_at_another_adapter_the_penalty_is_the_formula_of_the_difference(
        tiny_model_dir: Path, tmp_path: Path) -> None:
    loaded = load_for_training(make_run(tiny_model_dir, tmp_path / "a"))
    factors = _penalty(loaded, tiny_model_dir, tmp_path / "cache")[0].factors
    _move(loaded.model, 0.05, sides=("A", "B"), seed=1)
    anchor = {n: p.detach().clone() for n, p in trainable_parameters(loaded.model).items()}
    penalty = KfacPenalty(factors, 3.0, anchor)
    assert float(penalty(loaded.model).detach()) == pytest.approx(0, abs=1e-9)  # at the anchor: nothing moved
    _move(loaded.model, 0.05, sides=("A", "B"), seed=2)
    params = trainable_parameters(loaded.model)
    value, dense = penalty(loaded.model), _dense(penalty, params, anchor)
    _same_value_and_gradients(value, dense, params)


def test_at_lambda_1_the_penalty_estimates_the_mean_kl_per_answer_token(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The factors' normalisation: at a small move of every B (the quadratic regime), the penalty at lambda 1 is the
    mean KL(base || adapted) per answer token over the pool it was measured on (the tiny model's answers to 6
    prompts, 57 answer tokens), within K-FAC's approximation and the sampled Fisher's noise: a factor of 2."""
    loaded = load_for_training(make_run(tiny_model_dir, tmp_path / "a"))
    penalty, _ = _penalty(loaded, tiny_model_dir, tmp_path / "cache", ewc_lambda=1.0)
    pairs = _rehearsal(tmp_path / "cache").pairs(loaded.model, loaded.tokenizer, loaded.plan, tiny_model_dir,
                                                 "NONE", CancelToken())
    rows = encode_dataset(loaded.tokenizer, pairs, 64)
    model = loaded.model.eval()

    def answer_log_probs() -> torch.Tensor:
        out = []
        with torch.no_grad():
            for row in rows:
                at = [t - 1 for t in range(1, len(row.labels)) if row.labels[t] != IGNORE_INDEX]
                logits = model(input_ids=torch.tensor([row.input_ids])).logits[0, at]
                out.append(torch.log_softmax(logits.double(), dim=-1))
        return torch.cat(out)

    base = answer_log_probs()
    assert base.shape[0] >= 40
    _move(model, 0.01)
    kl = float((base.exp() * (base - answer_log_probs())).sum(dim=-1).mean())
    estimate = float(penalty(model).detach())
    assert kl > 0 and 0.5 < estimate / kl < 2, (estimate, kl)


def test_the_factors_are_kept_and_read_again_and_another_key_measures_anew(
        tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = load_for_training(make_run(tiny_model_dir, tmp_path / "a"))
    measured = []

    def counted(*args, **kwargs):
        measured.append(1)
        return kfac_factors(*args, **kwargs)

    monkeypatch.setattr(base_ewc_module, "kfac_factors", counted)
    cache = tmp_path / "cache"
    first, _ = _penalty(loaded, tiny_model_dir, cache)
    files = list(cache.glob("base-kfac-*.safetensors"))
    assert len(measured) == 1 and len(files) == 1
    again, _ = _penalty(loaded, tiny_model_dir, cache, ewc_lambda=4.0)
    assert len(measured) == 1  # read from the file
    assert again.ewc_lambda == 4.0 and again.factors.keys() == first.factors.keys()
    for prefix, (g, x) in first.factors.items():
        assert torch.equal(again.factors[prefix][0], g) and torch.equal(again.factors[prefix][1], x)

    _penalty(loaded, tiny_model_dir, cache, prompts=PROMPTS[:4])  # another pool: another key
    assert len(measured) == 2 and len(list(cache.glob("base-kfac-*.safetensors"))) == 2

    with safe_open(str(files[0]), framework="pt") as f:
        key = (f.metadata() or {})["key"]
    save_tensors(files[0], key, {"x.G": torch.zeros(2, 2)})  # the key's file, not factors of this model
    _penalty(loaded, tiny_model_dir, cache)
    assert len(measured) == 3


def test_the_factors_are_the_base_models_whatever_the_adapter_and_the_adapter_is_kept(
        tiny_model_dir: Path, tmp_path: Path) -> None:
    fresh = load_for_training(make_run(tiny_model_dir, tmp_path / "a"))
    penalty, _ = _penalty(fresh, tiny_model_dir, tmp_path / "fresh")

    moved = load_for_training(make_run(tiny_model_dir, tmp_path / "b"))
    _move(moved.model, 0.05, sides=("A", "B"))  # a continuation's parent: every weight of the adapter moved
    moved.model.train()
    before = {n: p.detach().clone() for n, p in trainable_parameters(moved.model).items()}
    held, _ = _penalty(moved, tiny_model_dir, tmp_path / "moved")  # another cache: measured again, on this model
    for n, p in trainable_parameters(moved.model).items():
        assert torch.equal(p, before[n]), n  # B was zeroed only while measuring
    assert moved.model.training  # in eval mode only while measuring
    for prefix, (g, x) in penalty.factors.items():  # B zeroed: the same base model, the same factors
        torch.testing.assert_close(held.factors[prefix][0], g, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(held.factors[prefix][1], x, rtol=1e-4, atol=1e-7)
    assert float(held(moved.model).detach()) > 0


def test_a_cancelled_measurement_stops_and_keeps_the_adapter(tiny_model_dir: Path, tmp_path: Path) -> None:
    loaded = load_for_training(make_run(tiny_model_dir, tmp_path / "a"))
    _move(loaded.model, 0.05)
    before = {n: p.detach().clone() for n, p in trainable_parameters(loaded.model).items()}
    pairs = _rehearsal(tmp_path / "cache").pairs(loaded.model, loaded.tokenizer, loaded.plan, tiny_model_dir,
                                                 "NONE", CancelToken())
    cancel = CancelToken()
    cancel.cancel()
    with pytest.raises(Cancelled):
        BaseEwc(tmp_path / "cache", _rehearsal(tmp_path / "cache")).factors(
            loaded.model, encode_dataset(loaded.tokenizer, pairs, 64), plan=loaded.plan,
            base_model_dir=tiny_model_dir, quantization="NONE", cancel=cancel)
    for n, p in trainable_parameters(loaded.model).items():
        assert torch.equal(p, before[n]), n
    assert not list((tmp_path / "cache").glob("base-kfac-*"))


def test_factors_of_another_model_are_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    loaded = load_for_training(make_run(tiny_model_dir, tmp_path / "a"))
    penalty, _ = _penalty(loaded, tiny_model_dir, tmp_path / "cache")
    prefix, (g, x) = next(iter(penalty.factors.items()))
    wrong = KfacPenalty({**penalty.factors, prefix: (g[:-1, :-1], x)}, 1.0)
    with pytest.raises(FailedPrecondition) as err:
        wrong(loaded.model)
    assert err.value.reason == "FISHER_SHAPE_MISMATCH"


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
