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

class AdapterSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ADAPTER_SOURCE_UNSPECIFIED: _ClassVar[AdapterSource]
    ADAPTER_SOURCE_TRAINED: _ClassVar[AdapterSource]
    ADAPTER_SOURCE_IMPORTED: _ClassVar[AdapterSource]
    ADAPTER_SOURCE_ONLINE: _ClassVar[AdapterSource]

class EvalSuiteKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVAL_SUITE_KIND_UNSPECIFIED: _ClassVar[EvalSuiteKind]
    EVAL_SUITE_KIND_GOLDEN: _ClassVar[EvalSuiteKind]
    EVAL_SUITE_KIND_TARGET: _ClassVar[EvalSuiteKind]
    EVAL_SUITE_KIND_RETENTION: _ClassVar[EvalSuiteKind]
    EVAL_SUITE_KIND_BASE: _ClassVar[EvalSuiteKind]
ADAPTER_SOURCE_UNSPECIFIED: AdapterSource
ADAPTER_SOURCE_TRAINED: AdapterSource
ADAPTER_SOURCE_IMPORTED: AdapterSource
ADAPTER_SOURCE_ONLINE: AdapterSource
EVAL_SUITE_KIND_UNSPECIFIED: EvalSuiteKind
EVAL_SUITE_KIND_GOLDEN: EvalSuiteKind
EVAL_SUITE_KIND_TARGET: EvalSuiteKind
EVAL_SUITE_KIND_RETENTION: EvalSuiteKind
EVAL_SUITE_KIND_BASE: EvalSuiteKind

class EvalSuiteVerdict(_message.Message):
    __slots__ = ("name", "kind", "digest", "cases", "metrics", "regressions", "passed", "failed_checks", "regressed_prompts", "note")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    CASES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    REGRESSIONS_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    FAILED_CHECKS_FIELD_NUMBER: _ClassVar[int]
    REGRESSED_PROMPTS_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: EvalSuiteKind
    digest: str
    cases: int
    metrics: _containers.RepeatedCompositeFieldContainer[_common_pb2.EvalMetric]
    regressions: int
    passed: bool
    failed_checks: _containers.RepeatedScalarFieldContainer[str]
    regressed_prompts: _containers.RepeatedScalarFieldContainer[str]
    note: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[EvalSuiteKind, str]] = ..., digest: _Optional[str] = ..., cases: _Optional[int] = ..., metrics: _Optional[_Iterable[_Union[_common_pb2.EvalMetric, _Mapping]]] = ..., regressions: _Optional[int] = ..., passed: _Optional[bool] = ..., failed_checks: _Optional[_Iterable[str]] = ..., regressed_prompts: _Optional[_Iterable[str]] = ..., note: _Optional[str] = ...) -> None: ...

