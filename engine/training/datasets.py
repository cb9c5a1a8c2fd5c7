"""Training datasets: safe path resolution, JSONL validation, digests and completion-only tokenisation.

Two JSONL line shapes are accepted::

    {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}
    {"prompt": "...", "completion": "..."}

Either may carry a numeric ``weight`` > 0. Loss is computed on assistant/completion tokens only, on every assistant
turn of a conversation; a messages line with ``"last_turn_only": true`` (as feedback frozen into a stored dataset
writes its judged conversations, ``Example.last_turn_only``) has its last assistant turn alone as target.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine import json_input
from engine.domain import ChatMessage, Example
from engine.errors import FailedPrecondition, FieldViolation, InvalidArgument

IGNORE_INDEX = -100
ROLES = ("assistant", "system", "user")
DATASET_PATH_FIELD = "spec.jsonl.path"


# ---- paths --------------------------------------------------------------------


def resolve_dataset_path(data_root: Path, relative: str, field_path: str = DATASET_PATH_FIELD) -> Path:
    """Return the real path of ``relative`` if it is an existing file strictly inside ``data_root``."""

    def outside(description: str) -> InvalidArgument:
        return InvalidArgument(
            "DATASET_PATH_OUTSIDE_ROOT",
            f"dataset path {relative!r} {description}",
            violations=[FieldViolation(field_path, description)],
        )

    if not relative or not relative.strip():
        raise outside("must not be empty")
    candidate = Path(relative)
    if candidate.is_absolute() or relative.startswith(("/", "\\")):
        raise outside("must be relative to the data root, not absolute")
    if ".." in candidate.parts:
        raise outside("must not contain '..'")
    root = data_root.resolve()
    resolved = (root / candidate).resolve()
    if resolved == root or not resolved.is_relative_to(root):
        raise outside("resolves outside the data root")
    try:
        description = "" if resolved.is_file() else "is not a regular file" if resolved.exists() else "does not exist"
    except OSError as exc:  # e.g. a name longer than the file system allows
        description = f"cannot be looked up ({exc.strerror})"
    if description:
        raise InvalidArgument(
            "DATASET_NOT_FOUND",
            f"dataset {relative!r} {description}",
            violations=[FieldViolation(field_path, description)],
        )
    return resolved


# ---- examples -------------------------------------------------------------------






class _LineProblems:
    """Problems of one line, turned into field violations named ``line[n].<path>``."""

    def __init__(self, line_no: int, sink: list[FieldViolation]) -> None:
        self.line_no = line_no
        self.sink = sink
        self.count = 0

    def add(self, path: str, description: str) -> None:
        field = f"line[{self.line_no}]" + (f".{path}" if path else "")
        subject = f"{path} " if path else ""
        self.sink.append(FieldViolation(field, f"line {self.line_no}: {subject}{description}"))
        self.count += 1


def _parse_weight(obj: dict[str, Any], problems: _LineProblems) -> float:
    weight = obj.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        problems.add("weight", "must be a number")
        return 1.0
    try:
        value = float(weight)
    except OverflowError:  # an integer too large for a float (JSON has no size limit: 400 digits parse)
        value = math.inf
    if not math.isfinite(value) or value <= 0:
        problems.add("weight", "must be a finite number > 0")
        return 1.0
    return value


def _parse_last_turn_only(obj: dict[str, Any], problems: _LineProblems) -> bool:
    value = obj.get("last_turn_only", False)
    if not isinstance(value, bool):
        problems.add("last_turn_only", "must be true or false")
        return False
    return value


def _parse_messages(raw: Any, problems: _LineProblems) -> tuple[ChatMessage, ...]:
    if not isinstance(raw, list) or not raw:
        problems.add("messages", "must be a non-empty list")
        return ()
    messages: list[ChatMessage] = []
    for i, item in enumerate(raw):
        path = f"messages[{i}]"
        if not isinstance(item, dict):
            problems.add(path, "must be an object with role and content")
            continue
        role, content = item.get("role"), item.get("content")
        if role not in ROLES:
            problems.add(f"{path}.role", f"must be one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            problems.add(f"{path}.content", "must be a string")
        if role in ROLES and isinstance(content, str):
            messages.append(ChatMessage(role, content))
    if len(messages) == len(raw):
        if not any(m.role == "assistant" for m in messages):
            problems.add("messages", "must contain at least one assistant message")
        elif messages[-1].role != "assistant":
            problems.add(f"messages[{len(raw) - 1}].role", "the last message must be from the assistant")
    return tuple(messages)


def _parse_line(obj: Any, problems: _LineProblems) -> Example | None:
    if not isinstance(obj, dict):
        problems.add("", "must be a JSON object")
        return None
    before = problems.count
    weight = _parse_weight(obj, problems)
    if "messages" in obj:
        if "prompt" in obj or "completion" in obj:
            problems.add("", "must have either messages or prompt/completion, not both")
            return None
        messages = _parse_messages(obj["messages"], problems)
        last_turn_only = _parse_last_turn_only(obj, problems)
        return Example(messages=messages, weight=weight, last_turn_only=last_turn_only) \
            if problems.count == before else None
    if "prompt" not in obj and "completion" not in obj:
        problems.add("", "must have either messages or prompt and completion")
        return None
    prompt, completion = obj.get("prompt"), obj.get("completion")
    if not isinstance(prompt, str):
        problems.add("prompt", "must be a string")
    if not isinstance(completion, str) or not completion:
        problems.add("completion", "must be a non-empty string")
    if problems.count != before or not isinstance(prompt, str) or not isinstance(completion, str):
        return None  # (a prompt or completion that is not a string is one of the problems counted)
    return Example(prompt=prompt, completion=completion, weight=weight)


def load_jsonl(path: Path, *, max_problems: int = 20, label: str = "",
               field_path: str = DATASET_PATH_FIELD) -> list[Example]:
    """Parse and validate the whole file; raise one InvalidArgument listing up to ``max_problems``.

    ``label`` names the data in messages (default: the file's name); ``field_path`` is the request field an
    empty file is blamed on."""
    label = label or path.name
    violations: list[FieldViolation] = []
    examples: list[Example] = []
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            problems = _LineProblems(line_no, violations)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                problems.add("", "is not valid UTF-8")
                continue
            if not text.strip():
                continue
            try:
                obj = json_input.loads(text)  # a line nested too deeply, or no Unicode text, is a ValueError too
            except ValueError as exc:
                why = f"{exc.msg} at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else str(exc)
                problems.add("", f"invalid JSON ({why})")
                continue
            example = _parse_line(obj, problems)
            if example is not None:
                examples.append(example)
    if violations:
        shown = violations[:max_problems]
        more = len(violations) - len(shown)
        summary = "; ".join(v.description for v in shown[:5])
        raise InvalidArgument(
            "DATASET_INVALID",
            f"dataset {label} has {len(violations)} problem(s): {summary}"
            + (f" (+{len(violations) - 5} more)" if len(violations) > 5 else ""),
            violations=shown,
            metadata={"problem_count": str(len(violations)), "problems_not_shown": str(more)},
        )
    if not examples:
        raise InvalidArgument(
            "DATASET_EMPTY",
            f"dataset {label} contains no examples",
            violations=[FieldViolation(field_path, "the file contains no examples")],
        )
    return examples






# ---- tokenisation -----------------------------------------------------------------


@dataclass(frozen=True)
class EncodedExample:
    input_ids: list[int]
    labels: list[int]
    weight: float = 1.0

    @property
    def target_token_count(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)

    @property
    def predicted_token_count(self) -> int:
        """Target tokens a next-token loss covers (all but one at position 0, which nothing predicts)."""
        return sum(1 for label in self.labels[1:] if label != IGNORE_INDEX)


def _render(tokenizer: Any, messages: Sequence[ChatMessage], *, add_generation_prompt: bool) -> str:
    text = tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in messages],
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
    )
    if not isinstance(text, str):
        raise FailedPrecondition("CHAT_TEMPLATE_UNSUPPORTED", "the chat template did not render to text")
    return text


def _assistant_spans(tokenizer: Any, messages: Sequence[ChatMessage], unfinished: bool = False,
                     last_turn_only: bool = False) -> tuple[str, list[tuple[int, int]]]:
    """Render the conversation and return the character spans of each assistant turn (with end-of-turn), or of the
    last one alone when ``last_turn_only`` (see ``Example.last_turn_only``).
    ``unfinished``: the last turn is cut (see ``Example.unfinished``): the text ends with its content, without
    the end-of-turn marker, when the template renders the content as it is (else the turn is kept whole)."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise FailedPrecondition("CHAT_TEMPLATE_MISSING", "the base model's tokenizer has no chat template")
    full = _render(tokenizer, messages, add_generation_prompt=False)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message.role != "assistant" or (last_turn_only and i < len(messages) - 1):
            continue
        prefix = _render(tokenizer, messages[:i], add_generation_prompt=True)
        through = _render(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if not through.startswith(prefix) or not full.startswith(through):
            raise FailedPrecondition(
                "CHAT_TEMPLATE_NOT_INCREMENTAL",
                "the chat template does not render conversations prefix by prefix, "
                "so assistant turns cannot be located",
            )
        end = len(through.rstrip())  # keep the end-of-turn marker, drop the trailing newline
        content = message.content.strip()
        at = through.find(content, len(prefix)) if unfinished and i == len(messages) - 1 and content else -1
        if at >= 0:
            end = at + len(content)
            full = full[:end]
        if end > len(prefix):
            spans.append((len(prefix), end))
    return full, spans


def encode_example(tokenizer: Any, example: Example, max_seq_length: int) -> EncodedExample:
    """Tokenise one example; labels are IGNORE_INDEX except on assistant/completion tokens."""
    if example.is_chat:
        text, spans = _assistant_spans(tokenizer, example.messages, example.unfinished, example.last_turn_only)
        encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        eos: list[int] = []
    else:
        text = example.prompt + example.completion
        spans = [(len(example.prompt), len(text))]
        encoding = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None and not example.unfinished else []
    input_ids = list(encoding["input_ids"])
    labels = [IGNORE_INDEX] * len(input_ids)
    for index, (start, end) in enumerate(encoding["offset_mapping"]):
        if end > start and any(start < s_end and end > s_start for s_start, s_end in spans):
            labels[index] = input_ids[index]
    input_ids += eos
    labels += eos
    return EncodedExample(input_ids[:max_seq_length], labels[:max_seq_length], example.weight)


def encode_dataset(tokenizer: Any, examples: Sequence[Example], max_seq_length: int) -> list[EncodedExample]:
    """Encode every example; raise DATASET_NO_TARGET_TOKENS if none keeps a target token."""
    encoded = [encode_example(tokenizer, example, max_seq_length) for example in examples]
    if not any(e.target_token_count for e in encoded):
        raise InvalidArgument(
            "DATASET_NO_TARGET_TOKENS",
            f"no example has a completion token within max_seq_length={max_seq_length}",
            violations=[
                FieldViolation(
                    "spec.hyperparameters.max_seq_length",
                    "every example is truncated before its first assistant/completion token",
                )
            ],
        )
    return encoded


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor  # [B, T] long
    attention_mask: torch.Tensor  # [B, T] long
    labels: torch.Tensor  # [B, T] long, IGNORE_INDEX on padding and prompt tokens
    weights: torch.Tensor  # [B] float32

    def to(self, device: str) -> Batch:
        return Batch(
            *(t.to(device) for t in (self.input_ids, self.attention_mask, self.labels, self.weights))
        )


def pad_token_id(tokenizer: Any) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def collate(batch: Sequence[EncodedExample], pad_id: int) -> Batch:
    """Right-pad a batch: pad tokens get ``pad_id``, label IGNORE_INDEX and attention 0."""
    width = max(len(e.input_ids) for e in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for row, example in enumerate(batch):
        n = len(example.input_ids)
        input_ids[row, :n] = torch.tensor(example.input_ids, dtype=torch.long)
        labels[row, :n] = torch.tensor(example.labels, dtype=torch.long)
        attention[row, :n] = 1
    weights = torch.tensor([e.weight for e in batch], dtype=torch.float32)
    return Batch(input_ids, attention, labels, weights)
