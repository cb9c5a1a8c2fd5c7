"""Diagonal Fisher information over the trainable (LoRA) parameters of a model.

Normalisation (``NORMALIZATION = "sequence_sum"``): the log-likelihood of one sample is the SUM of the
log-probabilities of its observed completion tokens, log p(y | x) = sum_t log p(y_t | x, y_<t), the
textbook per-example quantity. The Fisher is the mean over samples of the squared per-sample gradient.
A Fisher of the token-averaged loss would be about T^2 times smaller (T completion tokens), and the EWC
lambda would then mean something else entirely (see docs/continual-learning.md).

Estimators (``FisherEstimator``):

* ``EMPIRICAL``: labels are the observed completion tokens.
* ``SAMPLED`` ("true" Fisher): each completion position's label is drawn from the model's own predictive
  distribution given the observed prefix (teacher forcing), by Gumbel-max with a per-sample seed, so the
  result does not depend on batching.
* ``BATCH_MEAN_SQUARED``: the square of each batch's mean gradient, averaged over batches. Biased (about
  batch-size times too small); offered for comparison only, never in place of the exact one.

Spaces (``FisherSpace``): ``LORA_PARAMETERS`` measures every entry of the LoRA matrices A and B;
``LORA_PRODUCT`` measures every entry of each pair's product D = B @ A, keyed by the adapted module's name
(what the layer adds to its weight, ``scaling * D x``; see ``engine.ewc_product``). The per-sample gradient of
D is ``sum_t dL_n/d(lora_B out)[t] (x) x[t]`` with ``x`` the lora_A module's input.

Per-sample gradients come in closed form from one forward and one backward pass per batch: every
trainable parameter must belong to an ``nn.Linear`` (true of LoRA's A and B matrices), whose per-sample
weight gradient is ``sum_t dL_n/dout[t] (x) in[t]``. Forward hooks keep each layer's input and output;
``torch.autograd.grad`` of the summed per-sample losses gives the output gradients, which for independent
samples are exactly the per-sample ones. Only the work the log-likelihood needs is done: batches are formed
by length (less padding), cut after their last predicting position, and the LM head and log-softmax run
only where a completion token is predicted (:func:`completion_nll`). :func:`naive_fisher` is the
reference: one backward per sample, on the full logits.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from engine.continual.spec import NORMALIZATION, FisherEstimator
from engine.domain import FisherSpace
from engine.errors import Cancelled, FailedPrecondition
from engine.jobs.ports import CancelToken
from engine.training.datasets import IGNORE_INDEX, EncodedExample, collate

Diagonal = dict[str, torch.Tensor]
T = TypeVar("T")
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class FisherResult:
    diagonal: Diagonal  # canonical parameter name -> F, float32, same shape as the parameter
    sample_count: int
    estimator: FisherEstimator
    normalization: str = NORMALIZATION
    space: FisherSpace = FisherSpace.LORA_PARAMETERS


# ---- parameters -------------------------------------------------------------------------


def canonical_name(name: str, adapter_name: str = "default") -> str:
    """A PEFT parameter name as stored in ``adapter_model.safetensors`` (without the adapter name)."""
    return name.replace(f".{adapter_name}.", ".")


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Trainable parameters by canonical name, in model order."""
    return {canonical_name(n): p for n, p in model.named_parameters() if p.requires_grad}


def parameter_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {n: tuple(p.shape) for n, p in trainable_parameters(model).items()}


def lora_pair(name: str) -> tuple[str, str]:
    """("...q_proj", "A" or "B") of a canonical LoRA weight name, e.g. "...q_proj.lora_A.weight"."""
    for side in ("A", "B"):
        marker = f".lora_{side}.weight"
        if name.endswith(marker):
            return name[: -len(marker)], side
    raise FailedPrecondition(
        "UNSUPPORTED_TRAINABLE_LAYER", f"{name} is not a LoRA A or B weight; the LORA_PRODUCT space needs pairs"
    )


def lora_pairs(items: Iterable[tuple[str, T]]) -> dict[str, dict[str, T]]:
    """{module prefix: {"A": value, "B": value}} of (canonical LoRA weight name, value) items, in order."""
    pairs: dict[str, dict[str, T]] = {}
    for name, value in items:
        prefix, side = lora_pair(name)
        pairs.setdefault(prefix, {})[side] = value
    return pairs


