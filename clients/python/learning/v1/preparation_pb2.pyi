import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from learning.v1 import common_pb2 as _common_pb2
from learning.v1 import dataset_pb2 as _dataset_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PreparationDocument(_message.Message):
    __slots__ = ("name", "content", "server_path", "sha256", "size_bytes", "read_from")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    SERVER_PATH_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    READ_FROM_FIELD_NUMBER: _ClassVar[int]
    name: str
    content: bytes
    server_path: str
    sha256: str
    size_bytes: int
    read_from: str
    def __init__(self, name: _Optional[str] = ..., content: _Optional[bytes] = ..., server_path: _Optional[str] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., read_from: _Optional[str] = ...) -> None: ...

class PreparationJobSpec(_message.Message):
    __slots__ = ("dataset", "documents", "questions_per_chunk", "chunk_chars", "generator_model", "split")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    QUESTIONS_PER_CHUNK_FIELD_NUMBER: _ClassVar[int]
    CHUNK_CHARS_FIELD_NUMBER: _ClassVar[int]
    GENERATOR_MODEL_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    documents: _containers.RepeatedCompositeFieldContainer[PreparationDocument]
    questions_per_chunk: int
    chunk_chars: int
    generator_model: str
    split: _dataset_pb2.SplitRule
    def __init__(self, dataset: _Optional[str] = ..., documents: _Optional[_Iterable[_Union[PreparationDocument, _Mapping]]] = ..., questions_per_chunk: _Optional[int] = ..., chunk_chars: _Optional[int] = ..., generator_model: _Optional[str] = ..., split: _Optional[_Union[_dataset_pb2.SplitRule, _Mapping]] = ...) -> None: ...

