"""One serving target as LoraControl drives it: its persisted state, the serving engine, the gateway's alias,
and the pieces every operation is made of (engine/lora/controller.py makes the operations of them; evaluations are
scored by engine/lora/scoring.py; engine/lora/operation.py holds the settings operations run under, and how one is
recorded and run to its end).

Every operation runs under an asyncio lock and a PostgreSQL advisory lock for the target,
re-reads the persisted state first (another process may have changed it) and is recorded
with who asked, why, its phase timings and its error. A traffic split in force (a canary, or a
manual A/B split: engine/lora/canary.py) is part of the state: its candidate stays loaded through a
reconciliation, and the status reports it with both sides' figures. Versions the gateway routes under other names
(``RoutedElsewhere``: an online session's live alias) are never unloaded here either.

A version an operation stops needing (replaced, rolled back from, a split's candidate) is retired (``_retire``): the
operation persists its retirement, due after a follow period plus the drain timeout (other serving processes route
to it until their next follow, then their requests get the drain timeout to end), and returns. Every serving process
of the target tends the retirements in its follow (``_follow_retirements``): it pushes the due time of a version its
gateway still has requests in flight to forward, and unloads one that is due, under the operations' locks, unless
the state read again there needs it. The retirements are the database's, not a process's: they survive the process
that wrote them stopping, every reconciliation keeps a version whose retirement is not due yet (``_kept``), a failed
attempt is tried again at the next follow, and a version retired again is due after its latest retirement.

The serving engine may lose what it had loaded (restarted, redeployed, OOM-killed): the state is reconciled with it
at start, again whenever the periodic follow finds a version the state needs loaded (the active, the known-good, a
split's candidate) missing from it, and again on the first contact after it was unreachable. Such a reconciliation
runs under the operations' locks and re-reads the state and the engine under them, so it never loads back a version
an operation (of this or another serving process) has just unloaded, and serving processes sharing one engine load
each missing version once (the second finds nothing to do).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from engine import telemetry
from engine.errors import EngineError, FailedPrecondition, NotFound, Unavailable
from engine.lora import evaluation as ev
from engine.lora.canary import CanaryOutcome, TrafficFigures, TrafficSplitState, VersionFigures, figures_of
from engine.lora.judge import JudgeChoice
from engine.lora.operation import ControlConfig, RecordedOperation, to_the_end
from engine.lora.scoring import EvalScorer, Progress, refusal
from engine.lora.state import (
    AdapterFetcher,
    EvalSummary,
    FeedbackRates,
    GateInputs,
    LoadedLora,
    LoraStateStore,
    LoraStatus,
    OperationKind,
    OperationRecord,
    Retirement,
    RoutedElsewhere,
    TargetState,
    lora_name,
    version_of,
)
from engine.registry.ports import ArtifactStore
from engine.serving.client import ServingClient
from engine.serving.gateway import AliasRouter
from engine.serving.traffic import Role, Tally, sum_tallies

log = logging.getLogger(__name__)

T = TypeVar("T")

REPAIR_RETRY_SECONDS = (5.0, 300.0)  # a reconciliation that failed is tried again after 5 s, doubling up to 300 s


class ServingTarget:
    """The target's state, engine and alias, and the pieces of operations; engine.lora.controller.LoraController
    is the operations."""

    def __init__(self, config: ControlConfig, client: ServingClient, router: AliasRouter,
                 store: LoraStateStore, adapters: AdapterFetcher, reports: ArtifactStore,
                 gate: GateInputs | None = None, rates: FeedbackRates | None = None, *,
                 judge_client: ServingClient | None = None, routed: RoutedElsewhere | None = None) -> None:
        self.config = config
        self._routed = routed  # versions other names route, never unloaded here
        self._scorer = EvalScorer(config, client, router, store, adapters, reports, gate, judge_client=judge_client)
        self._client = client
        self._router = router
        self._store = store
        self._adapters = adapters
        self._lock = asyncio.Lock()
        self._following = asyncio.Lock()  # one follow at a time: a status waits for one under way, then reads afresh
        self._state = TargetState(target=client.target, base_model=config.base_model)
        self._loaded: tuple[LoadedLora, ...] = ()
        self._reachable = False
        self._last: OperationRecord | None = None
        self._changed = asyncio.Condition()
        self._sequence = 0
        self._closed = False
        self._paths: dict[str, str] = {}  # lora_name -> local path we loaded it from
        self._reconciled = False  # reconciled with the engine since this process last found it unreachable
        self._engine_reads = 0  # the engine's model lists asked for (so status() need not ask twice)
        self._repair: asyncio.Task[None] | None = None  # a reconciliation the follow started
        self._repair_failures = 0
        self._repair_after = 0.0  # (monotonic) a failed reconciliation is not tried again before
        self._rates = rates  # each version's ratings, for canaries
        self._split: TrafficSplitState | None = None  # the split in force, as persisted
        self._last_canary: CanaryOutcome | None = None
        self._background: set[asyncio.Task[Any]] = set()  # work started by a request that must not wait for it
        self._process = secrets.token_hex(8)  # this serving process, as it counts a split and decides a canary
        self._others = (Tally(), Tally())  # what the other serving processes counted for the split, as last read
        self._retiring: asyncio.Task[None] | None = None  # unloading the due retirements, as the follow started it

    @property
    def base_model(self) -> str:
        return self.config.base_model

    @property
    def target(self) -> str:
        return self._client.target

    @property
    def served_base_model(self) -> str:
        """The base model's id as the serving engine names it (configured, or discovered from /v1/models)."""
        return self._router.base_model_name

    @property
    def state(self) -> TargetState:
        return self._state

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

    def _spawn(self, work: Coroutine[Any, Any, T], what: str) -> asyncio.Task[T]:
        """Run ``work`` as a task of its own, kept until it ends (close interrupts it); its failure is logged, as
        nothing may be waiting for it."""
        task = asyncio.create_task(work)
        self._background.add(task)

        def done(t: asyncio.Task[T]) -> None:
            self._background.discard(t)
            error = None if t.cancelled() else t.exception()
            if isinstance(error, EngineError):
                log.warning("%s ended: %s", what, error.message, extra={"reason": error.reason})
            elif error is not None:
                log.error("%s failed", what, exc_info=error)

        task.add_done_callback(done)
        return task

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

    async def reconcile(self, *, actor: str = "system", reason: str = "reconcile with the serving engine") -> None:
        """Make the engine and the persisted state agree (after a crash or an engine restart)."""
        async with self._lock, self._store.serialised(self.target):
            await self._reconcile_locked(actor, reason)

    async def _reconcile_locked(self, actor: str, reason: str) -> bool:
        """Reconcile (the locks held); whether it failed to load or unload something (recorded on its operation)."""
        await self._reload()
        await self._refresh_loaded()
        self._reconciled = True
        st = self._state
        wanted = self._wanted()
        kept = await self._kept()  # (those other names route are kept, but loaded by whoever routes them)
        strays = [n for n in self._loaded_names() if version_of(st.base_model, n) not in kept]
        missing = [v for v in wanted if lora_name(st.base_model, v) not in self._loaded_names()]
        if not (strays or missing or st.pending_version):
            self._point_router()
            return False
        op = RecordedOperation(OperationKind.RECONCILE, st.pending_version, actor, reason)
        error: EngineError | None = None
        try:
            for name in strays:
                with op.phase(f"unload {name}"):
                    await self._discard(name, keep=False)
            for v in missing:
                with op.phase(f"load {v}"):
                    adapter = await self._adapters.fetch(st.base_model, v)
                    await self._load(lora_name(st.base_model, v), str(adapter.path))
        except EngineError as exc:
            error = exc
        await self._save(replace(self._state, pending_version=""))
        self._point_router()
        await self._finish(op, error)
        log.info("reconciled", extra={"unloaded": strays, "loaded": missing, "pending": st.pending_version})
        return error is not None

    def _wanted(self) -> set[str]:
        """The versions the state needs loaded: the active and known-good ones, and a split's candidate."""
        st = self._state
        candidate = self._split.candidate_version if self._split is not None else ""
        return {v for v in (st.active_version, st.known_good_version, candidate) if v}

    # ---- pieces ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _operation(self, kind: OperationKind, version: str, actor: str, reason: str, *,
                         needs_engine: bool = True) -> AsyncIterator[RecordedOperation]:
        async with self._lock, self._store.serialised(self.target), self._recorded(
                RecordedOperation(kind, version, actor, reason)) as op:
            if needs_engine and not self._reconciled:  # the engine was down at start
                await self._reconcile_locked("system", "reconcile with the serving engine")
            await self._reload()
            if needs_engine:
                await self._refresh_loaded()
            yield op

    async def _reload(self) -> None:
        """Re-read what another process may have changed, the state and the split in force, and route the alias
        by them."""
        self._state = await self._store.load(self.target, self.config.base_model)
        self._point_router()
        split = await self._store.running_split(self.target)
        if _split_id(split) != _split_id(self._split):
            await self._split_changed(split)
        self._split = split

    async def _split_changed(self, split: TrafficSplitState | None) -> None:
        """Another process started ``split``, or ended the one in force (None): the controller routes it."""

    @contextlib.asynccontextmanager
    async def _recorded(self, op: RecordedOperation) -> AsyncIterator[RecordedOperation]:
        """Record ``op`` when the block ends, with its error if it raised."""
        error: BaseException | None = None
        try:
            yield op
        except BaseException as exc:
            error = exc
            raise
        finally:
            await self._finish(op, error)

    async def _finish(self, op: RecordedOperation, error: BaseException | None) -> None:
        record = op.record(error)
        try:
            await self._store.record(self.target, record)
        except Exception:  # noqa: BLE001 - history must not mask the operation's own outcome
            log.exception("could not record a LoraControl operation")
        self._last = record
        if error is None and op.kind is not OperationKind.RECONCILE:  # every path, automatic ones included
            telemetry.swap_finished(op.kind.value.lower(), record.duration_seconds)
        await self._notify()

    async def _notify(self) -> None:
        async with self._changed:
            self._sequence += 1
            self._changed.notify_all()

    async def _save(self, state: TargetState) -> None:
        await self._store.save(state)
        self._state = state
        await self._notify()

    def _point_router(self) -> None:
        st = self._state
        serving = st.active_version if st.enabled and st.active_version else ""
        self._router.set_target(lora_name(st.base_model, serving) if serving else "", serving)
        telemetry.active_adapter(st.base_model, serving or None)

    def _loaded_names(self) -> set[str]:
        return {a.lora_name for a in self._loaded}

    async def _refresh_loaded(self) -> None:
        self._engine_reads += 1
        try:
            models = await self._client.list_models()
        except Unavailable:
            self._reachable = False
            self._reconciled = False  # it may come back empty (restarted): reconciled on the next contact
            raise
        self._reachable = True
        base = self.config.base_model
        if not self.config.served_base_name:
            plain = [m.id for m in models if "@" not in m.id]
            if plain:
                self._router.base_model_name = plain[0]
        self._loaded = tuple(
            LoadedLora(lora_name=m.id, version=version_of(base, m.id), path=m.root or self._paths.get(m.id, ""))
            for m in models if version_of(base, m.id)
        )

    async def _load(self, name: str, path: str) -> None:
        """Load ``name`` from ``path``, unless the engine has these files loaded under it already (as last read:
        every operation reads the engine first): engines differ on a second load of one name (MAX answers 200, vLLM
        400 "has already been loaded"), so none is asked twice. Other files under that name are asked for, and the
        engine refuses the conflict."""
        if not self._has_loaded(name, path):
            await self._client.load(name, path)
        self._paths[name] = path
        await self._refresh_loaded()

    def _has_loaded(self, name: str, path: str) -> bool:
        """Whether the engine lists ``name`` loaded from the files at ``path``: from ``path`` itself, from another
        serving process's copy of them (each process fetches adapters into its own cache, in a directory named by
        the version and its content's digest: engine/lora/fetch.py), or from a path it does not report."""
        return any(a.lora_name == name and (not a.path or Path(a.path).name == Path(path).name)
                   for a in self._loaded)

    async def _smoke(self, name: str) -> None:
        try:
            await self._client.complete(name, self.config.smoke_prompt, max_tokens=self.config.smoke_max_tokens)
        except EngineError as exc:
            raise FailedPrecondition("SMOKE_TEST_FAILED", f"smoke request to {name} failed: {exc.message}",
                                     metadata={"lora_name": name, "cause": exc.reason}) from exc

    async def _routed_elsewhere(self) -> set[str]:
        return await self._routed.routed_versions(self.config.base_model) if self._routed is not None else set()

    async def release(self, version: str) -> None:
        """Unload ``version``, which another name routed until now (an online session's live alias moved off it,
        or removed), unless LoraControl or another such name still uses it; under the operations' lock, so it never
        interleaves with an activation that may be loading it."""
        async with self._lock, self._store.serialised(self.target):
            await self._reload()
            await self._discard(lora_name(self.config.base_model, version), keep=False)

    async def _discard(self, name: str, *, keep: bool) -> bool:
        """Best-effort unload of a name we loaded (never of a version ``_kept`` keeps). Whether it is settled: kept,
        or no longer listed by the engine; False when the unload failed (a retirement is then tried again)."""
        if keep or version_of(self._state.base_model, name) in await self._kept():
            return True
        try:
            await self._client.unload(name)
        except NotFound:
            pass
        except EngineError as exc:
            log.warning("could not unload", extra={"lora_name": name, "error": exc.message})
        with contextlib.suppress(EngineError):
            await self._refresh_loaded()
        return name not in self._loaded_names()  # (as last read: the engine unreachable, it is tried again)

    async def _kept(self) -> set[str]:
        """The versions nothing unloads now: those the state needs (the active and known-good ones, either side of
        a split), those other names route, and those whose retirement is not due yet (another serving process may
        still route the alias to them, or stream from them): a reconciliation does not take them for strays."""
        st, split = self._state, self._split
        kept = {st.active_version, st.known_good_version}
        if split is not None:
            kept |= {split.active_version, split.candidate_version}
        kept |= await self._routed_elsewhere()
        kept |= {r.version for r in await self._store.retirements(self.target) if not r.due}
        return kept - {""}

    async def _retire(self, version: str) -> None:
        """Retire ``version``, which the state no longer needs (the operation holding the locks just switched away
        from it): persist its retirement, due after the grace, which a follow of any serving process of the target
        carries out (``_follow_retirements``); the operation does not wait for it. A version still needed, or not
        loaded, has nothing to retire; one retired again is due after this retirement (it served again since).
        Should the write fail (the switch is done and stays), the version is a stray the next reconciliation
        unloads."""
        if not version or version in self._wanted() or lora_name(self.base_model, version) not in self._loaded_names():
            return
        try:
            await self._store.retire(self.target, version, self._retire_grace_seconds)
        except EngineError as exc:
            log.warning("could not record a retirement", extra={"version": version, "error": exc.message})

    @property
    def _retire_grace_seconds(self) -> float:
        """How long a retired version stays loaded at least, and how far a process streaming from it pushes its
        retirement at each follow: every serving process of the target follows the new state within a follow period,
        then the requests it had sent the version are given the drain timeout to end (one still running is pushed
        again at the next follow, a drain timeout before the retirement is due)."""
        return self.config.follow_seconds + self.config.drain_timeout_seconds

    async def _follow_retirements(self) -> None:
        """The follow's part of the retirements: push forward those this process still streams from, and start
        unloading those due (``_retire_due``). An error is logged: the next follow tries again."""
        try:
            retiring = await self._store.retirements(self.target)
            streaming = await self._postpone_streaming(retiring)
            if any(r.due and r.version not in streaming for r in retiring) and (
                    self._retiring is None or self._retiring.done()):
                self._retiring = self._spawn(self._retire_due(), "unloading retired versions")
        except Exception:  # noqa: BLE001 - a follow must go on; the retirements stay persisted for the next one
            log.warning("could not tend the retiring versions; the next follow tries again", exc_info=True)

    async def _postpone_streaming(self, retiring: Sequence[Retirement]) -> set[str]:
        """Push the retirements of the versions this process's gateway still has requests in flight to a grace
        past now, so no serving process unloads them under those requests (a stream ends, however long it runs);
        the versions pushed."""
        streaming = {r.version for r in retiring if self._router.inflight(lora_name(self.base_model, r.version))}
        if streaming:
            await self._store.postpone(self.target, sorted(streaming), self._retire_grace_seconds)
        return streaming

    async def _retire_due(self) -> None:
        """Carry out the retirements due, under the operations' locks (in a task of its own: another process's
        operation may hold them for minutes), reading them and the state again there: unload each unless the state
        needs it again (``_discard``), and forget it then, in the same locked section. One this process streams from
        is pushed forward instead; one the engine failed to unload is kept for the next follow."""
        async with self._lock, self._store.serialised(self.target):
            await self._reload()
            retiring = await self._store.retirements(self.target)
            streaming = await self._postpone_streaming(retiring)
            for retirement in retiring:
                if retirement.due and retirement.version not in streaming:
                    await self._end_retirement(retirement.version)
            await self._notify()  # (the status lists what the engine has loaded)

    async def _end_retirement(self, version: str) -> None:
        """Unload ``version``, retired and due, unless the state needs it again; forget its retirement once settled
        (the locks held)."""
        name = lora_name(self.base_model, version)
        if await self._discard(name, keep=False):
            await self._store.retired(self.target, version)
            log.info("retired", extra={"lora_name": name, "unloaded": name not in self._loaded_names()})

    def _basis(self) -> tuple[TargetState, int]:
        """What the alias's routing follows from: the state and the split in force (by id)."""
        return self._state, _split_id(self._split)


def _split_id(split: TrafficSplitState | None) -> int:
    return split.id if split is not None else 0
