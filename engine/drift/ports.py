"""What drift detection reads, as ports: the composition root passes in the implementations.

- :class:`DriftSource`: the incoming prompts, the feedback counts and the evaluations (engine.stores.drift_store);
- :class:`ServingVersions`: which version is active per base model (engine.stores.serving_state);
- :class:`Versions`: a version's record (the adapter registry);
- :class:`TrainingData`: what a version was trained on (engine.continual.version_data.VersionDatasets);
- :class:`Embedder`: the base model's embeddings of texts (engine.drift.embeddings.BaseModelEmbedder).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import numpy as np
import numpy.typing as npt

from engine.domain import Example
from engine.drift.report import EvalPoint, FeedbackBucket
from engine.registry import AdapterRecord
from engine.registry.ports import ServingRole


@dataclass(frozen=True)
class IncomingPrompts:
    """A sample of the prompts of the interactions feedback carried in a window, and how many there were."""

    prompts: tuple[str, ...]
    total: int


class DriftSource(Protocol):
    async def incoming(self, base_model: str, *, start: datetime, end: datetime, limit: int) -> IncomingPrompts:
        """Up to ``limit`` prompts of distinct interactions the base model's feedback (and feedback that recorded
        no base model) carried in [start, end), chosen by a stable hash of the interaction (the same ones every
        time); erased users' are left out."""
        ...

    async def feedback_buckets(self, base_model: str, *, start: datetime, end: datetime, buckets: int,
                               rating_positive_min: int, rating_negative_max: int) -> list[FeedbackBucket]:
        """Positive and negative explicit feedback on the base model (and feedback that recorded no base model) in
        ``buckets`` equal parts of [start, end), in order."""
        ...

    async def evaluations(self, base_model: str, *, start: datetime, end: datetime, limit: int) -> list[EvalPoint]:
        """The evaluations of the base model's versions recorded in [start, end), oldest first (the newest
        ``limit``)."""
        ...


class ServingVersions(Protocol):
    async def versions(self, base_model: str) -> dict[ServingRole, str]: ...


class Versions(Protocol):
    async def get(self, base_model: str, version: str, *, field_path: str = "version") -> AdapterRecord: ...


class TrainedOn(Protocol):
    @property
    def examples(self) -> Sequence[Example]: ...


class TrainingData(Protocol):
    async def of(self, record: AdapterRecord) -> TrainedOn:
        """FailedPrecondition when the version's data is not known here."""
        ...


class Embedder(Protocol):
    def embed(self, base_model: str, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        """Unit-length embeddings, one row per text (blocking: called off the event loop)."""
        ...
