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
    LORA_OPERATION_KIND_CANARY_START: _ClassVar[LoraOperationKind]
    LORA_OPERATION_KIND_CANARY_PROMOTE: _ClassVar[LoraOperationKind]
    LORA_OPERATION_KIND_CANARY_ROLLBACK: _ClassVar[LoraOperationKind]
    LORA_OPERATION_KIND_CANARY_ABORT: _ClassVar[LoraOperationKind]
    LORA_OPERATION_KIND_TRAFFIC_SPLIT: _ClassVar[LoraOperationKind]

class ReportFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPORT_FORMAT_UNSPECIFIED: _ClassVar[ReportFormat]
    REPORT_FORMAT_JSON: _ClassVar[ReportFormat]
    REPORT_FORMAT_MARKDOWN: _ClassVar[ReportFormat]
    REPORT_FORMAT_HTML: _ClassVar[ReportFormat]
    REPORT_FORMAT_PNG: _ClassVar[ReportFormat]
    REPORT_FORMAT_LINEAGE_PNG: _ClassVar[ReportFormat]

class TrafficSplitKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRAFFIC_SPLIT_KIND_UNSPECIFIED: _ClassVar[TrafficSplitKind]
    TRAFFIC_SPLIT_KIND_CANARY: _ClassVar[TrafficSplitKind]
    TRAFFIC_SPLIT_KIND_MANUAL: _ClassVar[TrafficSplitKind]

class CanaryDecision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CANARY_DECISION_UNSPECIFIED: _ClassVar[CanaryDecision]
    CANARY_DECISION_PROMOTED: _ClassVar[CanaryDecision]
    CANARY_DECISION_ROLLED_BACK: _ClassVar[CanaryDecision]
    CANARY_DECISION_ABORTED: _ClassVar[CanaryDecision]
LORA_OPERATION_KIND_UNSPECIFIED: LoraOperationKind
LORA_OPERATION_KIND_ACTIVATE: LoraOperationKind
LORA_OPERATION_KIND_ROLLBACK: LoraOperationKind
LORA_OPERATION_KIND_ENABLE: LoraOperationKind
LORA_OPERATION_KIND_DISABLE: LoraOperationKind
LORA_OPERATION_KIND_AUTO_ROLLBACK: LoraOperationKind
LORA_OPERATION_KIND_RECONCILE: LoraOperationKind
LORA_OPERATION_KIND_CANARY_START: LoraOperationKind
LORA_OPERATION_KIND_CANARY_PROMOTE: LoraOperationKind
LORA_OPERATION_KIND_CANARY_ROLLBACK: LoraOperationKind
LORA_OPERATION_KIND_CANARY_ABORT: LoraOperationKind
LORA_OPERATION_KIND_TRAFFIC_SPLIT: LoraOperationKind
REPORT_FORMAT_UNSPECIFIED: ReportFormat
REPORT_FORMAT_JSON: ReportFormat
REPORT_FORMAT_MARKDOWN: ReportFormat
REPORT_FORMAT_HTML: ReportFormat
REPORT_FORMAT_PNG: ReportFormat
REPORT_FORMAT_LINEAGE_PNG: ReportFormat
TRAFFIC_SPLIT_KIND_UNSPECIFIED: TrafficSplitKind
TRAFFIC_SPLIT_KIND_CANARY: TrafficSplitKind
TRAFFIC_SPLIT_KIND_MANUAL: TrafficSplitKind
CANARY_DECISION_UNSPECIFIED: CanaryDecision
CANARY_DECISION_PROMOTED: CanaryDecision
CANARY_DECISION_ROLLED_BACK: CanaryDecision
CANARY_DECISION_ABORTED: CanaryDecision

