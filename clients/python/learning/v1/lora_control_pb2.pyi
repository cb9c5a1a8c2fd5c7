import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from learning.v1 import adapter_pb2 as _adapter_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LoraOperationKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LORA_OPERATION_KIND_UNSPECIFIED: _ClassVar[LoraOperationKind]
    LORA_OPERATION_KIND_ACTIVATE: _ClassVar[LoraOperationKind]
    LORA_OPERATION_KIND_ROLLBACK: _ClassVar[LoraOperationKind]
    LORA_OPERATION_KIND_ENABLE: _ClassVar[LoraOperationKind]
    LORA_OPERATION_KIND_DISABLE: _ClassVar[LoraOperationKind]
    LORA_OPERATION_KIND_AUTO_ROLLBACK: _ClassVar[LoraOperationKind]
    LORA_OPERATION_KIND_RECONCILE: _ClassVar[LoraOperationKind]

class ReportFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPORT_FORMAT_UNSPECIFIED: _ClassVar[ReportFormat]
    REPORT_FORMAT_JSON: _ClassVar[ReportFormat]
    REPORT_FORMAT_MARKDOWN: _ClassVar[ReportFormat]
    REPORT_FORMAT_HTML: _ClassVar[ReportFormat]
    REPORT_FORMAT_PNG: _ClassVar[ReportFormat]
LORA_OPERATION_KIND_UNSPECIFIED: LoraOperationKind
LORA_OPERATION_KIND_ACTIVATE: LoraOperationKind
LORA_OPERATION_KIND_ROLLBACK: LoraOperationKind
LORA_OPERATION_KIND_ENABLE: LoraOperationKind
LORA_OPERATION_KIND_DISABLE: LoraOperationKind
LORA_OPERATION_KIND_AUTO_ROLLBACK: LoraOperationKind
LORA_OPERATION_KIND_RECONCILE: LoraOperationKind
REPORT_FORMAT_UNSPECIFIED: ReportFormat
REPORT_FORMAT_JSON: ReportFormat
REPORT_FORMAT_MARKDOWN: ReportFormat
REPORT_FORMAT_HTML: ReportFormat
REPORT_FORMAT_PNG: ReportFormat

