import datetime

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

class FisherEstimator(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FISHER_ESTIMATOR_UNSPECIFIED: _ClassVar[FisherEstimator]
    FISHER_ESTIMATOR_EMPIRICAL: _ClassVar[FisherEstimator]
    FISHER_ESTIMATOR_SAMPLED: _ClassVar[FisherEstimator]
    FISHER_ESTIMATOR_BATCH_MEAN_SQUARED: _ClassVar[FisherEstimator]
FISHER_ESTIMATOR_UNSPECIFIED: FisherEstimator
FISHER_ESTIMATOR_EMPIRICAL: FisherEstimator
FISHER_ESTIMATOR_SAMPLED: FisherEstimator
FISHER_ESTIMATOR_BATCH_MEAN_SQUARED: FisherEstimator

class FisherJobSpec(_message.Message):
    __slots__ = ("base_model", "adapter_version", "jsonl", "feedback", "num_samples", "estimator", "space")
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    JSONL_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    ESTIMATOR_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    base_model: str
    adapter_version: str
    jsonl: _common_pb2.JsonlDataset
    feedback: _common_pb2.FeedbackDataset
    num_samples: int
    estimator: FisherEstimator
    space: _common_pb2.FisherSpace
    def __init__(self, base_model: _Optional[str] = ..., adapter_version: _Optional[str] = ..., jsonl: _Optional[_Union[_common_pb2.JsonlDataset, _Mapping]] = ..., feedback: _Optional[_Union[_common_pb2.FeedbackDataset, _Mapping]] = ..., num_samples: _Optional[int] = ..., estimator: _Optional[_Union[FisherEstimator, str]] = ..., space: _Optional[_Union[_common_pb2.FisherSpace, str]] = ...) -> None: ...

class FisherJob(_message.Message):
    __slots__ = ("name", "request_id", "state", "progress", "error", "create_time", "start_time", "end_time", "spec", "output_snapshot", "last_sequence")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    request_id: str
    state: _common_pb2.JobState
    progress: _common_pb2.JobProgress
    error: _status_pb2.Status
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    spec: FisherJobSpec
    output_snapshot: str
    last_sequence: int
    def __init__(self, name: _Optional[str] = ..., request_id: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.JobState, str]] = ..., progress: _Optional[_Union[_common_pb2.JobProgress, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., spec: _Optional[_Union[FisherJobSpec, _Mapping]] = ..., output_snapshot: _Optional[str] = ..., last_sequence: _Optional[int] = ...) -> None: ...

class FisherQuantile(_message.Message):
    __slots__ = ("q", "value")
    Q_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    q: float
    value: float
    def __init__(self, q: _Optional[float] = ..., value: _Optional[float] = ...) -> None: ...

class FisherStats(_message.Message):
    __slots__ = ("sum", "max", "mean", "quantiles", "parameter_count")
    SUM_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    QUANTILES_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_COUNT_FIELD_NUMBER: _ClassVar[int]
    sum: float
    max: float
    mean: float
    quantiles: _containers.RepeatedCompositeFieldContainer[FisherQuantile]
    parameter_count: int
    def __init__(self, sum: _Optional[float] = ..., max: _Optional[float] = ..., mean: _Optional[float] = ..., quantiles: _Optional[_Iterable[_Union[FisherQuantile, _Mapping]]] = ..., parameter_count: _Optional[int] = ...) -> None: ...

class FisherSnapshot(_message.Message):
    __slots__ = ("name", "base_model", "adapter_version", "dataset_digest", "sample_count", "estimator", "create_time", "stats", "sha256", "size_bytes", "normalization", "accumulated_from", "space")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    DATASET_DIGEST_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    ESTIMATOR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    NORMALIZATION_FIELD_NUMBER: _ClassVar[int]
    ACCUMULATED_FROM_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    name: str
    base_model: str
    adapter_version: str
    dataset_digest: str
    sample_count: int
    estimator: FisherEstimator
    create_time: _timestamp_pb2.Timestamp
    stats: FisherStats
    sha256: str
    size_bytes: int
    normalization: str
    accumulated_from: str
    space: _common_pb2.FisherSpace
    def __init__(self, name: _Optional[str] = ..., base_model: _Optional[str] = ..., adapter_version: _Optional[str] = ..., dataset_digest: _Optional[str] = ..., sample_count: _Optional[int] = ..., estimator: _Optional[_Union[FisherEstimator, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stats: _Optional[_Union[FisherStats, _Mapping]] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., normalization: _Optional[str] = ..., accumulated_from: _Optional[str] = ..., space: _Optional[_Union[_common_pb2.FisherSpace, str]] = ...) -> None: ...

class FisherProgress(_message.Message):
    __slots__ = ("samples_done", "samples_total", "samples_per_second")
    SAMPLES_DONE_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    samples_done: int
    samples_total: int
    samples_per_second: float
    def __init__(self, samples_done: _Optional[int] = ..., samples_total: _Optional[int] = ..., samples_per_second: _Optional[float] = ...) -> None: ...

class FisherJobEvent(_message.Message):
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
    progress: FisherProgress
    warning: _common_pb2.JobWarning
    error: _common_pb2.JobError
    notice: _common_pb2.JobNotice
    def __init__(self, sequence: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state_change: _Optional[_Union[_common_pb2.JobStateChange, _Mapping]] = ..., progress: _Optional[_Union[FisherProgress, _Mapping]] = ..., warning: _Optional[_Union[_common_pb2.JobWarning, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.JobError, _Mapping]] = ..., notice: _Optional[_Union[_common_pb2.JobNotice, _Mapping]] = ...) -> None: ...

class CreateFisherJobRequest(_message.Message):
    __slots__ = ("spec", "request_id")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    spec: FisherJobSpec
    request_id: str
    def __init__(self, spec: _Optional[_Union[FisherJobSpec, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateFisherJobResponse(_message.Message):
    __slots__ = ("fisher_job",)
    FISHER_JOB_FIELD_NUMBER: _ClassVar[int]
    fisher_job: FisherJob
    def __init__(self, fisher_job: _Optional[_Union[FisherJob, _Mapping]] = ...) -> None: ...

class GetFisherJobRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetFisherJobResponse(_message.Message):
    __slots__ = ("fisher_job",)
    FISHER_JOB_FIELD_NUMBER: _ClassVar[int]
    fisher_job: FisherJob
    def __init__(self, fisher_job: _Optional[_Union[FisherJob, _Mapping]] = ...) -> None: ...

class ListFisherJobsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "states")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    states: _containers.RepeatedScalarFieldContainer[_common_pb2.JobState]
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., states: _Optional[_Iterable[_Union[_common_pb2.JobState, str]]] = ...) -> None: ...

class ListFisherJobsResponse(_message.Message):
    __slots__ = ("fisher_jobs", "next_page_token")
    FISHER_JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    fisher_jobs: _containers.RepeatedCompositeFieldContainer[FisherJob]
    next_page_token: str
    def __init__(self, fisher_jobs: _Optional[_Iterable[_Union[FisherJob, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelFisherJobRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class CancelFisherJobResponse(_message.Message):
    __slots__ = ("fisher_job",)
    FISHER_JOB_FIELD_NUMBER: _ClassVar[int]
    fisher_job: FisherJob
    def __init__(self, fisher_job: _Optional[_Union[FisherJob, _Mapping]] = ...) -> None: ...

class WatchFisherJobRequest(_message.Message):
    __slots__ = ("name", "after_sequence")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    after_sequence: int
    def __init__(self, name: _Optional[str] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class WatchFisherJobResponse(_message.Message):
    __slots__ = ("snapshot", "event")
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    snapshot: FisherJob
    event: FisherJobEvent
    def __init__(self, snapshot: _Optional[_Union[FisherJob, _Mapping]] = ..., event: _Optional[_Union[FisherJobEvent, _Mapping]] = ...) -> None: ...

class GetFisherSnapshotRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetFisherSnapshotResponse(_message.Message):
    __slots__ = ("fisher_snapshot",)
    FISHER_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    fisher_snapshot: FisherSnapshot
    def __init__(self, fisher_snapshot: _Optional[_Union[FisherSnapshot, _Mapping]] = ...) -> None: ...

class ListFisherSnapshotsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "adapter_version", "base_model")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    adapter_version: str
    base_model: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., adapter_version: _Optional[str] = ..., base_model: _Optional[str] = ...) -> None: ...

class ListFisherSnapshotsResponse(_message.Message):
    __slots__ = ("fisher_snapshots", "next_page_token")
    FISHER_SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    fisher_snapshots: _containers.RepeatedCompositeFieldContainer[FisherSnapshot]
    next_page_token: str
    def __init__(self, fisher_snapshots: _Optional[_Iterable[_Union[FisherSnapshot, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteFisherSnapshotRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteFisherSnapshotResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