class LoraOperation(_message.Message):
    __slots__ = ("kind", "version", "actor", "reason", "start_time", "duration", "phase_durations", "error", "gate", "traffic")
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
    TRAFFIC_FIELD_NUMBER: _ClassVar[int]
    kind: LoraOperationKind
    version: str
    actor: str
    reason: str
    start_time: _timestamp_pb2.Timestamp
    duration: _duration_pb2.Duration
    phase_durations: _containers.MessageMap[str, _duration_pb2.Duration]
    error: _status_pb2.Status
    gate: _adapter_pb2.AdapterEvalSummary
    traffic: TrafficFigures
    def __init__(self, kind: _Optional[_Union[LoraOperationKind, str]] = ..., version: _Optional[str] = ..., actor: _Optional[str] = ..., reason: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., phase_durations: _Optional[_Mapping[str, _duration_pb2.Duration]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., gate: _Optional[_Union[_adapter_pb2.AdapterEvalSummary, _Mapping]] = ..., traffic: _Optional[_Union[TrafficFigures, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("target", "base_model", "enabled", "active_version", "previous_version", "known_good_version", "alias", "loaded", "last_operation", "serving_reachable", "server_version", "gateway_url", "traffic_split", "last_canary")
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
    TRAFFIC_SPLIT_FIELD_NUMBER: _ClassVar[int]
    LAST_CANARY_FIELD_NUMBER: _ClassVar[int]
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
    traffic_split: TrafficSplit
    last_canary: CanaryOutcome
    def __init__(self, target: _Optional[str] = ..., base_model: _Optional[str] = ..., enabled: _Optional[bool] = ..., active_version: _Optional[str] = ..., previous_version: _Optional[str] = ..., known_good_version: _Optional[str] = ..., alias: _Optional[str] = ..., loaded: _Optional[_Iterable[_Union[LoadedAdapter, _Mapping]]] = ..., last_operation: _Optional[_Union[LoraOperation, _Mapping]] = ..., serving_reachable: _Optional[bool] = ..., server_version: _Optional[str] = ..., gateway_url: _Optional[str] = ..., traffic_split: _Optional[_Union[TrafficSplit, _Mapping]] = ..., last_canary: _Optional[_Union[CanaryOutcome, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("version", "baseline_version", "suite_path", "base_model", "suite_datasets", "base_model_itself")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BASELINE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SUITE_PATH_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    SUITE_DATASETS_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_ITSELF_FIELD_NUMBER: _ClassVar[int]
    version: str
    baseline_version: str
    suite_path: str
    base_model: str
    suite_datasets: _containers.RepeatedScalarFieldContainer[str]
    base_model_itself: bool
    def __init__(self, version: _Optional[str] = ..., baseline_version: _Optional[str] = ..., suite_path: _Optional[str] = ..., base_model: _Optional[str] = ..., suite_datasets: _Optional[_Iterable[str]] = ..., base_model_itself: _Optional[bool] = ...) -> None: ...

class EvaluateAdapterResponse(_message.Message):
    __slots__ = ("eval",)
    EVAL_FIELD_NUMBER: _ClassVar[int]
    eval: _adapter_pb2.AdapterEvalSummary
    def __init__(self, eval: _Optional[_Union[_adapter_pb2.AdapterEvalSummary, _Mapping]] = ...) -> None: ...

class GetEvaluationReportRequest(_message.Message):
    __slots__ = ("version", "evaluation_id", "format", "base_model", "base_model_itself")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_ID_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_ITSELF_FIELD_NUMBER: _ClassVar[int]
    version: str
    evaluation_id: str
    format: ReportFormat
    base_model: str
    base_model_itself: bool
    def __init__(self, version: _Optional[str] = ..., evaluation_id: _Optional[str] = ..., format: _Optional[_Union[ReportFormat, str]] = ..., base_model: _Optional[str] = ..., base_model_itself: _Optional[bool] = ...) -> None: ...

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

class CanaryPolicy(_message.Message):
    __slots__ = ("share", "min_requests", "duration", "max_duration", "feedback_margin", "error_margin", "min_feedback", "error_spike", "error_spike_min_requests", "check_interval")
    SHARE_FIELD_NUMBER: _ClassVar[int]
    MIN_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    MAX_DURATION_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_MARGIN_FIELD_NUMBER: _ClassVar[int]
    ERROR_MARGIN_FIELD_NUMBER: _ClassVar[int]
    MIN_FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    ERROR_SPIKE_FIELD_NUMBER: _ClassVar[int]
    ERROR_SPIKE_MIN_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    CHECK_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    share: float
    min_requests: int
    duration: _duration_pb2.Duration
    max_duration: _duration_pb2.Duration
    feedback_margin: float
    error_margin: float
    min_feedback: int
    error_spike: float
    error_spike_min_requests: int
    check_interval: _duration_pb2.Duration
    def __init__(self, share: _Optional[float] = ..., min_requests: _Optional[int] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., feedback_margin: _Optional[float] = ..., error_margin: _Optional[float] = ..., min_feedback: _Optional[int] = ..., error_spike: _Optional[float] = ..., error_spike_min_requests: _Optional[int] = ..., check_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class VersionTraffic(_message.Message):
    __slots__ = ("version", "requests", "errors", "error_rate", "failovers", "mean_latency", "positive_feedback", "negative_feedback", "negative_rate")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    FAILOVERS_FIELD_NUMBER: _ClassVar[int]
    MEAN_LATENCY_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_RATE_FIELD_NUMBER: _ClassVar[int]
    version: str
    requests: int
    errors: int
    error_rate: float
    failovers: int
    mean_latency: _duration_pb2.Duration
    positive_feedback: int
    negative_feedback: int
    negative_rate: float
    def __init__(self, version: _Optional[str] = ..., requests: _Optional[int] = ..., errors: _Optional[int] = ..., error_rate: _Optional[float] = ..., failovers: _Optional[int] = ..., mean_latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., positive_feedback: _Optional[int] = ..., negative_feedback: _Optional[int] = ..., negative_rate: _Optional[float] = ...) -> None: ...

class TrafficFigures(_message.Message):
    __slots__ = ("active", "candidate", "elapsed")
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_FIELD_NUMBER: _ClassVar[int]
    active: VersionTraffic
    candidate: VersionTraffic
    elapsed: _duration_pb2.Duration
    def __init__(self, active: _Optional[_Union[VersionTraffic, _Mapping]] = ..., candidate: _Optional[_Union[VersionTraffic, _Mapping]] = ..., elapsed: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class TrafficSplit(_message.Message):
    __slots__ = ("kind", "active_version", "candidate_version", "share", "policy", "actor", "reason", "start_time", "figures")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    FIGURES_FIELD_NUMBER: _ClassVar[int]
    kind: TrafficSplitKind
    active_version: str
    candidate_version: str
    share: float
    policy: CanaryPolicy
    actor: str
    reason: str
    start_time: _timestamp_pb2.Timestamp
    figures: TrafficFigures
    def __init__(self, kind: _Optional[_Union[TrafficSplitKind, str]] = ..., active_version: _Optional[str] = ..., candidate_version: _Optional[str] = ..., share: _Optional[float] = ..., policy: _Optional[_Union[CanaryPolicy, _Mapping]] = ..., actor: _Optional[str] = ..., reason: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., figures: _Optional[_Union[TrafficFigures, _Mapping]] = ...) -> None: ...

class CanaryOutcome(_message.Message):
    __slots__ = ("version", "decision", "reason", "figures", "decide_time")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FIGURES_FIELD_NUMBER: _ClassVar[int]
    DECIDE_TIME_FIELD_NUMBER: _ClassVar[int]
    version: str
    decision: CanaryDecision
    reason: str
    figures: TrafficFigures
    decide_time: _timestamp_pb2.Timestamp
    def __init__(self, version: _Optional[str] = ..., decision: _Optional[_Union[CanaryDecision, str]] = ..., reason: _Optional[str] = ..., figures: _Optional[_Union[TrafficFigures, _Mapping]] = ..., decide_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class StartCanaryRequest(_message.Message):
    __slots__ = ("version", "policy", "force", "reason", "base_model")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    version: str
    policy: CanaryPolicy
    force: bool
    reason: str
    base_model: str
    def __init__(self, version: _Optional[str] = ..., policy: _Optional[_Union[CanaryPolicy, _Mapping]] = ..., force: _Optional[bool] = ..., reason: _Optional[str] = ..., base_model: _Optional[str] = ...) -> None: ...

class StartCanaryResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: LoraStatus
    def __init__(self, status: _Optional[_Union[LoraStatus, _Mapping]] = ...) -> None: ...

class AbortCanaryRequest(_message.Message):
    __slots__ = ("reason", "version")
    REASON_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    reason: str
    version: str
    def __init__(self, reason: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class AbortCanaryResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: LoraStatus
    def __init__(self, status: _Optional[_Union[LoraStatus, _Mapping]] = ...) -> None: ...

class SetTrafficSplitRequest(_message.Message):
    __slots__ = ("version", "share", "reason", "base_model")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    version: str
    share: float
    reason: str
    base_model: str
    def __init__(self, version: _Optional[str] = ..., share: _Optional[float] = ..., reason: _Optional[str] = ..., base_model: _Optional[str] = ...) -> None: ...

class SetTrafficSplitResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: LoraStatus
    def __init__(self, status: _Optional[_Union[LoraStatus, _Mapping]] = ...) -> None: ...