class LoraOperation(_message.Message):
    __slots__ = ("kind", "version", "actor", "reason", "start_time", "duration", "phase_durations", "error", "gate")
    class PhaseDurationsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _duration_pb2.Duration
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...
    KIND_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    PHASE_DURATIONS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    GATE_FIELD_NUMBER: _ClassVar[int]
    kind: LoraOperationKind
    version: str
    actor: str
    reason: str
    start_time: _timestamp_pb2.Timestamp
    duration: _duration_pb2.Duration
    phase_durations: _containers.MessageMap[str, _duration_pb2.Duration]
    error: _status_pb2.Status
    gate: _adapter_pb2.AdapterEvalSummary
    def __init__(self, kind: _Optional[_Union[LoraOperationKind, str]] = ..., version: _Optional[str] = ..., actor: _Optional[str] = ..., reason: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., phase_durations: _Optional[_Mapping[str, _duration_pb2.Duration]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., gate: _Optional[_Union[_adapter_pb2.AdapterEvalSummary, _Mapping]] = ...) -> None: ...

class LoadedAdapter(_message.Message):
    __slots__ = ("lora_name", "version", "path")
    LORA_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    lora_name: str
    version: str
    path: str
    def __init__(self, lora_name: _Optional[str] = ..., version: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class LoraStatus(_message.Message):
    __slots__ = ("target", "base_model", "enabled", "active_version", "previous_version", "known_good_version", "alias", "loaded", "last_operation", "serving_reachable", "server_version", "gateway_url")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    KNOWN_GOOD_VERSION_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    LAST_OPERATION_FIELD_NUMBER: _ClassVar[int]
    SERVING_REACHABLE_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_URL_FIELD_NUMBER: _ClassVar[int]
    target: str
    base_model: str
    enabled: bool
    active_version: str
    previous_version: str
    known_good_version: str
    alias: str
    loaded: _containers.RepeatedCompositeFieldContainer[LoadedAdapter]
    last_operation: LoraOperation
    serving_reachable: bool
    server_version: str
    gateway_url: str
    def __init__(self, target: _Optional[str] = ..., base_model: _Optional[str] = ..., enabled: _Optional[bool] = ..., active_version: _Optional[str] = ..., previous_version: _Optional[str] = ..., known_good_version: _Optional[str] = ..., alias: _Optional[str] = ..., loaded: _Optional[_Iterable[_Union[LoadedAdapter, _Mapping]]] = ..., last_operation: _Optional[_Union[LoraOperation, _Mapping]] = ..., serving_reachable: _Optional[bool] = ..., server_version: _Optional[str] = ..., gateway_url: _Optional[str] = ...) -> None: ...

class GetLoraStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetLoraStatusResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: LoraStatus
    def __init__(self, status: _Optional[_Union[LoraStatus, _Mapping]] = ...) -> None: ...

class ActivateAdapterRequest(_message.Message):
    __slots__ = ("version", "reason", "force", "mark_known_good", "base_model")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    MARK_KNOWN_GOOD_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    version: str
    reason: str
    force: bool
    mark_known_good: bool
    base_model: str
    def __init__(self, version: _Optional[str] = ..., reason: _Optional[str] = ..., force: _Optional[bool] = ..., mark_known_good: _Optional[bool] = ..., base_model: _Optional[str] = ...) -> None: ...

class ActivateAdapterResponse(_message.Message):
    __slots__ = ("status", "eval")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EVAL_FIELD_NUMBER: _ClassVar[int]
    status: LoraStatus
    eval: _adapter_pb2.AdapterEvalSummary
    def __init__(self, status: _Optional[_Union[LoraStatus, _Mapping]] = ..., eval: _Optional[_Union[_adapter_pb2.AdapterEvalSummary, _Mapping]] = ...) -> None: ...

class RollbackAdapterRequest(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class RollbackAdapterResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: LoraStatus
    def __init__(self, status: _Optional[_Union[LoraStatus, _Mapping]] = ...) -> None: ...

class EnableLoraRequest(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class EnableLoraResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: LoraStatus
    def __init__(self, status: _Optional[_Union[LoraStatus, _Mapping]] = ...) -> None: ...

class DisableLoraRequest(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class DisableLoraResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: LoraStatus
    def __init__(self, status: _Optional[_Union[LoraStatus, _Mapping]] = ...) -> None: ...

class ListLoadedAdaptersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListLoadedAdaptersResponse(_message.Message):
    __slots__ = ("loaded",)
    LOADED_FIELD_NUMBER: _ClassVar[int]
    loaded: _containers.RepeatedCompositeFieldContainer[LoadedAdapter]
    def __init__(self, loaded: _Optional[_Iterable[_Union[LoadedAdapter, _Mapping]]] = ...) -> None: ...

class WatchLoraStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchLoraStatusResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: LoraStatus
    def __init__(self, status: _Optional[_Union[LoraStatus, _Mapping]] = ...) -> None: ...

class EvaluateAdapterRequest(_message.Message):
    __slots__ = ("version", "baseline_version", "suite_path", "base_model")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BASELINE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SUITE_PATH_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    version: str
    baseline_version: str
    suite_path: str
    base_model: str
    def __init__(self, version: _Optional[str] = ..., baseline_version: _Optional[str] = ..., suite_path: _Optional[str] = ..., base_model: _Optional[str] = ...) -> None: ...

class EvaluateAdapterResponse(_message.Message):
    __slots__ = ("eval",)
    EVAL_FIELD_NUMBER: _ClassVar[int]
    eval: _adapter_pb2.AdapterEvalSummary
    def __init__(self, eval: _Optional[_Union[_adapter_pb2.AdapterEvalSummary, _Mapping]] = ...) -> None: ...

class GetEvaluationReportRequest(_message.Message):
    __slots__ = ("version", "evaluation_id", "format", "base_model")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_ID_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    version: str
    evaluation_id: str
    format: ReportFormat
    base_model: str
    def __init__(self, version: _Optional[str] = ..., evaluation_id: _Optional[str] = ..., format: _Optional[_Union[ReportFormat, str]] = ..., base_model: _Optional[str] = ...) -> None: ...

class GetEvaluationReportResponse(_message.Message):
    __slots__ = ("eval", "content_type", "content", "uri")
    EVAL_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    eval: _adapter_pb2.AdapterEvalSummary
    content_type: str
    content: bytes
    uri: str
    def __init__(self, eval: _Optional[_Union[_adapter_pb2.AdapterEvalSummary, _Mapping]] = ..., content_type: _Optional[str] = ..., content: _Optional[bytes] = ..., uri: _Optional[str] = ...) -> None: ...
