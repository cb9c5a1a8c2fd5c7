import datetime

from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from learning.v1 import common_pb2 as _common_pb2
from learning.v1 import lora_control_pb2 as _lora_control_pb2
from learning.v1 import training_pb2 as _training_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RolloutMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLLOUT_MODE_UNSPECIFIED: _ClassVar[RolloutMode]
    ROLLOUT_MODE_ACTIVATE: _ClassVar[RolloutMode]
    ROLLOUT_MODE_CANARY: _ClassVar[RolloutMode]
    ROLLOUT_MODE_NONE: _ClassVar[RolloutMode]

class PipelineStage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PIPELINE_STAGE_UNSPECIFIED: _ClassVar[PipelineStage]
    PIPELINE_STAGE_DATASET: _ClassVar[PipelineStage]
    PIPELINE_STAGE_TRAIN: _ClassVar[PipelineStage]
    PIPELINE_STAGE_EVALUATE: _ClassVar[PipelineStage]
    PIPELINE_STAGE_ROLLOUT: _ClassVar[PipelineStage]

class StageState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STAGE_STATE_UNSPECIFIED: _ClassVar[StageState]
    STAGE_STATE_SUCCEEDED: _ClassVar[StageState]
    STAGE_STATE_FAILED: _ClassVar[StageState]
    STAGE_STATE_SKIPPED: _ClassVar[StageState]
    STAGE_STATE_CANCELLED: _ClassVar[StageState]

class TriggerKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRIGGER_KIND_UNSPECIFIED: _ClassVar[TriggerKind]
    TRIGGER_KIND_MANUAL: _ClassVar[TriggerKind]
    TRIGGER_KIND_CRON: _ClassVar[TriggerKind]
    TRIGGER_KIND_FEEDBACK: _ClassVar[TriggerKind]
    TRIGGER_KIND_NEGATIVE_FEEDBACK: _ClassVar[TriggerKind]
    TRIGGER_KIND_DRIFT: _ClassVar[TriggerKind]
ROLLOUT_MODE_UNSPECIFIED: RolloutMode
ROLLOUT_MODE_ACTIVATE: RolloutMode
ROLLOUT_MODE_CANARY: RolloutMode
ROLLOUT_MODE_NONE: RolloutMode
PIPELINE_STAGE_UNSPECIFIED: PipelineStage
PIPELINE_STAGE_DATASET: PipelineStage
PIPELINE_STAGE_TRAIN: PipelineStage
PIPELINE_STAGE_EVALUATE: PipelineStage
PIPELINE_STAGE_ROLLOUT: PipelineStage
STAGE_STATE_UNSPECIFIED: StageState
STAGE_STATE_SUCCEEDED: StageState
STAGE_STATE_FAILED: StageState
STAGE_STATE_SKIPPED: StageState
STAGE_STATE_CANCELLED: StageState
TRIGGER_KIND_UNSPECIFIED: TriggerKind
TRIGGER_KIND_MANUAL: TriggerKind
TRIGGER_KIND_CRON: TriggerKind
TRIGGER_KIND_FEEDBACK: TriggerKind
TRIGGER_KIND_NEGATIVE_FEEDBACK: TriggerKind
TRIGGER_KIND_DRIFT: TriggerKind

class RolloutPolicy(_message.Message):
    __slots__ = ("mode", "canary")
    MODE_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    mode: RolloutMode
    canary: _lora_control_pb2.CanaryPolicy
    def __init__(self, mode: _Optional[_Union[RolloutMode, str]] = ..., canary: _Optional[_Union[_lora_control_pb2.CanaryPolicy, _Mapping]] = ...) -> None: ...

class CronTrigger(_message.Message):
    __slots__ = ("expression", "time_zone")
    EXPRESSION_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    expression: str
    time_zone: str
    def __init__(self, expression: _Optional[str] = ..., time_zone: _Optional[str] = ...) -> None: ...

class FeedbackCountTrigger(_message.Message):
    __slots__ = ("count", "negative_only")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_ONLY_FIELD_NUMBER: _ClassVar[int]
    count: int
    negative_only: bool
    def __init__(self, count: _Optional[int] = ..., negative_only: _Optional[bool] = ...) -> None: ...

class DriftTrigger(_message.Message):
    __slots__ = ("threshold",)
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    threshold: float
    def __init__(self, threshold: _Optional[float] = ...) -> None: ...

class PipelineTrigger(_message.Message):
    __slots__ = ("cron", "feedback", "drift")
    CRON_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    DRIFT_FIELD_NUMBER: _ClassVar[int]
    cron: CronTrigger
    feedback: FeedbackCountTrigger
    drift: DriftTrigger
    def __init__(self, cron: _Optional[_Union[CronTrigger, _Mapping]] = ..., feedback: _Optional[_Union[FeedbackCountTrigger, _Mapping]] = ..., drift: _Optional[_Union[DriftTrigger, _Mapping]] = ...) -> None: ...

