"""Domain types every context uses: LoRA shapes, Fisher spaces, data sources, examples and dataset summaries.

Plain, immutable dataclasses. The server converts protobuf to and from these in one place (``server/convert*.py``);
the stores serialise them with pydantic's TypeAdapter.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")


class Pin(Protocol):
    """A record that something being stored names and needs live (a training job its stored dataset version and the
    adapter version it continues; a version published from a checkpoint, the same): checked in the transaction that
    stores it, and kept from there on by what is stored, which a delete reads and refuses for. ``check`` runs on the
    storing transaction's connection (None in the in-memory stores): NOT_FOUND if the record is gone, otherwise it
    holds the record against a delete until that transaction ends (a delete that came first is waited for, and is
    then seen), so a delete either comes first or finds what was stored."""

    async def check(self, conn: Any) -> None: ...


class Objective(enum.StrEnum):
    SFT = "SFT"
    KTO = "KTO"


@dataclass(frozen=True)
class LoraSpec:
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES


LORA_FIELDS = ("rank", "alpha", "dropout", "target_modules")


class FisherSpace(enum.StrEnum):
    """The parameters a Fisher diagonal, and the EWC penalty built from it, are over."""

    LORA_PARAMETERS = "LORA_PARAMETERS"  # the entries of each LoRA A and B (engine.ewc.EwcPenalty)
    LORA_PRODUCT = "LORA_PRODUCT"  # the entries of each pair's product B @ A (engine.ewc_product)


# A record written before the product space existed (no field) is in the parameter space; new requests get
# the server's setting.
LEGACY_FISHER_SPACE = FisherSpace.LORA_PARAMETERS


@dataclass(frozen=True)
class JsonlSource:
    """A dataset file, named relative to the data root (``<data-dir>/datasets``)."""

    path: str
    kind: Literal["jsonl"] = "jsonl"


@dataclass(frozen=True)
class FeedbackSource:
    days: int = 7
    labels: tuple[tuple[str, str], ...] = ()
    adapter_version: str = ""
    min_samples: int = 100
    force: bool = False
    thumbs_up_weight: float = 2.0
    thumbs_down_weight: float = 0.5
    kind: Literal["feedback"] = "feedback"


@dataclass(frozen=True)
class StoredDatasetSource:
    """A dataset stored by the DatasetService: ``datasets/{dataset}`` (its newest version when a job is created) or
    ``datasets/{dataset}/versions/{n}``; a job trains on its train split (engine.training.stored_datasets)."""

    name: str
    kind: Literal["dataset"] = "dataset"


@dataclass(frozen=True)
class OnlineExamplesSource:
    """Examples an online session trained on: its sequence numbers ``first``..``last`` (engine.online), as a
    session's publication records them; read again from PostgreSQL for a later job's EWC and replay."""

    session_id: str
    first: int
    last: int
    kind: Literal["online"] = "online"


DataSource = JsonlSource | FeedbackSource | StoredDatasetSource | OnlineExamplesSource


@dataclass(frozen=True)
class OnlineExamples:
    """Examples of an online session's window, in order, with KTO's labels when its session learnt by KTO."""

    examples: list[Example]
    desirable: tuple[bool, ...] | None = None  # per example (a KTO session's); None: an SFT session's

    @property
    def digest(self) -> str:
        return dataset_digest(self.examples, self.desirable)

    def wanted(self) -> list[Example]:
        """The examples whose target is an answer to give: what a version trained on them should keep doing
        (a KTO session's undesirable ones left out, as of a feedback dataset)."""
        if self.desirable is None:
            return list(self.examples)
        return [e for e, good in zip(self.examples, self.desirable, strict=True) if good]


@dataclass(frozen=True)
class DatasetSummary:
    """What a run's data was, and where it came from (its provenance), resolved once when the job is created.

    ``source`` and ``objective`` say how to get the same examples again: the JSONL file (checked against
    ``digest``), or the feedback filters over the fixed window [``window_start``, ``window_end``] built for that
    objective. Recorded on the job and on the adapter version it produced.
    """

    digest: str = ""
    example_count: int = 0
    composition: tuple[tuple[str, int], ...] = ()
    target_token_count: int = 0
    window_start: datetime | None = None
    window_end: datetime | None = None
    source: DataSource | None = None  # None: not known (recorded before provenance existed); a stored one pinned
    objective: Objective | None = None


# ---- examples ---------------------------------------------------------------------


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True)
class Example:
    """One training example: either ``messages`` (chat) or ``prompt`` + ``completion``.

    ``unfinished``: the last assistant turn (or the completion) stops before its end, as a generation cut at its
    token limit does; it is trained without the end-of-turn (end-of-sequence) target, which would teach stopping
    there.

    ``last_turn_only``: of a conversation, only the last assistant turn is a target, the earlier ones being part
    of the prompt (feedback judges the last answer, not those before it); otherwise every assistant turn is one,
    as in a conversation the operator wrote."""

    messages: tuple[ChatMessage, ...] = ()
    prompt: str = ""
    completion: str = ""
    weight: float = 1.0
    unfinished: bool = False
    last_turn_only: bool = False

    @property
    def is_chat(self) -> bool:
        return bool(self.messages)

    def canonical(self) -> dict[str, Any]:
        if self.is_chat:
            body: dict[str, Any] = {
                "messages": [{"role": m.role, "content": m.content} for m in self.messages]
            }
        else:
            body = {"prompt": self.prompt, "completion": self.completion}
        body["weight"] = float(self.weight)
        if self.unfinished:
            body["unfinished"] = True
        if self.last_turn_only:
            body["last_turn_only"] = True
        return body


