import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FeedbackKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEEDBACK_KIND_UNSPECIFIED: _ClassVar[FeedbackKind]
    FEEDBACK_KIND_THUMBS_UP: _ClassVar[FeedbackKind]
    FEEDBACK_KIND_THUMBS_DOWN: _ClassVar[FeedbackKind]
    FEEDBACK_KIND_RATING: _ClassVar[FeedbackKind]
    FEEDBACK_KIND_CORRECTION: _ClassVar[FeedbackKind]
    FEEDBACK_KIND_DWELL_TIME: _ClassVar[FeedbackKind]
    FEEDBACK_KIND_CLICK_THROUGH: _ClassVar[FeedbackKind]
    FEEDBACK_KIND_COPY: _ClassVar[FeedbackKind]
    FEEDBACK_KIND_REGENERATE: _ClassVar[FeedbackKind]
    FEEDBACK_KIND_TASK_COMPLETED: _ClassVar[FeedbackKind]
FEEDBACK_KIND_UNSPECIFIED: FeedbackKind
FEEDBACK_KIND_THUMBS_UP: FeedbackKind
FEEDBACK_KIND_THUMBS_DOWN: FeedbackKind
FEEDBACK_KIND_RATING: FeedbackKind
FEEDBACK_KIND_CORRECTION: FeedbackKind
FEEDBACK_KIND_DWELL_TIME: FeedbackKind
FEEDBACK_KIND_CLICK_THROUGH: FeedbackKind
FEEDBACK_KIND_COPY: FeedbackKind
FEEDBACK_KIND_REGENERATE: FeedbackKind
FEEDBACK_KIND_TASK_COMPLETED: FeedbackKind

class ChatMessage(_message.Message):
    __slots__ = ("role", "content")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    role: str
    content: str
    def __init__(self, role: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class Interaction(_message.Message):
    __slots__ = ("interaction_id", "messages", "prompt", "response")
    INTERACTION_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    interaction_id: str
    messages: _containers.RepeatedCompositeFieldContainer[ChatMessage]
    prompt: str
    response: str
    def __init__(self, interaction_id: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[ChatMessage, _Mapping]]] = ..., prompt: _Optional[str] = ..., response: _Optional[str] = ...) -> None: ...

class FeedbackEvent(_message.Message):
    __slots__ = ("client_event_id", "kind", "rating", "correction", "dwell_seconds", "interaction", "interaction_ref", "adapter_version", "user_id", "tenant_id", "time", "labels", "base_model")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CLIENT_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    CORRECTION_FIELD_NUMBER: _ClassVar[int]
    DWELL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    INTERACTION_FIELD_NUMBER: _ClassVar[int]
    INTERACTION_REF_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    client_event_id: str
    kind: FeedbackKind
    rating: int
    correction: str
    dwell_seconds: float
    interaction: Interaction
    interaction_ref: str
    adapter_version: str
    user_id: str
    tenant_id: str
    time: _timestamp_pb2.Timestamp
    labels: _containers.ScalarMap[str, str]
    base_model: str
    def __init__(self, client_event_id: _Optional[str] = ..., kind: _Optional[_Union[FeedbackKind, str]] = ..., rating: _Optional[int] = ..., correction: _Optional[str] = ..., dwell_seconds: _Optional[float] = ..., interaction: _Optional[_Union[Interaction, _Mapping]] = ..., interaction_ref: _Optional[str] = ..., adapter_version: _Optional[str] = ..., user_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., base_model: _Optional[str] = ...) -> None: ...

class SubmitFeedbackRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[FeedbackEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[FeedbackEvent, _Mapping]]] = ...) -> None: ...

class SubmitFeedbackResponse(_message.Message):
    __slots__ = ("stored", "duplicates", "scrubbed", "forgotten")
    class ScrubbedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    STORED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    SCRUBBED_FIELD_NUMBER: _ClassVar[int]
    FORGOTTEN_FIELD_NUMBER: _ClassVar[int]
    stored: int
    duplicates: int
    scrubbed: _containers.ScalarMap[str, int]
    forgotten: int
    def __init__(self, stored: _Optional[int] = ..., duplicates: _Optional[int] = ..., scrubbed: _Optional[_Mapping[str, int]] = ..., forgotten: _Optional[int] = ...) -> None: ...

class StreamFeedbackRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[FeedbackEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[FeedbackEvent, _Mapping]]] = ...) -> None: ...

class StreamFeedbackResponse(_message.Message):
    __slots__ = ("stored", "duplicates", "scrubbed", "forgotten", "messages")
    class ScrubbedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    STORED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    SCRUBBED_FIELD_NUMBER: _ClassVar[int]
    FORGOTTEN_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    stored: int
    duplicates: int
    scrubbed: _containers.ScalarMap[str, int]
    forgotten: int
    messages: int
    def __init__(self, stored: _Optional[int] = ..., duplicates: _Optional[int] = ..., scrubbed: _Optional[_Mapping[str, int]] = ..., forgotten: _Optional[int] = ..., messages: _Optional[int] = ...) -> None: ...

class GetFeedbackStatsRequest(_message.Message):
    __slots__ = ("start_time", "end_time", "adapter_version", "tenant_id", "base_model")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    adapter_version: str
    tenant_id: str
    base_model: str
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., adapter_version: _Optional[str] = ..., tenant_id: _Optional[str] = ..., base_model: _Optional[str] = ...) -> None: ...

class FeedbackKindCount(_message.Message):
    __slots__ = ("kind", "count")
    KIND_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    kind: FeedbackKind
    count: int
    def __init__(self, kind: _Optional[_Union[FeedbackKind, str]] = ..., count: _Optional[int] = ...) -> None: ...

class AdapterFeedbackStats(_message.Message):
    __slots__ = ("adapter_version", "positive", "negative", "positive_ratio", "base_model")
    ADAPTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_RATIO_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    adapter_version: str
    positive: int
    negative: int
    positive_ratio: float
    base_model: str
    def __init__(self, adapter_version: _Optional[str] = ..., positive: _Optional[int] = ..., negative: _Optional[int] = ..., positive_ratio: _Optional[float] = ..., base_model: _Optional[str] = ...) -> None: ...

class GetFeedbackStatsResponse(_message.Message):
    __slots__ = ("by_kind", "by_adapter", "total", "start_time", "end_time")
    BY_KIND_FIELD_NUMBER: _ClassVar[int]
    BY_ADAPTER_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    by_kind: _containers.RepeatedCompositeFieldContainer[FeedbackKindCount]
    by_adapter: _containers.RepeatedCompositeFieldContainer[AdapterFeedbackStats]
    total: int
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, by_kind: _Optional[_Iterable[_Union[FeedbackKindCount, _Mapping]]] = ..., by_adapter: _Optional[_Iterable[_Union[AdapterFeedbackStats, _Mapping]]] = ..., total: _Optional[int] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class DeleteUserFeedbackRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class DeleteUserFeedbackResponse(_message.Message):
    __slots__ = ("deleted", "online_examples_deleted")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    ONLINE_EXAMPLES_DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    online_examples_deleted: int
    def __init__(self, deleted: _Optional[int] = ..., online_examples_deleted: _Optional[int] = ...) -> None: ...
