"""The parts of LoraController's traffic splits and canaries (engine/lora/controller.py) that need none of its
state, only what they are given: the refusals (a share out of range, a split that cannot open, a canary to abort
that is not in force), the kind of operation that records a split's end, what the gateway routes for a split and
the counts the serving processes exchange, the claim and release of a canary's decider's lease, the ratings a check
adds to a canary's figures, how a canary's end is told, how a split not resumed at start ends, and how a canary
ended as a wait reads it from the store.

Several serving processes of one target (replicas behind a load balancer) each route the split in their gateway and
store what it counted on its own row (every ``serving_follow_seconds``, and at each check); a split's counts are
the sum of the rows, so a canary decides on all of its traffic. One process decides it, under a lease it renews at
each check: the one that started it, or another once that one stopped renewing (it died) or released the lease (it
closed: a restarted server takes it over as it starts, another replica at its next follow).
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from datetime import UTC, datetime

from engine import telemetry
from engine.errors import FailedPrecondition, FieldViolation, InvalidArgument
from engine.lora.canary import (
    CanaryDecision,
    CanaryOutcome,
    CanaryPolicy,
    SplitKind,
    TrafficFigures,
    TrafficSplitState,
)
from engine.lora.state import FeedbackCounts, FeedbackRates, LoraStateStore, OperationKind, TargetState, lora_name
from engine.serving.traffic import Role, Route, Tally, TrafficSplit

log = logging.getLogger(__name__)

_ENDS = {CanaryDecision.PROMOTED: OperationKind.CANARY_PROMOTE,
         CanaryDecision.ROLLED_BACK: OperationKind.CANARY_ROLLBACK,
         CanaryDecision.ABORTED: OperationKind.CANARY_ABORT}


def ending_kind(split: TrafficSplitState, decision: CanaryDecision) -> OperationKind:
    """The kind of operation that records the end of ``split``: a canary's by ``decision``, a manual split's
    TRAFFIC_SPLIT."""
    return _ENDS[decision] if split.kind is SplitKind.CANARY else OperationKind.TRAFFIC_SPLIT


def check_share(share: float) -> None:
    """INVALID_TRAFFIC_SPLIT unless ``share`` is in [0, 1) (0 ends a manual split)."""
    if not (math.isfinite(share) and 0.0 <= share < 1.0):
        raise InvalidArgument("INVALID_TRAFFIC_SPLIT", f"share must be in [0, 1), got {share}",
                              violations=[FieldViolation("share", "must be in [0, 1); 0 ends the split")])


def check_can_open(state: TargetState, split: TrafficSplitState | None, version: str) -> None:
    """Refuse a split to ``version`` with ``state`` and ``split`` in force: TRAFFIC_SPLIT_RUNNING with a split,
    NO_ACTIVE_VERSION without an active version the alias serves, INVALID_TRAFFIC_SPLIT to the active version."""
    if split is not None:
        raise running(split)
    if not state.active_version or not state.enabled:
        raise FailedPrecondition("NO_ACTIVE_VERSION", "a traffic split needs an active version the alias serves ("
                                 + ("LoRA is disabled)" if state.active_version else "none is active)"))
    if version == state.active_version:
        raise InvalidArgument("INVALID_TRAFFIC_SPLIT", f"{version} is the active version; split to another",
                              violations=[FieldViolation("version", "is the active version")])


def running(split: TrafficSplitState) -> FailedPrecondition:
    """TRAFFIC_SPLIT_RUNNING, for an operation that needs ``split``, in force, ended first."""
    how = "AbortCanary ends it" if split.kind is SplitKind.CANARY else "SetTrafficSplit with share 0 ends it"
    return FailedPrecondition(
        "TRAFFIC_SPLIT_RUNNING",
        f"a {split.kind.value.lower()} split to {split.candidate_version} ({split.share:.0%}) is in force; {how}",
        metadata={"kind": split.kind.value, "version": split.candidate_version},
    )


def canary_to_abort(split: TrafficSplitState | None, version: str, split_id: int) -> TrafficSplitState:
    """The canary in force (``split``) if it is the one an abort asked for (of ``version``, and the split
    ``split_id``, when given); else NO_CANARY_RUNNING."""
    canary = split if split is not None and split.kind is SplitKind.CANARY else None
    if canary is None or (version and canary.candidate_version != version) or (split_id and canary.id != split_id):
        raise _no_canary(version, split)
    return canary


def _no_canary(version: str, split: TrafficSplitState | None) -> FailedPrecondition:
    """NO_CANARY_RUNNING for an abort of the canary in force (of ``version``, if given) that found ``split``."""
    of = f" of {version}" if version else ""
    metadata = {"version": version} if version else {}
    if split is None:
        return FailedPrecondition("NO_CANARY_RUNNING", f"no canary{of} is in force", metadata=metadata)
    if split.kind is SplitKind.CANARY:
        if split.candidate_version == version:  # of the version asked, but not the split asked
            message = (f"the canary of {version} asked for has ended; another canary of {version}, started since, "
                       "is in force and was left running")
        else:
            message = (f"no canary{of} is in force; the canary of {split.candidate_version} is, and was left running "
                       "(abort it by its own version)")
        return FailedPrecondition("NO_CANARY_RUNNING", message,
                                  metadata={**metadata, "running_version": split.candidate_version})
    return FailedPrecondition("NO_CANARY_RUNNING", f"no canary{of} is in force; a manual split to "
                                                   f"{split.candidate_version} is (share 0 ends it)", metadata=metadata)


def routed(base_model: str, split: TrafficSplitState) -> TrafficSplit:
    """What a gateway routes for ``split``: its share to its candidate, counted from zero."""
    return TrafficSplit(Route(lora_name(base_model, split.candidate_version), split.candidate_version), split.share)


async def exchange_counts(store: LoraStateStore, process: str, split: TrafficSplitState,
                          routing: TrafficSplit | None) -> tuple[Tally, Tally] | None:
    """Store what the gateway of ``process`` counted for ``split`` (``routing``: the split it routes) and read what
    the other serving processes did; None, with nothing stored, if it does not route ``split``."""
    if routing is None or routing.candidate.version != split.candidate_version:
        return None
    await store.save_split_tally(split.id, process, routing.tallies[Role.ACTIVE], routing.tallies[Role.CANDIDATE])
    return await store.split_tallies(split.id, besides=process)


def _decider_lease(policy: CanaryPolicy) -> float:
    """How long the deciding process's claim lasts unrenewed: three checks (at least a second)."""
    return max(1.0, 3 * policy.check_interval_seconds)


