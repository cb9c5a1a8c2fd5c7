"""Online sessions between protobuf and the engine: settings with their defaults and ranges, views, stats."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from engine.domain import Objective
from engine.errors import FieldViolation, InvalidArgument
from engine.jobs.core import JobEvent
from engine.names import VERSION_RE, chosen_id
from engine.online.service import SessionView, check_learning_rate
from engine.online.spec import (
    AliasState,
    FeedbackSpike,
    GateJudged,
    GateVerdict,
    LossSpike,
    NewExample,
    OnlineOptimizer,
    OnlineSessionSpec,
    OnlineStats,
    Publication,
    Published,
    Updated,
    live_adapter_name,
    live_model,
)
from learning.v1 import online_pb2 as pb
from server.convert_jobs import core_event_to_pb, job_core_to_pb, timestamp_to_pb

_OPTIMIZER = {
    pb.ONLINE_OPTIMIZER_UNSPECIFIED: OnlineOptimizer.ADAMW, pb.ONLINE_OPTIMIZER_ADAM: OnlineOptimizer.ADAM,
    pb.ONLINE_OPTIMIZER_ADAMW: OnlineOptimizer.ADAMW, pb.ONLINE_OPTIMIZER_SGD: OnlineOptimizer.SGD,
}
_OPTIMIZER_TO_PB = {v: k for k, v in _OPTIMIZER.items() if k != pb.ONLINE_OPTIMIZER_UNSPECIFIED}
_LOSS = {
    pb.ONLINE_LOSS_UNSPECIFIED: Objective.SFT, pb.ONLINE_LOSS_SFT: Objective.SFT, pb.ONLINE_LOSS_KTO: Objective.KTO,
}
_LOSS_TO_PB = {v: k for k, v in _LOSS.items() if k != pb.ONLINE_LOSS_UNSPECIFIED}
_ALIAS_STATE_TO_PB = {
    AliasState.NONE: pb.LIVE_ALIAS_STATE_UNSPECIFIED, AliasState.FOLLOWING: pb.LIVE_ALIAS_STATE_FOLLOWING,
    AliasState.KEPT: pb.LIVE_ALIAS_STATE_KEPT, AliasState.ENDED: pb.LIVE_ALIAS_STATE_ENDED,
    AliasState.REMOVED: pb.LIVE_ALIAS_STATE_REMOVED,
}
COLLECTION = "onlineSessions"


@dataclass(frozen=True)
class OnlineDefaults:
    base_model: str
    learning_rate: float
    ewc_lambda: float
    replay_fraction: float
    max_seq_length: int


def _bad(field_path: str, description: str) -> InvalidArgument:
    return InvalidArgument("INVALID_ONLINE_SETTING", f"{field_path}: {description}",
                           violations=[FieldViolation(field_path, description)])


def session_id_from_name(name: str, field_path: str = "name") -> str:
    return chosen_id(name, COLLECTION, "session_id", field_path)


def _count(value: int, default: int, low: int, high: int, field_path: str, *, given: bool = False) -> int:
    """``value`` within [low, high]; unset (0) is ``default``, unless the field has presence and was ``given``
    (``publish_every: 0`` means something of its own)."""
    chosen = value if given else value or default
    if not low <= chosen <= high:
        raise _bad(field_path, f"must be in [{low}, {high}]")
    return chosen


K = TypeVar("K")
V = TypeVar("V")


def _choice(table: Mapping[K, V], value: K, field_path: str, enum: str) -> V:
    if value not in table:
        raise _bad(field_path, f"unknown {enum} value {value}")
    return table[value]


def _fraction(msg: pb.OnlineSessionSpec, name: str, default: float, low: float, high: float) -> float:
    value = getattr(msg, name) if msg.HasField(name) else default
    if not (math.isfinite(value) and low <= value <= high):
        raise _bad(f"spec.{name}", f"must be in [{low:g}, {high:g}]")
    return float(value)


def _spike_factor(msg: pb.OnlineSessionSpec) -> float:
    """``loss_spike_factor``: 0 (off) or above 1. At 1 or below, an update whose loss is at or under the median
    would count as a spike and disable learning."""
    factor = _fraction(msg, "loss_spike_factor", 4.0, 0, 1e6)
    if 0 < factor <= 1:
        raise _bad("spec.loss_spike_factor", "must be 0 (off) or above 1: a loss at or below the median is no spike")
    return factor


def spec_from_pb(msg: pb.OnlineSessionSpec, defaults: OnlineDefaults) -> OnlineSessionSpec:
    if msg.start_version and not VERSION_RE.match(msg.start_version):
        raise _bad("spec.start_version", "must be a version like v1.0")
    if msg.live_alias and (len(msg.live_alias) > 128 or not msg.live_alias.isprintable() or " " in msg.live_alias):
        raise _bad("spec.live_alias", "at most 128 printable characters, no spaces")
    learning_rate = msg.learning_rate if msg.HasField("learning_rate") else defaults.learning_rate
    check_learning_rate(learning_rate, "spec.learning_rate")
    buffer_size = _count(msg.buffer_size, 1000, 1, 100_000, "spec.buffer_size")
    update_every = _count(msg.update_every, 10, 1, 10_000, "spec.update_every")
    if update_every > buffer_size:  # the worker holds at most buffer_size pending examples: no update would be due
        raise _bad("spec.update_every", f"must be at most spec.buffer_size ({buffer_size}): an update waits for "
                                        f"update_every examples, of which the session holds at most buffer_size")
    return OnlineSessionSpec(
        base_model=msg.base_model or defaults.base_model,
        start_version=msg.start_version,
        buffer_size=buffer_size,
        update_every=update_every,
        optimizer=_choice(_OPTIMIZER, msg.optimizer, "spec.optimizer", "OnlineOptimizer"),
        learning_rate=learning_rate,
        weight_decay=_fraction(msg, "weight_decay", 0.01, 0, 1),
        max_grad_norm=_fraction(msg, "max_grad_norm", 1.0, 0, 1e6),
        ewc_lambda=_fraction(msg, "ewc_lambda", defaults.ewc_lambda, 0, 1e6),
        replay_fraction=_fraction(msg, "replay_fraction", defaults.replay_fraction, 0, 0.9),
        checkpoint_every=_count(msg.checkpoint_every, 100, 1, 100_000, "spec.checkpoint_every"),
        publish_every=_count(msg.publish_every, 100, 0, 100_000, "spec.publish_every",
                             given=msg.HasField("publish_every")),
        max_seq_length=_count(msg.max_seq_length, defaults.max_seq_length, 16, 8192, "spec.max_seq_length"),
        live_alias=msg.live_alias,
        loss_spike_factor=_spike_factor(msg),
        learn_from_feedback=msg.learn_from_feedback,
        negative_feedback_margin=_fraction(msg, "negative_feedback_margin", 0.1, 0, 1),
        negative_feedback_min_ratings=_count(msg.negative_feedback_min_ratings, 20, 1, 100_000,
                                             "spec.negative_feedback_min_ratings"),
        loss=_choice(_LOSS, msg.loss, "spec.loss", "OnlineLoss"),
    )


def spec_to_pb(spec: OnlineSessionSpec) -> pb.OnlineSessionSpec:
    return pb.OnlineSessionSpec(
        base_model=spec.base_model, start_version=spec.start_version, buffer_size=spec.buffer_size,
        update_every=spec.update_every, optimizer=_OPTIMIZER_TO_PB[spec.optimizer], learning_rate=spec.learning_rate,
        weight_decay=spec.weight_decay, max_grad_norm=spec.max_grad_norm, ewc_lambda=spec.ewc_lambda,
        replay_fraction=spec.replay_fraction, checkpoint_every=spec.checkpoint_every,
        publish_every=spec.publish_every, max_seq_length=spec.max_seq_length, live_alias=spec.live_alias,
        loss_spike_factor=spec.loss_spike_factor, learn_from_feedback=spec.learn_from_feedback,
        negative_feedback_margin=spec.negative_feedback_margin,
        negative_feedback_min_ratings=spec.negative_feedback_min_ratings, loss=_LOSS_TO_PB[spec.loss],
    )


def stats_to_pb(s: OnlineStats, unread: int = 0) -> pb.OnlineStats:
    """``unread``: the session's examples stored after ``s.last_sequence`` (SessionView.unread), where counted."""
    return pb.OnlineStats(
        total_examples=s.total_examples, skipped_examples=s.skipped_examples, total_updates=s.total_updates,
        buffer_size=s.buffer_size, pending_examples=s.pending_examples,
        average_loss=math.nan if s.average_loss is None else s.average_loss,
        last_loss=math.nan if s.last_loss is None else s.last_loss, learning_rate=s.learning_rate,
        enabled=s.enabled, last_sequence=s.last_sequence, published_versions=s.published_versions,
        unread_examples=unread,
    )


