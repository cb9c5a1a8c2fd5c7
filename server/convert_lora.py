"""Protobuf <-> domain conversion for LoraControl, in one place."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from google.protobuf import duration_pb2, timestamp_pb2

from engine.lora.canary import (
    CanaryDecision,
    CanaryOutcome,
    CanaryPolicy,
    SplitKind,
    TrafficFigures,
    TrafficSplitState,
    VersionFigures,
)
from engine.lora.state import LoadedLora, LoraStatus, OperationKind, OperationRecord
from learning.v1 import lora_control_pb2 as pb
from server.convert_adapter import eval_to_pb
from server.errors import failure_status
from server.version import SERVER_VERSION

_KIND = {k: cast(pb.LoraOperationKind, pb.LoraOperationKind.Value(f"LORA_OPERATION_KIND_{k.value}"))
         for k in OperationKind}
_SPLIT_KIND = {k: cast(pb.TrafficSplitKind, pb.TrafficSplitKind.Value(f"TRAFFIC_SPLIT_KIND_{k.value}"))
               for k in SplitKind}
_DECISION = {d: cast(pb.CanaryDecision, pb.CanaryDecision.Value(f"CANARY_DECISION_{d.value}")) for d in CanaryDecision}


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def _timestamp(when: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(when)
    return ts


def policy_from_pb(msg: pb.CanaryPolicy) -> CanaryPolicy:
    """The policy a request asks for: each field it sets, the defaults for the others (checked by the engine)."""
    defaults = CanaryPolicy()

    def value(name: str, default: float) -> float:
        return getattr(msg, name) if msg.HasField(name) else default

    def seconds(name: str, default: float) -> float:  # any Duration's, never overflowing (the engine checks ranges)
        given = getattr(msg, name)
        return given.seconds + given.nanos / 1e9 if msg.HasField(name) else default

    return CanaryPolicy(
        share=value("share", defaults.share),
        min_requests=int(value("min_requests", defaults.min_requests)),
        duration_seconds=seconds("duration", defaults.duration_seconds),
        max_duration_seconds=seconds("max_duration", defaults.max_duration_seconds),
        feedback_margin=value("feedback_margin", defaults.feedback_margin),
        error_margin=value("error_margin", defaults.error_margin),
        min_feedback=int(value("min_feedback", defaults.min_feedback)),
        error_spike=value("error_spike", defaults.error_spike),
        error_spike_min_requests=int(value("error_spike_min_requests", defaults.error_spike_min_requests)),
        check_interval_seconds=seconds("check_interval", defaults.check_interval_seconds),
    )


def policy_to_pb(policy: CanaryPolicy) -> pb.CanaryPolicy:
    return pb.CanaryPolicy(
        share=policy.share, min_requests=policy.min_requests, duration=_duration(policy.duration_seconds),
        max_duration=_duration(policy.max_duration_seconds), feedback_margin=policy.feedback_margin,
        error_margin=policy.error_margin, min_feedback=policy.min_feedback, error_spike=policy.error_spike,
        error_spike_min_requests=policy.error_spike_min_requests,
        check_interval=_duration(policy.check_interval_seconds),
    )


def _side_to_pb(side: VersionFigures) -> pb.VersionTraffic:
    return pb.VersionTraffic(
        version=side.version, requests=side.requests, errors=side.errors, error_rate=side.error_rate,
        failovers=side.failovers, mean_latency=_duration(side.mean_latency_seconds), positive_feedback=side.positive,
        negative_feedback=side.negative, negative_rate=side.negative_rate,
    )


def figures_to_pb(figures: TrafficFigures) -> pb.TrafficFigures:
    return pb.TrafficFigures(active=_side_to_pb(figures.active), candidate=_side_to_pb(figures.candidate),
                             elapsed=_duration(figures.elapsed_seconds))


def split_to_pb(split: TrafficSplitState) -> pb.TrafficSplit:
    msg = pb.TrafficSplit(
        kind=_SPLIT_KIND[split.kind], active_version=split.active_version, candidate_version=split.candidate_version,
        share=split.share, actor=split.actor, reason=split.reason, start_time=_timestamp(split.start_time),
    )
    if split.policy is not None:
        msg.policy.CopyFrom(policy_to_pb(split.policy))
    if split.figures is not None:
        msg.figures.CopyFrom(figures_to_pb(split.figures))
    return msg


def outcome_to_pb(outcome: CanaryOutcome) -> pb.CanaryOutcome:
    return pb.CanaryOutcome(version=outcome.version, decision=_DECISION[outcome.decision], reason=outcome.reason,
                            figures=figures_to_pb(outcome.figures), decide_time=_timestamp(outcome.time))


def loaded_to_pb(item: LoadedLora) -> pb.LoadedAdapter:
    return pb.LoadedAdapter(lora_name=item.lora_name, version=item.version, path=item.path)


def operation_to_pb(op: OperationRecord) -> pb.LoraOperation:
    msg = pb.LoraOperation(
        kind=_KIND[op.kind], version=op.version, actor=op.actor, reason=op.reason, start_time=_timestamp(op.start_time),
        duration=_duration(op.duration_seconds),
    )
    for name, seconds in op.phases:
        msg.phase_durations[name].CopyFrom(_duration(seconds))
    if op.error is not None:
        msg.error.CopyFrom(failure_status(op.error.code, op.error.reason, op.error.message, dict(op.error.metadata)))
    if op.gate is not None:
        msg.gate.CopyFrom(eval_to_pb(op.gate))
    if op.traffic is not None:
        msg.traffic.CopyFrom(figures_to_pb(op.traffic))
    return msg


def status_to_pb(status: LoraStatus) -> pb.LoraStatus:
    msg = pb.LoraStatus(
        target=status.target, base_model=status.base_model, enabled=status.enabled,
        active_version=status.active_version, previous_version=status.previous_version,
        known_good_version=status.known_good_version, alias=status.alias,
        loaded=[loaded_to_pb(a) for a in status.loaded], serving_reachable=status.serving_reachable,
        server_version=SERVER_VERSION, gateway_url=status.gateway_url,
    )
    if status.last_operation is not None:
        msg.last_operation.CopyFrom(operation_to_pb(status.last_operation))
    if status.split is not None:
        msg.traffic_split.CopyFrom(split_to_pb(status.split))
    if status.last_canary is not None:
        msg.last_canary.CopyFrom(outcome_to_pb(status.last_canary))
    return msg
