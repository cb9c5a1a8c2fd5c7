"""What the base model knew: a probe of general knowledge, and how much of it a trained adapter keeps.

EWC and replay protect what a version's parent was taught; this measures what the base model knew before any
adapter. The project ships general questions with short, checkable answers (``data/general_knowledge.jsonl``:
capitals, geography, science, numbers, language, everyday facts), none of them in any training data. An answer
is right when one of the question's accepted answers appears in it as whole words (case-insensitive).

* A base model's *suite*: the questions it answers right, each with its own answer as the reference. It is built
  from the model a job trains, with the adapter disabled (so nothing else is loaded), once per base model and
  quantization, and cached as a JSON file.
* *Base retention* of a trained model: the fraction of its base model's suite it still answers right. Answers
  are greedy, a few dozen tokens, in batches, through the tokenizer's chat template when it has one.

A base model that answers fewer than ten right (a tiny test model) has no usable suite: retention is not
measured, and the job says so in a warning.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from engine.domain import BaseRetention
from engine.errors import Cancelled
from engine.jobs.core import Warned
from engine.jobs.ports import CancelToken, ProgressSink
from engine.registry.peft_checks import base_model_digest
from engine.training.models import DevicePlan
from engine.training.spec import EvalReported
from engine.training.tensor_cache import write_atomically

MAX_NEW_TOKENS = 16  # a short answer says it early; longer ones ramble into chance matches
BATCH_SIZE = 16
LOST_SHOWN = 20  # prompts of lost cases recorded on a version
MIN_CASES = 10  # a suite of fewer right answers measures chance, not knowledge

Generate = Callable[[Sequence[str]], list[str]]


@dataclass(frozen=True)
class Question:
    prompt: str
    answers: tuple[str, ...]  # any of them, as whole words, makes an answer right


@dataclass(frozen=True)
class SuiteCase:
    prompt: str
    answers: tuple[str, ...]
    reference: str  # the base model's own answer


@dataclass(frozen=True)
class BaseSuite:
    key: str  # the base model (digest and quantization), the device and precision, and the questions asked
    asked: int  # questions asked
    cases: tuple[SuiteCase, ...]  # those the base model answered right


def shipped_rows(name: str) -> list[dict[str, Any]]:
    """The rows of one of the JSONL files the project ships in ``engine/continual/data``."""
    text = resources.files("engine.continual").joinpath(f"data/{name}").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def shipped_questions() -> tuple[Question, ...]:
    return tuple(Question(row["prompt"], tuple(row["answers"])) for row in shipped_rows("general_knowledge.jsonl"))


def is_right(answer: str, accepted: Sequence[str]) -> bool:
    """Whether one of ``accepted`` appears in ``answer`` as whole words, ignoring case."""
    return any(re.search(rf"(?<!\w){re.escape(a)}(?!\w)", answer, flags=re.IGNORECASE) for a in accepted)


def build_suite(questions: Sequence[Question], generate: Generate, key: str) -> BaseSuite:
    answers = generate([q.prompt for q in questions])
    cases = tuple(SuiteCase(q.prompt, q.answers, a) for q, a in zip(questions, answers, strict=True)
                  if is_right(a, q.answers))
    return BaseSuite(key, len(questions), cases)


def retention(suite: BaseSuite, generate: Generate) -> BaseRetention:
    answers = generate([c.prompt for c in suite.cases])
    lost = [c.prompt for c, a in zip(suite.cases, answers, strict=True) if not is_right(a, c.answers)]
    kept = len(suite.cases) - len(lost)
    return BaseRetention(kept / len(suite.cases), kept, len(suite.cases), tuple(lost[:LOST_SHOWN]))


class GreedyAnswers:
    """A model's greedy answers to prompts, in batches (left-padded), as chat turns when the tokenizer has a
    chat template. Stops at the end-of-turn token (the template's) or end of sequence."""

    def __init__(self, model: Any, tokenizer: Any, plan: DevicePlan, *, max_new_tokens: int = MAX_NEW_TOKENS,
                 batch_size: int = BATCH_SIZE, cancel: CancelToken | None = None) -> None:
        self._model, self._tokenizer, self._plan = model, tokenizer, plan
        self._max_new_tokens, self._batch_size = max_new_tokens, batch_size
        self._cancel = cancel

    def _text(self, prompt: str) -> str:
        if getattr(self._tokenizer, "chat_template", None):
            text: str = self._tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
            return text
        return prompt

    def _stops(self) -> list[int]:
        stops = {self._tokenizer.eos_token_id}
        end_of_turn = self._tokenizer.convert_tokens_to_ids("<|im_end|>")
        if isinstance(end_of_turn, int) and end_of_turn != self._tokenizer.unk_token_id:
            stops.add(end_of_turn)
        return [s for s in stops if s is not None]

    def __call__(self, prompts: Sequence[str]) -> list[str]:
        return [text for text, _ in self.answers(prompts)]

    @torch.no_grad()
    def answers(self, prompts: Sequence[str]) -> list[tuple[str, bool]]:
        """Each prompt's answer, and whether it ended (a stop token) rather than reaching ``max_new_tokens``."""
        tokenizer, model = self._tokenizer, self._model
        side, tokenizer.padding_side = tokenizer.padding_side, "left"
        was_training = model.training
        model.eval()
        answers: list[tuple[str, bool]] = []
        stops = self._stops()
        try:
            for start in range(0, len(prompts), self._batch_size):
                if self._cancel is not None and self._cancel.cancelled:
                    raise Cancelled("JOB_CANCELLED", "stopped while measuring base retention")
                texts = [self._text(p) for p in prompts[start : start + self._batch_size]]
                batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
                batch = batch.to(self._plan.torch_device)
                with self._plan.autocast():
                    out = model.generate(**batch, max_new_tokens=self._max_new_tokens, do_sample=False,
                                         eos_token_id=stops, pad_token_id=tokenizer.pad_token_id)
                width = batch["input_ids"].shape[1]
                answers += [(tokenizer.decode(row[width:], skip_special_tokens=True).strip(),
                             any(int(t) in stops for t in row[width:])) for row in out]
        finally:
            tokenizer.padding_side = side
            if was_training:
                model.train()
        return answers


class BaseKnowledgeProbe:
    """engine.training.recipe's ``probe``: base retention of the model a job trained (see the module docstring)."""

    def __init__(self, cache_dir: Path, questions: Sequence[Question] | None = None,
                 max_new_tokens: int = MAX_NEW_TOKENS, min_cases: int = MIN_CASES) -> None:
        self._cache_dir = cache_dir
        self._questions = tuple(questions) if questions is not None else shipped_questions()
        self._max_new_tokens = max_new_tokens
        self._min_cases = min_cases

    def measure(self, model: Any, tokenizer: Any, plan: DevicePlan, *, base_model_dir: Path, quantization: str,
                step: int, sink: ProgressSink, cancel: CancelToken) -> BaseRetention | None:
        generate = GreedyAnswers(model, tokenizer, plan, max_new_tokens=self._max_new_tokens, cancel=cancel)
        suite = self._suite(model, generate, plan, base_model_dir, quantization)
        if len(suite.cases) < self._min_cases:
            sink.emit(Warned("BASE_RETENTION_NOT_MEASURED", f"the base model answers {len(suite.cases)} of the "
                                                            f"{suite.asked} general questions right, fewer than "
                                                            f"{self._min_cases}: base retention is not measured"))
            return None
        result = retention(suite, generate)
        sink.emit(EvalReported(step=step, split="base_retention", metrics=(
            ("retention", result.retention), ("kept", float(result.kept)), ("cases", float(result.cases)))))
        return result

    def _suite(self, model: Any, generate: Generate, plan: DevicePlan, base_model_dir: Path,
               quantization: str) -> BaseSuite:
        questions = [asdict(q) for q in self._questions]
        # the base model's answers at this device and precision: a job at another precision gets its own suite
        key = base_key(base_model_dir, quantization, "suite", self._max_new_tokens, *plan_parts(plan), questions)

        def build() -> dict[str, Any]:
            with adapter_disabled(model):
                return asdict(build_suite(self._questions, generate, key))

        cached = cached_json(self._cache_dir / f"base-suite-{key[:32]}.json", key, build)
        return BaseSuite(key, cached["asked"], tuple(
            SuiteCase(c["prompt"], tuple(c["answers"]), c["reference"]) for c in cached["cases"]))


def base_key(base_model_dir: Path, quantization: str, *parts: object) -> str:
    """What a cached product of a base model depends on: its weights, its quantization and ``parts``."""
    text = json.dumps([base_model_digest(base_model_dir), quantization, *parts], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def plan_parts(plan: DevicePlan) -> tuple[str, str]:
    """The parts of a cached product's :func:`base_key` that say where it was computed: the device kind and the
    autocast dtype (a GPU's answers, logits and gradients, at fp32 or under bf16 autocast, differ from the CPU's)."""
    return plan.device, str(plan.autocast_dtype)


def adapter_disabled(model: Any) -> contextlib.AbstractContextManager[Any]:
    """The base model's behaviour: a PEFT model with its adapter disabled (a plain model as it is)."""
    return model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()


def cached_json(path: Path, key: str, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The JSON object cached at ``path`` for ``key``, or ``build()`` written there atomically (a file written
    for another key, or unreadable, is built again)."""
    with contextlib.suppress(OSError, ValueError):
        cached: dict[str, Any] = json.loads(path.read_text())
        if isinstance(cached, dict) and cached.get("key") == key:
            return cached
    value = {**build(), "key": key}
    write_atomically(path, lambda tmp: Path(tmp).write_text(json.dumps(value)))
    return value
