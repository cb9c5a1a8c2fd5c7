import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from learning.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DriftOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DRIFT_OUTCOME_UNSPECIFIED: _ClassVar[DriftOutcome]
    DRIFT_OUTCOME_NO_DRIFT: _ClassVar[DriftOutcome]
    DRIFT_OUTCOME_DRIFTED: _ClassVar[DriftOutcome]
    DRIFT_OUTCOME_NO_REFERENCE: _ClassVar[DriftOutcome]
    DRIFT_OUTCOME_TOO_FEW_SAMPLES: _ClassVar[DriftOutcome]
DRIFT_OUTCOME_UNSPECIFIED: DriftOutcome
DRIFT_OUTCOME_NO_DRIFT: DriftOutcome
DRIFT_OUTCOME_DRIFTED: DriftOutcome
DRIFT_OUTCOME_NO_REFERENCE: DriftOutcome
DRIFT_OUTCOME_TOO_FEW_SAMPLES: DriftOutcome

class GetDriftReportRequest(_message.Message):
    __slots__ = ("base_model", "window", "end_time")
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    base_model: str
    window: _duration_pb2.Duration
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, base_model: _Optional[str] = ..., window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class MovedPrompt(_message.Message):
    __slots__ = ("prompt", "distance", "nearest_reference")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    NEAREST_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    distance: float
    nearest_reference: str
    def __init__(self, prompt: _Optional[str] = ..., distance: _Optional[float] = ..., nearest_reference: _Optional[str] = ...) -> None: ...

class FeedbackRateBucket(_message.Message):
    __slots__ = ("start_time", "end_time", "positive", "negative", "negative_rate")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_RATE_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    positive: int
    negative: int
    negative_rate: float
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., positive: _Optional[int] = ..., negative: _Optional[int] = ..., negative_rate: _Optional[float] = ...) -> None: ...

class EvalScore(_message.Message):
    __slots__ = ("time", "version", "baseline_version", "passed", "metrics", "evaluation_id")
    TIME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BASELINE_VERSION_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_ID_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    version: str
    baseline_version: str
    passed: bool
    metrics: _containers.RepeatedCompositeFieldContainer[_common_pb2.EvalMetric]
    evaluation_id: str
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., version: _Optional[str] = ..., baseline_version: _Optional[str] = ..., passed: _Optional[bool] = ..., metrics: _Optional[_Iterable[_Union[_common_pb2.EvalMetric, _Mapping]]] = ..., evaluation_id: _Optional[str] = ...) -> None: ...

class DriftReport(_message.Message):
    __slots__ = ("base_model", "window_start_time", "window_end_time", "outcome", "drifted", "reference_version", "statistic_name", "statistic", "threshold", "p_value", "significance", "permutations", "incoming_samples", "reference_samples", "incoming_total", "reference_total", "moved", "negative_rate", "eval_scores", "note", "compute_seconds")
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_TIME_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_TIME_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    DRIFTED_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    STATISTIC_NAME_FIELD_NUMBER: _ClassVar[int]
    STATISTIC_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    SIGNIFICANCE_FIELD_NUMBER: _ClassVar[int]
    PERMUTATIONS_FIELD_NUMBER: _ClassVar[int]
    INCOMING_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    INCOMING_TOTAL_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_TOTAL_FIELD_NUMBER: _ClassVar[int]
    MOVED_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_RATE_FIELD_NUMBER: _ClassVar[int]
    EVAL_SCORES_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    base_model: str
    window_start_time: _timestamp_pb2.Timestamp
    window_end_time: _timestamp_pb2.Timestamp
    outcome: DriftOutcome
    drifted: bool
    reference_version: str
    statistic_name: str
    statistic: float
    threshold: float
    p_value: float
    significance: float
    permutations: int
    incoming_samples: int
    reference_samples: int
    incoming_total: int
    reference_total: int
    moved: _containers.RepeatedCompositeFieldContainer[MovedPrompt]
    negative_rate: _containers.RepeatedCompositeFieldContainer[FeedbackRateBucket]
    eval_scores: _containers.RepeatedCompositeFieldContainer[EvalScore]
    note: str
    compute_seconds: float
    def __init__(self, base_model: _Optional[str] = ..., window_start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., outcome: _Optional[_Union[DriftOutcome, str]] = ..., drifted: _Optional[bool] = ..., reference_version: _Optional[str] = ..., statistic_name: _Optional[str] = ..., statistic: _Optional[float] = ..., threshold: _Optional[float] = ..., p_value: _Optional[float] = ..., significance: _Optional[float] = ..., permutations: _Optional[int] = ..., incoming_samples: _Optional[int] = ..., reference_samples: _Optional[int] = ..., incoming_total: _Optional[int] = ..., reference_total: _Optional[int] = ..., moved: _Optional[_Iterable[_Union[MovedPrompt, _Mapping]]] = ..., negative_rate: _Optional[_Iterable[_Union[FeedbackRateBucket, _Mapping]]] = ..., eval_scores: _Optional[_Iterable[_Union[EvalScore, _Mapping]]] = ..., note: _Optional[str] = ..., compute_seconds: _Optional[float] = ...) -> None: ...

class GetDriftReportResponse(_message.Message):
    __slots__ = ("report",)
    REPORT_FIELD_NUMBER: _ClassVar[int]
    report: DriftReport
    def __init__(self, report: _Optional[_Union[DriftReport, _Mapping]] = ...) -> None: ...