async def claim_decider(store: LoraStateStore, process: str, split: TrafficSplitState, policy: CanaryPolicy, *,
                        started: bool = False) -> bool:
    """Claim (or renew) the decider's lease of the canary ``split`` (under ``policy``) for ``process``: whether it
    holds it now.

    A canary the process just started (``started``) counts as claimed even if the claim fails (the database, for
    that call): each check of its decision loop claims the lease before anything else (LoraController.check_canary),
    so the first that can claims it, and should another process's follow have claimed it meanwhile, the loop ends
    there. Failing the start instead would leave a canary in force that its caller (a pipeline run) was told did not
    start, and that nothing decides."""
    try:
        return await store.claim_decider(split.id, process, _decider_lease(policy))
    except Exception:
        if not started:
            raise
        log.warning("could not claim a canary's decider as it started; its decision loop claims it at each check",
                    extra={"version": split.candidate_version, "split": split.id}, exc_info=True)
        return True


async def release_decider(store: LoraStateStore, process: str, split: TrafficSplitState) -> None:
    """Let go of the decider's lease of the canary ``split`` if ``process`` holds it (the store fences another's);
    a failure is logged, and the lease then runs out by itself."""
    try:
        await store.release_decider(split.id, process)
    except Exception:  # noqa: BLE001 - closing goes on (the database may be what is going away)
        log.warning("could not release the decider's lease of the canary in force", exc_info=True,
                    extra={"version": split.candidate_version, "split": split.id})


async def rated(split: TrafficSplitState, figures: TrafficFigures, rates: FeedbackRates | None,
                base_model: str) -> TrafficFigures:
    """``figures`` of ``split`` with each side's ratings since it started (none without ``rates``)."""
    ratings = []
    for v in (split.active_version, split.candidate_version):
        ratings.append(await rates.counts(base_model, v, split.start_time) if rates else FeedbackCounts())
    active, candidate = ratings
    return replace(figures, active=replace(figures.active, positive=active.positive, negative=active.negative),
                   candidate=replace(figures.candidate, positive=candidate.positive, negative=candidate.negative))


def canary_ended(split: TrafficSplitState, decision: CanaryDecision, reason: str,
                 figures: TrafficFigures) -> CanaryOutcome:
    """How the canary ``split`` ended, counted in the telemetry and logged."""
    outcome = CanaryOutcome(split.candidate_version, decision, reason, figures, datetime.now(UTC))
    telemetry.canary_decided(decision.value)
    log.info("canary ended", extra={"version": split.candidate_version, "decision": decision.value, "reason": reason})
    return outcome


def resumed_ending(split: TrafficSplitState, active_version: str) -> tuple[CanaryDecision, str]:
    """How ``split``, persisted in force, ends as a server starts with ``active_version`` active and the split not
    resumed: as promoted when its candidate is the active version now (the server stopped while promoting it),
    else aborted."""
    if split.candidate_version == active_version:
        return CanaryDecision.PROMOTED, "the server stopped while promoting it"
    return CanaryDecision.ABORTED, "the active version changed while the server was stopped"


async def decided_canary(store: LoraStateStore, target: str, version: str) -> CanaryOutcome | None:
    """How the canary of ``version`` on ``target`` ended, as the store has it; None while one of it is in force
    (another serving process's too). NO_CANARY_RUNNING if it never had one."""
    outcome = await store.canary_outcome(target, version)
    in_force = await store.running_split(target)
    if in_force is not None and in_force.kind is SplitKind.CANARY and in_force.candidate_version == version:
        return None
    if outcome is None:
        raise FailedPrecondition("NO_CANARY_RUNNING", f"no canary of {version} is in force or was decided",
                                 metadata={"version": version})
    return outcome
