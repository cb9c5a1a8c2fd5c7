"""DriftDetector: one base model's drift report over a window.

Incoming: the prompts of the interactions that feedback carried in the window (a stable sample of at most
``max_samples``, one per interaction). Reference: the prompts the active version was trained on (its train split,
as engine.continual.version_data reads it back; a stable sample too, one per example). Both sides keep their
repeats: a question asked by 40 interactions is 40 prompts, and so is a prompt 40 examples were trained on, so
traffic that asks what the version was trained on, as often, is a sample of the same distribution. With no active
version (the base model serves alone) or an active version whose training data is not known here (imported, its
feedback deleted, its JSONL file removed or no longer valid), there is nothing to compare with: the report says
NO_REFERENCE and why, and still carries the feedback and evaluation series. Each base model's report reads the
feedback on it (an event's base model, engine.feedback.ingest) and the events that recorded none (stored before
events had one).

The embeddings (one per distinct prompt) and the test run off the event loop, one report at a time.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta

from engine import telemetry
from engine.domain import Example
from engine.drift.ports import DriftSource, Embedder, ServingVersions, TrainingData, Versions
from engine.drift.report import DriftConfig, DriftOutcome, DriftReport, TwoSampleTest
from engine.drift.statistic import two_sample_test
from engine.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from engine.registry import ServingRole

_EARLIEST = datetime.min.replace(tzinfo=UTC)  # the earliest time a request or PostgreSQL can hold


def prompt_of(example: Example) -> str:
    """What the example asks: its prompt, or the last user turn of its conversation."""
    if not example.is_chat:
        return example.prompt.strip()
    users = [m.content for m in example.messages if m.role == "user"]
    return users[-1].strip() if users else ""


def stable_sample(texts: Sequence[str], limit: int) -> tuple[str, ...]:
    """At most ``limit`` of ``texts``, repeats kept, in the order of a hash of each text and how many times it came
    before (the first time: the text alone). Each copy of a text is drawn on its own, so the sample keeps the texts'
    proportions, and the same texts in any order give the same sample."""
    seen: Counter[str] = Counter()
    keyed = []
    for text in texts:
        before = seen[text]
        seen[text] += 1
        keyed.append((hashlib.sha256(text.encode() if not before else f"{text}\0{before}".encode()).digest(), text))
    return tuple(text for _, text in sorted(keyed)[:limit])


class DriftDetector:
    def __init__(self, config: DriftConfig, *, source: DriftSource, serving: ServingVersions, versions: Versions,
                 training_data: TrainingData, embedder: Embedder, base_models: Callable[[], Collection[str]],
                 rating_positive_min: int = 4, rating_negative_max: int = 2,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.config = config
        self._source = source
        self._serving = serving
        self._versions = versions
        self._training_data = training_data
        self._embedder = embedder
        self._base_models = base_models
        self._ratings = (rating_positive_min, rating_negative_max)
        self._clock = clock
        self._lock = asyncio.Lock()

    def check(self, base_model: str, window: timedelta | None, end: datetime | None) -> tuple[datetime, datetime]:
        """The window [start, end) of a request; INVALID_ARGUMENT or NOT_FOUND for a bad one."""
        window = self.config.window if window is None else window
        problems: list[FieldViolation] = []
        if window <= timedelta(0):
            problems.append(FieldViolation("window", f"must be positive, got {window.total_seconds():g}s"))
        elif window > self.config.max_window:
            problems.append(FieldViolation("window", f"at most {self.config.max_window.days} days"))
        now = self._clock()
        end = now if end is None else end
        if end.tzinfo is None:
            problems.append(FieldViolation("end_time", "must carry a time zone"))
        elif end > now + timedelta(minutes=5):
            problems.append(FieldViolation("end_time", "must not be in the future"))
        elif timedelta(0) < window <= self.config.max_window and end - _EARLIEST < window:
            problems.append(FieldViolation("end_time", f"leaves no room for a window of {window.total_seconds():g}s "
                                                       f"after 0001-01-01"))
        if problems:
            raise InvalidArgument("INVALID_DRIFT_REQUEST",
                                  "invalid drift report request: " + "; ".join(f"{p.field}: {p.description}"
                                                                               for p in problems),
                                  violations=problems)
        known = self._base_models()
        if base_model not in known:
            raise NotFound("BASE_MODEL_NOT_FOUND",
                           f"base model {base_model!r} is not configured here; known: {', '.join(sorted(known))}",
                           metadata={"base_model": base_model})
        return end - window, end

    async def report(self, base_model: str, *, window: timedelta | None = None,
                     end: datetime | None = None) -> DriftReport:
        """The drift report of ``base_model`` over ``window`` (default: the configured one) ending at ``end``
        (default: now)."""
        start, end = self.check(base_model, window, end)
        began = time.perf_counter()
        cfg = self.config
        incoming = await self._source.incoming(base_model, start=start, end=end, limit=cfg.max_samples)
        buckets = await self._source.feedback_buckets(
            base_model, start=start, end=end, buckets=cfg.buckets, rating_positive_min=self._ratings[0],
            rating_negative_max=self._ratings[1])
        evaluations = await self._source.evaluations(base_model, start=start, end=end, limit=cfg.max_evaluations)
        version, reference, note = await self._reference(base_model)
        sample = stable_sample(reference, cfg.max_samples)
        outcome, test = DriftOutcome.NO_REFERENCE, None
        if version and reference:
            if len(incoming.prompts) < cfg.min_samples or len(sample) < cfg.min_samples:
                outcome = DriftOutcome.TOO_FEW_SAMPLES
                note = (f"{len(incoming.prompts)} incoming and {len(sample)} reference prompts; the test needs "
                        f"{cfg.min_samples} of each (drift_min_samples)")
            else:
                async with self._lock:
                    test = await asyncio.to_thread(self._test, base_model, incoming.prompts, sample)
                # The p-value's own count decides (the threshold is where that decision flips: statistic >
                # threshold says the same; engine.drift.statistic.decision_threshold).
                outcome = DriftOutcome.DRIFTED if test.p_value <= cfg.significance else DriftOutcome.NO_DRIFT
        report = DriftReport(
            base_model=base_model, window_start=start, window_end=end, outcome=outcome, reference_version=version,
            statistic=test.statistic if test else 0.0, threshold=test.threshold if test else 0.0,
            p_value=test.p_value if test else 1.0, significance=cfg.significance,
            permutations=test.permutations if test else 0,
            incoming=len(incoming.prompts) if test else 0, reference=len(sample) if test else 0,
            incoming_total=incoming.total, reference_total=len(reference), moved=test.moved if test else (),
            negative_rate=tuple(buckets), evaluations=tuple(evaluations), note=note,
            seconds=round(time.perf_counter() - began, 3),
        )
        if test is not None:
            telemetry.drift_reported(base_model, report.statistic, report.threshold, report.p_value, report.drifted)
        return report

    async def _reference(self, base_model: str) -> tuple[str, list[str], str]:
        """The active version, the prompts it was trained on, and a note when there are none to compare with."""
        active = (await self._serving.versions(base_model)).get(ServingRole.ACTIVE, "")
        if not active:
            return "", [], (f"no adapter version of {base_model} is active: the base model serves alone, so there "
                            "is no training data to compare the incoming prompts with")
        record = await self._versions.get(base_model, active)
        try:
            data = await self._training_data.of(record)
        except FailedPrecondition as exc:
            return active, [], f"the training data of the active version {active} is not known here: {exc.message}"
        prompts = [p for p in (prompt_of(e) for e in data.examples) if p]
        if not prompts:
            return active, [], f"the active version {active} was trained on no prompt (conversations without one)"
        return active, prompts, ""

    def _test(self, base_model: str, incoming: tuple[str, ...], reference: tuple[str, ...]) -> TwoSampleTest:
        """The two-sample test of the samples, each distinct prompt embedded once however often it repeats."""
        cfg = self.config
        distinct = list(dict.fromkeys([*incoming, *reference]))
        rows = self._embedder.embed(base_model, distinct)
        row = {text: i for i, text in enumerate(distinct)}
        return two_sample_test(
            rows[[row[t] for t in incoming]], rows[[row[t] for t in reference]], permutations=cfg.permutations,
            significance=cfg.significance, seed=cfg.seed, incoming_texts=incoming, reference_texts=reference,
            moved=cfg.moved_examples)
