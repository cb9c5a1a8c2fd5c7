"""Training datasets built from stored feedback.

Events in the look-back window (filtered by labels and adapter version, and by base model: a job's
own, with the events that recorded none, stored before events had a base model) are grouped by
interaction; each interaction's explicit signals are combined:

- thumbs up and ratings >= ``rating_positive_min`` (default 4) vote for the response,
  thumbs down and ratings <= ``rating_negative_max`` (default 2) against it; a tie is dropped;
- the latest correction becomes a supervised target (prompt -> corrected text).

SFT (supervised): a corrected interaction yields the correction (weight ``correction_weight``);
otherwise a response voted for yields itself at ``thumbs_up_weight`` (2.0). A response voted
against yields nothing: SFT imitates every target it trains, and a user who voted a response
down does not want it imitated (the seed design trained it at ``thumbs_down_weight``, only less).

KTO: every example is labelled desirable or undesirable. Corrections and responses voted for are
desirable; responses voted against, and responses that needed a correction, are undesirable, at
``thumbs_down_weight`` (0.5): the two thumbs weights act as KTO's lambda_D / lambda_U.

Near-identical prompts (equal after Unicode normalisation, case folding and collapsing punctuation
and whitespace) are deduplicated, per label for KTO: corrections win over votes, thumbs over
ratings, then the most recent.

Implicit signals (KTO only): by default copy, task completed and click-through mark a response
desirable and regenerate undesirable; dwell time counts as desirable only when
``dwell_desirable_seconds`` is set and reached (``DatasetPolicy.implicit``, from the settings).
They label only interactions without explicit feedback (no thumb, no decisive rating, no
correction): explicit feedback always wins. Desirable and undesirable implicit signals are counted
against each other like votes (a tie is dropped), weighted like thumbs, and rank below explicit
examples in deduplication. SFT ignores implicit signals.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

from engine.domain import ChatMessage, Example, FeedbackSource, Objective, dataset_digest
from engine.errors import FailedPrecondition
from engine.feedback.events import FeedbackKind, Judgement, Turn

_PUNCT = re.compile(r"[\W_]+")
# Lower rank wins when prompts collide.
_RANK = {"correction": 0, "thumbs_up": 1, "rating_high": 2, "thumbs_down": 3, "rating_low": 4, "corrected": 5,
         "implicit_desirable": 6, "implicit_undesirable": 7}
EXPLICIT_KINDS = (FeedbackKind.THUMBS_UP, FeedbackKind.THUMBS_DOWN, FeedbackKind.RATING, FeedbackKind.CORRECTION)
IMPLICIT_KINDS = (FeedbackKind.COPY, FeedbackKind.TASK_COMPLETED, FeedbackKind.CLICK_THROUGH, FeedbackKind.REGENERATE)
DEFAULT_IMPLICIT: tuple[tuple[FeedbackKind, bool], ...] = (
    (FeedbackKind.COPY, True), (FeedbackKind.TASK_COMPLETED, True), (FeedbackKind.CLICK_THROUGH, True),
    (FeedbackKind.REGENERATE, False),
)


class JudgementReader(Protocol):
    def judgements(
        self, *, start: datetime, end: datetime, adapter_version: str, labels: dict[str, str],
        kinds: Collection[FeedbackKind] = EXPLICIT_KINDS, base_model: str = "",
    ) -> AsyncIterator[Judgement]: ...


@dataclass(frozen=True)
class DatasetPolicy:
    """Server-wide defaults (settings) for turning feedback into examples."""

    rating_positive_min: int = 4
    rating_negative_max: int = 2
    correction_weight: float = 1.0
    # KTO labels from implicit signals: kind -> desirable (True) or undesirable (False); kinds left out are ignored.
    implicit: tuple[tuple[FeedbackKind, bool], ...] = DEFAULT_IMPLICIT
    # A dwell time of at least this many seconds is a desirable signal (KTO); None ignores dwell time.
    dwell_desirable_seconds: float | None = None

    def __post_init__(self) -> None:
        for kind, _ in self.implicit:
            if kind not in IMPLICIT_KINDS:
                raise ValueError(f"{kind} is not an implicit signal with a fixed label (one of {IMPLICIT_KINDS})")

    def implicit_kinds(self) -> tuple[FeedbackKind, ...]:
        """The implicit kinds that can label an example under this policy."""
        dwell = (FeedbackKind.DWELL_TIME,) if self.dwell_desirable_seconds is not None else ()
        return tuple(kind for kind, _ in self.implicit) + dwell


@dataclass(frozen=True)
class FeedbackDataset:
    examples: list[Example]
    desirable: tuple[bool, ...]  # per example, whether its target is a wanted answer (KTO's labels)
    digest: str
    composition: tuple[tuple[str, int], ...]
    window_start: datetime
    window_end: datetime
    duplicates_removed: int = 0
    users: tuple[frozenset[str], ...] = ()  # per example, the users whose feedback made it (for erasure)

    def wanted(self) -> list[Example]:
        """The examples whose target is a wanted answer (thumbs up, high rating, correction): what an adapter
        trained on them should keep doing, for its Fisher and for replay."""
        return [e for e, good in zip(self.examples, self.desirable, strict=True) if good]

    def wanted_users(self) -> list[frozenset[str]]:
        """The users of each of ``wanted()``'s examples, in its order."""
        return [u for u, good in zip(self.users, self.desirable, strict=True) if good]