class PreparationJob(_message.Message):
    __slots__ = ("name", "request_id", "state", "progress", "error", "create_time", "start_time", "end_time", "spec", "result", "last_sequence")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    request_id: str
    state: _common_pb2.JobState
    progress: _common_pb2.JobProgress
    error: _status_pb2.Status
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    spec: PreparationJobSpec
    result: PreparationResult
    last_sequence: int
    def __init__(self, name: _Optional[str] = ..., request_id: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.JobState, str]] = ..., progress: _Optional[_Union[_common_pb2.JobProgress, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., spec: _Optional[_Union[PreparationJobSpec, _Mapping]] = ..., result: _Optional[_Union[PreparationResult, _Mapping]] = ..., last_sequence: _Optional[int] = ...) -> None: ...

class PreparationResult(_message.Message):
    __slots__ = ("dataset_version", "created", "generator_model", "generator_target", "chunks", "skipped_chunks", "generated", "kept", "unsupported", "duplicates", "unparseable")
    DATASET_VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    GENERATOR_MODEL_FIELD_NUMBER: _ClassVar[int]
    GENERATOR_TARGET_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    GENERATED_FIELD_NUMBER: _ClassVar[int]
    KEPT_FIELD_NUMBER: _ClassVar[int]
    UNSUPPORTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    UNPARSEABLE_FIELD_NUMBER: _ClassVar[int]
    dataset_version: str
    created: bool
    generator_model: str
    generator_target: str
    chunks: int
    skipped_chunks: int
    generated: int
    kept: int
    unsupported: int
    duplicates: int
    unparseable: int
    def __init__(self, dataset_version: _Optional[str] = ..., created: _Optional[bool] = ..., generator_model: _Optional[str] = ..., generator_target: _Optional[str] = ..., chunks: _Optional[int] = ..., skipped_chunks: _Optional[int] = ..., generated: _Optional[int] = ..., kept: _Optional[int] = ..., unsupported: _Optional[int] = ..., duplicates: _Optional[int] = ..., unparseable: _Optional[int] = ...) -> None: ...

class ChunkPrepared(_message.Message):
    __slots__ = ("document", "chunk", "start", "end", "done", "total", "kept", "unsupported", "duplicates", "unparseable", "rejected_sample")
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    KEPT_FIELD_NUMBER: _ClassVar[int]
    UNSUPPORTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    UNPARSEABLE_FIELD_NUMBER: _ClassVar[int]
    REJECTED_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    document: str
    chunk: int
    start: int
    end: int
    done: int
    total: int
    kept: int
    unsupported: int
    duplicates: int
    unparseable: int
    rejected_sample: str
    def __init__(self, document: _Optional[str] = ..., chunk: _Optional[int] = ..., start: _Optional[int] = ..., end: _Optional[int] = ..., done: _Optional[int] = ..., total: _Optional[int] = ..., kept: _Optional[int] = ..., unsupported: _Optional[int] = ..., duplicates: _Optional[int] = ..., unparseable: _Optional[int] = ..., rejected_sample: _Optional[str] = ...) -> None: ...

class PreparationJobEvent(_message.Message):
    __slots__ = ("sequence", "time", "state_change", "chunk", "warning", "error", "notice")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    STATE_CHANGE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    WARNING_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    NOTICE_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    time: _timestamp_pb2.Timestamp
    state_change: _common_pb2.JobStateChange
    chunk: ChunkPrepared
    warning: _common_pb2.JobWarning
    error: _common_pb2.JobError
    notice: _common_pb2.JobNotice
    def __init__(self, sequence: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state_change: _Optional[_Union[_common_pb2.JobStateChange, _Mapping]] = ..., chunk: _Optional[_Union[ChunkPrepared, _Mapping]] = ..., warning: _Optional[_Union[_common_pb2.JobWarning, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.JobError, _Mapping]] = ..., notice: _Optional[_Union[_common_pb2.JobNotice, _Mapping]] = ...) -> None: ...

class CreatePreparationJobRequest(_message.Message):
    __slots__ = ("spec", "request_id")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    spec: PreparationJobSpec
    request_id: str
    def __init__(self, spec: _Optional[_Union[PreparationJobSpec, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreatePreparationJobResponse(_message.Message):
    __slots__ = ("preparation_job",)
    PREPARATION_JOB_FIELD_NUMBER: _ClassVar[int]
    preparation_job: PreparationJob
    def __init__(self, preparation_job: _Optional[_Union[PreparationJob, _Mapping]] = ...) -> None: ...

class GetPreparationJobRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetPreparationJobResponse(_message.Message):
    __slots__ = ("preparation_job",)
    PREPARATION_JOB_FIELD_NUMBER: _ClassVar[int]
    preparation_job: PreparationJob
    def __init__(self, preparation_job: _Optional[_Union[PreparationJob, _Mapping]] = ...) -> None: ...

class ListPreparationJobsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "states")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    states: _containers.RepeatedScalarFieldContainer[_common_pb2.JobState]
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., states: _Optional[_Iterable[_Union[_common_pb2.JobState, str]]] = ...) -> None: ...

class ListPreparationJobsResponse(_message.Message):
    __slots__ = ("preparation_jobs", "next_page_token")
    PREPARATION_JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    preparation_jobs: _containers.RepeatedCompositeFieldContainer[PreparationJob]
    next_page_token: str
    def __init__(self, preparation_jobs: _Optional[_Iterable[_Union[PreparationJob, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelPreparationJobRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class CancelPreparationJobResponse(_message.Message):
    __slots__ = ("preparation_job",)
    PREPARATION_JOB_FIELD_NUMBER: _ClassVar[int]
    preparation_job: PreparationJob
    def __init__(self, preparation_job: _Optional[_Union[PreparationJob, _Mapping]] = ...) -> None: ...

class WatchPreparationJobRequest(_message.Message):
    __slots__ = ("name", "after_sequence")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    after_sequence: int
    def __init__(self, name: _Optional[str] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class WatchPreparationJobResponse(_message.Message):
    __slots__ = ("snapshot", "event")
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    snapshot: PreparationJob
    event: PreparationJobEvent
    def __init__(self, snapshot: _Optional[_Union[PreparationJob, _Mapping]] = ..., event: _Optional[_Union[PreparationJobEvent, _Mapping]] = ...) -> None: ...
