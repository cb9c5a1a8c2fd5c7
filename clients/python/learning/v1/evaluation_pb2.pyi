import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from learning.v1 import adapter_pb2 as _adapter_pb2
from learning.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EvaluationJudge(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVALUATION_JUDGE_UNSPECIFIED: _ClassVar[EvaluationJudge]
    EVALUATION_JUDGE_ON: _ClassVar[EvaluationJudge]
    EVALUATION_JUDGE_OFF: _ClassVar[EvaluationJudge]
EVALUATION_JUDGE_UNSPECIFIED: EvaluationJudge
EVALUATION_JUDGE_ON: EvaluationJudge
EVALUATION_JUDGE_OFF: EvaluationJudge

class EvaluationJobSpec(_message.Message):
    __slots__ = ("base_model", "version", "baseline_version", "suite_paths", "judge", "judge_model", "suite_datasets", "base_model_itself")
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BASELINE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SUITE_PATHS_FIELD_NUMBER: _ClassVar[int]
    JUDGE_FIELD_NUMBER: _ClassVar[int]
    JUDGE_MODEL_FIELD_NUMBER: _ClassVar[int]
    SUITE_DATASETS_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_ITSELF_FIELD_NUMBER: _ClassVar[int]
    base_model: str
    version: str
    baseline_version: str
    suite_paths: _containers.RepeatedScalarFieldContainer[str]
    judge: EvaluationJudge
    judge_model: str
    suite_datasets: _containers.RepeatedScalarFieldContainer[str]
    base_model_itself: bool
    def __init__(self, base_model: _Optional[str] = ..., version: _Optional[str] = ..., baseline_version: _Optional[str] = ..., suite_paths: _Optional[_Iterable[str]] = ..., judge: _Optional[_Union[EvaluationJudge, str]] = ..., judge_model: _Optional[str] = ..., suite_datasets: _Optional[_Iterable[str]] = ..., base_model_itself: _Optional[bool] = ...) -> None: ...

class EvaluationJob(_message.Message):
    __slots__ = ("name", "request_id", "state", "progress", "error", "create_time", "start_time", "end_time", "spec", "eval", "last_sequence", "resolved_suite_datasets")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    EVAL_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_SUITE_DATASETS_FIELD_NUMBER: _ClassVar[int]
    name: str
    request_id: str
    state: _common_pb2.JobState
    progress: _common_pb2.JobProgress
    error: _status_pb2.Status
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    spec: EvaluationJobSpec
    eval: _adapter_pb2.AdapterEvalSummary
    last_sequence: int
    resolved_suite_datasets: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., request_id: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.JobState, str]] = ..., progress: _Optional[_Union[_common_pb2.JobProgress, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., spec: _Optional[_Union[EvaluationJobSpec, _Mapping]] = ..., eval: _Optional[_Union[_adapter_pb2.AdapterEvalSummary, _Mapping]] = ..., last_sequence: _Optional[int] = ..., resolved_suite_datasets: _Optional[_Iterable[str]] = ...) -> None: ...

class EvaluationProgress(_message.Message):
    __slots__ = ("suite", "answered", "total")
    SUITE_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    suite: str
    answered: int
    total: int
    def __init__(self, suite: _Optional[str] = ..., answered: _Optional[int] = ..., total: _Optional[int] = ...) -> None: ...

class EvaluationJobEvent(_message.Message):
    __slots__ = ("sequence", "time", "state_change", "progress", "warning", "error", "notice")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    STATE_CHANGE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    WARNING_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    NOTICE_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    time: _timestamp_pb2.Timestamp
    state_change: _common_pb2.JobStateChange
    progress: EvaluationProgress
    warning: _common_pb2.JobWarning
    error: _common_pb2.JobError
    notice: _common_pb2.JobNotice
    def __init__(self, sequence: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state_change: _Optional[_Union[_common_pb2.JobStateChange, _Mapping]] = ..., progress: _Optional[_Union[EvaluationProgress, _Mapping]] = ..., warning: _Optional[_Union[_common_pb2.JobWarning, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.JobError, _Mapping]] = ..., notice: _Optional[_Union[_common_pb2.JobNotice, _Mapping]] = ...) -> None: ...

class CreateEvaluationJobRequest(_message.Message):
    __slots__ = ("spec", "request_id")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    spec: EvaluationJobSpec
    request_id: str
    def __init__(self, spec: _Optional[_Union[EvaluationJobSpec, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateEvaluationJobResponse(_message.Message):
    __slots__ = ("evaluation_job",)
    EVALUATION_JOB_FIELD_NUMBER: _ClassVar[int]
    evaluation_job: EvaluationJob
    def __init__(self, evaluation_job: _Optional[_Union[EvaluationJob, _Mapping]] = ...) -> None: ...

class GetEvaluationJobRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetEvaluationJobResponse(_message.Message):
    __slots__ = ("evaluation_job",)
    EVALUATION_JOB_FIELD_NUMBER: _ClassVar[int]
    evaluation_job: EvaluationJob
    def __init__(self, evaluation_job: _Optional[_Union[EvaluationJob, _Mapping]] = ...) -> None: ...

class ListEvaluationJobsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "states")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    states: _containers.RepeatedScalarFieldContainer[_common_pb2.JobState]
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., states: _Optional[_Iterable[_Union[_common_pb2.JobState, str]]] = ...) -> None: ...

class ListEvaluationJobsResponse(_message.Message):
    __slots__ = ("evaluation_jobs", "next_page_token")
    EVALUATION_JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    evaluation_jobs: _containers.RepeatedCompositeFieldContainer[EvaluationJob]
    next_page_token: str
    def __init__(self, evaluation_jobs: _Optional[_Iterable[_Union[EvaluationJob, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelEvaluationJobRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class CancelEvaluationJobResponse(_message.Message):
    __slots__ = ("evaluation_job",)
    EVALUATION_JOB_FIELD_NUMBER: _ClassVar[int]
    evaluation_job: EvaluationJob
    def __init__(self, evaluation_job: _Optional[_Union[EvaluationJob, _Mapping]] = ...) -> None: ...

class WatchEvaluationJobRequest(_message.Message):
    __slots__ = ("name", "after_sequence")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    after_sequence: int
    def __init__(self, name: _Optional[str] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class WatchEvaluationJobResponse(_message.Message):
    __slots__ = ("snapshot", "event")
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    snapshot: EvaluationJob
    event: EvaluationJobEvent
    def __init__(self, snapshot: _Optional[_Union[EvaluationJob, _Mapping]] = ..., event: _Optional[_Union[EvaluationJobEvent, _Mapping]] = ...) -> None: ...
