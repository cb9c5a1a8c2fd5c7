"""A seeded, stable split of examples into train, eval and test, decided by each example's prompt.

An example's split depends only on the seed and its normalised prompt (lower case, collapsed whitespace):
the same prompt lands in the same split in every dataset and every run, so two answers to one question
never straddle train and eval, and a dataset that grows keeps every earlier example where it was. The
prompt is what the model is asked: ``prompt`` of a prompt/completion example, or every turn before the last
assistant turn of a conversation.

The position in [0, 1) is the first 8 bytes of sha256("<seed>:<prompt>"): below ``test_fraction`` is test,
below ``test_fraction + eval_fraction`` is eval, the rest is train.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from engine.domain import Example


class Split(enum.StrEnum):
    TRAIN = "train"
    EVAL = "eval"
    TEST = "test"


def prompt_of(example: Example) -> str:
    """What the model is asked: the prompt, or the turns before the last assistant turn (role: content)."""
    if not example.is_chat:
        return example.prompt
    last = max((i for i, m in enumerate(example.messages) if m.role == "assistant"), default=len(example.messages))
    return "\n".join(f"{m.role}: {m.content}" for m in example.messages[:last])


def _position(seed: int, prompt: str) -> float:
    key = f"{seed}:{' '.join(prompt.lower().split())}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64


@dataclass(frozen=True)
class SplitRule:
    eval_fraction: float = 0.0
    test_fraction: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not (0 <= self.eval_fraction and 0 <= self.test_fraction and self.eval_fraction + self.test_fraction < 1):
            raise ValueError("eval_fraction and test_fraction must be >= 0 and leave some data to train on")

    @property
    def splits(self) -> bool:
        return self.eval_fraction > 0 or self.test_fraction > 0

    def of(self, example: Example) -> Split:
        return self.of_prompt(prompt_of(example))

    def of_prompt(self, prompt: str) -> Split:
        """The split of whatever asks ``prompt`` (a golden case: its ``prompt`` alone, not as a chat turn)."""
        at = _position(self.seed, prompt)
        if at < self.test_fraction:
            return Split.TEST
        return Split.EVAL if at < self.test_fraction + self.eval_fraction else Split.TRAIN

    def apply(self, examples: Sequence[Example]) -> dict[Split, list[Example]]:
        """The examples of each split, in their order."""
        parts: dict[Split, list[Example]] = {s: [] for s in Split}
        for example in examples:
            parts[self.of(example)].append(example)
        return parts
