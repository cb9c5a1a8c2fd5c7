"""A KL term to the base model's distribution: what keeps an adapter's answers to general prompts the base model's.

Self-rehearsal (engine.continual.rehearsal) mixes the base model's own greedy answers to general prompts into a
job's examples. On those *anchored* examples this objective adds, at every position that predicts an answer
token, ``weight * KL(base || adapted)`` of the next-token distributions: the base model's whole distribution is the
target, not only its argmax, which is what the NLL of its greedy answer teaches. With ``BASE_KL`` the anchored
examples carry only this term (their NLL is left out); with ``SELF_REHEARSAL`` and a weight they carry both.

The direction is the forward KL, ``sum_v p_base(v) (log p_base(v) - log p_adapted(v))``: the positions are the base
model's own answers (teacher forcing), so the expectation is over the base model's distribution, as in knowledge
distillation and learning without forgetting; it is the cross-entropy to the base model's soft targets less a
constant, needs no sampling, and punishes most what the base model found likely and the adapter makes unlikely
(the mode-covering direction: a general answer the adapter would stop giving). The reverse KL suits sampling from
the policy (RLHF), which nothing here does.

The reference is the same network with the adapter disabled (``model.disable_adapter()``, as KTO does), computed
under ``torch.no_grad`` and only on the anchored examples. The base model never moves, so an example's reference
(:class:`Reference`: per position, the base model's 64 most likely tokens and the rest as one outcome, about 2.4 MB
for the shipped prompts) is computed once: given with the objective (self-rehearsal computes the shipped answers'
once per base model and caches them beside the answers, engine.continual.rehearsal), else the first time the
example is trained, and kept. At the adapter's initialisation (LoRA B = 0) the adapted model is the base model and
the term is 0; only the adapter's parameters get its gradient, since the base model's are frozen.

Per example the term is the token mean, weighted by the example's weight like its NLL, and every share is divided
by the step's total weight (the inner objective's, plus the anchored examples' when they are not in it), so the
step's loss is that of one big batch whatever the micro-batches or the layout (packed or padded).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from engine.domain import BaseProtection, BaseProtectionMethod
from engine.errors import Cancelled, FailedPrecondition
from engine.jobs.ports import CancelToken
from engine.training.batching import StepBatch
from engine.training.datasets import EncodedExample
from engine.training.objectives import WeightedSft
from engine.training.packing import ExampleForward, TargetLogits
from engine.training.run import BatchObjective
from engine.training.tensor_cache import load_tensors, save_tensors

REFERENCE_TOP_K = 64  # the base model's most likely tokens kept per position; the rest is one outcome


@dataclass(frozen=True)
class Reference:
    """The base model's next-token distribution at target positions, as the KL sees it: its ``REFERENCE_TOP_K``
    most likely tokens and all the others as one outcome. The KL over that partition is a lower bound of the full
    one (merging outcomes never raises a KL) and close to it where the base model is confident, as at its own
    greedy answers; it is what lets a job keep the reference instead of computing it again (see the module
    docstring)."""

    ids: torch.Tensor  # [N, k] the tokens kept
    logp: torch.Tensor  # [N, k] their log-probabilities
    rest: torch.Tensor  # [N] the log of the probability of every other token

    @classmethod
    def of(cls, logits: torch.Tensor) -> Reference:
        logp = F.log_softmax(logits.float(), dim=-1)
        top, ids = logp.topk(min(REFERENCE_TOP_K, logp.shape[-1] - 1), dim=-1)
        return cls(ids, top, _log_rest(logp, ids))

    def rows(self, mask: torch.Tensor) -> Reference:
        return Reference(self.ids[mask], self.logp[mask], self.rest[mask])

    @classmethod
    def per_example(cls, base: TargetLogits) -> list[Reference]:
        """Each example's reference from the base model's logits ``base`` (its positions, in order), on the CPU."""
        computed = cls.of(base.logits)
        rows = (computed.rows(base.owner == j) for j in range(base.count))
        return [Reference(row.ids.cpu(), row.logp.cpu(), row.rest.cpu()) for row in rows]

    @staticmethod
    def aligned(parts: Sequence[Reference], owner: torch.Tensor) -> Reference:
        """``parts[k]`` (example k's positions, in order) placed where ``owner`` says example k's positions are."""
        first, device = parts[0], owner.device
        ids = torch.empty((len(owner), first.ids.shape[1]), dtype=first.ids.dtype, device=device)
        logp = torch.empty((len(owner), first.logp.shape[1]), dtype=first.logp.dtype, device=device)
        rest = torch.empty(len(owner), dtype=first.rest.dtype, device=device)
        for k, part in enumerate(parts):
            at = owner == k
            ids[at], logp[at], rest[at] = part.ids.to(device), part.logp.to(device), part.rest.to(device)
        return Reference(ids, logp, rest)


def references_of(model: Any, forward: ExampleForward, examples: Sequence[EncodedExample], *,
                  batch_size: int = 8, cancel: CancelToken | None = None) -> list[Reference]:
    """Each example's :class:`Reference` (the base model's, at its target positions), on the CPU."""
    out: list[Reference] = []
    for start in range(0, len(examples), batch_size):
        if cancel is not None and cancel.cancelled:
            raise Cancelled("JOB_CANCELLED", "cancelled while computing the base model's references")
        out.extend(Reference.per_example(base_reference(model, forward, examples[start : start + batch_size])))
    return out


def save_references(path: Path, key: str, references: Sequence[Reference]) -> None:
    """``references`` written to ``path`` (safetensors, with ``key``) atomically: a reader sees all or none."""
    save_tensors(path, key, {f"{name}.{n}": getattr(r, name) for n, r in enumerate(references)
                             for name in ("ids", "logp", "rest")})


def load_references(path: Path, key: str) -> list[Reference] | None:
    """The references saved at ``path`` for ``key``; None when there are none (or they are for another key, or
    unreadable: they are computed again)."""
    tensors = load_tensors(path, key)
    if tensors is None or len(tensors) % 3:
        return None
    try:
        return [Reference(*(tensors[f"{name}.{n}"] for name in ("ids", "logp", "rest")))
                for n in range(len(tensors) // 3)]
    except KeyError:
        return None


def _log_rest(logp: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """[N] log of the probability of the tokens not in ``ids`` ([N, k]) under ``logp`` ([N, vocab])."""
    return torch.logsumexp(logp.scatter(-1, ids, float("-inf")), dim=-1)


def kl_to_reference(adapted: torch.Tensor, reference: Reference) -> torch.Tensor:
    """[N] KL(base || adapted) over the reference's partition, from the adapted model's logits ([N, vocab])."""
    logq = F.log_softmax(adapted.float(), dim=-1)
    kept = (reference.logp.exp() * (reference.logp - logq.gather(-1, reference.ids))).sum(dim=-1)
    return kept + reference.rest.exp() * (reference.rest - _log_rest(logq, reference.ids))


def per_example_kl(adapted: TargetLogits, references: Sequence[Reference]) -> tuple[torch.Tensor, torch.Tensor]:
    """[n] each example's summed KL(base || adapted) at its target positions against its reference
    (``references[i]``: example i's), and [n] its position counts."""
    return adapted.per_example(kl_to_reference(adapted.logits, Reference.aligned(references, adapted.owner)))


def summed_kl(logits: torch.Tensor, owner: torch.Tensor, held: Sequence[int], references: Sequence[Reference],
              count: int) -> torch.Tensor:
    """[count] each example's summed KL(base || adapted) over its positions (``logits`` [N, vocab], ``owner`` [N]
    their examples, all among ``held``; ``references[k]`` is example ``held[k]``'s); 0 for an example not held."""
    device = logits.device
    order = torch.full((count,), -1, dtype=torch.long, device=device)  # example -> its reference
    order[torch.tensor(held, device=device)] = torch.arange(len(held), device=device)
    kl = kl_to_reference(logits, Reference.aligned(references, order[owner]))
    return torch.zeros(count, dtype=kl.dtype, device=device).index_add(0, owner, kl)


def base_reference(model: Any, forward: ExampleForward, examples: Sequence[EncodedExample]) -> TargetLogits:
    """The base model's target logits of ``examples``: the job's model with its adapter disabled, no gradient."""
    with torch.no_grad(), model.disable_adapter():
        return forward.target_logits(model, examples)


def base_kl(model: Any, forward: ExampleForward,
            examples: Sequence[EncodedExample]) -> tuple[torch.Tensor, torch.Tensor]:
    """[n] summed KL(base || adapted) of ``examples`` (differentiable in the adapter), and [n] position counts."""
    reference = Reference.of(base_reference(model, forward, examples).logits)
    adapted = forward.target_logits(model, examples)
    return adapted.per_example(kl_to_reference(adapted.logits, reference))


class BaseKlObjective:
    """``inner``'s loss plus ``weight * KL(base || adapted)`` on the anchored examples (see the module docstring).

    ``anchored[i]``: ``run.examples[i]`` is held to the base model's distribution. ``trained``: the anchored examples
    are also the inner objective's (their NLL counts: self-rehearsal with a KL term); otherwise only the KL trains
    on them.
    """

    def __init__(self, inner: BatchObjective, anchored: Sequence[bool], weight: float, *, trained: bool,
                 references: Sequence[Reference | None] | None = None, prompt_weight: float = 0.0) -> None:
        self.inner, self.anchored, self.weight, self.trained = inner, tuple(anchored), weight, trained
        self.prompt_weight = prompt_weight
        # Each example's reference, by its index in the run: given (computed before, e.g. cached on disk), or
        # computed the first time it is trained and kept, since the base model never moves.
        self.references = tuple(references) if references is not None else (None,) * len(self.anchored)
        self._references = {i: r for i, r in enumerate(self.references) if r is not None}
        # With a prompt weight: each own example's reference at its context positions, computed when first seen.
        self._context_references: dict[int, Reference] = {}
        # Which examples carry the KL term: none at weight 0 (self-rehearsal without it, beside a prompt weight)
        self._held = tuple(a and weight > 0 for a in self.anchored)

    @property
    def references_missing(self) -> int:
        """How many examples have a reference not given (each costs a base forward pass when first seen): the
        anchored ones the KL term holds without theirs, and with a prompt weight every own one (its context's)."""
        missing = sum(1 for i, held in enumerate(self._held) if held and i not in self._references)
        return missing + (self.anchored.count(False) if self.prompt_weight > 0 else 0)

    def _context_reference_of(self, model: Any, forward: ExampleForward, examples: Sequence[EncodedExample],
                              indices: Sequence[int]) -> list[Reference]:
        """The examples' references at their context positions (the base model's), computed when first seen."""
        missing = [k for k, i in enumerate(indices) if i not in self._context_references]
        if missing:
            chunk = [examples[k] for k in missing]
            with torch.no_grad(), model.disable_adapter():
                base = forward.context_logits(model, chunk, [True] * len(chunk))[1]
            self._context_references.update(
                (indices[k], r) for k, r in zip(missing, Reference.per_example(base), strict=True))
        return [self._context_references[i] for i in indices]

    def _reference_of(self, model: Any, forward: ExampleForward, examples: Sequence[EncodedExample],
                      indices: Sequence[int]) -> list[Reference]:
        """The examples' references, each computed the first time it is seen and kept."""
        missing = [k for k, i in enumerate(indices) if i not in self._references]
        if missing:
            computed = references_of(model, forward, [examples[k] for k in missing], batch_size=len(missing))
            self._references.update((indices[k], r) for k, r in zip(missing, computed, strict=True))
        return [self._references[i] for i in indices]

    def _kl(self, model: Any, forward: ExampleForward, examples: Sequence[EncodedExample],
            indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """As :func:`base_kl`, with each example's reference computed the first time it is seen and kept."""
        references = self._reference_of(model, forward, examples, indices)
        adapted = forward.target_logits(model, examples)
        return per_example_kl(adapted, references)

    @classmethod
    def over_rehearsal(cls, inner: BatchObjective, own: int, rehearsed: int, weight: float, *,
                       trained: bool, references: Sequence[Reference] | None = None,
                       prompt_weight: float = 0.0) -> BaseKlObjective:
        """Over ``own`` examples followed by ``rehearsed`` of the base model's answers (engine.continual.rehearsal),
        with those answers' ``references`` when known; ``inner`` covers the ``own`` ones (it is extended over the
        rest, which it sees only when ``trained``)."""
        given = [None] * own + list(references) if references is not None else None
        return cls(inner.extended(rehearsed), [False] * own + [True] * rehearsed, weight, trained=trained,
                   references=given, prompt_weight=prompt_weight)

    def select(self, kept: list[int]) -> BaseKlObjective:
        return BaseKlObjective(self.inner.select(kept), [self.anchored[i] for i in kept], self.weight,
                               trained=self.trained, references=[self.references[i] for i in kept],
                               prompt_weight=self.prompt_weight)

    def extended(self, replayed: int) -> BaseKlObjective:
        return BaseKlObjective(self.inner.extended(replayed), [*self.anchored, *([False] * replayed)], self.weight,
                               trained=self.trained, references=[*self.references, *([None] * replayed)],
                               prompt_weight=self.prompt_weight)

    @staticmethod
    def _part(step: StepBatch, keep: list[int]) -> StepBatch:
        """The step's examples at the positions ``keep``, micro-batched as the step is."""
        return StepBatch([step.examples[k] for k in keep], [step.indices[k] for k in keep], step.micro_size)

    def _own(self, step: StepBatch) -> list[int]:
        """The positions of the step's own (not anchored) examples."""
        return [k for k in range(len(step.examples)) if not self.anchored[step.indices[k]]]

    def _parts(self, step: StepBatch) -> tuple[StepBatch, StepBatch]:
        """(the inner objective's examples of the step, the ones held by the KL term that predict a target token)."""
        positions = range(len(step.examples))
        held = [k for k in positions if self._held[step.indices[k]]]
        inner = list(positions) if self.trained else self._own(step)
        predicting = [k for k in held if step.examples[k].predicted_token_count]
        return self._part(step, inner), self._part(step, predicting)

    @staticmethod
    def _weights(step: StepBatch) -> torch.Tensor:
        return torch.tensor([e.weight for e in step.examples], dtype=torch.float32)

    def step_weight(self, step: StepBatch) -> float:
        inner, anchored = self._parts(step)
        own = self.inner.step_weight(inner) if inner.examples else 0.0
        return own if self.trained else own + float(self._weights(anchored).sum())

    def step_losses(self, model: Any, step: StepBatch, forward: ExampleForward) -> Iterator[torch.Tensor]:
        total = self.step_weight(step)
        if isinstance(self.inner, WeightedSft):
            # 0: a share of fillers only (a sharded run's, engine.training.distributed.ShardedGroup), which runs
            # its passes as every process of the run must: its losses are 0, not 0 / 0 (as WeightedSft's)
            yield from self._one_pass(model, step, forward, total if total > 0 else 1.0)
            return
        if total <= 0:
            return
        inner, anchored = self._parts(step)
        own = self.inner.step_weight(inner) if inner.examples else 0.0
        if own > 0:
            for share in self.inner.step_losses(model, inner, forward):
                yield share * (own / total)
        weights = self._weights(anchored)
        for micro in anchored.micro_batches:
            sums, counts = self._kl(model, forward, [anchored.examples[k] for k in micro],
                                    [anchored.indices[k] for k in micro])
            share = weights[micro.start : micro.stop].to(sums.device)
            yield self.weight * (sums / counts.clamp(min=1) * share).sum() / total
        if self.prompt_weight > 0:  # the own examples' context positions, in a pass of their own here
            own_part = self._part(step, self._own(step))
            for micro in own_part.micro_batches:
                _, context = forward.context_logits(model, [own_part.examples[k] for k in micro], [True] * len(micro))
                if len(context.owner):
                    yield self.prompt_weight * self._context_kl(model, forward, own_part, micro, context) / total

    def _one_pass(self, model: Any, step: StepBatch, forward: ExampleForward, total: float) -> Iterator[torch.Tensor]:
        """The step's loss with one forward pass per micro-batch over all its examples, the NLL of the inner ones
        and the KL of the anchored ones taken from the same logits: weighted SFT's loss is a function of them
        alone (another inner objective, such as KTO with its own reference passes, trains its part apart). Two
        passes, one per part, cost more than one over both on a CPU (the fixed cost of running every layer), and
        the value is the same."""
        inner, anchored = self._parts(step)
        in_inner, in_anchored = set(inner.indices), set(anchored.indices)
        nll_weights = torch.tensor([e.weight if i in in_inner and e.predicted_token_count else 0.0
                                    for e, i in zip(step.examples, step.indices, strict=True)])
        kl_weights = torch.tensor([e.weight if i in in_anchored else 0.0
                                   for e, i in zip(step.examples, step.indices, strict=True)])
        for micro in step.micro_batches:
            examples = [step.examples[k] for k in micro]
            own = [not self.anchored[step.indices[k]] for k in micro]
            if self.prompt_weight > 0 and any(own):
                adapted, context = forward.context_logits(model, examples, own)
            else:
                adapted, context = forward.target_logits(model, examples), None
            nll, counts = adapted.nll()
            per_token, device = counts.clamp(min=1), nll.device
            loss = (nll / per_token * nll_weights[micro.start : micro.stop].to(device)).sum()
            held = [j for j, k in enumerate(micro) if kl_weights[k] > 0]
            if held:
                references = self._reference_of(model, forward, [examples[j] for j in held],
                                                [step.indices[micro[j]] for j in held])
                at = torch.isin(adapted.owner, torch.tensor(held, device=device))
                sums = summed_kl(adapted.logits[at], adapted.owner[at], held, references, len(examples))
                loss = loss + self.weight * (sums / per_token * kl_weights[micro.start : micro.stop].to(device)).sum()
            if context is not None and len(context.owner):
                loss = loss + self.prompt_weight * self._context_kl(model, forward, step, micro, context)
            yield loss / total

    def _context_kl(self, model: Any, forward: ExampleForward, step: StepBatch, micro: range,
                    context: TargetLogits) -> torch.Tensor:
        """The weighted sum over the micro-batch's own examples of their token-mean KL(base || adapted) at their
        context positions (the prompt's and the chat markup's next tokens)."""
        held = sorted(set(context.owner.tolist()))
        references = self._context_reference_of(model, forward, [step.examples[micro[j]] for j in held],
                                                [step.indices[micro[j]] for j in held])
        sums = summed_kl(context.logits, context.owner, held, references, len(micro))
        counts = torch.bincount(context.owner, minlength=len(micro)).clamp(min=1)
        weights = torch.tensor([step.examples[k].weight for k in micro], dtype=sums.dtype, device=sums.device)
        return (sums / counts * weights).sum()


def check_shardable(objective: BatchObjective | None) -> None:
    """FailedPrecondition for a KL term a sharded (FSDP) run cannot train: one whose references are not all given
    (a reference computed when its example is first seen is a forward pass of the process holding that example
    only, and every process of a sharded run must run the same passes). The objective beside it is the spec's,
    which :func:`engine.training.models.sharding_obstacle` checks: weighted SFT, whose KL comes from its one pass."""
    if isinstance(objective, BaseKlObjective) and objective.references_missing:
        raise FailedPrecondition(
            "FSDP_OBJECTIVE_UNSUPPORTED",
            f"a sharded run trains a KL term to the base model only with every reference computed beforehand; "
            f"{objective.references_missing} of its anchored examples have none",
            metadata={"references_missing": str(objective.references_missing)},
        )


def rehearsal_objective(objective: BatchObjective | None, protection: BaseProtection, own: int,
                        rehearsed: int, references: Sequence[Reference] | None = None) -> BatchObjective | None:
    """The objective of ``own`` examples followed by ``rehearsed`` of the base model's answers, under ``protection``
    (``objective``: the own examples' objective; None: weighted SFT; ``references``: the answers' base references
    when known)."""
    if not rehearsed:
        return objective
    trained = protection.method is BaseProtectionMethod.SELF_REHEARSAL
    if protection.kl_weight > 0 or protection.prompt_kl_weight > 0 or not trained:
        return BaseKlObjective.over_rehearsal(objective or WeightedSft(), own, rehearsed, protection.kl_weight,
                                              trained=trained, references=references,
                                              prompt_weight=protection.prompt_kl_weight)
    return objective.extended(rehearsed) if objective is not None else None
