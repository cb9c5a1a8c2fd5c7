import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from learning.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Objective(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OBJECTIVE_UNSPECIFIED: _ClassVar[Objective]
    OBJECTIVE_SFT: _ClassVar[Objective]
    OBJECTIVE_KTO: _ClassVar[Objective]

class Precision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRECISION_UNSPECIFIED: _ClassVar[Precision]
    PRECISION_AUTO: _ClassVar[Precision]
    PRECISION_FP32: _ClassVar[Precision]
    PRECISION_BF16: _ClassVar[Precision]

class Quantization(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QUANTIZATION_UNSPECIFIED: _ClassVar[Quantization]
    QUANTIZATION_NONE: _ClassVar[Quantization]
    QUANTIZATION_NF4: _ClassVar[Quantization]
    QUANTIZATION_INT8: _ClassVar[Quantization]

class Sharding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SHARDING_UNSPECIFIED: _ClassVar[Sharding]
    SHARDING_NONE: _ClassVar[Sharding]
    SHARDING_FSDP: _ClassVar[Sharding]

class LrSchedule(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LR_SCHEDULE_UNSPECIFIED: _ClassVar[LrSchedule]
    LR_SCHEDULE_LINEAR: _ClassVar[LrSchedule]
    LR_SCHEDULE_COSINE: _ClassVar[LrSchedule]
    LR_SCHEDULE_CONSTANT: _ClassVar[LrSchedule]
OBJECTIVE_UNSPECIFIED: Objective
OBJECTIVE_SFT: Objective
OBJECTIVE_KTO: Objective
PRECISION_UNSPECIFIED: Precision
PRECISION_AUTO: Precision
PRECISION_FP32: Precision
PRECISION_BF16: Precision
QUANTIZATION_UNSPECIFIED: Quantization
QUANTIZATION_NONE: Quantization
QUANTIZATION_NF4: Quantization
QUANTIZATION_INT8: Quantization
SHARDING_UNSPECIFIED: Sharding
SHARDING_NONE: Sharding
SHARDING_FSDP: Sharding
LR_SCHEDULE_UNSPECIFIED: LrSchedule
LR_SCHEDULE_LINEAR: LrSchedule
LR_SCHEDULE_COSINE: LrSchedule
LR_SCHEDULE_CONSTANT: LrSchedule

class Hyperparameters(_message.Message):
    __slots__ = ("epochs", "learning_rate", "batch_size", "max_seq_length", "seed", "max_steps", "warmup_steps", "weight_decay", "max_grad_norm", "precision", "quantization", "gradient_accumulation_steps", "gradient_checkpointing", "packing", "num_devices", "eval_fraction", "sharding", "lr_schedule")
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_SEQ_LENGTH_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    WARMUP_STEPS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    MAX_GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_ACCUMULATION_STEPS_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_CHECKPOINTING_FIELD_NUMBER: _ClassVar[int]
    PACKING_FIELD_NUMBER: _ClassVar[int]
    NUM_DEVICES_FIELD_NUMBER: _ClassVar[int]
    EVAL_FRACTION_FIELD_NUMBER: _ClassVar[int]
    SHARDING_FIELD_NUMBER: _ClassVar[int]
    LR_SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    epochs: int
    learning_rate: float
    batch_size: int
    max_seq_length: int
    seed: int
    max_steps: int
    warmup_steps: int
    weight_decay: float
    max_grad_norm: float
    precision: Precision
    quantization: Quantization
    gradient_accumulation_steps: int
    gradient_checkpointing: bool
    packing: bool
    num_devices: int
    eval_fraction: float
    sharding: Sharding
    lr_schedule: LrSchedule
    def __init__(self, epochs: _Optional[int] = ..., learning_rate: _Optional[float] = ..., batch_size: _Optional[int] = ..., max_seq_length: _Optional[int] = ..., seed: _Optional[int] = ..., max_steps: _Optional[int] = ..., warmup_steps: _Optional[int] = ..., weight_decay: _Optional[float] = ..., max_grad_norm: _Optional[float] = ..., precision: _Optional[_Union[Precision, str]] = ..., quantization: _Optional[_Union[Quantization, str]] = ..., gradient_accumulation_steps: _Optional[int] = ..., gradient_checkpointing: _Optional[bool] = ..., packing: _Optional[bool] = ..., num_devices: _Optional[int] = ..., eval_fraction: _Optional[float] = ..., sharding: _Optional[_Union[Sharding, str]] = ..., lr_schedule: _Optional[_Union[LrSchedule, str]] = ...) -> None: ...

class EwcConfig(_message.Message):
    __slots__ = ("ewc_lambda", "gamma", "fisher_snapshot", "replay_fraction", "disabled", "fisher_space")
    EWC_LAMBDA_FIELD_NUMBER: _ClassVar[int]
    GAMMA_FIELD_NUMBER: _ClassVar[int]
    FISHER_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    REPLAY_FRACTION_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    FISHER_SPACE_FIELD_NUMBER: _ClassVar[int]
    ewc_lambda: float
    gamma: float
    fisher_snapshot: str
    replay_fraction: float
    disabled: bool
    fisher_space: _common_pb2.FisherSpace
    def __init__(self, ewc_lambda: _Optional[float] = ..., gamma: _Optional[float] = ..., fisher_snapshot: _Optional[str] = ..., replay_fraction: _Optional[float] = ..., disabled: _Optional[bool] = ..., fisher_space: _Optional[_Union[_common_pb2.FisherSpace, str]] = ...) -> None: ...

class TrainingJobSpec(_message.Message):
    __slots__ = ("base_model", "jsonl", "feedback", "dataset_name", "lora", "hyperparameters", "objective", "parent_adapter_version", "ewc", "major_version_bump", "labels", "checkpoints", "base_protection")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    JSONL_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    DATASET_NAME_FIELD_NUMBER: _ClassVar[int]
    LORA_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    PARENT_ADAPTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    EWC_FIELD_NUMBER: _ClassVar[int]
    MAJOR_VERSION_BUMP_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    BASE_PROTECTION_FIELD_NUMBER: _ClassVar[int]
    base_model: str
    jsonl: _common_pb2.JsonlDataset
    feedback: _common_pb2.FeedbackDataset
    dataset_name: str
    lora: _common_pb2.LoraConfig
    hyperparameters: Hyperparameters
    objective: Objective
    parent_adapter_version: str
    ewc: EwcConfig
    major_version_bump: bool
    labels: _containers.ScalarMap[str, str]
    checkpoints: CheckpointPolicy
    base_protection: _common_pb2.BaseProtection
    def __init__(self, base_model: _Optional[str] = ..., jsonl: _Optional[_Union[_common_pb2.JsonlDataset, _Mapping]] = ..., feedback: _Optional[_Union[_common_pb2.FeedbackDataset, _Mapping]] = ..., dataset_name: _Optional[str] = ..., lora: _Optional[_Union[_common_pb2.LoraConfig, _Mapping]] = ..., hyperparameters: _Optional[_Union[Hyperparameters, _Mapping]] = ..., objective: _Optional[_Union[Objective, str]] = ..., parent_adapter_version: _Optional[str] = ..., ewc: _Optional[_Union[EwcConfig, _Mapping]] = ..., major_version_bump: _Optional[bool] = ..., labels: _Optional[_Mapping[str, str]] = ..., checkpoints: _Optional[_Union[CheckpointPolicy, _Mapping]] = ..., base_protection: _Optional[_Union[_common_pb2.BaseProtection, _Mapping]] = ...) -> None: ...

class CheckpointPolicy(_message.Message):
    __slots__ = ("every_steps", "every_minutes", "keep")
    EVERY_STEPS_FIELD_NUMBER: _ClassVar[int]
    EVERY_MINUTES_FIELD_NUMBER: _ClassVar[int]
    KEEP_FIELD_NUMBER: _ClassVar[int]
    every_steps: int
    every_minutes: float
    keep: int
    def __init__(self, every_steps: _Optional[int] = ..., every_minutes: _Optional[float] = ..., keep: _Optional[int] = ...) -> None: ...

class EwcLineage(_message.Message):
    __slots__ = ("parent_adapter_version", "fisher_snapshot", "ewc_lambda", "gamma", "replay_fraction", "fisher_space")
    PARENT_ADAPTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    FISHER_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    EWC_LAMBDA_FIELD_NUMBER: _ClassVar[int]
    GAMMA_FIELD_NUMBER: _ClassVar[int]
    REPLAY_FRACTION_FIELD_NUMBER: _ClassVar[int]
    FISHER_SPACE_FIELD_NUMBER: _ClassVar[int]
    parent_adapter_version: str
    fisher_snapshot: str
    ewc_lambda: float
    gamma: float
    replay_fraction: float
    fisher_space: _common_pb2.FisherSpace
    def __init__(self, parent_adapter_version: _Optional[str] = ..., fisher_snapshot: _Optional[str] = ..., ewc_lambda: _Optional[float] = ..., gamma: _Optional[float] = ..., replay_fraction: _Optional[float] = ..., fisher_space: _Optional[_Union[_common_pb2.FisherSpace, str]] = ...) -> None: ...

class TrainingJob(_message.Message):
    __slots__ = ("name", "request_id", "state", "progress", "error", "create_time", "start_time", "end_time", "spec", "output_adapter_version", "dataset", "latest_metrics", "device", "ewc_lineage", "last_sequence", "worker", "priority", "base_retention", "base_rehearsed_examples", "metrics_artifacts")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_ADAPTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    LATEST_METRICS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    EWC_LINEAGE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    BASE_RETENTION_FIELD_NUMBER: _ClassVar[int]
    BASE_REHEARSED_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    METRICS_ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    request_id: str
    state: _common_pb2.JobState
    progress: _common_pb2.JobProgress
    error: _status_pb2.Status
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    spec: TrainingJobSpec
    output_adapter_version: str
    dataset: _common_pb2.DatasetSummary
    latest_metrics: TrainingStepMetrics
    device: str
    ewc_lineage: EwcLineage
    last_sequence: int
    worker: str
    priority: int
    base_retention: _common_pb2.BaseRetention
    base_rehearsed_examples: int
    metrics_artifacts: TrainingMetricsArtifacts
    def __init__(self, name: _Optional[str] = ..., request_id: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.JobState, str]] = ..., progress: _Optional[_Union[_common_pb2.JobProgress, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., spec: _Optional[_Union[TrainingJobSpec, _Mapping]] = ..., output_adapter_version: _Optional[str] = ..., dataset: _Optional[_Union[_common_pb2.DatasetSummary, _Mapping]] = ..., latest_metrics: _Optional[_Union[TrainingStepMetrics, _Mapping]] = ..., device: _Optional[str] = ..., ewc_lineage: _Optional[_Union[EwcLineage, _Mapping]] = ..., last_sequence: _Optional[int] = ..., worker: _Optional[str] = ..., priority: _Optional[int] = ..., base_retention: _Optional[_Union[_common_pb2.BaseRetention, _Mapping]] = ..., base_rehearsed_examples: _Optional[int] = ..., metrics_artifacts: _Optional[_Union[TrainingMetricsArtifacts, _Mapping]] = ...) -> None: ...

class TrainingMetricsArtifacts(_message.Message):
    __slots__ = ("csv_uri", "png_uri", "row_count")
    CSV_URI_FIELD_NUMBER: _ClassVar[int]
    PNG_URI_FIELD_NUMBER: _ClassVar[int]
    ROW_COUNT_FIELD_NUMBER: _ClassVar[int]
    csv_uri: str
    png_uri: str
    row_count: int
    def __init__(self, csv_uri: _Optional[str] = ..., png_uri: _Optional[str] = ..., row_count: _Optional[int] = ...) -> None: ...

class TrainingStepMetrics(_message.Message):
    __slots__ = ("step", "total_steps", "epoch", "loss", "task_loss", "ewc_penalty", "learning_rate", "grad_norm", "tokens_per_second", "eta")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    TASK_LOSS_FIELD_NUMBER: _ClassVar[int]
    EWC_PENALTY_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    ETA_FIELD_NUMBER: _ClassVar[int]
    step: int
    total_steps: int
    epoch: float
    loss: float
    task_loss: float
    ewc_penalty: float
    learning_rate: float
    grad_norm: float
    tokens_per_second: float
    eta: _duration_pb2.Duration
    def __init__(self, step: _Optional[int] = ..., total_steps: _Optional[int] = ..., epoch: _Optional[float] = ..., loss: _Optional[float] = ..., task_loss: _Optional[float] = ..., ewc_penalty: _Optional[float] = ..., learning_rate: _Optional[float] = ..., grad_norm: _Optional[float] = ..., tokens_per_second: _Optional[float] = ..., eta: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class TrainingCheckpoint(_message.Message):
    __slots__ = ("step", "uri", "loss", "eval_loss", "sha256", "size_bytes", "create_time")
    STEP_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    EVAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    step: int
    uri: str
    loss: float
    eval_loss: float
    sha256: str
    size_bytes: int
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, step: _Optional[int] = ..., uri: _Optional[str] = ..., loss: _Optional[float] = ..., eval_loss: _Optional[float] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TrainingEvalResult(_message.Message):
    __slots__ = ("step", "split", "metrics")
    STEP_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    step: int
    split: str
    metrics: _containers.RepeatedCompositeFieldContainer[_common_pb2.EvalMetric]
    def __init__(self, step: _Optional[int] = ..., split: _Optional[str] = ..., metrics: _Optional[_Iterable[_Union[_common_pb2.EvalMetric, _Mapping]]] = ...) -> None: ...

class TrainingJobEvent(_message.Message):
    __slots__ = ("sequence", "time", "state_change", "step_metrics", "checkpoint", "eval_result", "warning", "error", "notice", "parent_fisher_progress")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    STATE_CHANGE_FIELD_NUMBER: _ClassVar[int]
    STEP_METRICS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    EVAL_RESULT_FIELD_NUMBER: _ClassVar[int]
    WARNING_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    NOTICE_FIELD_NUMBER: _ClassVar[int]
    PARENT_FISHER_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    time: _timestamp_pb2.Timestamp
    state_change: _common_pb2.JobStateChange
    step_metrics: TrainingStepMetrics
    checkpoint: TrainingCheckpoint
    eval_result: TrainingEvalResult
    warning: _common_pb2.JobWarning
    error: _common_pb2.JobError
    notice: _common_pb2.JobNotice
    parent_fisher_progress: ParentFisherProgress
    def __init__(self, sequence: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state_change: _Optional[_Union[_common_pb2.JobStateChange, _Mapping]] = ..., step_metrics: _Optional[_Union[TrainingStepMetrics, _Mapping]] = ..., checkpoint: _Optional[_Union[TrainingCheckpoint, _Mapping]] = ..., eval_result: _Optional[_Union[TrainingEvalResult, _Mapping]] = ..., warning: _Optional[_Union[_common_pb2.JobWarning, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.JobError, _Mapping]] = ..., notice: _Optional[_Union[_common_pb2.JobNotice, _Mapping]] = ..., parent_fisher_progress: _Optional[_Union[ParentFisherProgress, _Mapping]] = ...) -> None: ...

class ParentFisherProgress(_message.Message):
    __slots__ = ("samples_done", "samples_total", "samples_per_second")
    SAMPLES_DONE_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    samples_done: int
    samples_total: int
    samples_per_second: float
    def __init__(self, samples_done: _Optional[int] = ..., samples_total: _Optional[int] = ..., samples_per_second: _Optional[float] = ...) -> None: ...

class CreateTrainingJobRequest(_message.Message):
    __slots__ = ("spec", "request_id", "validate_only", "priority")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    spec: TrainingJobSpec
    request_id: str
    validate_only: bool
    priority: int
    def __init__(self, spec: _Optional[_Union[TrainingJobSpec, _Mapping]] = ..., request_id: _Optional[str] = ..., validate_only: _Optional[bool] = ..., priority: _Optional[int] = ...) -> None: ...

class CreateTrainingJobResponse(_message.Message):
    __slots__ = ("training_job",)
    TRAINING_JOB_FIELD_NUMBER: _ClassVar[int]
    training_job: TrainingJob
    def __init__(self, training_job: _Optional[_Union[TrainingJob, _Mapping]] = ...) -> None: ...

class GetTrainingJobRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetTrainingJobResponse(_message.Message):
    __slots__ = ("training_job",)
    TRAINING_JOB_FIELD_NUMBER: _ClassVar[int]
    training_job: TrainingJob
    def __init__(self, training_job: _Optional[_Union[TrainingJob, _Mapping]] = ...) -> None: ...

class ListTrainingJobsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "states")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    states: _containers.RepeatedScalarFieldContainer[_common_pb2.JobState]
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., states: _Optional[_Iterable[_Union[_common_pb2.JobState, str]]] = ...) -> None: ...

class ListTrainingJobsResponse(_message.Message):
    __slots__ = ("training_jobs", "next_page_token")
    TRAINING_JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    training_jobs: _containers.RepeatedCompositeFieldContainer[TrainingJob]
    next_page_token: str
    def __init__(self, training_jobs: _Optional[_Iterable[_Union[TrainingJob, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelTrainingJobRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class CancelTrainingJobResponse(_message.Message):
    __slots__ = ("training_job",)
    TRAINING_JOB_FIELD_NUMBER: _ClassVar[int]
    training_job: TrainingJob
    def __init__(self, training_job: _Optional[_Union[TrainingJob, _Mapping]] = ...) -> None: ...

class WatchTrainingJobRequest(_message.Message):
    __slots__ = ("name", "after_sequence")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    after_sequence: int
    def __init__(self, name: _Optional[str] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class WatchTrainingJobResponse(_message.Message):
    __slots__ = ("snapshot", "event")
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    snapshot: TrainingJob
    event: TrainingJobEvent
    def __init__(self, snapshot: _Optional[_Union[TrainingJob, _Mapping]] = ..., event: _Optional[_Union[TrainingJobEvent, _Mapping]] = ...) -> None: ...

class PauseTrainingJobRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class PauseTrainingJobResponse(_message.Message):
    __slots__ = ("training_job",)
    TRAINING_JOB_FIELD_NUMBER: _ClassVar[int]
    training_job: TrainingJob
    def __init__(self, training_job: _Optional[_Union[TrainingJob, _Mapping]] = ...) -> None: ...

class ResumeTrainingJobRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ResumeTrainingJobResponse(_message.Message):
    __slots__ = ("training_job",)
    TRAINING_JOB_FIELD_NUMBER: _ClassVar[int]
    training_job: TrainingJob
    def __init__(self, training_job: _Optional[_Union[TrainingJob, _Mapping]] = ...) -> None: ...

class ListTrainingCheckpointsRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListTrainingCheckpointsResponse(_message.Message):
    __slots__ = ("checkpoints",)
    CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    checkpoints: _containers.RepeatedCompositeFieldContainer[TrainingCheckpoint]
    def __init__(self, checkpoints: _Optional[_Iterable[_Union[TrainingCheckpoint, _Mapping]]] = ...) -> None: ...

class PublishCheckpointRequest(_message.Message):
    __slots__ = ("name", "step", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    step: int
    request_id: str
    def __init__(self, name: _Optional[str] = ..., step: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class PublishCheckpointResponse(_message.Message):
    __slots__ = ("adapter_version",)
    ADAPTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    adapter_version: str
    def __init__(self, adapter_version: _Optional[str] = ...) -> None: ...

class TrainingMetricsRow(_message.Message):
    __slots__ = ("step", "time", "total_steps", "epoch", "loss", "task_loss", "ewc_penalty", "learning_rate", "grad_norm", "tokens_per_second", "eval_loss")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    TASK_LOSS_FIELD_NUMBER: _ClassVar[int]
    EWC_PENALTY_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    EVAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    step: int
    time: _timestamp_pb2.Timestamp
    total_steps: int
    epoch: float
    loss: float
    task_loss: float
    ewc_penalty: float
    learning_rate: float
    grad_norm: float
    tokens_per_second: float
    eval_loss: float
    def __init__(self, step: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., total_steps: _Optional[int] = ..., epoch: _Optional[float] = ..., loss: _Optional[float] = ..., task_loss: _Optional[float] = ..., ewc_penalty: _Optional[float] = ..., learning_rate: _Optional[float] = ..., grad_norm: _Optional[float] = ..., tokens_per_second: _Optional[float] = ..., eval_loss: _Optional[float] = ...) -> None: ...

class GetTrainingMetricsRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetTrainingMetricsResponse(_message.Message):
    __slots__ = ("rows", "csv", "png", "state")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    CSV_FIELD_NUMBER: _ClassVar[int]
    PNG_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[TrainingMetricsRow]
    csv: bytes
    png: bytes
    state: _common_pb2.JobState
    def __init__(self, rows: _Optional[_Iterable[_Union[TrainingMetricsRow, _Mapping]]] = ..., csv: _Optional[bytes] = ..., png: _Optional[bytes] = ..., state: _Optional[_Union[_common_pb2.JobState, str]] = ...) -> None: ...
