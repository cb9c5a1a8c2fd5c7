"""Domain types of training jobs: the spec, the events a run reports, its output, and the kind."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from engine.domain import (
    LEGACY_FISHER_SPACE,
    LORA_FIELDS,
    BaseProtection,
    BaseRetention,
    DatasetSummary,
    FeedbackSource,
    FisherSpace,
    JsonlSource,
    LoraSpec,
    Objective,
    StoredDatasetSource,
)
from engine.jobs.core import Job, JobKind
from engine.splits import SplitRule


class Precision(enum.StrEnum):
    AUTO = "AUTO"
    FP32 = "FP32"
    BF16 = "BF16"


class Quantization(enum.StrEnum):
    NONE = "NONE"
    NF4 = "NF4"
    INT8 = "INT8"


class LrSchedule(enum.StrEnum):
    """The learning rate after the warm-up, to the last step: transformers' scheduler of the same name."""

    LINEAR = "LINEAR"  # straight down to 0
    COSINE = "COSINE"  # half a cosine wave down to 0
    CONSTANT = "CONSTANT"  # the peak rate to the end


class Sharding(enum.StrEnum):
    """How a job on several devices holds its model (engine.training.distributed)."""

    NONE = "NONE"  # every device holds the whole model; each step's examples are shared out (data parallel)
    FSDP = "FSDP"  # the base is sharded across the devices per decoder layer (torch FSDP2), data shared out too


@dataclass(frozen=True)
class Hyperparameters:
    epochs: int = 3
    learning_rate: float = 2e-4
    batch_size: int = 8
    max_seq_length: int = 512
    seed: int = 0
    max_steps: int = 0  # 0 = no limit
    warmup_steps: int = 0
    lr_schedule: LrSchedule = LrSchedule.LINEAR  # after the warm-up
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    precision: Precision = Precision.AUTO
    quantization: Quantization = Quantization.NONE
    # Micro-batches of batch_size examples whose gradients make one optimiser step.
    gradient_accumulation_steps: int = 1
    # Recompute activations in the backward pass: less memory, about one more forward pass of compute.
    gradient_checkpointing: bool = False
    # Pack each micro-batch's examples into one row, each attending only to itself (engine.training.batching);
    # the same losses and gradients as padded batches, without computing padding. False: padded batches.
    packing: bool = True
    # Devices to train on in parallel (engine.training.distributed); 0: every GPU of the worker running the job.
    num_devices: int = 1
    # How the devices hold the model: whole on each (NONE), or sharded per decoder layer (FSDP) for a base that
    # does not fit one device.
    sharding: Sharding = Sharding.NONE
    # Examples held out by prompt (engine.splits) as the job's eval split: their loss at each checkpoint and
    # at the end, on the version as its eval loss. 0: every example is trained on.
    eval_fraction: float = 0.0

    @property
    def examples_per_step(self) -> int:
        """The examples an optimiser step takes: ``batch_size`` in each of its ``gradient_accumulation_steps``."""
        return self.batch_size * self.gradient_accumulation_steps


MAX_EVAL_FRACTION = 0.5  # of a job's examples held out as its eval split
MAX_DEVICES = 64  # devices one job may ask for (processes started on one machine)


@dataclass(frozen=True)
class EwcSpec:
    ewc_lambda: float = 0.1  # strength of the mean-normalised penalty (engine/ewc.py); servers pass their setting
    gamma: float = 1.0
    fisher_snapshot: str = ""
    replay_fraction: float = 0.0
    disabled: bool = False
    space: FisherSpace = LEGACY_FISHER_SPACE


@dataclass(frozen=True)
class CheckpointPolicy:
    """When a job checkpoints besides at pause and shutdown (servers fill in their settings' values)."""

    every_steps: int = 50  # 0: never by step count
    every_minutes: float = 10.0  # 0: never by time
    keep: int = 3  # the newest N are kept


@dataclass(frozen=True)
class TrainingDefaults:
    """What a job gets for what its request leaves unset (servers fill in their settings' values)."""

    lora: LoraSpec = field(default_factory=LoraSpec)
    hyperparameters: Hyperparameters = field(default_factory=Hyperparameters)
    checkpoints: CheckpointPolicy = field(default_factory=CheckpointPolicy)
    base_protection: BaseProtection = field(default_factory=BaseProtection)


@dataclass(frozen=True)
class TrainingJobSpec:
    """Everything a job is asked to do, with defaults filled in. Immutable."""

    base_model: str
    dataset: JsonlSource | FeedbackSource | StoredDatasetSource
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
    checkpoints: CheckpointPolicy = field(default_factory=CheckpointPolicy)
    base_protection: BaseProtection = field(default_factory=BaseProtection)


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
class CheckpointRecord:
    """A stored checkpoint of a training job (engine.training.checkpoint_store)."""

    step: int
    key: str  # its object in the artifact store
    uri: str
    sha256: str
    size_bytes: int
    loss: float
    eval_loss: float | None
    create_time: datetime


@dataclass(frozen=True)
class CheckpointSaved:
    """Event: a checkpoint was stored."""

    checkpoint: CheckpointRecord


EVAL_SPLIT = "eval"  # EvalReported.split of the job's held-out eval split (others: "train_end", "base_retention")


@dataclass(frozen=True)
class EvalReported:
    step: int
    split: str
    metrics: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class ParentFisherProgress:
    """Event: samples of the parent's Fisher measured so far, while a continuation prepares (its EWC pre-pass)."""

    samples_done: int
    samples_total: int
    samples_per_second: float


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
class MetricsArtifacts:
    """A job's metrics.csv and loss.png, stored in the artifact store when it ended (engine.training.metrics)."""

    csv_key: str
    csv_uri: str
    png_key: str
    png_uri: str
    rows: int


@dataclass(frozen=True)
class TrainingOutput:
    """What a training job produced and reports as it runs (the kind's part of the job)."""

    adapter_version: str = ""  # the version published, once SUCCEEDED
    dataset: DatasetSummary | None = None  # resolved at create time; training adds its token count
    latest_metrics: StepMetrics | None = None
    device: str = ""
    ewc_lineage: EwcLineage | None = None  # as resolved when it ran (the snapshot may be computed then)
    checkpoints: tuple[CheckpointRecord, ...] = ()  # stored, newest first (at most the policy's keep)
    base_retention: BaseRetention | None = None  # measured after training (None: not measured)
    base_rehearsed_examples: int = 0  # the base model's answers mixed into training (self-rehearsal)
    metrics_artifacts: MetricsArtifacts | None = None  # stored when it ended (best effort)
    eval_split: SplitRule | None = None  # what held its eval split out of ``dataset``'s examples (None: nothing)


TRAINING = JobKind("training", "trainingJobs", TrainingJobSpec, TrainingOutput,
                   event_types=(StepMetrics, EvalReported, CheckpointSaved, ParentFisherProgress))
TrainingJob = Job[TrainingJobSpec, TrainingOutput]
