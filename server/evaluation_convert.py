"""Protobuf <-> domain conversion for evaluation jobs, in one place (see server/convert.py)."""

from __future__ import annotations

from engine.errors import ViolationCollector
from engine.jobs.core import Failed, JobEvent, Noticed, StateChanged, Warned
from engine.lora.evaluation_jobs import MAX_SUITES, EvaluationJob, EvaluationJobSpec, EvaluationProgress
from engine.names import resource_id
from learning.v1 import common_pb2 as common
from learning.v1 import evaluation_pb2 as pb
from server.convert import JOB_STATE_TO_PB, _dur, _ts, failure_to_pb, state_change_to_pb
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
    p = job.progress
    msg = pb.EvaluationJob(
        name=job.name, request_id=job.request_id, state=JOB_STATE_TO_PB[job.state],
        progress=common.JobProgress(fraction=p.fraction, completed_steps=p.completed_steps,
                                    total_steps=p.total_steps, eta=_dur(p.eta_seconds)),
        create_time=_ts(job.create_time), start_time=_ts(job.start_time), end_time=_ts(job.end_time),
        spec=spec_to_pb(job.spec), last_sequence=job.last_sequence,
    )
    if job.output.eval is not None:
        msg.eval.CopyFrom(eval_to_pb(job.output.eval))
    if job.failure is not None:
        msg.error.CopyFrom(failure_to_pb(job.failure))
    return msg


def event_to_pb(event: JobEvent) -> pb.EvaluationJobEvent:
    msg = pb.EvaluationJobEvent(sequence=event.sequence, time=_ts(event.time))
    p = event.payload
    if isinstance(p, StateChanged):
        msg.state_change.CopyFrom(state_change_to_pb(p))
    elif isinstance(p, EvaluationProgress):
        msg.progress.CopyFrom(pb.EvaluationProgress(suite=p.suite, answered=p.answered, total=p.total))
    elif isinstance(p, Noticed):
        msg.notice.CopyFrom(common.JobNotice(code=p.code, message=p.message))
    elif isinstance(p, Warned):
        msg.warning.CopyFrom(common.JobWarning(code=p.code, message=p.message))
    elif isinstance(p, Failed):
        msg.error.CopyFrom(common.JobError(status=failure_to_pb(p.failure)))
    return msg


def job_id_from_name(name: str, field_path: str = "name") -> str:
    return resource_id(name, "evaluationJobs", field_path)
