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

class LiveAliasState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LIVE_ALIAS_STATE_UNSPECIFIED: _ClassVar[LiveAliasState]
    LIVE_ALIAS_STATE_FOLLOWING: _ClassVar[LiveAliasState]
    LIVE_ALIAS_STATE_KEPT: _ClassVar[LiveAliasState]
    LIVE_ALIAS_STATE_ENDED: _ClassVar[LiveAliasState]
    LIVE_ALIAS_STATE_REMOVED: _ClassVar[LiveAliasState]

class OnlineOptimizer(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ONLINE_OPTIMIZER_UNSPECIFIED: _ClassVar[OnlineOptimizer]
    ONLINE_OPTIMIZER_ADAM: _ClassVar[OnlineOptimizer]
    ONLINE_OPTIMIZER_ADAMW: _ClassVar[OnlineOptimizer]
    ONLINE_OPTIMIZER_SGD: _ClassVar[OnlineOptimizer]

class OnlineLoss(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ONLINE_LOSS_UNSPECIFIED: _ClassVar[OnlineLoss]
    ONLINE_LOSS_SFT: _ClassVar[OnlineLoss]
    ONLINE_LOSS_KTO: _ClassVar[OnlineLoss]
LIVE_ALIAS_STATE_UNSPECIFIED: LiveAliasState
LIVE_ALIAS_STATE_FOLLOWING: LiveAliasState
LIVE_ALIAS_STATE_KEPT: LiveAliasState
LIVE_ALIAS_STATE_ENDED: LiveAliasState
LIVE_ALIAS_STATE_REMOVED: LiveAliasState
ONLINE_OPTIMIZER_UNSPECIFIED: OnlineOptimizer
ONLINE_OPTIMIZER_ADAM: OnlineOptimizer
ONLINE_OPTIMIZER_ADAMW: OnlineOptimizer
ONLINE_OPTIMIZER_SGD: OnlineOptimizer
ONLINE_LOSS_UNSPECIFIED: OnlineLoss
ONLINE_LOSS_SFT: OnlineLoss
ONLINE_LOSS_KTO: OnlineLoss

class OnlineSessionSpec(_message.Message):
    __slots__ = ("base_model", "start_version", "buffer_size", "update_every", "optimizer", "learning_rate", "weight_decay", "max_grad_norm", "ewc_lambda", "replay_fraction", "checkpoint_every", "publish_every", "max_seq_length", "live_alias", "loss_spike_factor", "learn_from_feedback", "negative_feedback_margin", "negative_feedback_min_ratings", "loss")
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    START_VERSION_FIELD_NUMBER: _ClassVar[int]
    BUFFER_SIZE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_EVERY_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    MAX_GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
    EWC_LAMBDA_FIELD_NUMBER: _ClassVar[int]
    REPLAY_FRACTION_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_EVERY_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_EVERY_FIELD_NUMBER: _ClassVar[int]
    MAX_SEQ_LENGTH_FIELD_NUMBER: _ClassVar[int]
    LIVE_ALIAS_FIELD_NUMBER: _ClassVar[int]
    LOSS_SPIKE_FACTOR_FIELD_NUMBER: _ClassVar[int]
    LEARN_FROM_FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_FEEDBACK_MARGIN_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_FEEDBACK_MIN_RATINGS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    base_model: str
    start_version: str
    buffer_size: int
    update_every: int
    optimizer: OnlineOptimizer
    learning_rate: float
    weight_decay: float
    max_grad_norm: float
    ewc_lambda: float
    replay_fraction: float
    checkpoint_every: int
    publish_every: int
    max_seq_length: int
    live_alias: str
    loss_spike_factor: float
    learn_from_feedback: bool
    negative_feedback_margin: float
    negative_feedback_min_ratings: int
    loss: OnlineLoss
    def __init__(self, base_model: _Optional[str] = ..., start_version: _Optional[str] = ..., buffer_size: _Optional[int] = ..., update_every: _Optional[int] = ..., optimizer: _Optional[_Union[OnlineOptimizer, str]] = ..., learning_rate: _Optional[float] = ..., weight_decay: _Optional[float] = ..., max_grad_norm: _Optional[float] = ..., ewc_lambda: _Optional[float] = ..., replay_fraction: _Optional[float] = ..., checkpoint_every: _Optional[int] = ..., publish_every: _Optional[int] = ..., max_seq_length: _Optional[int] = ..., live_alias: _Optional[str] = ..., loss_spike_factor: _Optional[float] = ..., learn_from_feedback: _Optional[bool] = ..., negative_feedback_margin: _Optional[float] = ..., negative_feedback_min_ratings: _Optional[int] = ..., loss: _Optional[_Union[OnlineLoss, str]] = ...) -> None: ...

class OnlineStats(_message.Message):
    __slots__ = ("total_examples", "skipped_examples", "total_updates", "buffer_size", "pending_examples", "average_loss", "last_loss", "learning_rate", "enabled", "last_sequence", "published_versions", "unread_examples")
    TOTAL_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_UPDATES_FIELD_NUMBER: _ClassVar[int]
    BUFFER_SIZE_FIELD_NUMBER: _ClassVar[int]
    PENDING_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_LOSS_FIELD_NUMBER: _ClassVar[int]
    LAST_LOSS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    UNREAD_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    total_examples: int
    skipped_examples: int
    total_updates: int
    buffer_size: int
    pending_examples: int
    average_loss: float
    last_loss: float
    learning_rate: float
    enabled: bool
    last_sequence: int
    published_versions: int
    unread_examples: int
    def __init__(self, total_examples: _Optional[int] = ..., skipped_examples: _Optional[int] = ..., total_updates: _Optional[int] = ..., buffer_size: _Optional[int] = ..., pending_examples: _Optional[int] = ..., average_loss: _Optional[float] = ..., last_loss: _Optional[float] = ..., learning_rate: _Optional[float] = ..., enabled: _Optional[bool] = ..., last_sequence: _Optional[int] = ..., published_versions: _Optional[int] = ..., unread_examples: _Optional[int] = ...) -> None: ...

class OnlinePublication(_message.Message):
    __slots__ = ("version", "update", "first_sequence", "last_sequence", "gate_passed", "failed_checks", "publish_time")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    GATE_PASSED_FIELD_NUMBER: _ClassVar[int]
    FAILED_CHECKS_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_TIME_FIELD_NUMBER: _ClassVar[int]
    version: str
    update: int
    first_sequence: int
    last_sequence: int
    gate_passed: bool
    failed_checks: _containers.RepeatedScalarFieldContainer[str]
    publish_time: _timestamp_pb2.Timestamp
    def __init__(self, version: _Optional[str] = ..., update: _Optional[int] = ..., first_sequence: _Optional[int] = ..., last_sequence: _Optional[int] = ..., gate_passed: _Optional[bool] = ..., failed_checks: _Optional[_Iterable[str]] = ..., publish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class OnlineSession(_message.Message):
    __slots__ = ("name", "spec", "state", "stats", "live_model", "live_adapter", "publications", "alias_version", "disabled_reason", "error", "create_time", "start_time", "end_time", "device", "request_id", "progress", "last_sequence", "alias_state")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    LIVE_MODEL_FIELD_NUMBER: _ClassVar[int]
    LIVE_ADAPTER_FIELD_NUMBER: _ClassVar[int]
    PUBLICATIONS_FIELD_NUMBER: _ClassVar[int]
    ALIAS_VERSION_FIELD_NUMBER: _ClassVar[int]
    DISABLED_REASON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ALIAS_STATE_FIELD_NUMBER: _ClassVar[int]
    name: str
    spec: OnlineSessionSpec
    state: _common_pb2.JobState
    stats: OnlineStats
    live_model: str
    live_adapter: str
    publications: _containers.RepeatedCompositeFieldContainer[OnlinePublication]
    alias_version: str
    disabled_reason: str
    error: _status_pb2.Status
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    device: str
    request_id: str
    progress: _common_pb2.JobProgress
    last_sequence: int
    alias_state: LiveAliasState
    def __init__(self, name: _Optional[str] = ..., spec: _Optional[_Union[OnlineSessionSpec, _Mapping]] = ..., state: _Optional[_Union[_common_pb2.JobState, str]] = ..., stats: _Optional[_Union[OnlineStats, _Mapping]] = ..., live_model: _Optional[str] = ..., live_adapter: _Optional[str] = ..., publications: _Optional[_Iterable[_Union[OnlinePublication, _Mapping]]] = ..., alias_version: _Optional[str] = ..., disabled_reason: _Optional[str] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., device: _Optional[str] = ..., request_id: _Optional[str] = ..., progress: _Optional[_Union[_common_pb2.JobProgress, _Mapping]] = ..., last_sequence: _Optional[int] = ..., alias_state: _Optional[_Union[LiveAliasState, str]] = ...) -> None: ...

class OnlineExample(_message.Message):
    __slots__ = ("prompt", "target", "weight", "desirable", "client_example_id")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    DESIRABLE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_EXAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    target: str
    weight: float
    desirable: bool
    client_example_id: str
    def __init__(self, prompt: _Optional[str] = ..., target: _Optional[str] = ..., weight: _Optional[float] = ..., desirable: _Optional[bool] = ..., client_example_id: _Optional[str] = ...) -> None: ...

class CreateOnlineSessionRequest(_message.Message):
    __slots__ = ("session_id", "spec", "request_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    spec: OnlineSessionSpec
    request_id: str
    def __init__(self, session_id: _Optional[str] = ..., spec: _Optional[_Union[OnlineSessionSpec, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateOnlineSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: OnlineSession
    def __init__(self, session: _Optional[_Union[OnlineSession, _Mapping]] = ...) -> None: ...

class GetOnlineSessionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetOnlineSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: OnlineSession
    def __init__(self, session: _Optional[_Union[OnlineSession, _Mapping]] = ...) -> None: ...

class ListOnlineSessionsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListOnlineSessionsResponse(_message.Message):
    __slots__ = ("sessions", "next_page_token")
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[OnlineSession]
    next_page_token: str
    def __init__(self, sessions: _Optional[_Iterable[_Union[OnlineSession, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class StopOnlineSessionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class StopOnlineSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: OnlineSession
    def __init__(self, session: _Optional[_Union[OnlineSession, _Mapping]] = ...) -> None: ...

class SetLearningRateRequest(_message.Message):
    __slots__ = ("name", "learning_rate")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    name: str
    learning_rate: float
    def __init__(self, name: _Optional[str] = ..., learning_rate: _Optional[float] = ...) -> None: ...

class SetLearningRateResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: OnlineSession
    def __init__(self, session: _Optional[_Union[OnlineSession, _Mapping]] = ...) -> None: ...

class EnableOnlineLearningRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class EnableOnlineLearningResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: OnlineSession
    def __init__(self, session: _Optional[_Union[OnlineSession, _Mapping]] = ...) -> None: ...

class DisableOnlineLearningRequest(_message.Message):
    __slots__ = ("name", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    reason: str
    def __init__(self, name: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class DisableOnlineLearningResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: OnlineSession
    def __init__(self, session: _Optional[_Union[OnlineSession, _Mapping]] = ...) -> None: ...

class ForceUpdateRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ForceUpdateResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: OnlineSession
    def __init__(self, session: _Optional[_Union[OnlineSession, _Mapping]] = ...) -> None: ...

class PublishOnlineSessionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class PublishOnlineSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: OnlineSession
    def __init__(self, session: _Optional[_Union[OnlineSession, _Mapping]] = ...) -> None: ...

class GetOnlineStatsRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetOnlineStatsResponse(_message.Message):
    __slots__ = ("stats",)
    STATS_FIELD_NUMBER: _ClassVar[int]
    stats: OnlineStats
    def __init__(self, stats: _Optional[_Union[OnlineStats, _Mapping]] = ...) -> None: ...

class OnlineUpdate(_message.Message):
    __slots__ = ("update", "loss", "examples", "replayed", "ewc_penalty", "stats")
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    EWC_PENALTY_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    update: int
    loss: float
    examples: int
    replayed: int
    ewc_penalty: float
    stats: OnlineStats
    def __init__(self, update: _Optional[int] = ..., loss: _Optional[float] = ..., examples: _Optional[int] = ..., replayed: _Optional[int] = ..., ewc_penalty: _Optional[float] = ..., stats: _Optional[_Union[OnlineStats, _Mapping]] = ...) -> None: ...

class OnlineLossSpike(_message.Message):
    __slots__ = ("update", "loss", "median", "factor")
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    MEDIAN_FIELD_NUMBER: _ClassVar[int]
    FACTOR_FIELD_NUMBER: _ClassVar[int]
    update: int
    loss: float
    median: float
    factor: float
    def __init__(self, update: _Optional[int] = ..., loss: _Optional[float] = ..., median: _Optional[float] = ..., factor: _Optional[float] = ...) -> None: ...

class OnlineFeedbackSpike(_message.Message):
    __slots__ = ("update", "ratings", "negative", "negative_rate", "baseline_rate", "baseline_ratings", "margin")
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    RATINGS_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_RATE_FIELD_NUMBER: _ClassVar[int]
    BASELINE_RATE_FIELD_NUMBER: _ClassVar[int]
    BASELINE_RATINGS_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    update: int
    ratings: int
    negative: int
    negative_rate: float
    baseline_rate: float
    baseline_ratings: int
    margin: float
    def __init__(self, update: _Optional[int] = ..., ratings: _Optional[int] = ..., negative: _Optional[int] = ..., negative_rate: _Optional[float] = ..., baseline_rate: _Optional[float] = ..., baseline_ratings: _Optional[int] = ..., margin: _Optional[float] = ...) -> None: ...

class OnlineGateVerdict(_message.Message):
    __slots__ = ("version", "passed", "failed_checks")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    FAILED_CHECKS_FIELD_NUMBER: _ClassVar[int]
    version: str
    passed: bool
    failed_checks: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, version: _Optional[str] = ..., passed: _Optional[bool] = ..., failed_checks: _Optional[_Iterable[str]] = ...) -> None: ...

class OnlineSessionEvent(_message.Message):
    __slots__ = ("sequence", "time", "state_change", "notice", "warning", "error", "updated", "published", "loss_spike", "feedback_spike", "gate_verdict")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    STATE_CHANGE_FIELD_NUMBER: _ClassVar[int]
    NOTICE_FIELD_NUMBER: _ClassVar[int]
    WARNING_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    LOSS_SPIKE_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_SPIKE_FIELD_NUMBER: _ClassVar[int]
    GATE_VERDICT_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    time: _timestamp_pb2.Timestamp
    state_change: _common_pb2.JobStateChange
    notice: _common_pb2.JobNotice
    warning: _common_pb2.JobWarning
    error: _common_pb2.JobError
    updated: OnlineUpdate
    published: OnlinePublication
    loss_spike: OnlineLossSpike
    feedback_spike: OnlineFeedbackSpike
    gate_verdict: OnlineGateVerdict
    def __init__(self, sequence: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state_change: _Optional[_Union[_common_pb2.JobStateChange, _Mapping]] = ..., notice: _Optional[_Union[_common_pb2.JobNotice, _Mapping]] = ..., warning: _Optional[_Union[_common_pb2.JobWarning, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.JobError, _Mapping]] = ..., updated: _Optional[_Union[OnlineUpdate, _Mapping]] = ..., published: _Optional[_Union[OnlinePublication, _Mapping]] = ..., loss_spike: _Optional[_Union[OnlineLossSpike, _Mapping]] = ..., feedback_spike: _Optional[_Union[OnlineFeedbackSpike, _Mapping]] = ..., gate_verdict: _Optional[_Union[OnlineGateVerdict, _Mapping]] = ...) -> None: ...

class WatchOnlineSessionRequest(_message.Message):
    __slots__ = ("name", "after_sequence")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    after_sequence: int
    def __init__(self, name: _Optional[str] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class WatchOnlineSessionResponse(_message.Message):
    __slots__ = ("snapshot", "event")
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    snapshot: OnlineSession
    event: OnlineSessionEvent
    def __init__(self, snapshot: _Optional[_Union[OnlineSession, _Mapping]] = ..., event: _Optional[_Union[OnlineSessionEvent, _Mapping]] = ...) -> None: ...

class StreamExamplesRequest(_message.Message):
    __slots__ = ("name", "examples")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    name: str
    examples: _containers.RepeatedCompositeFieldContainer[OnlineExample]
    def __init__(self, name: _Optional[str] = ..., examples: _Optional[_Iterable[_Union[OnlineExample, _Mapping]]] = ...) -> None: ...

class StreamExamplesResponse(_message.Message):
    __slots__ = ("stats", "accepted", "refused", "refusals", "duplicates")
    STATS_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    REFUSALS_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    stats: OnlineStats
    accepted: int
    refused: int
    refusals: _containers.RepeatedScalarFieldContainer[str]
    duplicates: int
    def __init__(self, stats: _Optional[_Union[OnlineStats, _Mapping]] = ..., accepted: _Optional[int] = ..., refused: _Optional[int] = ..., refusals: _Optional[_Iterable[str]] = ..., duplicates: _Optional[int] = ...) -> None: ...

class AddExamplesRequest(_message.Message):
    __slots__ = ("name", "examples")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    name: str
    examples: _containers.RepeatedCompositeFieldContainer[OnlineExample]
    def __init__(self, name: _Optional[str] = ..., examples: _Optional[_Iterable[_Union[OnlineExample, _Mapping]]] = ...) -> None: ...

class MoveLiveAliasRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class MoveLiveAliasResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: OnlineSession
    def __init__(self, session: _Optional[_Union[OnlineSession, _Mapping]] = ...) -> None: ...

class RemoveLiveAliasRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class RemoveLiveAliasResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: OnlineSession
    def __init__(self, session: _Optional[_Union[OnlineSession, _Mapping]] = ...) -> None: ...

class AddExamplesResponse(_message.Message):
    __slots__ = ("accepted", "refused", "refusals", "last_sequence", "duplicates")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    REFUSALS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    refused: int
    refusals: _containers.RepeatedScalarFieldContainer[str]
    last_sequence: int
    duplicates: int
    def __init__(self, accepted: _Optional[int] = ..., refused: _Optional[int] = ..., refusals: _Optional[_Iterable[str]] = ..., last_sequence: _Optional[int] = ..., duplicates: _Optional[int] = ...) -> None: ...