class AdapterEvalSummary(_message.Message):
    __slots__ = ("suite_digest", "baseline_version", "metrics", "regressions", "passed", "report_uris", "time", "suites", "failed_checks", "evaluation_id")
    SUITE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    BASELINE_VERSION_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    REGRESSIONS_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    REPORT_URIS_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    SUITES_FIELD_NUMBER: _ClassVar[int]
    FAILED_CHECKS_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_ID_FIELD_NUMBER: _ClassVar[int]
    suite_digest: str
    baseline_version: str
    metrics: _containers.RepeatedCompositeFieldContainer[_common_pb2.EvalMetric]
    regressions: int
    passed: bool
    report_uris: _containers.RepeatedScalarFieldContainer[str]
    time: _timestamp_pb2.Timestamp
    suites: _containers.RepeatedCompositeFieldContainer[EvalSuiteVerdict]
    failed_checks: _containers.RepeatedScalarFieldContainer[str]
    evaluation_id: str
    def __init__(self, suite_digest: _Optional[str] = ..., baseline_version: _Optional[str] = ..., metrics: _Optional[_Iterable[_Union[_common_pb2.EvalMetric, _Mapping]]] = ..., regressions: _Optional[int] = ..., passed: _Optional[bool] = ..., report_uris: _Optional[_Iterable[str]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., suites: _Optional[_Iterable[_Union[EvalSuiteVerdict, _Mapping]]] = ..., failed_checks: _Optional[_Iterable[str]] = ..., evaluation_id: _Optional[str] = ...) -> None: ...

class Adapter(_message.Message):
    __slots__ = ("name", "base_model", "version", "base_model_digest", "source", "training_job", "parent_version", "lora_config", "dataset", "train_loss", "ewc_lambda", "ewc_gamma", "fisher_snapshot", "eval", "size_bytes", "sha256", "create_time", "labels", "artifact_uri", "delete_time", "request_id", "ewc_fisher_space", "base_retention", "base_protection", "base_rehearsed_examples", "eval_loss", "eval_fraction")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TRAINING_JOB_FIELD_NUMBER: _ClassVar[int]
    PARENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    LORA_CONFIG_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    TRAIN_LOSS_FIELD_NUMBER: _ClassVar[int]
    EWC_LAMBDA_FIELD_NUMBER: _ClassVar[int]
    EWC_GAMMA_FIELD_NUMBER: _ClassVar[int]
    FISHER_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    EVAL_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_URI_FIELD_NUMBER: _ClassVar[int]
    DELETE_TIME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EWC_FISHER_SPACE_FIELD_NUMBER: _ClassVar[int]
    BASE_RETENTION_FIELD_NUMBER: _ClassVar[int]
    BASE_PROTECTION_FIELD_NUMBER: _ClassVar[int]
    BASE_REHEARSED_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    EVAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    EVAL_FRACTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    base_model: str
    version: str
    base_model_digest: str
    source: AdapterSource
    training_job: str
    parent_version: str
    lora_config: _common_pb2.LoraConfig
    dataset: _common_pb2.DatasetSummary
    train_loss: float
    ewc_lambda: float
    ewc_gamma: float
    fisher_snapshot: str
    eval: AdapterEvalSummary
    size_bytes: int
    sha256: str
    create_time: _timestamp_pb2.Timestamp
    labels: _containers.ScalarMap[str, str]
    artifact_uri: str
    delete_time: _timestamp_pb2.Timestamp
    request_id: str
    ewc_fisher_space: _common_pb2.FisherSpace
    base_retention: _common_pb2.BaseRetention
    base_protection: _common_pb2.BaseProtection
    base_rehearsed_examples: int
    eval_loss: float
    eval_fraction: float
    def __init__(self, name: _Optional[str] = ..., base_model: _Optional[str] = ..., version: _Optional[str] = ..., base_model_digest: _Optional[str] = ..., source: _Optional[_Union[AdapterSource, str]] = ..., training_job: _Optional[str] = ..., parent_version: _Optional[str] = ..., lora_config: _Optional[_Union[_common_pb2.LoraConfig, _Mapping]] = ..., dataset: _Optional[_Union[_common_pb2.DatasetSummary, _Mapping]] = ..., train_loss: _Optional[float] = ..., ewc_lambda: _Optional[float] = ..., ewc_gamma: _Optional[float] = ..., fisher_snapshot: _Optional[str] = ..., eval: _Optional[_Union[AdapterEvalSummary, _Mapping]] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., artifact_uri: _Optional[str] = ..., delete_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., request_id: _Optional[str] = ..., ewc_fisher_space: _Optional[_Union[_common_pb2.FisherSpace, str]] = ..., base_retention: _Optional[_Union[_common_pb2.BaseRetention, _Mapping]] = ..., base_protection: _Optional[_Union[_common_pb2.BaseProtection, _Mapping]] = ..., base_rehearsed_examples: _Optional[int] = ..., eval_loss: _Optional[float] = ..., eval_fraction: _Optional[float] = ...) -> None: ...

class ListAdaptersRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "base_model", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    base_model: str
    labels: _containers.ScalarMap[str, str]
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., base_model: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ListAdaptersResponse(_message.Message):
    __slots__ = ("adapters", "next_page_token")
    ADAPTERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    adapters: _containers.RepeatedCompositeFieldContainer[Adapter]
    next_page_token: str
    def __init__(self, adapters: _Optional[_Iterable[_Union[Adapter, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetAdapterRequest(_message.Message):
    __slots__ = ("base_model", "version")
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    base_model: str
    version: str
    def __init__(self, base_model: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class GetAdapterResponse(_message.Message):
    __slots__ = ("adapter",)
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    adapter: Adapter
    def __init__(self, adapter: _Optional[_Union[Adapter, _Mapping]] = ...) -> None: ...

class DownloadAdapterRequest(_message.Message):
    __slots__ = ("base_model", "version", "chunk_size")
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    base_model: str
    version: str
    chunk_size: int
    def __init__(self, base_model: _Optional[str] = ..., version: _Optional[str] = ..., chunk_size: _Optional[int] = ...) -> None: ...

class AdapterArchiveHeader(_message.Message):
    __slots__ = ("adapter", "sha256", "size_bytes", "filename")
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    adapter: Adapter
    sha256: str
    size_bytes: int
    filename: str
    def __init__(self, adapter: _Optional[_Union[Adapter, _Mapping]] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., filename: _Optional[str] = ...) -> None: ...

class DownloadAdapterResponse(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: AdapterArchiveHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[AdapterArchiveHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class DeleteAdapterRequest(_message.Message):
    __slots__ = ("base_model", "version")
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    base_model: str
    version: str
    def __init__(self, base_model: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class DeleteAdapterResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetLineageRequest(_message.Message):
    __slots__ = ("base_model", "version")
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    base_model: str
    version: str
    def __init__(self, base_model: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class GetLineageResponse(_message.Message):
    __slots__ = ("adapters",)
    ADAPTERS_FIELD_NUMBER: _ClassVar[int]
    adapters: _containers.RepeatedCompositeFieldContainer[Adapter]
    def __init__(self, adapters: _Optional[_Iterable[_Union[Adapter, _Mapping]]] = ...) -> None: ...

class ImportAdapterMetadata(_message.Message):
    __slots__ = ("base_model", "parent_version", "major_version_bump", "labels", "sha256", "request_id")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    PARENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    MAJOR_VERSION_BUMP_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    base_model: str
    parent_version: str
    major_version_bump: bool
    labels: _containers.ScalarMap[str, str]
    sha256: str
    request_id: str
    def __init__(self, base_model: _Optional[str] = ..., parent_version: _Optional[str] = ..., major_version_bump: _Optional[bool] = ..., labels: _Optional[_Mapping[str, str]] = ..., sha256: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class ImportAdapterRequest(_message.Message):
    __slots__ = ("metadata", "chunk")
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    metadata: ImportAdapterMetadata
    chunk: bytes
    def __init__(self, metadata: _Optional[_Union[ImportAdapterMetadata, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class ImportAdapterResponse(_message.Message):
    __slots__ = ("adapter",)
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    adapter: Adapter
    def __init__(self, adapter: _Optional[_Union[Adapter, _Mapping]] = ...) -> None: ...

class PruneAdaptersRequest(_message.Message):
    __slots__ = ("base_model", "keep", "dry_run")
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    KEEP_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    base_model: str
    keep: int
    dry_run: bool
    def __init__(self, base_model: _Optional[str] = ..., keep: _Optional[int] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class PruneAdaptersResponse(_message.Message):
    __slots__ = ("deleted_versions", "kept_versions")
    DELETED_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    KEPT_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    deleted_versions: _containers.RepeatedScalarFieldContainer[str]
    kept_versions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, deleted_versions: _Optional[_Iterable[str]] = ..., kept_versions: _Optional[_Iterable[str]] = ...) -> None: ...
