"""The examples an adapter version was trained on, for its Fisher and for replay (``engine.continual``).

A version trained on a JSONL file reads that file again, verified against the digest recorded on the
version; one trained on a stored dataset reads the train split of the dataset version recorded on it (immutable,
kept while the adapter version is published). A version trained on feedback has its dataset rebuilt from
PostgreSQL over the window it was built on, with the filters and objective recorded on it as its dataset's provenance
(``FeedbackDatasetBuilder.rebuild``). Events deleted since, by
``DeleteUserFeedback`` or otherwise, are gone from the rebuilt set, so a forgotten user's data never comes
back through a Fisher or a replay. When events of that window were deleted, or arrived late, the rebuilt set
differs from the recorded digest, and :class:`VersionData` says so. Of a feedback dataset only the
desirable examples are returned (thumbs up, high ratings, corrections): what the version should keep doing.
Answers users rejected (KTO taught the version to avoid them) are left out, so EWC does not protect them and replay
does not teach them again. A version trained on rejected answers alone has no examples to return: there is nothing of
it to keep, unlike one whose wanted answers were deleted since (PARENT_FEEDBACK_GONE).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from engine.continual.ports import OnlineExampleWindows
from engine.domain import (
    DatasetSummary,
    Example,
    FeedbackSource,
    JsonlSource,
    Objective,
    OnlineExamplesSource,
    StoredDatasetSource,
    dataset_digest,
)
from engine.errors import FailedPrecondition, InvalidArgument, NotFound
from engine.feedback.dataset import FeedbackDataset, FeedbackDatasetBuilder
from engine.registry import AdapterRecord
from engine.splits import Split
from engine.training.datasets import load_jsonl, resolve_dataset_path
from engine.training.stored_datasets import StoredDatasets

SNAPSHOT_FIELD = "spec.ewc.fisher_snapshot"


@dataclass(frozen=True)
class VersionData:
    examples: list[Example]  # what it was trained on
    note: str = ""  # set when the examples are not exactly the dataset recorded on the version
    held_out: list[Example] = field(default_factory=list)  # its eval split, never trained on


class VersionDatasets:
    def __init__(self, *, datasets_dir: Path, feedback: FeedbackDatasetBuilder | None = None,
                 stored: StoredDatasets | None = None, online: OnlineExampleWindows | None = None) -> None:
        self._datasets_dir = datasets_dir
        self._feedback = feedback
        self._stored = stored
        self._online = online

    async def of(self, record: AdapterRecord) -> VersionData:
        """The examples ``record`` was trained on, and those its job held out as its eval split (the split
        recorded on it), from the provenance recorded on it; FAILED_PRECONDITION if it has none (imported, or
        published before provenance was recorded and its job is gone)."""
        data = await self._dataset(record)
        rule = record.eval_split
        if rule is None:
            return data
        sides = [rule.of(e) for e in data.examples]
        return VersionData([e for e, s in zip(data.examples, sides, strict=True) if s is Split.TRAIN], data.note,
                           [e for e, s in zip(data.examples, sides, strict=True) if s is Split.EVAL])

    async def _dataset(self, record: AdapterRecord) -> VersionData:
        summary = record.dataset
        source = summary.source if summary is not None else None
        if isinstance(source, JsonlSource):
            return VersionData(await self._jsonl(record, source))
        if isinstance(source, StoredDatasetSource) and self._stored is not None:
            return VersionData(await _stored_dataset(self._stored, record, source))
        if isinstance(source, OnlineExamplesSource) and self._online is not None:
            return await self._online_window(record, source)
        if isinstance(source, FeedbackSource) and self._feedback is not None and summary is not None \
                and summary.window_start is not None and summary.window_end is not None:
            return await self._rebuilt(record, summary, source)
        raise _unknown(record, f"the training data of {record.version} is not known here (imported, or its job is "
                               "gone)")

    async def _jsonl(self, record: AdapterRecord, source: JsonlSource) -> list[Example]:
        """The examples of the JSONL file ``record`` was trained on, checked against the digest recorded on it.

        The file is the operator's, under the datasets directory, and may be gone (cleaned up after training) or no
        longer a valid dataset; that is not a fault of the request that asks for the version's data (it names no
        path): the training data is not known here, FAILED_PRECONDITION PARENT_DATASET_UNKNOWN saying why, as
        PARENT_DATASET_CHANGED says the file changed."""
        try:
            path = resolve_dataset_path(self._datasets_dir, source.path)
            examples = await asyncio.to_thread(load_jsonl, path)
        except InvalidArgument as exc:
            raise _unknown(record, f"{source.path}, which {record.version} was trained on, cannot be read back "
                                   f"({exc.message})", path=source.path) from exc
        if record.dataset is not None and record.dataset.digest and dataset_digest(examples) != record.dataset.digest:
            raise FailedPrecondition(
                "PARENT_DATASET_CHANGED",
                f"{source.path} changed since {record.version} was trained on it",
                metadata={"version": record.version, "path": source.path},
            )
        return examples

    async def _online_window(self, record: AdapterRecord, source: OnlineExamplesSource) -> VersionData:
        """The window's examples to give (of a KTO session's, the undesirable ones are left out, as of a feedback
        dataset), checked against the digest of the whole window recorded on the version."""
        assert self._online is not None
        window = await self._online.window(source.session_id, source.first, source.last)
        examples = window.wanted()
        if not examples:
            gone = "are gone" if not window.examples else "left are all undesirable (KTO)"
            raise FailedPrecondition(
                "PARENT_DATASET_UNKNOWN",
                f"the examples online session {source.session_id} trained {record.version} on {gone}",
                metadata={"version": record.version},
            )
        summary = record.dataset
        note = "" if summary is None or not summary.digest or window.digest == summary.digest else (
            f"{len(window.examples)} examples of online session {source.session_id} ({source.first}..{source.last}) "
            f"differ from the {summary.example_count} {record.version} was trained on"
        )
        return VersionData(examples, note)

    async def _rebuilt(self, record: AdapterRecord, summary: DatasetSummary, source: FeedbackSource) -> VersionData:
        assert self._feedback is not None and summary.window_start is not None and summary.window_end is not None
        try:
            built = await self._feedback.rebuild(source, summary.objective or Objective.SFT, summary.window_start,
                                                 summary.window_end, base_model=record.base_model)
        except FailedPrecondition as exc:
            raise FailedPrecondition(
                "PARENT_FEEDBACK_GONE",
                f"none of the feedback {record.version} was trained on is left (deleted since)",
                metadata={"version": record.version},
            ) from exc
        examples = built.wanted()
        if not examples and not _all_rejected(summary, built):
            raise FailedPrecondition(
                "PARENT_FEEDBACK_GONE",
                f"no wanted answer (thumbs up, high rating, correction) is left of the feedback {record.version} "
                "was trained on",
                metadata={"version": record.version},
            )
        window = f"{summary.window_start:%Y-%m-%d %H:%M} to {summary.window_end:%Y-%m-%d %H:%M} UTC"
        note = "" if built.digest == summary.digest else (
            f"rebuilt from the feedback of {window}: {len(built.examples)} examples now against the "
            f"{summary.example_count} {record.version} was trained on (events deleted or arrived since)"
        )
        return VersionData(examples, note)


def _all_rejected(summary: DatasetSummary, built: FeedbackDataset) -> bool:
    """Whether the dataset recorded as ``summary`` held rejected answers alone, given ``built``, its rebuild, holding
    no wanted one: every kind of example it held (thumbs down, low rating, ...) is among the rebuild's, all of which
    are rejected. A kind missing from the rebuild may have been wanted answers, deleted since."""
    left = dict(built.composition)
    return bool(summary.composition) and all(kind in left for kind, _ in summary.composition)


async def _stored_dataset(stored: StoredDatasets, record: AdapterRecord, source: StoredDatasetSource) -> list[Example]:
    """The dataset version ``record`` was trained on, without its test split."""
    try:
        _, examples, _ = await stored.training_examples(source.name, SNAPSHOT_FIELD)
    except NotFound as exc:  # deleted despite the version (a delete that raced the job publishing it)
        raise _unknown(record, f"{source.name}, which {record.version} was trained on, is gone",
                       dataset=source.name) from exc
    return examples


def _unknown(record: AdapterRecord, why: str, **metadata: str) -> FailedPrecondition:
    """PARENT_DATASET_UNKNOWN: ``record``'s training data cannot be read back here, ``why``."""
    return FailedPrecondition("PARENT_DATASET_UNKNOWN", why, metadata={"version": record.version, **metadata})


def with_ewc_remedy(exc: FailedPrecondition) -> FailedPrecondition:
    """``exc`` (a version's training data not known here), said to a job whose EWC needed that data, with what the
    job can do instead. The errors above say only what is missing: a drift report, a gate's retention suite or a
    replay reads the same data and has other remedies, or none."""
    return FailedPrecondition(exc.reason, f"{exc.message}; name a Fisher snapshot in {SNAPSHOT_FIELD} or disable EWC",
                              violations=exc.violations, metadata=dict(exc.metadata))