def session_to_pb(view: SessionView) -> pb.OnlineSession:
    job, controls = view.job, view.controls
    out = job.output
    msg = job_core_to_pb(job, pb.OnlineSession(
        spec=spec_to_pb(job.spec), stats=stats_to_pb(view.stats, view.unread),
        live_model=live_model(job.spec.base_model, job.id),
        alias_version=controls.alias_version, disabled_reason=controls.disabled_reason, device=out.device,
        alias_state=_ALIAS_STATE_TO_PB[controls.alias_state],
    ))
    if out.live is not None:
        msg.live_adapter = live_adapter_name(job.spec.base_model, job.id, out.live.refresh)
    msg.publications.extend(publication_to_pb(p, controls.gate(p.version)) for p in out.publications)
    return msg


def publication_to_pb(p: Publication, verdict: GateVerdict | None = None) -> pb.OnlinePublication:
    msg = pb.OnlinePublication(version=p.version, update=p.update, first_sequence=p.first_sequence,
                               last_sequence=p.last_sequence, publish_time=timestamp_to_pb(p.time))
    if verdict is not None and verdict.gated:
        msg.gate_passed = verdict.passed
        msg.failed_checks.extend(verdict.failed_checks)
    return msg


def event_to_pb(event: JobEvent) -> pb.OnlineSessionEvent:
    msg = core_event_to_pb(event, pb.OnlineSessionEvent())
    p = event.payload
    if isinstance(p, Updated):
        msg.updated.CopyFrom(pb.OnlineUpdate(update=p.update, loss=p.loss, examples=p.examples, replayed=p.replayed,
                                             ewc_penalty=p.ewc_penalty, stats=stats_to_pb(p.stats)))
    elif isinstance(p, Published):
        msg.published.CopyFrom(publication_to_pb(p.publication))
    elif isinstance(p, GateJudged):
        msg.gate_verdict.CopyFrom(pb.OnlineGateVerdict(
            version=p.version, passed=p.verdict.passed if p.verdict.gated else None,
            failed_checks=p.verdict.failed_checks))
    elif isinstance(p, LossSpike):
        msg.loss_spike.CopyFrom(pb.OnlineLossSpike(update=p.update, loss=p.loss, median=p.median, factor=p.factor))
    elif isinstance(p, FeedbackSpike):
        msg.feedback_spike.CopyFrom(pb.OnlineFeedbackSpike(
            update=p.update, ratings=p.ratings, negative=p.negative, negative_rate=p.negative_rate,
            baseline_rate=p.baseline_rate, baseline_ratings=p.baseline_ratings, margin=p.margin))
    return msg


def examples_from_pb(examples: list[pb.OnlineExample]) -> list[NewExample]:
    return [NewExample(e.prompt, e.target, e.weight if e.HasField("weight") else 1.0,
                       e.desirable if e.HasField("desirable") else None, client_example_id=e.client_example_id)
            for e in examples]
