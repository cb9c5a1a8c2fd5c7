"""Ingestion of feedback batches: validate the whole batch, scrub free text, store in one transaction.

Atomicity: a batch is all-or-nothing. Every event is validated before anything is stored, and
one InvalidArgument lists the problems of all bad events (up to a limit) as ``events[<i>].<field>``;
the store then writes the batch in a single transaction.

A stream is a sequence of batches committed in order, one transaction each, with the next batch
validated and scrubbed while the previous one is being written (``stream``: in a thread of this
process; ``store_prepared``: batches the caller prepared, e.g. in worker processes, several at once).
When the stream fails, the error's metadata says how far it got: ``committed_messages`` (that many
first messages are stored, no later one is), ``stored`` and ``duplicates``.

Each event is stored with its base model (``FeedbackBases.of``): the one it names, else the one of its
``adapter_version`` when that is a serving name ``<base>@<version>``, else the server's default. A base
model the server does not know is a violation of the event's ``base_model`` like any other. A serving name of a
version of that base model (``<base>@v1.2``) is stored as the plain version (``v1.2``): the version either
spelling names, counted as one by every reader (stats, feedback datasets, canaries, rollback; migration 0034).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from engine import telemetry
from engine.errors import EngineError, InvalidArgument, ViolationCollector
from engine.feedback.events import CopyRows, FeedbackEvent, FeedbackKind, FeedbackRow, IngestResult, StoreOutcome
from engine.feedback.scrub import Scrubber
from engine.names import version_of

ROLES = frozenset({"system", "user", "assistant"})
_KIND_TEXT = {k: k.value for k in FeedbackKind}  # a dict lookup is cheaper than the enum's value property


@dataclass(frozen=True)
class FeedbackLimits:
    max_events_per_batch: int = 10_000
    max_text_chars: int = 32_768
    max_messages: int = 64
    max_id_chars: int = 128
    max_labels: int = 32
    max_label_chars: int = 256
    max_dwell_seconds: float = 86_400.0
    max_future_skew: timedelta = timedelta(minutes=10)
    max_violations: int = 50


@dataclass(frozen=True)
class FeedbackBases:
    """The base models a server knows (``known``, which always holds ``default``), and its default one."""

    default: str
    known: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.default:
            raise ValueError("a server's default base model must be set")
        object.__setattr__(self, "known", frozenset({*self.known, self.default}))

    def of(self, e: FeedbackEvent) -> str | None:
        """The base model ``e`` is stored with: the one it names, else the one its ``adapter_version`` names as a
        serving name ``<base>@<version>`` (engine.lora.state.lora_name; an online session's live name is alike),
        else the default. None when that base model is not known here, or when the event names one base model
        and its ``adapter_version`` is a serving name of another known one (``_check_base`` says which)."""
        named = e.base_model
        version = e.adapter_version
        served = version.rpartition("@")[0] if "@" in version else ""
        if named:
            if named not in self.known or (served and served != named and served in self.known):
                return None
            return named
        if served:
            return served if served in self.known else None
        return self.default


Prepared = tuple[CopyRows, dict[str, int]]  # a batch laid out for the store, and the scrubbing rules that fired


class FeedbackRecordStore(Protocol):
    def encode(self, records: Sequence[FeedbackRow]) -> CopyRows:
        """Lay records out for storage (CPU only; called off the event loop)."""

    async def insert(self, rows: CopyRows) -> StoreOutcome: ...


def _now() -> datetime:
    return datetime.now(UTC)


def validate_batch(
    events: Sequence[FeedbackEvent], limits: FeedbackLimits, now: datetime, bases: FeedbackBases
) -> None:
    """Raise one InvalidArgument (reason INVALID_FEEDBACK) naming every bad field of every bad event."""
    issues = ViolationCollector()
    if len(events) > limits.max_events_per_batch:
        issues.add("events", f"at most {limits.max_events_per_batch} events per batch, got {len(events)}")
        issues.raise_if_any("INVALID_FEEDBACK", "feedback batch too large")
    bad: list[int] = []
    latest = now + limits.max_future_skew
    for i, event in enumerate(events):
        if _plainly_valid(event, limits, latest, bases):
            continue
        before = len(issues.violations)
        _check_event(event, f"events[{i}]", limits, latest, bases, issues)
        if len(issues.violations) > before:
            bad.append(i)
            if len(issues.violations) >= limits.max_violations:
                break
    if bad:
        error = _batch_error(issues, bad, limits)
        raise error


def _batch_error(issues: ViolationCollector, bad: list[int], limits: FeedbackLimits) -> InvalidArgument:
    shown = issues.violations[: limits.max_violations]
    first = shown[0]
    return InvalidArgument(
        "INVALID_FEEDBACK",
        f"{len(bad)} invalid event(s); nothing in this batch was stored. First: {first.field}: {first.description}",
        violations=shown,
        metadata={"first_invalid_index": str(bad[0]), "invalid_events": ",".join(map(str, bad[:20]))},
    )


def _check_text(value: str, path: str, limits: FeedbackLimits, issues: ViolationCollector) -> None:
    if len(value) > limits.max_text_chars:
        issues.add(path, f"is {len(value)} characters; at most {limits.max_text_chars} are accepted")


def _check_id(value: str, path: str, limits: FeedbackLimits, issues: ViolationCollector, *, required: bool) -> None:
    if required and not value:
        issues.add(path, "is required")
    elif len(value) > limits.max_id_chars or not value.isprintable():
        issues.add(path, f"must be at most {limits.max_id_chars} printable characters")


def _plainly_valid(e: FeedbackEvent, limits: FeedbackLimits, latest: datetime, bases: FeedbackBases) -> bool:
    """True only when ``_check_event`` would find nothing: the common case, decided without building a field path.

    False means "look closer" and sends the event through ``_check_event``, which names the problems.
    """
    kind = e.kind
    if kind is None or not e.client_event_id or not (e.user_id or e.tenant_id):
        return False
    if (e.rating and kind is not FeedbackKind.RATING) or (e.dwell_seconds and kind is not FeedbackKind.DWELL_TIME):
        return False
    if kind is FeedbackKind.RATING:
        if not 1 <= e.rating <= 5:
            return False
    elif kind is FeedbackKind.DWELL_TIME:
        if not 0 <= e.dwell_seconds <= limits.max_dwell_seconds:  # False for NaN
            return False
    elif kind is FeedbackKind.CORRECTION:
        if not e.correction.strip() or len(e.correction) > limits.max_text_chars:
            return False
    if e.correction and kind is not FeedbackKind.CORRECTION:
        return False
    max_id = limits.max_id_chars
    it = e.interaction
    ids: tuple[str, ...] = (e.client_event_id, e.adapter_version, e.user_id, e.tenant_id, e.interaction_ref)
    if it is None:
        if not e.interaction_ref:
            return False
    else:
        ids += (it.interaction_id,)
        max_text = limits.max_text_chars
        if e.interaction_ref or not (it.messages or it.prompt) or (it.messages and it.prompt):
            return False
        if not it.response and kind is not FeedbackKind.CORRECTION:
            return False
        if len(it.prompt) > max_text or len(it.response) > max_text:
            return False
        if it.messages:
            if len(it.messages) > limits.max_messages:
                return False
            for t in it.messages:  # a loop, not all(<generator>): cheaper for the few turns an event has
                if t.role not in ROLES or len(t.content) > max_text:
                    return False
    if max(map(len, ids)) > max_id or not "".join(ids).isprintable():
        return False
    if e.time is not None and e.time > latest:
        return False
    if bases.of(e) is None:
        return False
    labels = e.labels
    if labels:
        if len(labels) > limits.max_labels:
            return False
        max_label = limits.max_label_chars
        for k, v in labels:
            if not k or len(k) > max_label or len(v) > max_label:
                return False
    return True


def _check_event(
    e: FeedbackEvent, at: str, limits: FeedbackLimits, latest: datetime, bases: FeedbackBases,
    issues: ViolationCollector,
) -> None:
    _check_id(e.client_event_id, f"{at}.client_event_id", limits, issues, required=True)
    if e.kind is None:
        issues.add(f"{at}.kind", "unknown or unspecified kind; use one of " + ", ".join(k.value for k in FeedbackKind))
    elif e.kind is FeedbackKind.RATING:
        issues.check(1 <= e.rating <= 5, f"{at}.rating", f"must lie in 1..5 for RATING, got {e.rating}")
    elif e.rating:
        issues.add(f"{at}.rating", f"must be 0 (unset) for {e.kind.value}")
    if e.kind is FeedbackKind.CORRECTION:
        issues.check(bool(e.correction.strip()), f"{at}.correction", "is required for CORRECTION")
    elif e.correction:
        issues.add(f"{at}.correction", "is only allowed for CORRECTION")
    _check_text(e.correction, f"{at}.correction", limits, issues)
    if e.kind is FeedbackKind.DWELL_TIME:
        ok = math.isfinite(e.dwell_seconds) and 0 <= e.dwell_seconds <= limits.max_dwell_seconds
        issues.check(ok, f"{at}.dwell_seconds", f"must lie in [0, {limits.max_dwell_seconds:g}] for DWELL_TIME")
    elif e.dwell_seconds:
        issues.add(f"{at}.dwell_seconds", "is only allowed for DWELL_TIME")
    for name, value in (("adapter_version", e.adapter_version), ("user_id", e.user_id),
                        ("tenant_id", e.tenant_id), ("interaction_ref", e.interaction_ref)):
        _check_id(value, f"{at}.{name}", limits, issues, required=False)
    if not e.user_id and not e.tenant_id:
        issues.add(f"{at}.user_id", "set user_id or tenant_id")
    if e.time is not None and e.time > latest:
        issues.add(f"{at}.time", "is in the future")
    _check_interaction(e, at, limits, issues)
    _check_base(e, at, bases, issues)
    if len(e.labels) > limits.max_labels:
        issues.add(f"{at}.labels", f"at most {limits.max_labels} labels")
    for key, value in e.labels:
        if not key or len(key) > limits.max_label_chars or len(value) > limits.max_label_chars:
            issues.add(f"{at}.labels[{key[:40]!r}]", f"keys must be non-empty; keys and values at most "
                                                     f"{limits.max_label_chars} characters")


def _check_base(e: FeedbackEvent, at: str, bases: FeedbackBases, issues: ViolationCollector) -> None:
    if bases.of(e) is not None:
        return
    named, version = e.base_model, e.adapter_version
    served = version.rpartition("@")[0]
    known = ", ".join(sorted(bases.known))
    if named and named not in bases.known:
        issues.add(f"{at}.base_model", f"{named[:128]!r} is not a base model of this server (known: {known})")
    elif named:
        issues.add(f"{at}.base_model", f"is {named!r}, but adapter_version {version!r} is a serving name of "
                                       f"base model {served!r}")
    else:
        issues.add(f"{at}.base_model", f"is unset, and adapter_version {version[:128]!r} names base model "
                                       f"{served[:128]!r}, which this server does not know; set base_model "
                                       f"(known: {known})")


def _check_interaction(e: FeedbackEvent, at: str, limits: FeedbackLimits, issues: ViolationCollector) -> None:
    it = e.interaction
    if it is None:
        issues.check(bool(e.interaction_ref), f"{at}.interaction",
                     "set interaction (prompt or messages, and response) or interaction_ref")
        return
    if e.interaction_ref:
        issues.add(f"{at}.interaction_ref", "set interaction or interaction_ref, not both")
    path = f"{at}.interaction"
    _check_id(it.interaction_id, f"{path}.interaction_id", limits, issues, required=False)
    if it.messages and it.prompt:
        issues.add(f"{path}.prompt", "set messages or prompt, not both")
    if not it.messages and not it.prompt:
        issues.add(f"{path}.prompt", "set messages or prompt")
    if not it.response and e.kind is not FeedbackKind.CORRECTION:
        issues.add(f"{path}.response", "is required (the model response judged)")
    _check_text(it.prompt, f"{path}.prompt", limits, issues)
    _check_text(it.response, f"{path}.response", limits, issues)
    if len(it.messages) > limits.max_messages:
        issues.add(f"{path}.messages", f"at most {limits.max_messages} messages")
    for j, turn in enumerate(it.messages[: limits.max_messages]):
        if turn.role not in ROLES:
            issues.add(f"{path}.messages[{j}].role", "must be system, user or assistant")
        _check_text(turn.content, f"{path}.messages[{j}].content", limits, issues)


def _texts(events: Sequence[FeedbackEvent]) -> list[str]:
    """The non-empty free texts of the batch, in the order ``to_records`` scrubs them: messages, prompt, response,
    correction."""
    texts: list[str] = []
    add = texts.append
    for e in events:
        it = e.interaction
        if it is not None:
            for turn in it.messages:
                if turn.content:
                    add(turn.content)
            if it.prompt:
                add(it.prompt)
            if it.response:
                add(it.response)
        if e.correction:
            add(e.correction)
    return texts


def to_records(
    events: Sequence[FeedbackEvent], scrubber: Scrubber, received: datetime, bases: FeedbackBases
) -> tuple[list[FeedbackRow], dict[str, int]]:
    """Scrub the free text and lay each event out as a row (engine.stores.feedback_store.COLUMNS), with its base
    model (``FeedbackBases.of``).

    The scrubber first picks, for the whole batch at once, the texts that may hold PII; only those are scrubbed.
    """
    texts = _texts(events)
    dirty = scrubber.to_scrub(texts)
    scrub = scrubber.scrub
    dumps = json.JSONEncoder(ensure_ascii=False).encode  # non-ASCII as is: no backslash escapes for COPY to escape
    labels_json: dict[tuple[tuple[str, str], ...], str] = {(): "{}"}  # label sets repeat across a batch
    fired_total: dict[str, int] = {}
    records: list[FeedbackRow] = []
    k = 0  # the index in texts of the event's next non-empty text
    for e in events:
        fired: dict[str, int] = {}
        it = e.interaction
        if it is not None:
            messages = None
            if it.messages:
                turns = []
                for t in it.messages:
                    content = t.content
                    if content:
                        if k in dirty:
                            content = scrub(content, fired)
                        k += 1
                    turns.append({"role": t.role, "content": content})
                messages = dumps(turns)
            prompt, response = it.prompt, it.response
            if prompt:
                if k in dirty:
                    prompt = scrub(prompt, fired)
                k += 1
            if response:
                if k in dirty:
                    response = scrub(response, fired)
                k += 1
            row_it: tuple[str, bool, str | None, str | None, str | None] = (
                it.interaction_id, True, messages, prompt or None, response)
        else:
            row_it = (e.interaction_ref, False, None, None, None)
        correction = e.correction or None
        if correction:
            if k in dirty:
                correction = scrub(correction, fired)
            k += 1
        kind = e.kind
        base = bases.of(e)
        if kind is None or base is None:  # validate_batch refuses such events first
            raise ValueError(f"event {e.client_event_id!r} has no kind or an unknown base model: only validated "
                             "events become records")
        records.append((
            e.tenant_id, e.client_event_id, _KIND_TEXT[kind], e.rating if kind is FeedbackKind.RATING else None,
            correction, e.dwell_seconds if kind is FeedbackKind.DWELL_TIME else None, *row_it,
            # a versioned serving name as its plain version: both spellings are one version in every count
            version_of(base, e.adapter_version) or e.adapter_version, e.user_id, e.time or received, received,
            labels_json.get(e.labels) or labels_json.setdefault(e.labels, dumps(dict(e.labels))), list(fired),
            base,
        ))
        if fired:
            for rule, n in fired.items():
                fired_total[rule] = fired_total.get(rule, 0) + n
    return records, fired_total


class FeedbackIngestor:
    def __init__(
        self, store: FeedbackRecordStore, scrubber: Scrubber, limits: FeedbackLimits = FeedbackLimits(),
        *, bases: FeedbackBases, clock: Callable[[], datetime] = _now,
    ) -> None:
        self._store = store
        self._scrubber = scrubber
        self._limits = limits
        self.bases = bases
        self._clock = clock

    def now(self) -> datetime:
        """The ingestor's clock: a batch is validated against, and stamped with, the time it was received."""
        return self._clock()

    def prepare(self, events: Sequence[FeedbackEvent]) -> Prepared:
        """Validate, scrub and lay out one batch received now (CPU only: call it off the event loop)."""
        return prepare_batch(events, self._scrubber, self._limits, self._clock(), self._store.encode, self.bases)

    async def submit(self, events: Sequence[FeedbackEvent]) -> IngestResult:
        """Validate, scrub and store one batch, all or nothing."""
        records, fired = await asyncio.to_thread(self.prepare, events)
        return _committed(await self._store.insert(records), fired)

    async def stream(
        self, batches: AsyncIterator[Any], to_events: Callable[[Any], Sequence[FeedbackEvent]] | None = None,
    ) -> IngestResult:
        """Store batches in order, preparing batch k+1 while batch k is written (see module docstring).

        ``to_events`` turns one item of ``batches`` (e.g. a protobuf message) into its events, in the same
        worker thread as the preparation; without it, the items are the events.
        """

        def prepare(batch: Any) -> Prepared:
            return self.prepare(batch if to_events is None else to_events(batch))

        async def prepared() -> AsyncIterator[Awaitable[Prepared]]:
            async for batch in batches:
                # In a thread, so the event loop keeps feeding the previous batch to PostgreSQL meanwhile.
                yield asyncio.to_thread(prepare, batch)

        return await self.store_prepared(prepared())

    async def store_prepared(self, batches: AsyncIterator[Awaitable[Prepared]]) -> IngestResult:
        """Store prepared batches (see ``prepare_batch``) in order, one transaction each (see module docstring).

        Each item is awaited only when the previous batch has been handed to the store, so the caller may
        prepare several ahead; an item that raises ends the stream after the batches before it are stored.
        """
        total = IngestResult()
        pending: asyncio.Future[StoreOutcome] | None = None
        pending_fired: dict[str, int] = {}
        try:
            async for item in batches:
                records, fired = await item
                if pending is not None:
                    writing, pending = pending, None
                    total += _committed(await writing, pending_fired)
                pending, pending_fired = asyncio.ensure_future(self._store.insert(records)), fired
            if pending is not None:
                writing, pending = pending, None
                total += _committed(await writing, pending_fired)
        except EngineError as exc:
            if pending is not None:  # an earlier batch is still being written: let it finish, then report
                writing, pending = pending, None
                try:
                    total += _committed(await writing, pending_fired)
                except EngineError:
                    pass
            exc.metadata.update(committed_messages=str(total.messages), stored=str(total.stored),
                                duplicates=str(total.duplicates))
            raise
        finally:
            if pending is not None:
                pending.cancel()
            close = getattr(batches, "aclose", None)
            if close is not None:  # stop the caller's preparation of batches that will not be stored
                await close()
        return total


def prepare_batch(
    events: Sequence[FeedbackEvent], scrubber: Scrubber, limits: FeedbackLimits, now: datetime,
    encode: Callable[[Sequence[FeedbackRow]], CopyRows], bases: FeedbackBases,
) -> Prepared:
    """Validate (all or nothing), scrub and lay out one batch received at ``now``: CPU work only, no I/O."""
    validate_batch(events, limits, now, bases)
    records, fired = to_records(events, scrubber, now, bases)
    return encode(records), fired


def _committed(outcome: StoreOutcome, fired: dict[str, int]) -> IngestResult:
    """One batch the store committed: counted in the metrics here, where every committed batch passes (those of a
    stream that fails later as well), and its part of the result."""
    telemetry.feedback_ingested(outcome.stored, outcome.duplicates, outcome.forgotten)
    return IngestResult(outcome.stored, outcome.duplicates, outcome.forgotten, tuple(sorted(fired.items())), 1)