class Pipeline(_message.Message):
    __slots__ = ("name", "base_model", "training", "suite_paths", "suite_datasets", "rollout", "triggers", "enabled", "description", "create_time", "update_time", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    SUITE_PATHS_FIELD_NUMBER: _ClassVar[int]
    SUITE_DATASETS_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    TRIGGERS_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    base_model: str
    training: _training_pb2.TrainingJobSpec
    suite_paths: _containers.RepeatedScalarFieldContainer[str]
    suite_datasets: _containers.RepeatedScalarFieldContainer[str]
    rollout: RolloutPolicy
    triggers: _containers.RepeatedCompositeFieldContainer[PipelineTrigger]
    enabled: bool
    description: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: str
    def __init__(self, name: _Optional[str] = ..., base_model: _Optional[str] = ..., training: _Optional[_Union[_training_pb2.TrainingJobSpec, _Mapping]] = ..., suite_paths: _Optional[_Iterable[str]] = ..., suite_datasets: _Optional[_Iterable[str]] = ..., rollout: _Optional[_Union[RolloutPolicy, _Mapping]] = ..., triggers: _Optional[_Iterable[_Union[PipelineTrigger, _Mapping]]] = ..., enabled: _Optional[bool] = ..., description: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class StageResult(_message.Message):
    __slots__ = ("stage", "state", "message", "start_time", "end_time", "resource")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    stage: PipelineStage
    state: StageState
    message: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    resource: str
    def __init__(self, stage: _Optional[_Union[PipelineStage, str]] = ..., state: _Optional[_Union[StageState, str]] = ..., message: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., resource: _Optional[str] = ...) -> None: ...

class PipelineRun(_message.Message):
    __slots__ = ("name", "pipeline", "state", "progress", "error", "create_time", "start_time", "end_time", "trigger", "reason", "stages", "dataset", "training_job", "parent_version", "version", "evaluation_id", "rollout", "last_sequence", "pipeline_snapshot", "request_id", "suite_datasets")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    TRAINING_JOB_FIELD_NUMBER: _ClassVar[int]
    PARENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_ID_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SUITE_DATASETS_FIELD_NUMBER: _ClassVar[int]
    name: str
    pipeline: str
    state: _common_pb2.JobState
    progress: _common_pb2.JobProgress
    error: _status_pb2.Status
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    trigger: TriggerKind
    reason: str
    stages: _containers.RepeatedCompositeFieldContainer[StageResult]
    dataset: str
    training_job: str
    parent_version: str
    version: str
    evaluation_id: str
    rollout: str
    last_sequence: int
    pipeline_snapshot: Pipeline
    request_id: str
    suite_datasets: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., pipeline: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.JobState, str]] = ..., progress: _Optional[_Union[_common_pb2.JobProgress, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., trigger: _Optional[_Union[TriggerKind, str]] = ..., reason: _Optional[str] = ..., stages: _Optional[_Iterable[_Union[StageResult, _Mapping]]] = ..., dataset: _Optional[str] = ..., training_job: _Optional[str] = ..., parent_version: _Optional[str] = ..., version: _Optional[str] = ..., evaluation_id: _Optional[str] = ..., rollout: _Optional[str] = ..., last_sequence: _Optional[int] = ..., pipeline_snapshot: _Optional[_Union[Pipeline, _Mapping]] = ..., request_id: _Optional[str] = ..., suite_datasets: _Optional[_Iterable[str]] = ...) -> None: ...

class StageStarted(_message.Message):
    __slots__ = ("stage", "message")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    stage: PipelineStage
    message: str
    def __init__(self, stage: _Optional[_Union[PipelineStage, str]] = ..., message: _Optional[str] = ...) -> None: ...

class StageProgress(_message.Message):
    __slots__ = ("stage", "completed", "total", "message")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    stage: PipelineStage
    completed: int
    total: int
    message: str
    def __init__(self, stage: _Optional[_Union[PipelineStage, str]] = ..., completed: _Optional[int] = ..., total: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class PipelineRunEvent(_message.Message):
    __slots__ = ("sequence", "time", "state_change", "stage_started", "stage_progress", "stage_ended", "warning", "error", "notice")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    STATE_CHANGE_FIELD_NUMBER: _ClassVar[int]
    STAGE_STARTED_FIELD_NUMBER: _ClassVar[int]
    STAGE_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    STAGE_ENDED_FIELD_NUMBER: _ClassVar[int]
    WARNING_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    NOTICE_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    time: _timestamp_pb2.Timestamp
    state_change: _common_pb2.JobStateChange
    stage_started: StageStarted
    stage_progress: StageProgress
    stage_ended: StageResult
    warning: _common_pb2.JobWarning
    error: _common_pb2.JobError
    notice: _common_pb2.JobNotice
    def __init__(self, sequence: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state_change: _Optional[_Union[_common_pb2.JobStateChange, _Mapping]] = ..., stage_started: _Optional[_Union[StageStarted, _Mapping]] = ..., stage_progress: _Optional[_Union[StageProgress, _Mapping]] = ..., stage_ended: _Optional[_Union[StageResult, _Mapping]] = ..., warning: _Optional[_Union[_common_pb2.JobWarning, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.JobError, _Mapping]] = ..., notice: _Optional[_Union[_common_pb2.JobNotice, _Mapping]] = ...) -> None: ...

class TriggerDecision(_message.Message):
    __slots__ = ("kind", "key", "fired", "reason", "time", "run", "sample_count")
    KIND_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    FIRED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    kind: TriggerKind
    key: str
    fired: bool
    reason: str
    time: _timestamp_pb2.Timestamp
    run: str
    sample_count: int
    def __init__(self, kind: _Optional[_Union[TriggerKind, str]] = ..., key: _Optional[str] = ..., fired: _Optional[bool] = ..., reason: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., run: _Optional[str] = ..., sample_count: _Optional[int] = ...) -> None: ...

class CreatePipelineRequest(_message.Message):
    __slots__ = ("pipeline_id", "pipeline")
    PIPELINE_ID_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    pipeline_id: str
    pipeline: Pipeline
    def __init__(self, pipeline_id: _Optional[str] = ..., pipeline: _Optional[_Union[Pipeline, _Mapping]] = ...) -> None: ...

class CreatePipelineResponse(_message.Message):
    __slots__ = ("pipeline",)
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    pipeline: Pipeline
    def __init__(self, pipeline: _Optional[_Union[Pipeline, _Mapping]] = ...) -> None: ...

class GetPipelineRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetPipelineResponse(_message.Message):
    __slots__ = ("pipeline",)
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    pipeline: Pipeline
    def __init__(self, pipeline: _Optional[_Union[Pipeline, _Mapping]] = ...) -> None: ...

class ListPipelinesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPipelinesResponse(_message.Message):
    __slots__ = ("pipelines", "next_page_token")
    PIPELINES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    pipelines: _containers.RepeatedCompositeFieldContainer[Pipeline]
    next_page_token: str
    def __init__(self, pipelines: _Optional[_Iterable[_Union[Pipeline, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdatePipelineRequest(_message.Message):
    __slots__ = ("pipeline", "update_mask")
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    pipeline: Pipeline
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, pipeline: _Optional[_Union[Pipeline, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdatePipelineResponse(_message.Message):
    __slots__ = ("pipeline",)
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    pipeline: Pipeline
    def __init__(self, pipeline: _Optional[_Union[Pipeline, _Mapping]] = ...) -> None: ...

class DeletePipelineRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeletePipelineResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RunPipelineRequest(_message.Message):
    __slots__ = ("name", "reason", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    reason: str
    request_id: str
    def __init__(self, name: _Optional[str] = ..., reason: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class RunPipelineResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: PipelineRun
    def __init__(self, run: _Optional[_Union[PipelineRun, _Mapping]] = ...) -> None: ...

class ListPipelineRunsRequest(_message.Message):
    __slots__ = ("pipeline", "page_size", "page_token")
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    pipeline: str
    page_size: int
    page_token: str
    def __init__(self, pipeline: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListPipelineRunsResponse(_message.Message):
    __slots__ = ("runs", "next_page_token")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[PipelineRun]
    next_page_token: str
    def __init__(self, runs: _Optional[_Iterable[_Union[PipelineRun, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetPipelineRunRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetPipelineRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: PipelineRun
    def __init__(self, run: _Optional[_Union[PipelineRun, _Mapping]] = ...) -> None: ...

class CancelPipelineRunRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class CancelPipelineRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: PipelineRun
    def __init__(self, run: _Optional[_Union[PipelineRun, _Mapping]] = ...) -> None: ...

class WatchPipelineRunRequest(_message.Message):
    __slots__ = ("name", "after_sequence")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    after_sequence: int
    def __init__(self, name: _Optional[str] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class WatchPipelineRunResponse(_message.Message):
    __slots__ = ("snapshot", "event")
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    snapshot: PipelineRun
    event: PipelineRunEvent
    def __init__(self, snapshot: _Optional[_Union[PipelineRun, _Mapping]] = ..., event: _Optional[_Union[PipelineRunEvent, _Mapping]] = ...) -> None: ...

class ListTriggerDecisionsRequest(_message.Message):
    __slots__ = ("pipeline", "page_size", "page_token")
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    pipeline: str
    page_size: int
    page_token: str
    def __init__(self, pipeline: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListTriggerDecisionsResponse(_message.Message):
    __slots__ = ("decisions", "next_page_token")
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    decisions: _containers.RepeatedCompositeFieldContainer[TriggerDecision]
    next_page_token: str
    def __init__(self, decisions: _Optional[_Iterable[_Union[TriggerDecision, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
