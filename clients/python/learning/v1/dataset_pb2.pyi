import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from learning.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DatasetKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATASET_KIND_UNSPECIFIED: _ClassVar[DatasetKind]
    DATASET_KIND_TRAINING: _ClassVar[DatasetKind]
    DATASET_KIND_GOLDEN: _ClassVar[DatasetKind]
DATASET_KIND_UNSPECIFIED: DatasetKind
DATASET_KIND_TRAINING: DatasetKind
DATASET_KIND_GOLDEN: DatasetKind

class SplitRule(_message.Message):
    __slots__ = ("eval_fraction", "test_fraction", "seed")
    EVAL_FRACTION_FIELD_NUMBER: _ClassVar[int]
    TEST_FRACTION_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    eval_fraction: float
    test_fraction: float
    seed: int
    def __init__(self, eval_fraction: _Optional[float] = ..., test_fraction: _Optional[float] = ..., seed: _Optional[int] = ...) -> None: ...

class SplitCounts(_message.Message):
    __slots__ = ("train", "eval", "test")
    TRAIN_FIELD_NUMBER: _ClassVar[int]
    EVAL_FIELD_NUMBER: _ClassVar[int]
    TEST_FIELD_NUMBER: _ClassVar[int]
    train: int
    eval: int
    test: int
    def __init__(self, train: _Optional[int] = ..., eval: _Optional[int] = ..., test: _Optional[int] = ...) -> None: ...

class UploadedDataset(_message.Message):
    __slots__ = ("filename",)
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    filename: str
    def __init__(self, filename: _Optional[str] = ...) -> None: ...

class PreparedDataset(_message.Message):
    __slots__ = ("preparation_job", "documents")
    PREPARATION_JOB_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    preparation_job: str
    documents: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, preparation_job: _Optional[str] = ..., documents: _Optional[_Iterable[str]] = ...) -> None: ...

