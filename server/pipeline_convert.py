"""Protobuf <-> domain conversion for pipelines and their runs, in one place (see server/convert.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from engine.errors import FieldViolation, InvalidArgument, ViolationCollector
from engine.jobs.core import JobEvent
from engine.names import chosen_id, resource_id
from engine.pipelines.spec import (
    DEFAULT_CRON,
    CronTrigger,
    DriftTrigger,
    FeedbackTrigger,
    Pipeline,
    PipelineRun,
    Rollout,
    RolloutMode,
    Stage,
    StageEnded,
    StageProgress,
    StageResult,
    StageStarted,
    StageState,
    Trigger,
    TriggerDecision,
    TriggerKind,
)
from engine.pipelines.triggers import shown_request_id
from engine.training.spec import TrainingDefaults
from learning.v1 import pipeline_pb2 as pb
from server import convert
from server.convert_jobs import core_event_to_pb, job_core_to_pb, timestamp_to_pb
from server.convert_lora import policy_from_pb, policy_to_pb

# UNSPECIFIED is ACTIVATE, the documented default (pipeline.proto, docs/pipelines.md); a number none of these is
# refused (rollout_from_pb), never read as one of them.
_MODE = {pb.ROLLOUT_MODE_UNSPECIFIED: RolloutMode.ACTIVATE, pb.ROLLOUT_MODE_ACTIVATE: RolloutMode.ACTIVATE,
         pb.ROLLOUT_MODE_CANARY: RolloutMode.CANARY, pb.ROLLOUT_MODE_NONE: RolloutMode.NONE}
_MODE_TO_PB = {RolloutMode.ACTIVATE: pb.ROLLOUT_MODE_ACTIVATE, RolloutMode.CANARY: pb.ROLLOUT_MODE_CANARY,
               RolloutMode.NONE: pb.ROLLOUT_MODE_NONE}
_STAGE_TO_PB = {s: cast(pb.PipelineStage, pb.PipelineStage.Value(f"PIPELINE_STAGE_{s.value}")) for s in Stage}
_STAGE_STATE_TO_PB = {s: cast(pb.StageState, pb.StageState.Value(f"STAGE_STATE_{s.value}")) for s in StageState}
_TRIGGER_KIND_TO_PB = {k: cast(pb.TriggerKind, pb.TriggerKind.Value(f"TRIGGER_KIND_{k.value}")) for k in TriggerKind}
UPDATABLE = ("training", "suite_paths", "suite_datasets", "rollout", "triggers", "enabled", "description")


def pipeline_id_from_name(name: str, field_path: str = "name") -> str:
    return chosen_id(name, "pipelines", "pipeline_id", field_path)


def run_id_from_name(name: str, field_path: str = "name") -> str:
    return resource_id(name, "pipelineRuns", field_path)


def rollout_from_pb(msg: pb.RolloutPolicy, field_path: str = "pipeline.rollout") -> Rollout:
    """INVALID_ARGUMENT INVALID_PIPELINE naming ``<field_path>.mode`` for a mode number this server does not know
    (a newer client's): read as the default, it would put the version on all of the alias at once."""
    mode = _MODE.get(msg.mode)
    if mode is None:
        what = f"unknown rollout mode {msg.mode} (ROLLOUT_MODE_ACTIVATE, ROLLOUT_MODE_CANARY or ROLLOUT_MODE_NONE)"
        raise InvalidArgument("INVALID_PIPELINE", f"{field_path}.mode: {what}",
                              violations=[FieldViolation(f"{field_path}.mode", what)])
    return Rollout(mode=mode, canary=policy_from_pb(msg.canary))


def rollout_to_pb(r: Rollout) -> pb.RolloutPolicy:
    return pb.RolloutPolicy(mode=_MODE_TO_PB[r.mode], canary=policy_to_pb(r.canary))


def triggers_from_pb(msgs: Sequence[pb.PipelineTrigger], field_path: str) -> tuple[Trigger, ...]:
    issues = ViolationCollector()
    out: list[Trigger] = []
    for i, t in enumerate(msgs):
        which = t.WhichOneof("trigger")
        if which == "cron":
            out.append(CronTrigger(t.cron.expression or DEFAULT_CRON, t.cron.time_zone or "UTC"))
        elif which == "feedback":
            out.append(FeedbackTrigger(t.feedback.count, t.feedback.negative_only))
        elif which == "drift":
            out.append(DriftTrigger(t.drift.threshold))
        else:
            issues.add(f"{field_path}[{i}]", "set one of cron, feedback or drift")
    issues.raise_if_any("INVALID_TRIGGER", "invalid pipeline trigger")
    return tuple(out)


def trigger_to_pb(t: Trigger) -> pb.PipelineTrigger:
    if isinstance(t, CronTrigger):
        return pb.PipelineTrigger(cron=pb.CronTrigger(expression=t.expression, time_zone=t.time_zone))
    if isinstance(t, FeedbackTrigger):
        return pb.PipelineTrigger(feedback=pb.FeedbackCountTrigger(count=t.count, negative_only=t.negative_only))
    return pb.PipelineTrigger(drift=pb.DriftTrigger(threshold=t.threshold))


def pipeline_from_pb(msg: pb.Pipeline, pipeline_id: str, *, default_base_model: str,
                     ewc_defaults: convert.EwcDefaults, defaults: TrainingDefaults) -> Pipeline:
    base = msg.base_model or default_base_model
    training = convert.spec_from_pb(msg.training, default_base_model=base, ewc_defaults=ewc_defaults,
                                    defaults=defaults, field_root="pipeline.training")
    return Pipeline(id=pipeline_id, base_model=base, training=training, suite_paths=tuple(msg.suite_paths),
                    suite_datasets=tuple(msg.suite_datasets),
                    rollout=rollout_from_pb(msg.rollout), triggers=triggers_from_pb(msg.triggers, "pipeline.triggers"),
                    enabled=msg.enabled, description=msg.description)


def pipeline_to_pb(p: Pipeline) -> pb.Pipeline:
    msg = pb.Pipeline(name=p.name, base_model=p.base_model, training=convert.spec_to_pb(p.training),
                      suite_paths=list(p.suite_paths), suite_datasets=list(p.suite_datasets),
                      rollout=rollout_to_pb(p.rollout),
                      triggers=[trigger_to_pb(t) for t in p.triggers], enabled=p.enabled, description=p.description,
                      etag=p.etag)
    for field, value in (("create_time", p.create_time), ("update_time", p.update_time)):
        if value is not None:
            getattr(msg, field).CopyFrom(timestamp_to_pb(value))
    return msg


def stage_to_pb(s: StageResult) -> pb.StageResult:
    return pb.StageResult(stage=_STAGE_TO_PB[s.stage], state=_STAGE_STATE_TO_PB[s.state], message=s.message,
                          start_time=timestamp_to_pb(s.start_time), end_time=timestamp_to_pb(s.end_time),
                          resource=s.resource)


def run_to_pb(run: PipelineRun) -> pb.PipelineRun:
    """The run as every PipelineService call shows it; its request_id is the key it was started with
    (triggers.shown_request_id), not the job's internal dedup key."""
    spec, out = run.spec, run.output
    msg = job_core_to_pb(run, pb.PipelineRun(
        pipeline=spec.pipeline.name, trigger=_TRIGGER_KIND_TO_PB[spec.trigger], reason=spec.reason,
        stages=[stage_to_pb(s) for s in out.stages], dataset=out.dataset, training_job=out.training_job,
        parent_version=out.parent_version, version=out.version, evaluation_id=out.evaluation_id, rollout=out.rollout,
        suite_datasets=list(out.suite_datasets),
        pipeline_snapshot=pipeline_to_pb(spec.pipeline),
    ))
    msg.request_id = shown_request_id(spec.pipeline.id, spec.trigger, spec.trigger_key)
    return msg


def event_to_pb(event: JobEvent) -> pb.PipelineRunEvent:
    msg = core_event_to_pb(event, pb.PipelineRunEvent())
    p = event.payload
    if isinstance(p, StageStarted):
        msg.stage_started.CopyFrom(pb.StageStarted(stage=_STAGE_TO_PB[p.stage], message=p.message))
    elif isinstance(p, StageProgress):
        msg.stage_progress.CopyFrom(pb.StageProgress(stage=_STAGE_TO_PB[p.stage], completed=p.completed,
                                                     total=p.total, message=p.message))
    elif isinstance(p, StageEnded):
        msg.stage_ended.CopyFrom(stage_to_pb(p.result))
    return msg


def decision_to_pb(d: TriggerDecision) -> pb.TriggerDecision:
    return pb.TriggerDecision(kind=_TRIGGER_KIND_TO_PB[d.kind], key=d.key, fired=d.fired, reason=d.reason,
                              time=timestamp_to_pb(d.time), run=f"pipelineRuns/{d.run_id}" if d.run_id else "",
                              sample_count=d.count)
