"""Protobuf <-> domain conversion for evaluation jobs, in one place (see server/convert.py)."""

from __future__ import annotations

from engine.errors import ViolationCollector
from engine.jobs.core import JobEvent
from engine.lora.evaluation_jobs import MAX_SUITES, EvaluationJob, EvaluationJobSpec, EvaluationProgress
from engine.names import resource_id
from learning.v1 import evaluation_pb2 as pb
from server.convert import _ts, core_event_to_pb, job_core_to_pb
from server.convert_adapter import eval_to_pb


def spec_from_pb(msg: pb.EvaluationJobSpec, *, default_base_model: str) -> EvaluationJobSpec:
    issues = ViolationCollector()
    issues.check(bool(msg.version), "spec.version", "must name an adapter version, e.g. v1.2")
    issues.check(len(msg.suite_paths) <= MAX_SUITES, "spec.suite_paths",
                 f"at most {MAX_SUITES}, got {len(msg.suite_paths)}")
    issues.raise_if_any("INVALID_EVALUATION_SPEC", "invalid evaluation job spec")
    return EvaluationJobSpec(base_model=msg.base_model or default_base_model, version=msg.version,
                             baseline_version=msg.baseline_version, suite_paths=tuple(msg.suite_paths))


def spec_to_pb(spec: EvaluationJobSpec) -> pb.EvaluationJobSpec:
    return pb.EvaluationJobSpec(base_model=spec.base_model, version=spec.version,
                                baseline_version=spec.baseline_version, suite_paths=list(spec.suite_paths))


def job_to_pb(job: EvaluationJob) -> pb.EvaluationJob:
    msg = job_core_to_pb(job, pb.EvaluationJob(spec=spec_to_pb(job.spec)))
    if job.output.eval is not None:
        msg.eval.CopyFrom(eval_to_pb(job.output.eval))
    return msg


def event_to_pb(event: JobEvent) -> pb.EvaluationJobEvent:
    msg = core_event_to_pb(event.payload, pb.EvaluationJobEvent(sequence=event.sequence, time=_ts(event.time)))
    p = event.payload
    if isinstance(p, EvaluationProgress):
        msg.progress.CopyFrom(pb.EvaluationProgress(suite=p.suite, answered=p.answered, total=p.total))
    return msg


def job_id_from_name(name: str, field_path: str = "name") -> str:
    return resource_id(name, "evaluationJobs", field_path)
