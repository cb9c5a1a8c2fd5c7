"""Pipelines: what runs the loop unattended (data -> train -> evaluate -> roll out), and their runs as jobs.

A :class:`Pipeline` names a base model, a training template (a TrainingJobSpec whose ``dataset`` is where the
data comes from: a feedback window with its filters, or a stored dataset), the golden suites its gate adds to
the forgetting-aware ones, how it rolls out, and its triggers. A :class:`PipelineRunSpec` is one run of it, a
job of the typed job core (kind ``pipelineRun``): the pipeline as it was when the run started, and why it
started. Its output records every stage as it ends, so a run taken over after a restart continues at the first
stage that has not ended and never runs one twice to completion (engine.pipelines.runner).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from engine.jobs.core import Job, JobKind
from engine.lora.canary import CanaryPolicy
from engine.names import CHOSEN_ID_RE
from engine.training.spec import TrainingJobSpec

PIPELINE_ID_RE = CHOSEN_ID_RE
DEFAULT_CRON = "0 2 * * 1"  # weekly, Monday 02:00


class RolloutMode(enum.StrEnum):
    ACTIVATE = "ACTIVATE"  # the whole alias at once, once the gate passes
    CANARY = "CANARY"  # a share of the traffic first; promoted or rolled back on the figures (engine.lora.canary)
    NONE = "NONE"  # publish and evaluate only; a person activates


@dataclass(frozen=True)
class Rollout:
    mode: RolloutMode = RolloutMode.ACTIVATE
    canary: CanaryPolicy = field(default_factory=CanaryPolicy)  # CANARY: the share and what decides


@dataclass(frozen=True)
class CronTrigger:
    expression: str = DEFAULT_CRON
    time_zone: str = "UTC"
    kind: Literal["cron"] = "cron"


@dataclass(frozen=True)
class FeedbackTrigger:
    """N feedback events (or only negative ones: thumbs down, a rating at or below the negative threshold) since
    the pipeline's last run started."""

    count: int
    negative_only: bool = False
    kind: Literal["feedback"] = "feedback"


@dataclass(frozen=True)
class DriftTrigger:
    """The drift statistic of the base model's incoming prompts at or above ``threshold`` (0: the detector's)."""

    threshold: float = 0.0
    kind: Literal["drift"] = "drift"


Trigger = CronTrigger | FeedbackTrigger | DriftTrigger


@dataclass(frozen=True)
class Pipeline:
    id: str
    base_model: str
    training: TrainingJobSpec  # its dataset is the data source; its parent is chosen at each run
    suite_paths: tuple[str, ...] = ()  # golden suites below the data root, besides the gate's own
    suite_datasets: tuple[str, ...] = ()  # stored dataset versions as golden suites ("datasets/x": newest at a run)
    rollout: Rollout = field(default_factory=Rollout)
    triggers: tuple[Trigger, ...] = ()
    enabled: bool = True  # triggers fire only while enabled; RunPipeline works either way
    description: str = ""
    create_time: datetime | None = None
    update_time: datetime | None = None
    etag: str = ""

    @property
    def name(self) -> str:
        return f"pipelines/{self.id}"


# ---- runs ----------------------------------------------------------------------------------------


class TriggerKind(enum.StrEnum):
    MANUAL = "MANUAL"
    CRON = "CRON"
    FEEDBACK = "FEEDBACK"
    NEGATIVE_FEEDBACK = "NEGATIVE_FEEDBACK"
    DRIFT = "DRIFT"


@dataclass(frozen=True)
class TriggerDecision:
    """A trigger's verdict at one moment: ``fired`` (a run was started, ``run_id``) or skipped, and why.

    ``key`` names the occasion (a cron tick, a feedback watermark): each occasion is decided once across every
    replica (engine.stores.pipeline_store)."""

    pipeline_id: str
    kind: TriggerKind
    key: str
    fired: bool
    reason: str
    time: datetime
    run_id: str = ""
    count: int = 0  # the samples found, when that decided it


class Stage(enum.StrEnum):
    DATASET = "DATASET"  # fix the data: a dataset version (a feedback window frozen at the run's start)
    TRAIN = "TRAIN"  # a training job continuing the active version (EWC and replay from the template)
    EVALUATE = "EVALUATE"  # the forgetting-aware gate against the active version, with the golden suites
    ROLLOUT = "ROLLOUT"  # activate, or a canary that promotes or rolls back


STAGES = tuple(Stage)


class StageState(enum.StrEnum):
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    CANCELLED = "CANCELLED"  # the run was cancelled while the stage ran


@dataclass(frozen=True)
class StageResult:
    stage: Stage
    state: StageState
    message: str
    start_time: datetime
    end_time: datetime
    resource: str = ""  # what the stage made or ran: datasets/..., trainingJobs/..., the version, the decision


@dataclass(frozen=True)
class PipelineRunSpec:
    pipeline: Pipeline  # as it was when the run started
    trigger: TriggerKind
    trigger_key: str = ""
    reason: str = ""  # why the trigger fired, or who ran it


@dataclass(frozen=True)
class PipelineRunOutput:
    stages: tuple[StageResult, ...] = ()
    dataset: str = ""  # datasets/{id}/versions/{n}
    training_job: str = ""  # trainingJobs/{id}, recorded before it is awaited
    parent_version: str = ""  # the version the run continues ("" from the base model)
    parent_chosen: bool = False  # parent_version was chosen (stored before the training job is created)
    version: str = ""  # the version it trained
    evaluation_id: str = ""
    suite_datasets: tuple[str, ...] = ()  # the pipeline's suite_datasets as this run pinned them, when it evaluated
    rollout: str = ""  # what the rollout decided (ACTIVATED, PROMOTED, ROLLED_BACK, ABORTED, NONE)
    canary_split: int = 0  # the split id of the canary the run started (0: none, or not known: stopped as it started)

    def ended(self, stage: Stage) -> StageResult | None:
        return next((s for s in self.stages if s.stage is stage), None)


@dataclass(frozen=True)
class StageStarted:
    """Event: a stage began (or, after a restart, began again where it left off)."""

    stage: Stage
    message: str


@dataclass(frozen=True)
class StageEnded:
    """Event: a stage ended; its result is also on the run's output."""

    result: StageResult


@dataclass(frozen=True)
class StageProgress:
    """Event: how far the running stage has come: the training job's steps (message: its state), or the answers of
    one golden suite the evaluation has scored (message: the suite)."""

    stage: Stage
    completed: int
    total: int
    message: str = ""


PIPELINE_RUN = JobKind("pipelineRun", "pipelineRuns", PipelineRunSpec, PipelineRunOutput,
                       event_types=(StageStarted, StageEnded, StageProgress))
PipelineRun = Job[PipelineRunSpec, PipelineRunOutput]
