"""Protobuf <-> domain conversion for Fisher jobs and snapshots, in one place (see server/convert.py)."""

from __future__ import annotations

from typing import cast

from engine.continual.spec import (
    DEFAULT_NUM_SAMPLES,
    FisherEstimator,
    FisherJob,
    FisherJobSpec,
    FisherProgress,
    FisherSnapshot,
)
from engine.domain import FeedbackSource, FisherSpace, JsonlSource
from engine.errors import ViolationCollector
from engine.jobs.core import JobEvent
from engine.names import resource_id
from learning.v1 import fisher_pb2 as pb
from server.convert import FISHER_SPACE_TO_PB, fisher_space_from_pb
from server.convert_dataset_source import feedback_source_from_pb, feedback_source_to_pb
from server.convert_jobs import core_event_to_pb, job_core_to_pb, timestamp_to_pb

ESTIMATOR_FROM_PB = {
    pb.FISHER_ESTIMATOR_UNSPECIFIED: FisherEstimator.EMPIRICAL,
    pb.FISHER_ESTIMATOR_EMPIRICAL: FisherEstimator.EMPIRICAL,
    pb.FISHER_ESTIMATOR_SAMPLED: FisherEstimator.SAMPLED,
    pb.FISHER_ESTIMATOR_BATCH_MEAN_SQUARED: FisherEstimator.BATCH_MEAN_SQUARED,
}
ESTIMATOR_TO_PB = {e: cast(pb.FisherEstimator, pb.FisherEstimator.Value(f"FISHER_ESTIMATOR_{e.value}"))
                   for e in FisherEstimator}


def spec_from_pb(msg: pb.FisherJobSpec, *, default_base_model: str, default_space: FisherSpace) -> FisherJobSpec:
    issues = ViolationCollector()
    space = fisher_space_from_pb(msg.space, default_space, "spec.space", issues)
    issues.check(bool(msg.adapter_version), "spec.adapter_version", "must name an adapter version, e.g. v1.0")
    issues.check(msg.estimator in ESTIMATOR_FROM_PB, "spec.estimator", f"unknown enum value {msg.estimator}")
    source = msg.WhichOneof("dataset")
    dataset: JsonlSource | FeedbackSource = JsonlSource(path=msg.jsonl.path)
    if source == "jsonl":
        issues.check(bool(msg.jsonl.path), "spec.jsonl.path", "must name a dataset file below the data root")
    elif source == "feedback":
        dataset = feedback_source_from_pb(msg.feedback, issues, "spec.feedback")
    else:
        issues.add("spec.dataset", "set spec.jsonl or spec.feedback (the data the adapter should remember)")
    issues.raise_if_any("INVALID_FISHER_SPEC", "invalid Fisher job spec")
    return FisherJobSpec(
        base_model=msg.base_model or default_base_model,
        adapter_version=msg.adapter_version,
        dataset=dataset,
        num_samples=msg.num_samples if msg.HasField("num_samples") else DEFAULT_NUM_SAMPLES,
        estimator=ESTIMATOR_FROM_PB[msg.estimator],
        space=space,
    )


def spec_to_pb(spec: FisherJobSpec) -> pb.FisherJobSpec:
    msg = pb.FisherJobSpec(base_model=spec.base_model, adapter_version=spec.adapter_version,
                           num_samples=spec.num_samples, estimator=ESTIMATOR_TO_PB[spec.estimator],
                           space=FISHER_SPACE_TO_PB[spec.space])
    if isinstance(spec.dataset, JsonlSource):
        msg.jsonl.path = spec.dataset.path
    else:
        msg.feedback.CopyFrom(feedback_source_to_pb(spec.dataset))
    return msg


def job_to_pb(job: FisherJob) -> pb.FisherJob:
    return job_core_to_pb(job, pb.FisherJob(spec=spec_to_pb(job.spec), output_snapshot=job.output.snapshot))


def event_to_pb(event: JobEvent) -> pb.FisherJobEvent:
    msg = core_event_to_pb(event, pb.FisherJobEvent())
    p = event.payload
    if isinstance(p, FisherProgress):
        msg.progress.CopyFrom(pb.FisherProgress(samples_done=p.samples_done, samples_total=p.samples_total,
                                                samples_per_second=p.samples_per_second))
    return msg


def snapshot_to_pb(s: FisherSnapshot) -> pb.FisherSnapshot:
    return pb.FisherSnapshot(
        name=s.name, base_model=s.base_model, adapter_version=s.adapter_version, dataset_digest=s.dataset_digest,
        sample_count=s.sample_count, estimator=ESTIMATOR_TO_PB[s.estimator], create_time=timestamp_to_pb(s.create_time),
        stats=pb.FisherStats(sum=s.stat_sum, max=s.stat_max, mean=s.stat_mean, parameter_count=s.parameter_count,
                             quantiles=[pb.FisherQuantile(q=q, value=v) for q, v in s.quantiles]),
        sha256=s.sha256, size_bytes=s.size_bytes, normalization=s.normalization,
        accumulated_from=s.accumulated_from, space=FISHER_SPACE_TO_PB[s.space],
    )


def job_id_from_name(name: str, field_path: str = "name") -> str:
    return resource_id(name, "fisherJobs", field_path)
