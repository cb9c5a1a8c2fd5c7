"""Feedback events as the engine sees them, and the results of ingesting them.

Plain, slotted dataclasses: the server converts protobuf to these in one place
(``server/convert_feedback.py``). The engine never sees a protobuf message.

``Turn``, ``Interaction`` and ``FeedbackEvent`` are built once per ingested event, so they are not
``frozen`` (a frozen dataclass's ``__init__`` costs about 1 us more per object, measured; that is 5%
of the ingestion path). Nothing mutates them; treat them as immutable.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class FeedbackKind(enum.StrEnum):
    # explicit
    THUMBS_UP = "THUMBS_UP"
    THUMBS_DOWN = "THUMBS_DOWN"
    RATING = "RATING"
    CORRECTION = "CORRECTION"
    # implicit
    DWELL_TIME = "DWELL_TIME"
    CLICK_THROUGH = "CLICK_THROUGH"
    COPY = "COPY"
    REGENERATE = "REGENERATE"
    TASK_COMPLETED = "TASK_COMPLETED"


@dataclass(slots=True)
class Turn:
    """One chat message of an interaction."""

    role: str
    content: str


@dataclass(slots=True)
class Interaction:
    """The exchange judged: ``messages`` (the conversation up to the response) or ``prompt``, and ``response``."""

    interaction_id: str = ""
    messages: tuple[Turn, ...] = ()
    prompt: str = ""
    response: str = ""


@dataclass(slots=True)
class FeedbackEvent:
    """One event as submitted. ``kind`` is None when the client sent an unknown or unspecified kind."""

    client_event_id: str
    kind: FeedbackKind | None
    rating: int = 0
    correction: str = ""
    dwell_seconds: float = 0.0
    interaction: Interaction | None = None
    interaction_ref: str = ""
    adapter_version: str = ""
    user_id: str = ""
    tenant_id: str = ""
    time: datetime | None = None
    labels: tuple[tuple[str, str], ...] = ()
    base_model: str = ""  # as submitted; "" derives it (engine.feedback.ingest.FeedbackBases)


@dataclass(frozen=True)
class IngestResult:
    """What one batch (or a whole stream) did. ``scrubbed`` counts replacements by rule name."""

    stored: int = 0
    duplicates: int = 0
    forgotten: int = 0
    scrubbed: tuple[tuple[str, int], ...] = ()
    messages: int = 0

    def __add__(self, other: IngestResult) -> IngestResult:
        counts = dict(self.scrubbed)
        for rule, n in other.scrubbed:
            counts[rule] = counts.get(rule, 0) + n
        return IngestResult(
            stored=self.stored + other.stored,
            duplicates=self.duplicates + other.duplicates,
            forgotten=self.forgotten + other.forgotten,
            scrubbed=tuple(sorted(counts.items())),
            messages=self.messages + other.messages,
        )


@dataclass(frozen=True)
class StoreOutcome:
    """The store's answer for one batch of records."""

    stored: int
    duplicates: int
    forgotten: int


@dataclass(frozen=True)
class AdapterStats:
    adapter_version: str
    positive: int
    negative: int
    base_model: str = ""  # "" : events stored before events recorded one

    @property
    def positive_ratio(self) -> float:
        total = self.positive + self.negative
        return self.positive / total if total else 0.0


@dataclass(frozen=True)
class FeedbackStats:
    start_time: datetime
    end_time: datetime
    by_kind: tuple[tuple[FeedbackKind, int], ...] = ()
    by_adapter: tuple[AdapterStats, ...] = field(default_factory=tuple)

    @property
    def total(self) -> int:
        return sum(n for _, n in self.by_kind)


# One event laid out as a stored row, in the column order of engine.stores.feedback_store.COLUMNS: tenant_id,
# client_event_id, kind, rating, correction, dwell_seconds, interaction_id, has_content, messages (JSON),
# prompt, response, adapter_version, user_id, event_time, received_time, labels (JSON), scrubbed_rules, base_model.
FeedbackRow = tuple[
    str, str, str, int | None, str | None, float | None, str, bool, str | None, str | None, str | None,
    str, str, datetime, datetime, str, list[str], str,
]


@dataclass(frozen=True, slots=True)
class CopyRows:
    """Records laid out as COPY text-format data (``encode_rows``), with what ``insert`` needs to know of them."""

    data: bytes
    count: int
    users: tuple[str, ...]


@dataclass(frozen=True)
class UserErasure:
    """What DeleteUserFeedback deleted: the user's events, and the online examples made from them."""

    events: int
    online_examples: int = 0


@dataclass(frozen=True, slots=True)
class Judgement:
    """A feedback event with its interaction's content resolved (for dataset building)."""

    interaction_key: str
    kind: FeedbackKind
    rating: int
    correction: str
    time: datetime
    messages: tuple[Turn, ...]
    prompt: str
    response: str
    dwell_seconds: float = 0.0
    users: tuple[str, ...] = ()  # whose data it is: the event's user, and the user whose event carries the content