@dataclass
class _Interaction:
    messages: tuple[Turn, ...]
    prompt: str
    response: str
    up: int = 0
    down: int = 0
    thumbs: bool = False  # whether a thumb (not only ratings) voted
    implicit_up: int = 0  # desirable implicit signals (KTO)
    implicit_down: int = 0
    correction: str = ""
    latest: datetime = field(default_factory=lambda: datetime.min.replace(tzinfo=UTC))
    users: set[str] = field(default_factory=set)  # every user whose event went into it


@dataclass(frozen=True)
class _Candidate:
    source: str
    desirable: bool
    example: Example
    prompt_key: str
    time: datetime
    users: frozenset[str] = frozenset()


def prompt_key(messages: tuple[Turn, ...], prompt: str) -> str:
    """The dedup key of a prompt: NFKC, case-folded, punctuation and whitespace collapsed."""
    text = "\n".join(f"{t.role} {t.content}" for t in messages) if messages else prompt
    return _PUNCT.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def _example(it: _Interaction, target: str, weight: float) -> Example:
    if it.messages:
        turns = tuple(ChatMessage(t.role, t.content) for t in it.messages)
        # The feedback judged the target, not the answers before it: those are context. Set only where there are
        # some, so that a single turn's example (and its dataset's digest) stays as it was.
        context = any(t.role == "assistant" for t in turns)
        return Example(messages=(*turns, ChatMessage("assistant", target)), weight=weight, last_turn_only=context)
    return Example(prompt=it.prompt, completion=target, weight=weight)


def _candidates(it: _Interaction, source: FeedbackSource, policy: DatasetPolicy, kto: bool,
                users: frozenset[str]) -> list[_Candidate]:
    key = prompt_key(it.messages, it.prompt)
    out: list[_Candidate] = []
    if it.correction:
        out.append(_Candidate("correction", True, _example(it, it.correction, policy.correction_weight), key,
                              it.latest, users))
        if kto and it.response and it.response.strip() != it.correction.strip():
            out.append(_Candidate("corrected", False, _example(it, it.response, source.thumbs_down_weight), key,
                                  it.latest, users))
        return out
    if not it.response:
        return out
    if it.up == it.down:
        if not kto or it.up or it.implicit_up == it.implicit_down:  # explicit votes that tie are not outvoted
            return out
        good = it.implicit_up > it.implicit_down
        name, weight = ("implicit_desirable", source.thumbs_up_weight) if good else (
            "implicit_undesirable", source.thumbs_down_weight)
        return [_Candidate(name, good, _example(it, it.response, weight), key, it.latest, users)]
    good = it.up > it.down
    if not good and not kto:
        return out  # SFT imitates its targets: a response voted against is never one
    name = ("thumbs_up" if good else "thumbs_down") if it.thumbs else ("rating_high" if good else "rating_low")
    weight = source.thumbs_up_weight if good else source.thumbs_down_weight
    return [_Candidate(name, good, _example(it, it.response, weight), key, it.latest, users)]


def _digest(examples: list[Example], desirable: tuple[bool, ...], kto: bool) -> str:
    return dataset_digest(examples, desirable if kto else None)