class Dataset(_message.Message):
    __slots__ = ("name", "dataset", "version", "sha256", "size_bytes", "digest", "example_count", "composition", "split", "split_counts", "create_time", "uri", "upload", "server_path", "s3_uri", "feedback", "prepared", "window_start", "window_end", "kind")
    class CompositionEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    EXAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    COMPOSITION_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    SPLIT_COUNTS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_FIELD_NUMBER: _ClassVar[int]
    SERVER_PATH_FIELD_NUMBER: _ClassVar[int]
    S3_URI_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    PREPARED_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    name: str
    dataset: str
    version: int
    sha256: str
    size_bytes: int
    digest: str
    example_count: int
    composition: _containers.ScalarMap[str, int]
    split: SplitRule
    split_counts: SplitCounts
    create_time: _timestamp_pb2.Timestamp
    uri: str
    upload: UploadedDataset
    server_path: str
    s3_uri: str
    feedback: _common_pb2.FeedbackDataset
    prepared: PreparedDataset
    window_start: _timestamp_pb2.Timestamp
    window_end: _timestamp_pb2.Timestamp
    kind: DatasetKind
    def __init__(self, name: _Optional[str] = ..., dataset: _Optional[str] = ..., version: _Optional[int] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., digest: _Optional[str] = ..., example_count: _Optional[int] = ..., composition: _Optional[_Mapping[str, int]] = ..., split: _Optional[_Union[SplitRule, _Mapping]] = ..., split_counts: _Optional[_Union[SplitCounts, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., uri: _Optional[str] = ..., upload: _Optional[_Union[UploadedDataset, _Mapping]] = ..., server_path: _Optional[str] = ..., s3_uri: _Optional[str] = ..., feedback: _Optional[_Union[_common_pb2.FeedbackDataset, _Mapping]] = ..., prepared: _Optional[_Union[PreparedDataset, _Mapping]] = ..., window_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kind: _Optional[_Union[DatasetKind, str]] = ...) -> None: ...

class UploadDatasetMetadata(_message.Message):
    __slots__ = ("name", "split", "sha256", "size_bytes", "filename", "kind")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    name: str
    split: SplitRule
    sha256: str
    size_bytes: int
    filename: str
    kind: DatasetKind
    def __init__(self, name: _Optional[str] = ..., split: _Optional[_Union[SplitRule, _Mapping]] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., filename: _Optional[str] = ..., kind: _Optional[_Union[DatasetKind, str]] = ...) -> None: ...

class UploadDatasetRequest(_message.Message):
    __slots__ = ("metadata", "chunk")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    metadata: UploadDatasetMetadata
    chunk: bytes
    def __init__(self, metadata: _Optional[_Union[UploadDatasetMetadata, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class UploadDatasetResponse(_message.Message):
    __slots__ = ("dataset", "created")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    dataset: Dataset
    created: bool
    def __init__(self, dataset: _Optional[_Union[Dataset, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class CreateDatasetRequest(_message.Message):
    __slots__ = ("name", "split", "server_path", "s3_uri", "feedback", "kind")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    SERVER_PATH_FIELD_NUMBER: _ClassVar[int]
    S3_URI_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    name: str
    split: SplitRule
    server_path: str
    s3_uri: str
    feedback: _common_pb2.FeedbackDataset
    kind: DatasetKind
    def __init__(self, name: _Optional[str] = ..., split: _Optional[_Union[SplitRule, _Mapping]] = ..., server_path: _Optional[str] = ..., s3_uri: _Optional[str] = ..., feedback: _Optional[_Union[_common_pb2.FeedbackDataset, _Mapping]] = ..., kind: _Optional[_Union[DatasetKind, str]] = ...) -> None: ...

class CreateDatasetResponse(_message.Message):
    __slots__ = ("dataset", "created")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    dataset: Dataset
    created: bool
    def __init__(self, dataset: _Optional[_Union[Dataset, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class GetDatasetRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetDatasetResponse(_message.Message):
    __slots__ = ("dataset",)
    DATASET_FIELD_NUMBER: _ClassVar[int]
    dataset: Dataset
    def __init__(self, dataset: _Optional[_Union[Dataset, _Mapping]] = ...) -> None: ...

class ListDatasetsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "dataset")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    dataset: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., dataset: _Optional[str] = ...) -> None: ...

class ListDatasetsResponse(_message.Message):
    __slots__ = ("datasets", "next_page_token")
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    datasets: _containers.RepeatedCompositeFieldContainer[Dataset]
    next_page_token: str
    def __init__(self, datasets: _Optional[_Iterable[_Union[Dataset, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteDatasetRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteDatasetResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, deleted: _Optional[_Iterable[str]] = ...) -> None: ...

class ValidateDatasetRequest(_message.Message):
    __slots__ = ("split", "content", "server_path", "s3_uri", "feedback", "kind")
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    SERVER_PATH_FIELD_NUMBER: _ClassVar[int]
    S3_URI_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    split: SplitRule
    content: bytes
    server_path: str
    s3_uri: str
    feedback: _common_pb2.FeedbackDataset
    kind: DatasetKind
    def __init__(self, split: _Optional[_Union[SplitRule, _Mapping]] = ..., content: _Optional[bytes] = ..., server_path: _Optional[str] = ..., s3_uri: _Optional[str] = ..., feedback: _Optional[_Union[_common_pb2.FeedbackDataset, _Mapping]] = ..., kind: _Optional[_Union[DatasetKind, str]] = ...) -> None: ...

class ValidateDatasetResponse(_message.Message):
    __slots__ = ("sha256", "size_bytes", "digest", "example_count", "composition", "split_counts", "kind")
    class CompositionEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    EXAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    COMPOSITION_FIELD_NUMBER: _ClassVar[int]
    SPLIT_COUNTS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    size_bytes: int
    digest: str
    example_count: int
    composition: _containers.ScalarMap[str, int]
    split_counts: SplitCounts
    kind: DatasetKind
    def __init__(self, sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., digest: _Optional[str] = ..., example_count: _Optional[int] = ..., composition: _Optional[_Mapping[str, int]] = ..., split_counts: _Optional[_Union[SplitCounts, _Mapping]] = ..., kind: _Optional[_Union[DatasetKind, str]] = ...) -> None: ...
