"""Domain types of training jobs, shared by the engine, the stores and the server.

Plain dataclasses: the server converts protobuf to and from these in one place
(``server/convert.py``); the stores serialise them with pydantic's TypeAdapter.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")


class JobState(enum.StrEnum):
    QUEUED = "QUEUED"
    PREPARING = "PREPARING"
    RUNNING = "RUNNING"
    CANCELLING = "CANCELLING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class Objective(enum.StrEnum):
    SFT = "SFT"
    KTO = "KTO"


class Precision(enum.StrEnum):
    AUTO = "AUTO"
    FP32 = "FP32"
    BF16 = "BF16"


class Quantization(enum.StrEnum):
    NONE = "NONE"
    NF4 = "NF4"
    INT8 = "INT8"


@dataclass(frozen=True)
class LoraSpec:
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES


LORA_FIELDS = ("rank", "alpha", "dropout", "target_modules")


@dataclass(frozen=True)
class Hyperparameters:
    epochs: int = 3
    learning_rate: float = 2e-4
    batch_size: int = 8
    max_seq_length: int = 512
    seed: int = 0
    max_steps: int = 0  # 0 = no limit
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    precision: Precision = Precision.AUTO
    quantization: Quantization = Quantization.NONE


class FisherSpace(enum.StrEnum):
    """The parameters a Fisher diagonal, and the EWC penalty built from it, are over."""

    LORA_PARAMETERS = "LORA_PARAMETERS"  # the entries of each LoRA A and B (engine.ewc.EwcPenalty)
    LORA_PRODUCT = "LORA_PRODUCT"  # the entries of each pair's product B @ A (engine.ewc_product)


# A record written before the product space existed (no field) is in the parameter space; new requests get
# the server's setting.
LEGACY_FISHER_SPACE = FisherSpace.LORA_PARAMETERS


@dataclass(frozen=True)
class EwcSpec:
    ewc_lambda: float = 0.3  # strength of the mean-normalised penalty (engine/ewc.py); servers pass their setting
    gamma: float = 1.0
    fisher_snapshot: str = ""
    replay_fraction: float = 0.0
    disabled: bool = False
    space: FisherSpace = LEGACY_FISHER_SPACE


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
class TrainingJobSpec:
    """Everything a job is asked to do, with defaults filled in. Immutable."""

    base_model: str
    dataset: JsonlSource | FeedbackSource
    lora: LoraSpec = field(default_factory=LoraSpec)
    hyperparameters: Hyperparameters = field(default_factory=Hyperparameters)
    objective: Objective = Objective.SFT
    parent_adapter_version: str = ""
    ewc: EwcSpec = field(default_factory=EwcSpec)
    major_version_bump: bool = False
    labels: tuple[tuple[str, str], ...] = ()
    # The LoRA fields the request set (names of LoraSpec fields). With a parent, the others come from the
    # parent's adapter and the set ones must equal the parent's; without one, the others are defaults.
    lora_fields_set: tuple[str, ...] = LORA_FIELDS


@dataclass(frozen=True)
class JobProgress:
    completed_steps: int = 0
    total_steps: int = 0
    eta_seconds: float | None = None

    @property
    def fraction(self) -> float:
        return min(1.0, self.completed_steps / self.total_steps) if self.total_steps else 0.0


@dataclass(frozen=True)
class JobFailure:
    """The error a job ended with: a status code name (e.g. "INVALID_ARGUMENT"), reason and message."""

    code: str
    reason: str
    message: str
    metadata: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class DatasetSummary:
    digest: str = ""
    example_count: int = 0
    composition: tuple[tuple[str, int], ...] = ()
    target_token_count: int = 0
    window_start: datetime | None = None
    window_end: datetime | None = None


# ---- events -----------------------------------------------------------------


@dataclass(frozen=True)
class StateChanged:
    previous: JobState | None
    state: JobState
    message: str = ""


@dataclass(frozen=True)
class StepMetrics:
    step: int
    total_steps: int
    epoch: float
    loss: float
    task_loss: float
    ewc_penalty: float
    learning_rate: float
    grad_norm: float
    tokens_per_second: float
    eta_seconds: float | None = None


@dataclass(frozen=True)
class CheckpointSaved:
    step: int
    uri: str


@dataclass(frozen=True)
class EvalReported:
    step: int
    split: str
    metrics: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class Warned:
    code: str
    message: str


@dataclass(frozen=True)
class Failed:
    failure: JobFailure


EventPayload = StateChanged | StepMetrics | CheckpointSaved | EvalReported | Warned | Failed


@dataclass(frozen=True)
class JobEvent:
    sequence: int
    time: datetime
    payload: EventPayload


@dataclass(frozen=True)
class EwcLineage:
    """What an EWC run was anchored to, resolved when it ran (the snapshot may have been computed then)."""

    parent_adapter_version: str
    fisher_snapshot: str
    ewc_lambda: float
    gamma: float
    replay_fraction: float = 0.0
    replayed_examples: int = 0
    space: FisherSpace = LEGACY_FISHER_SPACE


@dataclass(frozen=True)
class TrainingJob:
    """A training job as stored. Replaced (never mutated) on every change."""

    id: str
    spec: TrainingJobSpec
    state: JobState
    create_time: datetime
    request_id: str = ""
    progress: JobProgress = field(default_factory=JobProgress)
    failure: JobFailure | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    output_adapter_version: str = ""
    dataset: DatasetSummary | None = None
    latest_metrics: StepMetrics | None = None
    device: str = ""
    last_sequence: int = 0
    ewc_lineage: EwcLineage | None = None

    @property
    def name(self) -> str:
        return f"trainingJobs/{self.id}"