def space_shapes(shapes: dict[str, tuple[int, ...]], space: FisherSpace) -> dict[str, tuple[int, ...]]:
    """The shapes a Fisher in ``space`` has, given the LoRA parameters' shapes by canonical name."""
    if space is FisherSpace.LORA_PARAMETERS:
        return dict(shapes)
    sides = lora_pairs(shapes.items())
    unpaired = sorted(p for p, s in sides.items() if set(s) != {"A", "B"})
    if unpaired:
        raise FailedPrecondition("UNSUPPORTED_TRAINABLE_LAYER", f"{unpaired[0]} has no complete LoRA pair")
    return {prefix: (s["B"][0], s["A"][1]) for prefix, s in sides.items()}


# ---- per-sample losses ---------------------------------------------------------------------


def sequence_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[B] negative log-likelihood of each sequence: the sum over its labelled (completion) tokens."""
    shifted = logits[:, :-1].float()
    targets = labels[:, 1:]
    token = F.cross_entropy(shifted.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none")
    return token.sum(dim=1)


def _gumbel_argmax(row_logits: torch.Tensor, seed: int) -> torch.Tensor:
    """One draw per row of ``row_logits`` [n, V] (one sample's labelled positions, in order), seeded."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    uniform = torch.rand(row_logits.shape, generator=generator).clamp_(1e-20, 1.0)
    gumbel = -torch.log(-torch.log(uniform)).to(row_logits.device)
    return (row_logits.float() + gumbel).argmax(dim=-1)


def sampled_labels(logits: torch.Tensor, labels: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
    """Replace each completion label by a draw from the model's distribution at that position.

    Gumbel-max with noise from a generator seeded per sample and shaped by that sample's own labelled
    positions, so a sample draws the same tokens whatever batch it is in.
    """
    out = labels.clone()
    with torch.no_grad():
        for row, seed in enumerate(seeds):
            positions = (labels[row, 1:] != IGNORE_INDEX).nonzero().squeeze(1)
            if positions.numel() == 0:
                continue
            out[row, positions + 1] = _gumbel_argmax(logits[row, positions], seed)
    return out


def _per_sample_nll(
    model: nn.Module, batch_examples: Sequence[EncodedExample], seeds: Sequence[int], pad_id: int,
    estimator: FisherEstimator, device: str,
) -> torch.Tensor:
    batch = collate(batch_examples, pad_id).to(device)
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    labels = batch.labels
    if estimator is FisherEstimator.SAMPLED:
        labels = sampled_labels(logits.detach(), labels, seeds)
    return sequence_nll(logits, labels)


def completion_nll(
    model: nn.Module, batch_examples: Sequence[EncodedExample], seeds: Sequence[int], pad_id: int,
    estimator: FisherEstimator, device: str,
) -> torch.Tensor:
    """:func:`_per_sample_nll` computed only where it is needed; the same values.

    The log-likelihood involves only the positions whose next token is labelled. The model is causal, so
    the batch is cut after the last such position, and the hidden states are gathered there (the model's
    own boolean ``logits_to_keep``) before the vocabulary projection and the log-softmax. No KV cache, and
    no padding mask (right padding under a causal mask needs none).
    """
    batch = collate(batch_examples, pad_id).to(device)
    keep = batch.labels[:, 1:] != IGNORE_INDEX  # [B, T-1]: position t predicts the labelled token t+1
    predicting = keep.any(dim=0).nonzero()
    width = int(predicting.max()) + 1 if predicting.numel() else 1
    keep = keep[:, :width]
    labels = batch.labels[:, 1 : width + 1][keep]
    rows = keep.nonzero()[:, 0]  # the sample of each kept position, row-major like the boolean gather
    # No padding mask: the batch is right-padded and the model causal, so no real position attends to a pad,
    # and pads carry no loss. Causal-only attention is exact here and takes the attention kernel's fast path.
    logits = model(input_ids=batch.input_ids[:, :width], logits_to_keep=keep, use_cache=False).logits
    logits = logits.reshape(-1, logits.shape[-1]).float()
    if estimator is FisherEstimator.SAMPLED:
        counts = torch.bincount(rows, minlength=len(seeds)).tolist()
        with torch.no_grad():
            labels = torch.cat([_gumbel_argmax(part, seed) if part.shape[0] else labels[:0]
                                for part, seed in zip(logits.detach().split(counts), seeds, strict=True)])
    token = F.cross_entropy(logits, labels, reduction="none")
    return torch.zeros(len(batch_examples), dtype=token.dtype, device=token.device).index_add(0, rows, token)


def _head_is_frozen(model: nn.Module) -> bool:
    """Whether the vocabulary projection holds no trainable parameter (its per-sample taps need [B, T, H])."""
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    return head is not None and not any(p.requires_grad for p in head.parameters())


# ---- closed-form per-sample gradients of Linear layers ---------------------------------------


@dataclass
class Tap:
    module: nn.Linear
    weight: str  # canonical parameter names, "" when that parameter is frozen
    bias: str
    inputs: torch.Tensor | None = None
    output: torch.Tensor | None = None

    def activations(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The input and output kept by the last forward pass."""
        if self.inputs is None or self.output is None:
            raise RuntimeError(f"no forward pass has reached {self.weight or self.bias} since its last gradient")
        return self.inputs, self.output


class LinearTaps:
    """Forward hooks keeping the input and output of every Linear layer that holds trainable parameters."""

    def __init__(self, model: nn.Module) -> None:
        self.taps: list[Tap] = []
        owners: set[str] = set()
        for module_name, module in model.named_modules():
            own = {n: p for n, p in module.named_parameters(recurse=False) if p.requires_grad}
            if not own:
                continue
            if not isinstance(module, nn.Linear) or set(own) - {"weight", "bias"}:
                raise FailedPrecondition(
                    "UNSUPPORTED_TRAINABLE_LAYER",
                    f"the Fisher is computed for Linear (LoRA) layers only; {module_name} "
                    f"({type(module).__name__}) holds trainable parameters",
                )
            prefix = canonical_name(f"{module_name}.")
            weight = prefix + "weight" if "weight" in own else ""
            tap = Tap(module, weight, prefix + "bias" if "bias" in own else "")
            owners.update(n for n in (tap.weight, tap.bias) if n)
            self.taps.append(tap)
        self._handles = [t.module.register_forward_hook(self._hook(t)) for t in self.taps]
        missing = set(trainable_parameters(model)) - owners
        if missing:
            self.close()
            raise FailedPrecondition(
                "UNSUPPORTED_TRAINABLE_LAYER", f"unsupported trainable parameters: {sorted(missing)[:3]}"
            )

    @staticmethod
    def _hook(tap: Tap) -> Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], None]:
        def keep(_module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            tap.inputs, tap.output = inputs[0], output

        return keep

    def per_sample_grads(self, per_sample_loss: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
        """(canonical name, [B, *shape] gradients of each sample's loss); consumes the stored activations."""
        captured = [t.activations() for t in self.taps]
        grads = torch.autograd.grad(per_sample_loss.sum(), [output for _, output in captured], allow_unused=True)
        batch = per_sample_loss.shape[0]
        for tap, (inputs, output), grad_out in zip(self.taps, captured, grads, strict=True):
            x = inputs.detach().reshape(batch, -1, inputs.shape[-1]).float()
            if grad_out is None:
                grad_out = torch.zeros_like(output)
            g = grad_out.reshape(batch, -1, grad_out.shape[-1]).float()
            if tap.weight:
                yield tap.weight, torch.einsum("bto,bti->boi", g, x)
            if tap.bias:
                yield tap.bias, g.sum(dim=1)
            tap.inputs = tap.output = None

    def per_sample_product_grads(self, per_sample_loss: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
        """(module prefix, [B, out, in] gradients of each sample's loss with respect to its LoRA product D)."""
        sides = lora_pairs((tap.weight, tap) for tap in self.taps)
        prefixes = list(sides)
        outputs = [sides[p]["B"].activations()[1] for p in prefixes]
        grads = torch.autograd.grad(per_sample_loss.sum(), outputs, allow_unused=True)
        batch = per_sample_loss.shape[0]
        for prefix, output, grad_out in zip(prefixes, outputs, grads, strict=True):
            a_in = sides[prefix]["A"].activations()[0]
            x = a_in.detach().reshape(batch, -1, a_in.shape[-1]).float()
            g = (grad_out if grad_out is not None else torch.zeros_like(output)).reshape(batch, -1, output.shape[-1])
            yield prefix, torch.einsum("bto,bti->boi", g.float(), x)
        for tap in self.taps:
            tap.inputs = tap.output = None

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


# ---- estimators -------------------------------------------------------------------------------


def _check_finite(name: str, value: torch.Tensor) -> None:
    if not torch.isfinite(value).all():
        raise FailedPrecondition(
            "NON_FINITE_GRADIENTS",
            f"the per-sample gradient of {name} contains NaN or infinity (or its square overflows); "
            "the adapter or the data produce a non-finite log-likelihood",
            metadata={"parameter": name},
        )


def usable_samples(data: Sequence[EncodedExample]) -> list[int]:
    """Indices of the samples with a completion token to measure; FAILED_PRECONDITION if there is none."""
    indices = [i for i, e in enumerate(data) if e.target_token_count]
    if not indices:
        raise FailedPrecondition("NO_FISHER_SAMPLES", "no sample has a completion token to measure")
    return indices


def compute_fisher(
    model: nn.Module,
    data: Sequence[EncodedExample],
    *,
    estimator: FisherEstimator = FisherEstimator.EMPIRICAL,
    space: FisherSpace = FisherSpace.LORA_PARAMETERS,
    batch_size: int = 8,
    pad_id: int = 0,
    seed: int = 0,
    cancel: CancelToken | None = None,
    progress: Progress | None = None,
) -> FisherResult:
    """Diagonal Fisher over ``data`` (vectorised, closed form) in ``space``: of the model's trainable
    parameters, or of each LoRA pair's product.

    Examples without completion tokens are skipped. The model is put in eval mode (no dropout).
    """
    indices = usable_samples(data)
    device = next(model.parameters()).device.type
    model.eval()
    params = trainable_parameters(model)
    shapes = space_shapes({n: tuple(p.shape) for n, p in params.items()}, space)
    total = {n: torch.zeros(shape, dtype=torch.float32, device=device) for n, shape in shapes.items()}
    taps = LinearTaps(model)
    per_sample = taps.per_sample_grads if space is FisherSpace.LORA_PARAMETERS else taps.per_sample_product_grads
    nll_of = completion_nll if _head_is_frozen(model) else _per_sample_nll
    if estimator is not FisherEstimator.BATCH_MEAN_SQUARED:  # per-sample sums: batch by length, less padding
        indices.sort(key=lambda i: len(data[i].input_ids))
    batches = 0
    try:
        for start in range(0, len(indices), batch_size):
            if cancel is not None and cancel.cancelled:
                raise Cancelled("JOB_CANCELLED", "the Fisher computation was cancelled")
            chunk = indices[start : start + batch_size]
            seeds = [seed * 1_000_003 + i for i in chunk]
            with torch.enable_grad():
                nll = nll_of(model, [data[i] for i in chunk], seeds, pad_id, estimator, device)
                for name, grads in per_sample(nll):
                    if estimator is FisherEstimator.BATCH_MEAN_SQUARED:
                        squares = grads.mean(dim=0).square()
                    else:
                        squares = grads.square().sum(dim=0)
                    _check_finite(name, squares)  # NaN or inf in any sample's gradient lands in its square sum
                    total[name] += squares
            batches += 1
            if progress is not None:
                progress(min(start + batch_size, len(indices)), len(indices))
    finally:
        taps.close()
    divisor = batches if estimator is FisherEstimator.BATCH_MEAN_SQUARED else len(indices)
    return FisherResult({n: t.div_(divisor).cpu() for n, t in total.items()}, len(indices), estimator, space=space)


def naive_fisher(
    model: nn.Module,
    data: Sequence[EncodedExample],
    *,
    estimator: FisherEstimator = FisherEstimator.EMPIRICAL,
    pad_id: int = 0,
    seed: int = 0,
) -> FisherResult:
    """The reference: one forward and one backward pass per sample, squared parameter gradients."""
    if estimator is FisherEstimator.BATCH_MEAN_SQUARED:
        raise ValueError("the naive loop computes per-sample estimators only")
    indices = [i for i, e in enumerate(data) if e.target_token_count]  # none: an all-zero reference
    device = next(model.parameters()).device.type
    model.eval()
    params = trainable_parameters(model)
    total = {n: torch.zeros(p.shape, dtype=torch.float32) for n, p in params.items()}
    for i in indices:
        model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            nll = _per_sample_nll(model, [data[i]], [seed * 1_000_003 + i], pad_id, estimator, device)
            nll.sum().backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
        for name, p in params.items():
            grad = p.grad if p.grad is not None else torch.zeros_like(p)
            total[name] += grad.detach().float().cpu().square()
    model.zero_grad(set_to_none=True)
    return FisherResult({n: t / max(len(indices), 1) for n, t in total.items()}, len(indices), estimator)


def select_samples(count: int, requested: int, seed: int = 0) -> list[int]:
    """Indices of ``requested`` samples out of ``count`` (all when requested >= count), seeded, sorted."""
    if requested >= count:
        return list(range(count))
    generator = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(count, generator=generator)[:requested].tolist())


def max_relative_difference(a: Diagonal, b: Diagonal) -> float:
    """max |a - b| / max(|b|) per tensor, the largest over tensors (guards against tiny denominators)."""
    worst = 0.0
    for name, reference in b.items():
        scale = float(reference.abs().max())
        if scale == 0.0:
            scale = 1.0
        worst = max(worst, float((a[name] - reference).abs().max()) / scale)
    return worst if math.isfinite(worst) else math.inf