class FeedbackDatasetBuilder:
    def __init__(
        self, reader: JudgementReader, policy: DatasetPolicy = DatasetPolicy(),
        *, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._reader = reader
        self._policy = policy
        self._clock = clock

    async def build(self, source: FeedbackSource, objective: Objective, *, base_model: str = "") -> FeedbackDataset:
        """Build the dataset from the feedback on ``base_model`` ("" for every base model's, e.g. a stored dataset,
        which belongs to none); FAILED_PRECONDITION below ``min_samples`` (stating the count) unless ``force``."""
        end = self._clock()
        return await self._build(source, objective, end - timedelta(days=source.days), end, base_model, check=True)

    async def rebuild(self, source: FeedbackSource, objective: Objective, start: datetime,
                      end: datetime, *, base_model: str = "") -> FeedbackDataset:
        """The dataset ``source`` gave over the window [start, end] for ``base_model``, from the feedback stored now.

        For what an earlier version was trained on (its Fisher, replay): events deleted since (the right to be
        forgotten) are gone from it, and no minimum applies; FAILED_PRECONDITION if nothing is left.
        """
        return await self._build(source, objective, start, end, base_model, check=False)

    async def _build(self, source: FeedbackSource, objective: Objective, start: datetime, end: datetime,
                     base_model: str, *, check: bool) -> FeedbackDataset:
        kto = objective is Objective.KTO
        interactions = await self._collect(source, start, end, base_model, kto)
        chosen: dict[tuple[str, bool], _Candidate] = {}
        found = 0
        for it in interactions.values():
            for c in _candidates(it, source, self._policy, kto, frozenset(it.users)):
                found += 1
                slot = (c.prompt_key, c.desirable if kto else True)
                best = chosen.get(slot)
                if best is None or (_RANK[c.source], -c.time.timestamp()) < (_RANK[best.source],
                                                                             -best.time.timestamp()):
                    chosen[slot] = c
        picked = sorted(chosen.values(), key=lambda c: (c.time, c.prompt_key, c.desirable))
        self._check_size(len(picked), source if check else replace(source, min_samples=0), objective, base_model)
        examples = [c.example for c in picked]
        desirable = tuple(c.desirable for c in picked)
        counts: dict[str, int] = {}
        for c in picked:
            counts[c.source] = counts.get(c.source, 0) + 1
        return FeedbackDataset(
            examples=examples,
            desirable=desirable,
            digest=_digest(examples, desirable, kto),
            composition=tuple(sorted(counts.items())),
            window_start=start,
            window_end=end,
            duplicates_removed=found - len(picked),
            users=tuple(c.users for c in picked),
        )

    async def _collect(
        self, source: FeedbackSource, start: datetime, end: datetime, base_model: str, kto: bool
    ) -> dict[str, _Interaction]:
        policy = self._policy
        implicit = dict(policy.implicit) if kto else {}
        dwell_min = policy.dwell_desirable_seconds if kto else None
        kinds = EXPLICIT_KINDS + (policy.implicit_kinds() if kto else ())
        interactions: dict[str, _Interaction] = {}
        async for j in self._reader.judgements(
            start=start, end=end, adapter_version=source.adapter_version, labels=dict(source.labels), kinds=kinds,
            base_model=base_model,
        ):
            it = interactions.get(j.interaction_key)
            if it is None:
                it = interactions[j.interaction_key] = _Interaction(j.messages, j.prompt, j.response)
            it.latest = max(it.latest, j.time)
            it.users.update(j.users)
            if j.kind is FeedbackKind.CORRECTION:
                it.correction = j.correction  # rows arrive in time order: the latest wins
            elif j.kind is FeedbackKind.THUMBS_UP:
                it.up, it.thumbs = it.up + 1, True
            elif j.kind is FeedbackKind.THUMBS_DOWN:
                it.down, it.thumbs = it.down + 1, True
            elif j.kind is FeedbackKind.RATING and j.rating >= policy.rating_positive_min:
                it.up += 1
            elif j.kind is FeedbackKind.RATING and j.rating <= policy.rating_negative_max:
                it.down += 1
            elif j.kind in implicit:
                if implicit[j.kind]:
                    it.implicit_up += 1
                else:
                    it.implicit_down += 1
            elif j.kind is FeedbackKind.DWELL_TIME and dwell_min is not None and j.dwell_seconds >= dwell_min:
                it.implicit_up += 1
        return interactions

    @staticmethod
    def _check_size(found: int, source: FeedbackSource, objective: Objective, base_model: str) -> None:
        filters = [f"base_model={base_model}"] if base_model else []
        if source.adapter_version:
            filters.append(f"adapter_version={source.adapter_version}")
        filters += [f"{k}={v}" for k, v in source.labels]
        where = f"in the last {source.days} day(s)" + (f" matching {', '.join(filters)}" if filters else "")
        metadata = {"found": str(found), "min_samples": str(source.min_samples), "days": str(source.days)}
        if found == 0:
            raise FailedPrecondition(
                "FEEDBACK_DATASET_EMPTY", f"found 0 usable feedback examples {where}; nothing to train on",
                metadata=metadata,
            )
        if found < source.min_samples and not source.force:
            raise FailedPrecondition(
                "FEEDBACK_DATASET_TOO_SMALL",
                f"found {found} usable feedback examples {where} for {objective.value}, fewer than "
                f"min_samples={source.min_samples}; lower min_samples or set force to train anyway",
                metadata=metadata,
            )
