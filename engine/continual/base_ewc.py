"""EWC against the base model with a Kronecker-factored Fisher (``BaseProtectionMethod.EWC_BASE``).

The third way a job can keep what the base model knew, beside self-rehearsal and BASE_KL (engine.continual.rehearsal,
engine.training.base_kl). No rows are mixed in: a penalty on the job's LoRA pairs, added to every step's loss (and
reported with EWC's as the run's ``ewc_penalty``), holds the adapted model's next-token distribution near the base
model's on the base model's answers to the shipped general questions (self-rehearsal's pool), without training on
them.

What it is. An adapter moves each adapted weight ``W`` by ``dW = s B A`` (``s`` LoRA's scaling). At the base model
(every B at 0) the divergence ``KL(base || adapted)`` of an answer token's next-token distribution is 0 and so is
its gradient; its second-order expansion there is ``1/2 vec(dW)^T F vec(dW)``, ``F`` the Fisher information of the
token's log-likelihood under the base model, taken here in blocks per adapted weight (the terms coupling two
weights dropped). A weight used at every position ``t`` of a sequence (``y_t = W x_t``) has the gradient
``sum_t g_t x_t^T``; K-FAC (Martens and Grosse 2015) in its "expand" form for weights shared over positions
(Eschenhagen et al. 2023) treats the positions as examples and the inputs as independent of the output gradients,
``F ~ G (x) X``, with ``X`` the mean of ``x x^T`` over every position of every row of the pool (the layer's input,
which is LoRA A's) and ``G`` the sum over positions of ``g g^T`` divided by the answer tokens, ``g`` the gradient at
the layer's output of the row's summed answer log-likelihood, averaged over sampled answers (:func:`kfac_factors`).
``g`` is taken at LoRA B's output, ``s`` times the layer's, so ``G`` carries ``s^2`` and the penalty
(:class:`KfacPenalty`) is

    lambda / 2 * sum_modules tr(G (B A) X (B A)^T) = lambda / 2 * sum_modules sum((B^T G B) * (A X A^T)),

anchored at ``B A = 0`` (the base model's own weights), the second form in r x r products (no out x in matrix
formed). At lambda 1 it estimates the mean ``KL(base || adapted)`` per answer token over the whole pool, every step.

The true Fisher. The labels whose gradients make ``G`` are sampled (:data:`KFAC_SAMPLES` a row, a seeded generator)
from the base model's own next-token distribution at each answer position, teacher-forced on its answer: the
expectation over the model's own distribution is what equals the KL's Hessian. The empirical Fisher (the gradients of
the answer's own tokens) would not: those are the base model's greedy choices, near-certain, whose gradients are
small, and it would miss the curvature of the rest of each distribution.

Why not the diagonal any more. EWC_BASE weighted each entry of ``B A`` by the base model's diagonal Fisher
(mean-normalised): it sees no correlation between entries, so a change spread along a direction the base model's
answers depend on costs little entry by entry. In bench/base_kfac.py's measurement, with the task fully learnt on
two validation seeds, the K-FAC penalty kept 0.93-0.96 of the base model's answers after a first version at lambda
256 and 1024 (0.87-0.91 at 64, the server's default) where the diagonal one kept 0.71-0.76; in a chain beside a
continuation's EWC it slowed the second task and kept the first less than BASE_KL, so it is not the default
protection (docs/continual-learning.md, EWC against the base model with a K-FAC Fisher).

Why two hooks and no curvature library. The factors are gathered by a forward pre-hook on each LoRA A (its input)
and a forward hook on each LoRA B (its output, whose gradient autograd gives for each sampled label). nngeometry
(0.4) cannot compute them: its Linear K-FAC takes ``[batch, features]`` inputs (no sequence dimension) and
differentiates with respect to the model's input (token ids here). curvlinops (3.0.1) comes close, given the LoRA A
and B weights (it differentiates its parameters: not the frozen base weights, and never a quantized base's) and a
wrapper returning only the answer positions' logits for its sampled cross-entropy, which gives this ``G``; but its
"expand" ``X`` divides each batch by its padded length, a mean of per-row means for rows of different lengths (or
padding counted), not the mean over every position, and it brings its dependencies for what two hooks do.

The factors do not depend on the job's adapter: they are measured with every B at 0 (the base model, whatever
adapter the job starts from, a continuation's parent included) and the model in eval mode, and cached per base model,
quantization, device, adapted modules (shapes and scaling), the pool as the job encodes it, and the sample count.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.continual.base_knowledge import base_key, plan_parts
from engine.continual.ewc import ModelBound, check_same_shapes, shapes_of
from engine.continual.fisher import canonical_name, lora_pairs, space_shapes, trainable_parameters
from engine.continual.rehearsal import SelfRehearsal
from engine.domain import FisherSpace
from engine.errors import Cancelled, FailedPrecondition
from engine.jobs.ports import CancelToken
from engine.training.datasets import IGNORE_INDEX, EncodedExample, encode_dataset
from engine.training.models import DevicePlan
from engine.training.sharding import whole
from engine.training.tensor_cache import load_tensors, save_tensors

KFAC_SAMPLES = 4  # labels sampled a row from the base model's distribution for G (bench/base_kfac.py's)
KFAC_SEED = 0  # the sampling generator's seed: the factors are deterministic (and part of their cache key)

# Per adapted module (its canonical prefix, e.g. "...q_proj"): (G [out, out], X [in, in]), float32.
Factors = dict[str, tuple[torch.Tensor, torch.Tensor]]
# Per group of pairs of one shape: their B and A parameters, the stacked G [n, out, out] and X [n, in, in], and the
# anchor's stacked -B* [n, out, r] and A* [n, r, in] (None: anchored at 0).
Group = tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor | None,
              torch.Tensor | None]


@contextlib.contextmanager
def lora_b_zeroed(model: nn.Module) -> Iterator[None]:
    """The model with every LoRA B at 0 (its adapters add nothing: the base model), restored on the way out."""
    params = {n: p for n, p in trainable_parameters(model).items() if ".lora_B." in n}
    saved = {n: p.detach().clone() for n, p in params.items()}
    with torch.no_grad():
        for p in params.values():
            p.zero_()
    try:
        yield
    finally:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(saved[n])


@contextlib.contextmanager
def measuring(model: Any) -> Iterator[None]:
    """The model in eval mode (no dropout) and without gradient checkpointing (its recomputed forward would hook
    each layer twice), both restored on the way out."""
    was_training = model.training
    checkpointing = bool(getattr(model, "is_activation_checkpointing", False))
    if checkpointing:
        model.gradient_checkpointing_disable()
    model.eval()
    try:
        yield
    finally:
        if checkpointing:
            model.gradient_checkpointing_enable()
        model.train(was_training)


@dataclass(frozen=True)
class LoraModules:
    """One adapted module's LoRA pair: the A and B layers and what the layer multiplies B's output by."""

    a: nn.Linear
    b: nn.Linear
    scaling: float

    @property
    def shape(self) -> tuple[int, int]:
        """The adapted weight's (out, in)."""
        return self.b.out_features, self.a.in_features


