"""The pieces a serving target's operations are made of, under ServingTarget (engine/lora/target.py, which adds the
lifecycle, the status, the follow and the gate; engine/lora/retirement.py adds the retirements;
engine/lora/controller.py makes the operations of them): the target's persisted state, the serving engine and the
gateway's alias, and with the locks held a recorded operation, re-reading the state, loading, smoke-testing and
unloading on the engine, and reconciling the engine with the state.

Every operation runs under an asyncio lock and a PostgreSQL advisory lock for the target (``_operation``),
re-reads the persisted state first (another process may have changed it) and is recorded with who asked, why, its
phase timings and its error. Nothing unloads a version the state needs (the active and known-good ones, either side
of a split in force), one another name routes (``RoutedElsewhere``: an online session's live alias), or one whose
retirement is not due yet (``_kept``).

A reconciliation (``reconcile``) makes the engine and the persisted state agree: it unloads the strays and loads
what the state needs, under the operations' locks, re-reading the state and the engine under them, so it never loads
back a version an operation (of this or another serving process) has just unloaded, and serving processes sharing
one engine load each missing version once (the second finds nothing to do).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from engine import telemetry
from engine.errors import EngineError, FailedPrecondition, NotFound, Unavailable
from engine.lora.canary import CanaryOutcome, TrafficSplitState
from engine.lora.operation import ControlConfig, RecordedOperation
from engine.lora.scoring import EvalScorer
from engine.lora.state import (
    AdapterFetcher,
    FeedbackRates,
    GateInputs,
    LoadedLora,
    LoraStateStore,
    OperationKind,
    OperationRecord,
    RoutedElsewhere,
    TargetState,
    lora_name,
)
from engine.names import version_of
from engine.registry.ports import ArtifactStore
from engine.serving.alias_router import AliasRouter
from engine.serving.client import ServingClient
from engine.serving.traffic import Tally

log = logging.getLogger(__name__)

T = TypeVar("T")


class TargetPieces:
    """The target's state, engine and alias, and the pieces of operations (engine.lora.target.ServingTarget builds
    on them; engine.lora.controller.LoraController is the operations)."""

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

    def _basis(self) -> tuple[TargetState, int]:
        """What the alias's routing follows from: the state and the split in force (by id)."""
        return self._state, _split_id(self._split)


def _split_id(split: TrafficSplitState | None) -> int:
    return split.id if split is not None else 0
