"""Protobuf <-> domain conversion for evaluation jobs, in one place (see server/convert.py)."""

from __future__ import annotations

from engine.errors import InvalidArgument, ViolationCollector
from engine.jobs.core import JobEvent
from engine.lora.evaluation_jobs import EvaluationJob, EvaluationJobSpec, EvaluationProgress, check_suite_count
from engine.names import resource_id
from engine.training.dataset_records import parse_dataset_name
from learning.v1 import evaluation_pb2 as pb
from server.convert_adapter import eval_to_pb
from server.convert_jobs import core_event_to_pb, job_core_to_pb


def spec_from_pb(msg: pb.EvaluationJobSpec, *, default_base_model: str) -> EvaluationJobSpec:
    issues = ViolationCollector()
    if msg.base_model_itself:
        issues.check(not msg.version, "spec.version", "must be empty with base_model_itself (the base model itself is "
                                                      "evaluated, not a version)")
    else:
        issues.check(bool(msg.version), "spec.version", "must name an adapter version, e.g. v1.2 (or set "
                                                        "base_model_itself to evaluate the base model itself)")
    check_suite_count(issues, len(msg.suite_paths), len(msg.suite_datasets), files_field="spec.suite_paths",
                      datasets_field="spec.suite_datasets")
    for i, name in enumerate(msg.suite_datasets):
        try:
            parse_dataset_name(name, f"spec.suite_datasets[{i}]")
        except InvalidArgument as exc:
            issues.violations.extend(exc.violations)
    issues.check(msg.judge in _JUDGE, "spec.judge", f"unknown judge choice {msg.judge}")
    issues.check(len(msg.judge_model) <= MAX_JUDGE_MODEL, "spec.judge_model",
                 f"at most {MAX_JUDGE_MODEL} characters, got {len(msg.judge_model)}")
    issues.check(not msg.judge_model or msg.judge == pb.EVALUATION_JUDGE_ON, "spec.judge_model",
                 "names the judge's model: only with judge EVALUATION_JUDGE_ON")
    issues.raise_if_any("INVALID_EVALUATION_SPEC", "invalid evaluation job spec")
    return EvaluationJobSpec(base_model=msg.base_model or default_base_model, version=msg.version,
                             baseline_version=msg.baseline_version, suite_paths=tuple(msg.suite_paths),
                             judge=_JUDGE.get(msg.judge), judge_model=msg.judge_model,
                             suite_datasets=tuple(msg.suite_datasets))


MAX_JUDGE_MODEL = 256
_JUDGE: dict[int, bool | None] = {pb.EVALUATION_JUDGE_UNSPECIFIED: None, pb.EVALUATION_JUDGE_ON: True,
                                  pb.EVALUATION_JUDGE_OFF: False}


def spec_to_pb(spec: EvaluationJobSpec) -> pb.EvaluationJobSpec:
    judge = {None: pb.EVALUATION_JUDGE_UNSPECIFIED, True: pb.EVALUATION_JUDGE_ON,
             False: pb.EVALUATION_JUDGE_OFF}[spec.judge]
    return pb.EvaluationJobSpec(base_model=spec.base_model, version=spec.version,
                                baseline_version=spec.baseline_version, suite_paths=list(spec.suite_paths),
                                judge=judge, judge_model=spec.judge_model, suite_datasets=list(spec.suite_datasets),
                                base_model_itself=spec.base_model_itself)


def job_to_pb(job: EvaluationJob) -> pb.EvaluationJob:
    msg = job_core_to_pb(job, pb.EvaluationJob(spec=spec_to_pb(job.spec),
                                               resolved_suite_datasets=list(job.output.suite_datasets)))
    if job.output.eval is not None:
        msg.eval.CopyFrom(eval_to_pb(job.output.eval))
    return msg


def event_to_pb(event: JobEvent) -> pb.EvaluationJobEvent:
    msg = core_event_to_pb(event, pb.EvaluationJobEvent())
    p = event.payload
    if isinstance(p, EvaluationProgress):
        msg.progress.CopyFrom(pb.EvaluationProgress(suite=p.suite, answered=p.answered, total=p.total))
    return msg


def job_id_from_name(name: str, field_path: str = "name") -> str:
    return resource_id(name, "evaluationJobs", field_path)
