"""LoraController: activate, roll back, enable/disable adapters on one serving target, and roll a candidate out
through a traffic split: a canary decided by its policy, or a manual A/B split.

Activation: fetch and verify -> load under ``<base>@<version>`` (unless the engine has it loaded) -> eval gate ->
smoke request -> persist and switch the alias -> retire the old name unless it is the known-good one. A known-good
version the activation replaces (``mark_known_good``) is retired too, unless a role still needs it. A retirement is
persisted and carried out by the follows of every serving process (engine/lora/retirement.py ``_retire``): the
version is unloaded once every serving process has followed the switch and its requests have ended. Nothing changes for
clients until the switch, so any failure before it leaves the active adapter as it was (a candidate we loaded is
unloaded again).

A canary (``start_canary``) goes the same way up to the switch (the gate included, unless forced), then sends its
policy's share of the alias's requests to the candidate (engine/lora/canary.py) and, from a loop in this process,
promotes it (the switch and retirement of an activation) or takes it out of traffic and retires it. A manual split
(``set_traffic_split``) loads a version and splits traffic with no gate and no decision. One split at a time is in
force; it is persisted, and a restarted server resumes it. Activate, rollback and disable end the split in force
first (a canary is then aborted). Every start, change and end is a recorded operation with both sides' figures.

The operations' pieces (locks, records, loading, reconciliation) are engine/lora/target_pieces.py's, the
retirements engine/lora/retirement.py's, the gate engine/lora/target.py's; the gate's scoring is
engine/lora/scoring.py's. The splits' pieces that need none of this state (refusals, the counts the serving processes
of a target exchange and the lease under which one of them decides a canary, ratings) are engine/lora/splits.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from engine.errors import FailedPrecondition
from engine.lora import splits
from engine.lora.canary import (
    ACTOR,
    CanaryDecision,
    CanaryLoop,
    CanaryOutcome,
    CanaryPolicy,
    CanaryState,
    SplitKind,
    TrafficSplitState,
    decide,
)
from engine.lora.operation import ControlConfig, RecordedOperation, to_the_end
from engine.lora.state import EvalSummary, LoraStatus, OperationKind, lora_name
from engine.lora.target import ServingTarget
from engine.serving.traffic import Tally, TrafficSplit

__all__ = ["Activation", "ControlConfig", "LoraController"]

log = logging.getLogger(__name__)

FAILOVER_ACTOR = "gateway"  # the actor of a split ended because the serving engine lost its candidate


@dataclass(frozen=True)
class Activation:
    status: LoraStatus
    eval: EvalSummary | None


class LoraController(ServingTarget):
    _loop: CanaryLoop | None = None  # the decision loop of the canary in force
    _closing = False  # close has begun: no decision loop starts, no decider's lease is claimed, from then on

    async def start(self) -> None:
        """Load the persisted state, reconcile it with the engine (retry later if it is down), and resume the split
        in force."""
        self._router.on_candidate_lost = self._candidate_lost
        await super().start()
        await self._resume_split()

    async def close(self) -> None:
        """Stop deciding the canary in force and let go of its decider's lease (which lasts three checks, up to three
        days), so that the next serving process to claim it (a restarted server as it starts, another replica at its
        next follow) decides it at once; and keep what this gateway counted for the others."""
        self._closing = True
        loop, self._loop = self._loop, None
        if loop is not None:
            await loop.stop()
        split = self._split
        if split is not None:  # what this gateway counted since the last share is kept for the others
            try:
                await self._count(split)
            except Exception:  # noqa: BLE001 - closing goes on (the database may be what is going away)
                log.warning("could not store this gateway's counts of the split in force", exc_info=True)
        if split is not None and split.kind is SplitKind.CANARY:
            await splits.release_decider(self._store, self._process, split)
        await super().close()

    # ---- operations -----------------------------------------------------------------

    @to_the_end
    async def activate(self, version: str, *, actor: str, reason: str, force: bool = False,
                       mark_known_good: bool = False) -> Activation:
        async with self._operation(OperationKind.ACTIVATE, version, actor, reason) as op:
            st = self._state
            if version == st.active_version and lora_name(st.base_model, version) in self._loaded_names():
                # active already: the split in force ends all the same (as the doc promises every activation),
                # and the status answered is the one after this operation, recorded
                await self._end_split_first(op)
                if mark_known_good and st.known_good_version != version:
                    await self._save(replace(self._state, known_good_version=version))
                    await self._retire(st.known_good_version)
                summary = None
            else:
                summary = await self._switch(op, version, force=force, mark_known_good=mark_known_good)
        return Activation(self.snapshot(), summary)

    async def _switch(self, op: RecordedOperation, version: str, *, force: bool,
                      mark_known_good: bool) -> EvalSummary | None:
        """Activate's work for a version that is not active: fetch, load, gate, smoke, end the split, switch."""
        st = self._state
        name = lora_name(st.base_model, version)
        summary: EvalSummary | None = None
        with op.phase("fetch"):
            adapter = await self._adapters.fetch(st.base_model, version)
        was_loaded = name in self._loaded_names()
        await self._save(replace(st, pending_version=version))
        try:
            with op.phase("load"):
                await self._load(name, str(adapter.path))
            summary = await self._pass_gate(op, version, force=force)
            with op.phase("smoke"):
                await self._smoke(name)
        except BaseException:
            await self._discard(name, keep=was_loaded)
            await self._save(replace(self._state, pending_version=""))
            raise
        old = st.active_version
        kg = version if mark_known_good else (st.known_good_version or old)
        await self._end_split_first(op)
        with op.phase("switch"):
            await self._save(replace(st, active_version=version, previous_version=old or st.previous_version,
                                     known_good_version=kg, pending_version=""))
            self._point_router()
        op.mark("to_serving")
        await self._retire(old)  # (each unless a role still needs it: a known-good version stays)
        await self._retire(st.known_good_version)
        return summary

    @to_the_end
    async def rollback(self, *, actor: str, reason: str, automatic: bool = False) -> LoraStatus:
        kind = OperationKind.AUTO_ROLLBACK if automatic else OperationKind.ROLLBACK
        async with self._operation(kind, "", actor, reason) as op:
            await self._roll_back(op)
        return self.snapshot()

    @to_the_end
    async def rollback_from(self, version: str, *, actor: str, reason: str) -> LoraStatus | None:
        """Roll back automatically from ``version``, the active version the caller judged: None, with nothing done
        or recorded, if another version is active (or LoRA disabled) by the time the locks are held."""
        async with self._lock, self._store.serialised(self.target):
            await self._reload()
            if self._state.active_version != version or not self._state.enabled:
                return None
            async with self._recorded(RecordedOperation(OperationKind.AUTO_ROLLBACK, "", actor, reason)) as op:
                if not self._reconciled:  # the engine was down at start
                    await self._reconcile_locked("system", "reconcile with the serving engine")
                await self._refresh_loaded()
                await self._roll_back(op)
        return self.snapshot()

    async def _roll_back(self, op: RecordedOperation) -> None:
        """Switch the alias back to the known-good version (the locks held)."""
        st = self._state
        target = st.known_good_version
        op.version = target
        if not target:
            raise FailedPrecondition("NO_KNOWN_GOOD_VERSION", "there is no known-good version to roll back to")
        if target == st.active_version:
            raise FailedPrecondition("ALREADY_ON_KNOWN_GOOD",
                                     f"the known-good version {target} is already active",
                                     metadata={"version": target})
        name = lora_name(st.base_model, target)
        if name not in self._loaded_names():
            with op.phase("fetch"):
                adapter = await self._adapters.fetch(st.base_model, target)
            with op.phase("load"):
                await self._load(name, str(adapter.path))
            with op.phase("smoke"):
                await self._smoke(name)
        old = st.active_version
        await self._end_split_first(op)
        with op.phase("switch"):
            await self._save(replace(st, active_version=target, previous_version=old, pending_version=""))
            self._point_router()
        op.mark("to_serving")
        await self._retire(old)

    @to_the_end
    async def set_enabled(self, enabled: bool, *, actor: str, reason: str) -> LoraStatus:
        kind = OperationKind.ENABLE if enabled else OperationKind.DISABLE
        async with self._operation(kind, self._state.active_version, actor, reason) as op:
            st = self._state
            op.version = st.active_version
            if enabled and st.active_version:
                name = lora_name(st.base_model, st.active_version)
                if name not in self._loaded_names():
                    with op.phase("fetch"):
                        adapter = await self._adapters.fetch(st.base_model, st.active_version)
                    with op.phase("load"):
                        await self._load(name, str(adapter.path))
            if not enabled:
                await self._end_split_first(op)
            with op.phase("switch"):
                await self._save(replace(st, enabled=enabled))
                self._point_router()
            op.mark("to_serving")
        return self.snapshot()

    # ---- traffic splits and canaries ------------------------------------------------

    def canary(self) -> CanaryState | None:
        """The canary in force, with its figures as counted now; None without one."""
        split = self._split_now()
        return split if split is not None and split.kind is SplitKind.CANARY else None

    @to_the_end
    async def start_canary(self, version: str, policy: CanaryPolicy, *, actor: str, reason: str,
                           force: bool = False) -> LoraStatus:
        """Load ``version``, pass the gate (unless ``force``) and send it ``policy.share`` of the alias's requests;
        the policy decides from then on. INVALID_CANARY_POLICY, TRAFFIC_SPLIT_RUNNING, NO_ACTIVE_VERSION,
        INVALID_TRAFFIC_SPLIT (the active version itself), or what an activation refuses with."""
        policy.check()
        async with self._operation(OperationKind.CANARY_START, version, actor, reason) as op:
            await self._open_split(op, SplitKind.CANARY, version, policy.share, policy, force=force)
        return self.snapshot()

    @to_the_end
    async def abort_canary(self, *, actor: str, reason: str, version: str = "", split_id: int = 0) -> LoraStatus:
        """End the canary in force with no verdict: the candidate leaves traffic and is unloaded. NO_CANARY_RUNNING
        without one. With ``version``, only that version's canary: when another version's is in force, that one
        is left running and the call is NO_CANARY_RUNNING too (metadata: both versions), since the caller's canary
        has ended and the one in force is someone else's (a pipeline run cancelled after its canary ended must not
        abort the next one). With ``split_id`` (the id of the split a StartCanary opened, as its status showed
        it), only that canary: one of the same version started since by someone else is left running too. Works
        while the serving engine is unreachable."""
        async with self._operation(OperationKind.CANARY_ABORT, version, actor, reason, needs_engine=False) as op:
            # (the split as the store has it now: the operation reloaded it, not as last followed)
            canary = splits.canary_to_abort(self._split, version, split_id)
            op.version = canary.candidate_version
            await self._close_split(op, CanaryDecision.ABORTED)
        return self.snapshot()

    @to_the_end
    async def set_traffic_split(self, version: str, share: float, *, actor: str, reason: str) -> LoraStatus:
        """Send ``share`` of the alias's requests to ``version`` (loaded if need be; no gate, no decision) until
        changed or ended: share 0 ends the manual split (a no-op without one). INVALID_TRAFFIC_SPLIT for a share
        outside [0, 1) or the active version, TRAFFIC_SPLIT_RUNNING while a canary or a split to another version is
        in force, NO_ACTIVE_VERSION."""
        splits.check_share(share)
        async with self._operation(OperationKind.TRAFFIC_SPLIT, version, actor, reason) as op:
            split = self._split
            if split is not None and (split.kind is SplitKind.CANARY or (share and split.candidate_version != version)):
                raise splits.running(split)
            if split is not None:  # a new share starts new counts; the old ones are on this operation
                op.version = split.candidate_version
                await self._close_split(op, CanaryDecision.ABORTED, unload=not share)
            if share:
                await self._open_split(op, SplitKind.MANUAL, version, share, None, loaded=split is not None)
        return self.snapshot()

    async def wait_canary(self, version: str, *, poll_seconds: float = 5.0) -> CanaryOutcome:
        """Once the canary of ``version`` is decided and its ending recorded, how (at once if it already was; the store
        is read again every ``poll_seconds`` for a canary another process runs). NO_CANARY_RUNNING if it never had
        one."""
        while True:
            split = self._split
            if split is None or split.kind is not SplitKind.CANARY or split.candidate_version != version:
                outcome = await splits.decided_canary(self._store, self.target, version)
                if outcome is not None:
                    async with self._lock:  # an ending this process runs is recorded first: the status shows it
                        return outcome
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(poll_seconds):
                        await self._changed.wait()

    async def check_canary(self, split_id: int) -> bool:
        """One check of the canary ``split_id`` (engine/lora/canary.py's loop): count both sides, keep the figures,
        and end it if the policy decides; False once it is no longer in force."""
        split = self._split
        if split is None or split.id != split_id or split.policy is None:
            return False
        if not await splits.claim_decider(self._store, self._process, split, split.policy):
            self._loop = None  # another serving process decides it now (this one was thought stopped)
            return False
        await self._count(split)
        split = self._split_now()
        if split is None or split.id != split_id or split.policy is None or split.figures is None:
            return False
        figures = await splits.rated(split, split.figures, self._rates, self.base_model)
        if self._split is None or self._split.id != split_id:
            return False
        self._split = replace(self._split, figures=figures)
        await self._store.save_split_figures(split_id, figures)
        await self._notify()
        verdict = decide(split.policy, figures)
        if verdict is None:
            return True
        await self.end_split(split_id, verdict[0], actor=ACTOR, reason=verdict[1])
        return False

    async def end_split(self, split_id: int, decision: CanaryDecision, *, actor: str, reason: str) -> LoraStatus:
        """End the split ``split_id`` if it is still in force (a canary with ``decision``; a manual split just ends),
        recorded; nothing if it has ended already. Works while the serving engine is unreachable."""
        async with self._lock, self._store.serialised(self.target):
            await self._reload()
            split = self._split
            if split is not None and split.id == split_id:
                kind = splits.ending_kind(split, decision)
                async with self._recorded(RecordedOperation(kind, split.candidate_version, actor, reason)) as op:
                    await self._close_split(op, decision)
        return self.snapshot()

    # ---- pieces of the splits ---------------------------------------------------------

    async def _open_split(self, op: RecordedOperation, kind: SplitKind, version: str, share: float,
                          policy: CanaryPolicy | None, *, force: bool = False, loaded: bool = False) -> None:
        """Load ``version`` (a canary's through the gate; nothing if ``loaded``: the same version at a new share),
        then persist the split and route it."""
        st = self._state
        splits.check_can_open(st, self._split, version)
        name = lora_name(st.base_model, version)
        was_loaded = name in self._loaded_names()
        try:
            if not loaded:
                with op.phase("fetch"):
                    adapter = await self._adapters.fetch(st.base_model, version)
                with op.phase("load"):
                    await self._load(name, str(adapter.path))
                if kind is SplitKind.CANARY:
                    await self._pass_gate(op, version, force=force)
                with op.phase("smoke"):
                    await self._smoke(name)
            with op.phase("switch"):
                opened = await self._store.start_split(self.target, TrafficSplitState(
                    id=0, kind=kind, active_version=st.active_version, candidate_version=version, share=share,
                    start_time=datetime.now(UTC), actor=op.actor, reason=op.reason, policy=policy))
                self._split = opened
                self._route(opened)
        except BaseException:
            await self._discard(name, keep=was_loaded)
            raise
        op.mark("to_serving")
        # The split is stored and routed: it has started, whatever its decider's claim does now.
        await self._take_decisions(opened, started=True)
        await self._notify()

    def _route(self, split: TrafficSplitState) -> None:
        """Send the split's share to its candidate. This gateway counts from zero: what this process counted
        before a restart stays on the row it wrote then, and a split's counts are the sum of every row."""
        self._router.set_split(splits.routed(self.base_model, split))
        self._others = (Tally(), Tally())

    async def _take_decisions(self, split: TrafficSplitState, *, started: bool = False) -> None:
        """Run the canary's decision loop in this process if it can hold the decider's lease: it started the
        canary (``started``: just now; its loop runs even if the claim fails: engine/lora/splits.py
        ``claim_decider``), or the process that decided it stopped renewing (it stopped)."""
        if split.kind is not SplitKind.CANARY or split.policy is None or self._loop is not None or self._closing:
            return
        if await splits.claim_decider(self._store, self._process, split, split.policy, started=started):
            self._loop = CanaryLoop(self, split.id, split.policy.check_interval_seconds)
            self._loop.start()
            log.info("deciding a canary", extra={"version": split.candidate_version, "split": split.id})

    async def _count(self, split: TrafficSplitState) -> None:
        """Store what this gateway counted for ``split`` and read what the other serving processes did."""
        others = await splits.exchange_counts(self._store, self._process, split, self._router.split)
        if others is not None and self._split is not None and self._split.id == split.id:
            self._others = others

    async def follow(self) -> bool:
        """As ServingTarget.follow, and then this gateway's counts of the split in force are shared with the other
        serving processes (every ``serving_follow_seconds``), and a canary whose decider stopped is taken over."""
        changed = await super().follow()
        split = self._split
        if split is not None and not self._lock.locked():
            await self._count(split)
            if self._split is split:
                await self._take_decisions(split)
        return changed

    async def _close_split(self, op: RecordedOperation, decision: CanaryDecision, *, unload: bool = True) -> None:
        """End the split in force (the locks held), recorded on ``op`` with both sides' figures: a promoted canary's
        candidate becomes the active version (the old one retired as by an activation); otherwise the candidate
        leaves traffic and, with ``unload``, is retired."""
        assert self._split is not None
        await self._count(self._split)
        split = self._split_now()
        assert split is not None and split.figures is not None
        figures, st = split.figures, self._state
        op.traffic = figures
        canary = split.kind is SplitKind.CANARY
        promote = canary and decision is CanaryDecision.PROMOTED
        with op.phase("switch"):
            if promote:
                await self._save(replace(st, active_version=split.candidate_version,
                                         previous_version=st.active_version, pending_version="",
                                         known_good_version=st.known_good_version or st.active_version))
            await self._store.end_split(split.id, figures, decision if canary else None, op.reason)
            self._split = None
            self._router.set_split(None)
            self._point_router()
        op.mark("to_serving")
        if self._loop is not None and self._loop.split_id == split.id:
            await self._loop.stop()
            self._loop = None
        if canary:
            self._last_canary = splits.canary_ended(split, decision, op.reason, figures)
        if promote:
            await self._retire(split.active_version)
        elif unload:
            await self._retire(split.candidate_version)
        await self._notify()

    async def _end_split_first(self, op: RecordedOperation) -> None:
        """``op`` is about to change what the alias serves: the split in force ends first (a canary is aborted),
        recorded apart, its candidate kept loaded if ``op`` is about to serve it."""
        split = self._split
        if split is None:
            return
        kind = splits.ending_kind(split, CanaryDecision.ABORTED)
        why = f"ended by {op.kind.value.lower()} of {op.version or '-'} ({op.actor}: {op.reason or 'no reason given'})"
        async with self._recorded(RecordedOperation(kind, split.candidate_version, op.actor, why)) as ending:
            await self._close_split(ending, CanaryDecision.ABORTED, unload=split.candidate_version != op.version)

    async def _resume_split(self) -> None:
        """Route the split persisted in force again, unless the active version changed meanwhile: then it ends
        (as promoted when its candidate is the active version now: the server stopped while promoting it)."""
        split, st = self._split, self._state
        if split is None:
            return
        if split.active_version == st.active_version and st.enabled:
            self._route(split)
            await self._take_decisions(split)
            log.info("resumed a traffic split", extra={"kind": split.kind.value, "version": split.candidate_version})
            return
        decision, why = splits.resumed_ending(split, st.active_version)
        await self.end_split(split.id, decision, actor="system", reason=why)

    async def _split_changed(self, split: TrafficSplitState | None) -> None:
        """Route the split another process started (counting this gateway's requests for it; that process
        decides), or stop routing the one it ended."""
        if self._loop is not None:
            await self._loop.stop()
            self._loop = None
        if split is None:
            self._router.set_split(None)
        else:
            self._route(split)

    def _candidate_lost(self, routed: TrafficSplit) -> None:
        """The gateway found the serving engine lost the candidate (its requests fail over): end the split."""
        split = self._split
        if split is None or split.candidate_version != routed.candidate.version:
            return
        self._spawn(self.end_split(split.id, CanaryDecision.ABORTED, actor=FAILOVER_ACTOR,
                                   reason=f"fail-over to the active version: {routed.lost}"), "ending a traffic split")