def dataset_digest(examples: Sequence[Example], desirable: Sequence[bool] | None = None) -> str:
    """sha256 (hex) of the canonical JSON of the normalised examples; independent of file formatting.
    ``desirable``: KTO's label of each example, put in its line (a KTO dataset's digest)."""
    digest = hashlib.sha256()
    labels: Sequence[bool | None] = [None] * len(examples) if desirable is None else desirable
    for example, label in zip(examples, labels, strict=True):
        body = example.canonical() if label is None else {**example.canonical(), "desirable": label}
        line = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        digest.update(line.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def composition(examples: Sequence[Example]) -> tuple[tuple[str, int], ...]:
    chat = sum(1 for e in examples if e.is_chat)
    return tuple((k, n) for k, n in (("chat", chat), ("prompt_completion", len(examples) - chat)) if n)


@dataclass(frozen=True)
class BaseRetention:
    """How much of its base model's general knowledge a trained model keeps (engine.continual.base_knowledge)."""

    retention: float  # kept / cases
    kept: int  # questions of the base model's suite still answered right
    cases: int  # questions in the suite (those the base model answers right)
    lost: tuple[str, ...] = ()  # prompts no longer answered right (the first few)


class SuiteKind(enum.StrEnum):
    """What a gate suite asks of a candidate (engine.lora.evaluation)."""

    GOLDEN = "golden"  # the operator's suite
    TARGET = "target"  # the candidate's own data
    RETENTION = "retention"  # what the versions before it were taught
    BASE = "base"  # the base model's general knowledge


@dataclass(frozen=True)
class SuiteVerdict:
    """One suite's outcome in a gate decision."""

    name: str
    kind: SuiteKind
    digest: str
    cases: int
    metrics: tuple[tuple[str, float], ...]
    regressions: int
    passed: bool
    failed_checks: tuple[str, ...]
    regressed: tuple[str, ...] = ()  # the prompts that regressed (the first few)
    note: str = ""


class BaseProtectionMethod(enum.StrEnum):
    """What keeps a job's adapter from forgetting what the base model knew (engine.continual.rehearsal,
    engine.training.base_kl)."""

    NONE = "NONE"
    SELF_REHEARSAL = "SELF_REHEARSAL"  # the base model's own answers to general prompts, mixed into training
    BASE_KL = "BASE_KL"  # the same prompts, trained only by a KL term to the base model's distribution on them
    EWC_BASE = "EWC_BASE"  # no rows: EWC holding each LoRA product B @ A near 0 (engine.continual.base_ewc)


@dataclass(frozen=True)
class BaseProtection:
    method: BaseProtectionMethod = BaseProtectionMethod.NONE
    fraction: float = 0.0  # the share of each epoch's examples that is the base model's answers (not NONE)
    kl_weight: float = 0.0  # beta of KL(base || adapted) on those answers (BASE_KL's only loss on them; > 0 there)
    ewc_lambda: float = 0.0  # EWC_BASE: the weight of its penalty (> 0 there)
    # SELF_REHEARSAL, BASE_KL: the weight of KL(base || adapted) at the job's own rows' context positions (those
    # predicting no target token: the prompt and the chat markup); 0 off
    prompt_kl_weight: float = 0.0

    @property
    def rehearses(self) -> bool:
        """Whether the base model's answers are mixed into training."""
        return self.method in (BaseProtectionMethod.SELF_REHEARSAL, BaseProtectionMethod.BASE_KL) and self.fraction > 0
