import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_PREPARING: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_CANCELLING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
    JOB_STATE_PAUSING: _ClassVar[JobState]
    JOB_STATE_PAUSED: _ClassVar[JobState]

class FisherSpace(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FISHER_SPACE_UNSPECIFIED: _ClassVar[FisherSpace]
    FISHER_SPACE_LORA_PARAMETERS: _ClassVar[FisherSpace]
    FISHER_SPACE_LORA_PRODUCT: _ClassVar[FisherSpace]

class BaseProtectionMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BASE_PROTECTION_METHOD_UNSPECIFIED: _ClassVar[BaseProtectionMethod]
    BASE_PROTECTION_METHOD_NONE: _ClassVar[BaseProtectionMethod]
    BASE_PROTECTION_METHOD_SELF_REHEARSAL: _ClassVar[BaseProtectionMethod]
    BASE_PROTECTION_METHOD_BASE_KL: _ClassVar[BaseProtectionMethod]
    BASE_PROTECTION_METHOD_EWC_BASE: _ClassVar[BaseProtectionMethod]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_PREPARING: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_CANCELLING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
JOB_STATE_PAUSING: JobState
JOB_STATE_PAUSED: JobState
FISHER_SPACE_UNSPECIFIED: FisherSpace
FISHER_SPACE_LORA_PARAMETERS: FisherSpace
FISHER_SPACE_LORA_PRODUCT: FisherSpace
BASE_PROTECTION_METHOD_UNSPECIFIED: BaseProtectionMethod
BASE_PROTECTION_METHOD_NONE: BaseProtectionMethod
BASE_PROTECTION_METHOD_SELF_REHEARSAL: BaseProtectionMethod
BASE_PROTECTION_METHOD_BASE_KL: BaseProtectionMethod
BASE_PROTECTION_METHOD_EWC_BASE: BaseProtectionMethod

class LoraConfig(_message.Message):
    __slots__ = ("rank", "alpha", "dropout", "target_modules")
    RANK_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    DROPOUT_FIELD_NUMBER: _ClassVar[int]
    TARGET_MODULES_FIELD_NUMBER: _ClassVar[int]
    rank: int
    alpha: float
    dropout: float
    target_modules: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, rank: _Optional[int] = ..., alpha: _Optional[float] = ..., dropout: _Optional[float] = ..., target_modules: _Optional[_Iterable[str]] = ...) -> None: ...

class JobProgress(_message.Message):
    __slots__ = ("fraction", "completed_steps", "total_steps", "eta")
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_STEPS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    ETA_FIELD_NUMBER: _ClassVar[int]
    fraction: float
    completed_steps: int
    total_steps: int
    eta: _duration_pb2.Duration
    def __init__(self, fraction: _Optional[float] = ..., completed_steps: _Optional[int] = ..., total_steps: _Optional[int] = ..., eta: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class JobStateChange(_message.Message):
    __slots__ = ("previous_state", "state", "message")
    PREVIOUS_STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    previous_state: JobState
    state: JobState
    message: str
    def __init__(self, previous_state: _Optional[_Union[JobState, str]] = ..., state: _Optional[_Union[JobState, str]] = ..., message: _Optional[str] = ...) -> None: ...

class JobNotice(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class JobWarning(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class JobError(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: _status_pb2.Status
    def __init__(self, status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class BaseProtection(_message.Message):
    __slots__ = ("method", "fraction", "kl_weight", "ewc_lambda", "prompt_kl_weight")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    KL_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    EWC_LAMBDA_FIELD_NUMBER: _ClassVar[int]
    PROMPT_KL_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    method: BaseProtectionMethod
    fraction: float
    kl_weight: float
    ewc_lambda: float
    prompt_kl_weight: float
    def __init__(self, method: _Optional[_Union[BaseProtectionMethod, str]] = ..., fraction: _Optional[float] = ..., kl_weight: _Optional[float] = ..., ewc_lambda: _Optional[float] = ..., prompt_kl_weight: _Optional[float] = ...) -> None: ...

class BaseRetention(_message.Message):
    __slots__ = ("retention", "kept", "cases", "lost")
    RETENTION_FIELD_NUMBER: _ClassVar[int]
    KEPT_FIELD_NUMBER: _ClassVar[int]
    CASES_FIELD_NUMBER: _ClassVar[int]
    LOST_FIELD_NUMBER: _ClassVar[int]
    retention: float
    kept: int
    cases: int
    lost: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, retention: _Optional[float] = ..., kept: _Optional[int] = ..., cases: _Optional[int] = ..., lost: _Optional[_Iterable[str]] = ...) -> None: ...

class DatasetSummary(_message.Message):
    __slots__ = ("digest", "example_count", "composition", "target_token_count", "window_start", "window_end", "jsonl", "feedback", "dataset_name", "online_examples")
    class CompositionEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    EXAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    COMPOSITION_FIELD_NUMBER: _ClassVar[int]
    TARGET_TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    JSONL_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    DATASET_NAME_FIELD_NUMBER: _ClassVar[int]
    ONLINE_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    digest: str
    example_count: int
    composition: _containers.ScalarMap[str, int]
    target_token_count: int
    window_start: _timestamp_pb2.Timestamp
    window_end: _timestamp_pb2.Timestamp
    jsonl: JsonlDataset
    feedback: FeedbackDataset
    dataset_name: str
    online_examples: OnlineExamples
    def __init__(self, digest: _Optional[str] = ..., example_count: _Optional[int] = ..., composition: _Optional[_Mapping[str, int]] = ..., target_token_count: _Optional[int] = ..., window_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., jsonl: _Optional[_Union[JsonlDataset, _Mapping]] = ..., feedback: _Optional[_Union[FeedbackDataset, _Mapping]] = ..., dataset_name: _Optional[str] = ..., online_examples: _Optional[_Union[OnlineExamples, _Mapping]] = ...) -> None: ...

class OnlineExamples(_message.Message):
    __slots__ = ("session", "first_sequence", "last_sequence")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    session: str
    first_sequence: int
    last_sequence: int
    def __init__(self, session: _Optional[str] = ..., first_sequence: _Optional[int] = ..., last_sequence: _Optional[int] = ...) -> None: ...

class JsonlDataset(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    def __init__(self, path: _Optional[str] = ...) -> None: ...

class FeedbackDataset(_message.Message):
    __slots__ = ("days", "labels", "adapter_version", "min_samples", "force", "thumbs_up_weight", "thumbs_down_weight")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DAYS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    MIN_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    THUMBS_UP_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    THUMBS_DOWN_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    days: int
    labels: _containers.ScalarMap[str, str]
    adapter_version: str
    min_samples: int
    force: bool
    thumbs_up_weight: float
    thumbs_down_weight: float
    def __init__(self, days: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., adapter_version: _Optional[str] = ..., min_samples: _Optional[int] = ..., force: _Optional[bool] = ..., thumbs_up_weight: _Optional[float] = ..., thumbs_down_weight: _Optional[float] = ...) -> None: ...

class EvalMetric(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: float
    def __init__(self, name: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