def lora_modules(model: nn.Module) -> dict[str, LoraModules]:
    """The model's LoRA pairs by canonical module prefix, in model order (FailedPrecondition when a trainable
    parameter is not a LoRA weight or has no partner)."""
    space_shapes(shapes_of(trainable_parameters(model)), FisherSpace.LORA_PRODUCT)  # complete LoRA pairs only
    layers = ((canonical_name(n), n.removesuffix(".weight")) for n, p in model.named_parameters() if p.requires_grad)
    modules = dict(model.named_modules())
    pairs: dict[str, LoraModules] = {}
    for prefix, sides in lora_pairs(layers).items():
        a_name, b_name = sides["A"], sides["B"]
        layer_name, adapter = a_name.rsplit(".lora_A.", 1)
        scaling = getattr(modules[layer_name], "scaling", {}).get(adapter)
        a, b = modules[a_name], modules[b_name]
        if scaling is None or not isinstance(a, nn.Linear) or not isinstance(b, nn.Linear):
            raise FailedPrecondition("UNSUPPORTED_TRAINABLE_LAYER",
                                     f"{prefix} is not a LoRA pair of Linear layers with a scaling")
        pairs[prefix] = LoraModules(a, b, float(scaling))
    return pairs


def kfac_factors(model: nn.Module, pool: Sequence[EncodedExample], plan: DevicePlan, *,
                 samples: int = KFAC_SAMPLES, seed: int = KFAC_SEED, cancel: CancelToken | None = None) -> Factors:
    """Per adapted module, (G, X) of the model as it is (the caller sets every B to 0: the base model), over ``pool``
    (encoded rows, one forward pass each, on ``plan``'s device and autocast; the model in eval mode meanwhile):

    * X: the mean of ``x x^T`` over every position of every row, ``x`` LoRA A's input (the layer's);
    * G: the sum over every position of ``g g^T``, ``g`` the gradient at LoRA B's output of the summed log-likelihood
      of ``samples`` draws of the row's answer tokens from the model's own next-token distributions (teacher-forced
      on the row), divided by ``samples`` times the answer tokens of the whole pool.

    Accumulated in float64, returned in float32 on the CPU. ``cancel`` is checked before each row."""
    pairs = lora_modules(model)
    device = plan.torch_device
    x_sums = {p: torch.zeros((m.shape[1],) * 2, dtype=torch.float64, device=device) for p, m in pairs.items()}
    g_sums = {p: torch.zeros((m.shape[0],) * 2, dtype=torch.float64, device=device) for p, m in pairs.items()}
    outputs: dict[str, torch.Tensor] = {}

    def add_input(prefix: str) -> Any:
        def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).double()
            x_sums[prefix].addmm_(x.T, x)
        return hook

    def keep_output(prefix: str) -> Any:
        def hook(_module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            outputs[prefix] = output
        return hook

    handles = [h for p, m in pairs.items() for h in (m.a.register_forward_pre_hook(add_input(p)),
                                                     m.b.register_forward_hook(keep_output(p)))]
    generator = torch.Generator().manual_seed(seed)  # on the CPU: the same draws whatever the device
    positions = answer_tokens = 0
    try:
        with measuring(model):
            for row in pool:
                if cancel is not None and cancel.cancelled:
                    raise Cancelled("JOB_CANCELLED", "the measurement of EWC_BASE's factors was cancelled")
                # position t - 1 predicts the answer token t
                at = [t - 1 for t in range(1, len(row.labels)) if row.labels[t] != IGNORE_INDEX]
                with torch.enable_grad(), plan.autocast():
                    logits = model(input_ids=torch.tensor([row.input_ids], device=device), use_cache=False).logits
                positions += len(row.input_ids)
                if at:
                    answer_tokens += len(at)
                    log_p = torch.log_softmax(logits[0, at].float(), dim=-1)
                    _add_sampled_gradients(log_p, outputs, g_sums, samples, generator)
                outputs.clear()
    finally:
        outputs.clear()
        for handle in handles:
            handle.remove()
    if not answer_tokens:
        raise FailedPrecondition("NO_FISHER_SAMPLES", "no answer token of the base model's to measure EWC_BASE on")
    return {p: ((g_sums[p] / (samples * answer_tokens)).float().cpu(), (x_sums[p] / positions).float().cpu())
            for p in pairs}


def _add_sampled_gradients(log_p: torch.Tensor, outputs: dict[str, torch.Tensor], g_sums: dict[str, torch.Tensor],
                           samples: int, generator: torch.Generator) -> None:
    """Add ``g^T g`` at each kept LoRA B output, for ``samples`` labels drawn from ``exp(log_p)`` [answers, vocab]."""
    prefixes = list(outputs)
    probs = log_p.detach().exp().cpu()
    for s in range(samples):
        drawn = torch.multinomial(probs, 1, generator=generator).to(log_p.device)
        grads = torch.autograd.grad(log_p.gather(1, drawn).sum(), [outputs[p] for p in prefixes],
                                    retain_graph=s < samples - 1, allow_unused=True)
        for prefix, grad in zip(prefixes, grads, strict=True):
            if grad is not None:  # None: no answer token depends on it
                g = grad.detach().reshape(-1, grad.shape[-1]).double()
                g_sums[prefix].addmm_(g.T, g)


def _sum_of(terms: list[torch.Tensor]) -> torch.Tensor:
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


class KfacPenalty:
    """``engine.training.Penalty``: ``lambda / 2 * sum_modules tr(G dW X dW^T)`` over the LoRA pairs, ``dW = B A``
    anchored at 0 (the base model; a job's), or ``B A - B* A*`` with an ``anchor`` (another adapter's LoRA tensors
    by canonical name: the base-retention benchmark's continuation held where its parent left the base model's
    answers), with the base model's K-FAC factors (see the module docstring). An estimate of ``lambda`` times the
    mean ``KL(base || adapted)`` per answer token over the pool the factors were measured on (from the anchor's
    distribution, with one, to second order at the base model's curvature).

    Computed as ``sum((B^T G B) * (A X A^T))``: r x r products, no out x in one. Pairs of one shape are stacked and go
    through batched products together (two groups for q/k/v/o of a model with grouped-query attention), so a step
    adds a handful of autograd nodes. Bound to the model it is called with (:class:`ModelBound`): the factors are
    moved to its device once.
    """

    def __init__(self, factors: Factors, ewc_lambda: float, anchor: Mapping[str, torch.Tensor] | None = None) -> None:
        self.factors = factors
        self.ewc_lambda = float(ewc_lambda)
        self.anchor = anchor
        self._bound: ModelBound[list[Group]] = ModelBound()

    def _bind(self, model: nn.Module) -> list[Group]:
        """The model's pairs grouped by shape, each group with its factors stacked on the pairs' device."""
        params = trainable_parameters(model)
        check_same_shapes({p: (g.shape[0], x.shape[0]) for p, (g, x) in self.factors.items()},
                          space_shapes(shapes_of(params), FisherSpace.LORA_PRODUCT),
                          what="EWC_BASE's factors", reason="FISHER_SHAPE_MISMATCH")
        device = next(iter(params.values())).device
        by_shape: dict[tuple[int, ...], list[str]] = {}
        for prefix, sides in lora_pairs(params.items()).items():
            by_shape.setdefault((*sides["B"].shape, sides["A"].shape[1]), []).append(prefix)
        def anchored(prefixes: list[str], side: str, sign: float) -> torch.Tensor | None:
            if self.anchor is None:
                return None
            return torch.stack([self.anchor[f"{p}.lora_{side}.weight"].float() * sign for p in prefixes]).to(device)

        return [([params[f"{p}.lora_B.weight"] for p in prefixes], [params[f"{p}.lora_A.weight"] for p in prefixes],
                 torch.stack([self.factors[p][0] for p in prefixes]).to(device),
                 torch.stack([self.factors[p][1] for p in prefixes]).to(device),
                 anchored(prefixes, "B", -1.0), anchored(prefixes, "A", 1.0))
                for prefixes in by_shape.values()]

    def __call__(self, model: nn.Module) -> torch.Tensor:
        terms: list[torch.Tensor] = []
        for bs, as_, g, x, minus_b_star, a_star in self._bound.of(model, self._bind):
            # B A needs whole rows of B and the whole of A: on a sharded model (engine.training.sharding) every
            # process gathers the LoRA pairs (a few MB) and computes the same penalty, its gradient sliced back to
            # each process's shards.
            b = torch.stack([whole(t) for t in bs]).float()  # [n, out, r]; .float(): no copy when float32
            a = torch.stack([whole(t) for t in as_]).float()  # [n, r, in]
            if minus_b_star is not None and a_star is not None:  # B A - B* A* = [B, -B*] [A; A*], rank 2r
                b, a = torch.cat([b, minus_b_star], dim=2), torch.cat([a, a_star], dim=1)
            left = torch.bmm(b.transpose(1, 2), torch.bmm(g, b))  # B^T G B [n, r, r]
            right = torch.bmm(torch.bmm(a, x), a.transpose(1, 2))  # A X A^T [n, r, r]
            terms.append((left * right.transpose(1, 2)).sum())  # tr(left @ right), summed over the group
        return _sum_of(terms) * (0.5 * self.ewc_lambda)


def _pool_digest(pool: Sequence[EncodedExample]) -> str:
    """What the factors' rows are, as the job encodes them (tokenizer, chat template, max_seq_length, answers)."""
    digest = hashlib.sha256()
    for row in pool:
        digest.update(repr((row.input_ids, row.labels)).encode())
    return digest.hexdigest()


def _check_factors(factors: dict[str, torch.Tensor], pairs: dict[str, LoraModules]) -> Factors | None:
    """The cached tensors as factors of ``pairs`` (None when they are not: another layout, another shape)."""
    expected = {f"{p}.{k}": (n, n) for p, m in pairs.items() for k, n in zip("GX", m.shape, strict=True)}
    if shapes_of(factors) != expected:
        return None
    return {p: (factors[f"{p}.G"], factors[f"{p}.X"]) for p in pairs}


class BaseEwc:
    """The EWC_BASE penalty of a job's model (see the module docstring)."""

    def __init__(self, cache_dir: Path, rehearsal: SelfRehearsal) -> None:
        self._cache_dir = cache_dir
        self._rehearsal = rehearsal

    def penalty(self, ewc_lambda: float, *, model: Any, tokenizer: Any, plan: DevicePlan, base_model_dir: Path,
                quantization: str, max_seq_length: int, cancel: CancelToken) -> tuple[KfacPenalty, int]:
        """The penalty at ``ewc_lambda``, and the number of the base model's answers its factors were measured on."""
        pairs = self._rehearsal.pairs(model, tokenizer, plan, base_model_dir, quantization, cancel)
        pool = encode_dataset(tokenizer, pairs, max_seq_length)
        factors = self.factors(model, pool, plan=plan, base_model_dir=base_model_dir, quantization=quantization,
                               cancel=cancel)
        return KfacPenalty(factors, ewc_lambda), len(pairs)

    def factors(self, model: Any, pool: Sequence[EncodedExample], *, plan: DevicePlan, base_model_dir: Path,
                quantization: str, cancel: CancelToken) -> Factors:
        """The base model's factors over ``pool`` for the model's LoRA pairs: cached, or measured with every B at 0
        (the job's adapter kept) and cached."""
        modules = lora_modules(model)
        key = base_key(base_model_dir, quantization, "kfac-factors", *plan_parts(plan), KFAC_SAMPLES, KFAC_SEED,
                       sorted((p, *m.shape, m.scaling) for p, m in modules.items()), _pool_digest(pool))
        path = self._cache_dir / f"base-kfac-{key[:32]}.safetensors"
        cached = load_tensors(path, key)
        factors = _check_factors(cached, modules) if cached is not None else None
        if factors is None:
            with lora_b_zeroed(model):
                factors = kfac_factors(model, pool, plan, cancel=cancel)
            save_tensors(path, key, {f"{p}.{k}": t for p, gx in factors.items() for k, t in zip("GX", gx, strict=True)})
        return factors
