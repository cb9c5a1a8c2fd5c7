"""Self-rehearsal: the base model's own answers to general prompts, mixed into a job's training examples.

EWC and replay keep what a version's parent was taught; self-rehearsal keeps what the base model did before
any adapter, without keeping anybody's data: the project ships general questions with short answers
(``data/rehearsal_prompts.jsonl``: capitals and places, people and companies, word meanings, science, arithmetic,
calendar, language; none of them a question of the base-knowledge probe, engine.continual.base_knowledge, though
of the same kinds), the base model answers them greedily (the job's model with its adapter
disabled: nothing else is loaded), and these pairs are added to the job's examples as a pool that the training
loop takes in rotation (engine.training.batching.EpochRows): each epoch trains the next few of a seeded order of
the pool, as many as make up ``fraction`` of the epoch's examples (the count replay mixes in,
engine.continual.ewc.replay_count), so an epoch costs what a sample of that size would, and the job's epochs go
through every prompt rather than the same few. Each answer is the base model's first ``MAX_NEW_TOKENS`` tokens
(an answer cut there is ``unfinished``: no end-of-turn target). The answers are built once per base model and
quantization, and cached. (The pool was long-form prompts, explanations and writing, before; held to the base
model on those, an adapter taught invented facts kept fewer of the base model's short answers:
docs/continual-learning.md.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.continual.base_knowledge import (
    GreedyAnswers,
    adapter_disabled,
    base_key,
    cached_json,
    plan_parts,
    shipped_rows,
)
from engine.continual.ewc import replay_count
from engine.domain import ChatMessage, Example
from engine.jobs.ports import CancelToken
from engine.training.base_kl import REFERENCE_TOP_K, Reference, load_references, references_of, save_references
from engine.training.datasets import encode_dataset, pad_token_id
from engine.training.models import DevicePlan
from engine.training.packing import PaddedForward
from engine.training.ports import RehearsalMix

# A short answer says it early (the base-knowledge probe reads 16 tokens too); the rest of a long one made a
# rehearsed row 35% longer than the job's own rows and kept no more on the validation seeds
# (docs/continual-learning.md).
MAX_NEW_TOKENS = 16


def shipped_prompts() -> tuple[str, ...]:
    return tuple(row["prompt"] for row in shipped_rows("rehearsal_prompts.jsonl"))


class SelfRehearsal:
    """The base model's answers to the shipped general prompts (see the module docstring)."""

    def __init__(self, cache_dir: Path, prompts: Sequence[str] | None = None,
                 max_new_tokens: int = MAX_NEW_TOKENS) -> None:
        self._cache_dir = cache_dir
        self._prompts = tuple(prompts) if prompts is not None else shipped_prompts()
        self._max_new_tokens = max_new_tokens

    def mix(self, examples: Sequence[Example], fraction: float, *, model: Any, tokenizer: Any, plan: DevicePlan,
            base_model_dir: Path, quantization: str, max_seq_length: int, cancel: CancelToken) -> RehearsalMix:
        """``examples`` then the base model's answers, of which an epoch trains ``fraction`` of its examples' worth
        (the training loop's seeded rotation picks which), with the answers' base references."""
        pairs = self.pairs(model, tokenizer, plan, base_model_dir, quantization, cancel)
        per_epoch = replay_count(len(examples), fraction, len(pairs))
        if not per_epoch:
            return RehearsalMix(list(examples), 0, 0)
        references = self.references(pairs, model, tokenizer, plan, base_model_dir, quantization, max_seq_length,
                                     cancel)
        return RehearsalMix([*examples, *pairs], per_epoch, len(pairs), tuple(references))

    def references(self, pairs: Sequence[Example], model: Any, tokenizer: Any, plan: DevicePlan,
                   base_model_dir: Path, quantization: str, max_seq_length: int,
                   cancel: CancelToken) -> list[Reference]:
        """The base model's :class:`Reference` at each answer's positions, as a job encodes them, for the KL term
        (engine.training.base_kl): computed once per base model, quantization, precision and encoding (one forward
        pass per answer), and cached."""
        encoded = encode_dataset(tokenizer, list(pairs), max_seq_length)
        rows = hashlib.sha256()
        for e in encoded:
            rows.update(repr((e.input_ids, e.labels)).encode())
        key = base_key(base_model_dir, quantization, "reference", REFERENCE_TOP_K, *plan_parts(plan),
                       rows.hexdigest())
        path = self._cache_dir / f"base-reference-{key[:32]}.safetensors"
        cached = load_references(path, key)
        if cached is not None and len(cached) == len(encoded):
            return cached
        built = references_of(model, PaddedForward(pad_token_id(tokenizer), plan), encoded, cancel=cancel)
        save_references(path, key, built)
        return built

    def pairs(self, model: Any, tokenizer: Any, plan: DevicePlan, base_model_dir: Path, quantization: str,
              cancel: CancelToken) -> list[Example]:
        """The base model's answers to the prompts (those it answers), each an example; an answer cut at
        ``max_new_tokens`` is ``unfinished`` (trained without an end-of-turn target)."""
        key = base_key(base_model_dir, quantization, "rehearsal", self._max_new_tokens, "ended",
                       *plan_parts(plan), list(self._prompts))  # greedy answers at this device and precision

        def build() -> dict[str, Any]:
            generate = GreedyAnswers(model, tokenizer, plan, max_new_tokens=self._max_new_tokens, cancel=cancel)
            with adapter_disabled(model):
                answers = generate.answers(self._prompts)
            return {"pairs": [[p, a, ended] for p, (a, ended) in zip(self._prompts, answers, strict=True) if a]}

        cached = cached_json(self._cache_dir / f"base-rehearsal-{key[:32]}.json", key, build)
        return [Example(messages=(ChatMessage("user", p), ChatMessage("assistant", a)), unfinished=not ended)
                for p, a, ended in cached["pairs"]]
