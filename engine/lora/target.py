"""One serving target as LoraControl drives it: its lifecycle, its status, the follow that takes up what another
serving process changed, and the eval gate. ServingTarget builds on the pieces every operation is made of (the
persisted state, the serving engine, the gateway's alias, the locks, records, loading and reconciliation:
engine/lora/target_pieces.py) and on the retirement of versions (engine/lora/retirement.py);
engine/lora/controller.py makes the operations of them; evaluations are scored by engine/lora/scoring.py;
engine/lora/operation.py holds the settings operations run under, and how one is recorded and run to its end.

Every operation runs under an asyncio lock and a PostgreSQL advisory lock for the target,
re-reads the persisted state first (another process may have changed it) and is recorded
with who asked, why, its phase timings and its error. A traffic split in force (a canary, or a
manual A/B split: engine/lora/canary.py) is part of the state: its candidate stays loaded through a
reconciliation, and the status reports it with both sides' figures. Versions the gateway routes under other names
(``RoutedElsewhere``: an online session's live alias) are never unloaded here either.

A version an operation stops needing (replaced, rolled back from, a split's candidate) is retired: its retirement is
persisted, and every serving process of the target tends the retirements in its follow, unloading a version once it
is due and no request can still reach it (engine/lora/retirement.py).

The serving engine may lose what it had loaded (restarted, redeployed, OOM-killed): the state is reconciled with it
at start, again whenever the periodic follow finds a version the state needs loaded (the active, the known-good, a
split's candidate) missing from it, and again on the first contact after it was unreachable (``_repair_engine``).
Such a reconciliation (engine/lora/target_pieces.py ``reconcile``) runs under the operations' locks and re-reads the
state and the engine under them, so it never loads back a version an operation (of this or another serving process)
has just unloaded, and serving processes sharing one engine load each missing version once (the second finds nothing
to do).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from engine.errors import FailedPrecondition, Unavailable
from engine.lora import evaluation as ev
from engine.lora.canary import TrafficFigures, TrafficSplitState, VersionFigures, figures_of
from engine.lora.judge import JudgeChoice
from engine.lora.operation import RecordedOperation, to_the_end
from engine.lora.retirement import RetiringTarget
from engine.lora.scoring import Progress, refusal
from engine.lora.state import EvalSummary, LoadedLora, LoraStatus, lora_name
from engine.serving.traffic import Role, sum_tallies

log = logging.getLogger(__name__)

REPAIR_RETRY_SECONDS = (5.0, 300.0)  # a reconciliation that failed is tried again after 5 s, doubling up to 300 s


class ServingTarget(RetiringTarget):
    """The target's state, engine and alias, and the pieces of operations; engine.lora.controller.LoraController
    is the operations."""

    # ---- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Load the persisted state and reconcile it with the engine (retry later if it is down)."""
        self._state = await self._store.load(self.target, self.config.base_model)
        self._last = await self._store.last_operation(self.target)
        self._split = await self._store.running_split(self.target)
        self._last_canary = await self._store.canary_outcome(self.target)
        self._router.base_model_name = self.config.served_base_name or self.config.base_model
        self._point_router()
        try:
            await self.reconcile()
        except Unavailable as exc:
            log.warning("serving engine unreachable at start; will reconcile later", extra={"error": exc.message})

    async def close(self) -> None:
        """Interrupt the work still running (operations whose callers went away, splits being ended) and wait until
        it has undone what it can, then wake the watchers."""
        running = list(self._background)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        async with self._changed:
            self._closed = True
            self._changed.notify_all()

    # ---- reads ----------------------------------------------------------------------

    def snapshot(self) -> LoraStatus:
        s = self._state
        return LoraStatus(
            target=self.target, base_model=s.base_model, enabled=s.enabled, active_version=s.active_version,
            previous_version=s.previous_version, known_good_version=s.known_good_version,
            alias=self.config.alias, loaded=self._loaded, last_operation=self._last,
            serving_reachable=self._reachable, gateway_url=self.config.gateway_url,
            split=self._split_now(), last_canary=self._last_canary,
        )

    def _split_now(self) -> TrafficSplitState | None:
        """The split in force with this gateway's counts as they are now and the other serving processes' as last
        read (ratings as of the last check)."""
        split, routed = self._split, self._router.split
        if split is None:
            return None
        before = split.figures or TrafficFigures(VersionFigures(split.active_version),
                                                 VersionFigures(split.candidate_version))
        if routed is None or routed.candidate.version != split.candidate_version:
            return replace(split, figures=before)  # not routed here (yet): as persisted
        elapsed = (datetime.now(UTC) - split.start_time).total_seconds()
        counted = (sum_tallies((routed.tallies[Role.ACTIVE], self._others[0])),
                   sum_tallies((routed.tallies[Role.CANDIDATE], self._others[1])))
        return replace(split, figures=figures_of(before.active, before.candidate, counted, elapsed))

    async def status(self) -> LoraStatus:
        """The state as recorded (another serving process of this target may have changed it), with what the
        engine reports loaded right now (cached if it is unreachable)."""
        reads = self._engine_reads
        await self.follow()
        if self._engine_reads == reads:  # the follow did not read the engine (an operation holds the lock)
            try:
                await self._refresh_loaded()
            except Unavailable:
                self._reachable = False
        return self.snapshot()

    async def follow(self) -> bool:
        """Take up the state and the traffic split another serving process of this target recorded (a pipeline run
        it held activated a version, an operator's call reached it): this process's gateway then routes the alias
        the same way. It loads nothing a change of state asks for: serving processes of one target share one
        serving engine, where the other loaded it. It does look at what the engine has loaded: when a version the
        state needs loaded is missing (the engine restarted), or the engine is reachable again after it was not, it
        starts a reconciliation (``_repair``). Then it tends the retirements (``_follow_retirements``), even while
        an operation of this process is under way (its requests in flight must keep their versions loaded on every
        replica meanwhile). Returns whether the state changed.

        A follow under way (the periodic one) holds the operations' lock too; a second one (a status) waits for it
        and then reads again, rather than take the lock's being held for an operation's and answer with the state
        as it was before the first began."""
        changed, why = False, ""
        async with self._following:
            if not self._lock.locked():  # (else an operation of this process is under way: it reloads the state)
                async with self._lock:  # (the engine's list too: an operation's own reading must not be overwritten)
                    before = self._basis()
                    await self._reload()
                    changed = self._basis() != before
                    if changed:
                        self._last = await self._store.last_operation(self.target)
                        self._last_canary = await self._store.canary_outcome(self.target)
                        await self._notify()
                    why = await self._reconcile_needed()
            await self._follow_retirements()
        if why:
            self._start_repair(why)
        return changed

    async def _reconcile_needed(self) -> str:
        """Why the engine must be reconciled with the state now ("": it need not, or cannot be now), as the follow
        reads it (the reconciliation reads the state and the engine again under both locks)."""
        try:
            await self._refresh_loaded()
        except Unavailable:
            return ""  # reconciled on the first contact after this (``_reconciled`` is cleared)
        if time.monotonic() < self._repair_after:
            return ""
        missing = sorted(v for v in self._wanted() if lora_name(self._state.base_model, v) not in self._loaded_names())
        if missing:
            return f"the serving engine no longer has {', '.join(missing)} loaded (it restarted?)"
        return "" if self._reconciled else "the serving engine is reachable again"

    def _start_repair(self, why: str) -> None:
        """Reconcile in a task of its own (one at a time), so the follow does not wait for the target's lock,
        which another serving process's operation may hold for minutes."""
        if self._repair is None or self._repair.done():
            self._repair = self._spawn(self._repair_engine(why), "reconciling with the serving engine")

    async def _repair_engine(self, why: str) -> None:
        failed = True
        try:
            async with self._lock, self._store.serialised(self.target):
                failed = await self._reconcile_locked("system", f"reconcile with the serving engine: {why}")
        finally:
            if failed:  # tried again later, less and less often, rather than at every follow
                first, most = REPAIR_RETRY_SECONDS
                self._repair_after = time.monotonic() + min(most, first * 2 ** self._repair_failures)
                self._repair_failures += 1
            else:
                self._repair_failures, self._repair_after = 0, 0.0

    async def list_loaded(self) -> tuple[LoadedLora, ...]:
        await self._refresh_loaded()
        return self._loaded

    async def watch(self) -> AsyncIterator[LoraStatus]:
        """The current status, then one per change, until the controller closes."""
        seen = -1
        while True:
            async with self._changed:
                while self._sequence == seen and not self._closed:
                    await self._changed.wait()
                if self._closed:
                    return
                seen = self._sequence
                status = self.snapshot()
            yield status

    # ---- the gate ----------------------------------------------------------------------

    @to_the_end
    async def evaluate(self, version: str, baseline_version: str | None, suites: Sequence[Path | ev.Suite] = (),
                       *, progress: Progress | None = None, judge: JudgeChoice | None = None,
                       reuse: bool = False) -> EvalSummary:
        """Run the gate's suites on ``version`` against ``baseline_version`` (None: the active one), with the
        golden ``suites``, files or suites already built (none: the configured one); ``progress`` hears of every
        answer; ``judge`` overrides the configured LLM judge (None: as configured); with ``reuse``, the version's
        latest evaluation stands when it was against the same baseline on the same basis.

        ``version`` "" is the base model itself: it has no training data or lineage of its own, so it is scored on
        the golden suites only (EVAL_SUITE_NOT_CONFIGURED without one); against itself when the baseline is the base
        model too, answered once."""
        goldens = list(suites) or ([self.config.eval_suite] if self.config.eval_suite is not None else [])
        if not goldens and not version:
            raise FailedPrecondition("EVAL_SUITE_NOT_CONFIGURED",
                                     "the base model itself is scored on golden suites only (it has no training data "
                                     "of its own) and none is configured; name one with suite_paths, suite_path or "
                                     "suite_datasets")
        if not goldens and self._scorer.gate is None:
            raise FailedPrecondition("EVAL_SUITE_NOT_CONFIGURED",
                                     "no golden suite is configured and the gate is off; name one with suite_path "
                                     "or suite_datasets")
        async with self._lock, self._store.serialised(self.target):
            self._state = await self._store.load(self.target, self.config.base_model)
            await self._refresh_loaded()
            baseline = self._state.active_version if baseline_version is None else baseline_version
            plan = await self._scorer.plan(self._state.base_model, version, baseline, goldens, judge)
            kept = await self._scorer.reusable(plan) if reuse else None
            if kept is not None:
                return kept  # nothing loaded, nothing answered
            temporary = []
            try:
                for v in {version, baseline} - {""}:
                    name = lora_name(self._state.base_model, v)
                    if name not in self._loaded_names():
                        adapter = await self._adapters.fetch(self._state.base_model, v)
                        await self._load(name, str(adapter.path))
                        temporary.append(name)
                return await self._scorer.score(plan, progress)
            finally:
                for name in temporary:
                    await self._discard(name, keep=False)

    async def _pass_gate(self, op: RecordedOperation, version: str, *, force: bool) -> EvalSummary | None:
        """The gate on ``version`` (loaded) against the active version, recorded on ``op``: EVAL_GATE_FAILED if it
        fails, unless ``force``; None when there is no gate (off, and no golden suite)."""
        goldens = [self.config.eval_suite] if self.config.eval_suite is not None else []
        if not goldens and self._scorer.gate is None:
            return None
        with op.phase("eval"):
            plan = await self._scorer.plan(self._state.base_model, version, self._state.active_version, goldens, None)
            summary = op.gate = await self._scorer.reusable(plan) or await self._scorer.score(plan)
        if not summary.passed and not force:
            raise refusal(summary)
        return summary

    async def report(self, version: str, evaluation: str, file: str) -> tuple[EvalSummary, bytes, str]:
        """One stored report file of an evaluation of ``version`` (EvalScorer.report)."""
        return await self._scorer.report(version, evaluation, file)
