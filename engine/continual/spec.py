"""Domain types of Fisher jobs and snapshots (the server converts protobuf to and from these)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from engine.domain import LEGACY_FISHER_SPACE, FeedbackSource, FisherSpace, JsonlSource
from engine.jobs.core import Job, JobKind
from engine.names import resource_id

# The log-likelihood of a sample is the sum over its completion tokens (see engine/continual/fisher.py).
NORMALIZATION = "sequence_sum"
DEFAULT_NUM_SAMPLES = 1000
MAX_NUM_SAMPLES = 1_000_000


class FisherEstimator(enum.StrEnum):
    EMPIRICAL = "EMPIRICAL"
    SAMPLED = "SAMPLED"
    BATCH_MEAN_SQUARED = "BATCH_MEAN_SQUARED"


@dataclass(frozen=True)
class FisherJobSpec:
    base_model: str
    adapter_version: str
    dataset: JsonlSource | FeedbackSource
    num_samples: int = DEFAULT_NUM_SAMPLES
    estimator: FisherEstimator = FisherEstimator.EMPIRICAL
    space: FisherSpace = LEGACY_FISHER_SPACE


@dataclass(frozen=True)
class FisherProgress:
    """Event: samples measured so far."""

    samples_done: int
    samples_total: int
    samples_per_second: float


@dataclass(frozen=True)
class FisherOutput:
    """What a Fisher job produced: the snapshot it stored, once SUCCEEDED."""

    snapshot: str = ""


FISHER = JobKind("fisher", "fisherJobs", FisherJobSpec, FisherOutput, event_types=(FisherProgress,))
FisherJob = Job[FisherJobSpec, FisherOutput]


@dataclass(frozen=True)
class FisherSnapshot:
    """Metadata of a stored Fisher diagonal; the tensors live in ``path`` (safetensors)."""

    id: str
    base_model: str
    adapter_version: str
    dataset_digest: str
    sample_count: int
    estimator: FisherEstimator
    create_time: datetime
    stat_sum: float
    stat_max: float
    stat_mean: float
    quantiles: tuple[tuple[float, float], ...]
    parameter_count: int
    sha256: str
    size_bytes: int
    path: str
    normalization: str = NORMALIZATION
    accumulated_from: str = ""
    gamma: float = 1.0
    space: FisherSpace = LEGACY_FISHER_SPACE

    @property
    def name(self) -> str:
        return f"fisherSnapshots/{self.id}"


def snapshot_id_from_name(name: str, field_path: str = "name") -> str:
    """The id in a snapshot's resource name ``fisherSnapshots/<id>``; INVALID_ARGUMENT otherwise."""
    return resource_id(name, "fisherSnapshots", field_path)
