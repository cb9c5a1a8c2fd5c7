"""The serving side of online sessions, in each serving process: live adapters, the gate, the live alias.

``OnlineServing.tick`` (run periodically, engine.periodic) looks at the sessions that are running:

* A session's newest live adapter (its worker stores one after every update) is fetched, loaded into the
  serving engine under a new name (``<base>@<session>-r<refresh>``) and ``<base>@<session>`` is switched to it;
  the name it replaces is drained and unloaded. Nothing being served is ever unloaded under a request.
* Each publication the gate has not judged goes through the forgetting-aware gate against what the session's
  live alias serves (its start version at first), as an activation's would, in one serving process: each claims
  it first (``OnlineStore.claim_gate``, with a lease another takes over when it runs out). The verdict is stored on the
  session's controls; one that passes moves the alias (``live_alias``, when the operator named one) to it. One
  that fails leaves the alias where it was.
* The alias is routed to the version it serves, loaded under that version's usual name.

A session that ended has its live adapter unloaded and its names dropped; a serving process that starts
unloads the live adapters of sessions that are no longer running (left by a crash).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from engine.errors import EngineError, FailedPrecondition
from engine.jobs.core import JobState
from engine.lora.state import EvalSummary, FetchedAdapter, lora_name
from engine.online.ports import OnlineStore
from engine.online.spec import LIVE_PREFIX, GateVerdict, LiveAdapter, OnlineSession, live_adapter_name, live_model
from engine.registry.ports import ArtifactStore
from engine.serving.client import ServingClient
from engine.serving.gateway import AliasRouter
from engine.training.checkpoint_store import CheckpointArchive
from engine.training.spec import CheckpointRecord

log = logging.getLogger(__name__)
RUNNING = (JobState.PREPARING, JobState.RUNNING, JobState.CANCELLING, JobState.PAUSING, JobState.QUEUED)
DRAIN_SECONDS = 30.0
GATE_LEASE_SECONDS = 1800.0  # how long a serving process may take to judge a publication before another may


class Sessions(Protocol):
    async def running(self) -> list[OnlineSession]: ...


class Gate(Protocol):
    @property
    def base_model(self) -> str: ...

    async def evaluate(self, version: str, baseline_version: str | None) -> EvalSummary: ...


class Fetcher(Protocol):
    async def fetch(self, base_model: str, version: str, *, field_path: str = "version") -> FetchedAdapter: ...


@dataclass
class _Served:
    refresh: int
    name: str
    folder: Path


class OnlineServing:
    def __init__(self, *, sessions: Sessions, store: OnlineStore, artifacts: ArtifactStore,
                 client: ServingClient, router: AliasRouter, gate: Gate, adapters: Fetcher, cache_dir: Path) -> None:
        self._sessions = sessions
        self._store = store
        self._archive = CheckpointArchive(artifacts, cache_dir / "scratch", prefix=LIVE_PREFIX)
        self._client = client
        self._router = router
        self._gate = gate
        self._adapters = adapters
        self._cache = cache_dir
        self._served: dict[str, _Served] = {}  # session id -> its live adapter loaded here
        self._aliases: dict[str, str] = {}  # session id -> its alias name routed here
        self._swept = False
        self._owner = secrets.token_hex(8)  # this process, as it claims the gate on a publication

    async def tick(self) -> None:
        base = self._gate.base_model
        sessions = [s for s in await self._sessions.running() if s.spec.base_model == base]
        running = {s.id for s in sessions}
        if not sessions and not self._served and not self._aliases and self._swept:
            return
        loaded = {m.id for m in await self._client.list_models()}
        if not self._swept:
            await self._sweep(running, loaded)
        for session_id in [i for i in {*self._served, *self._aliases} if i not in running]:
            await self._end(session_id)
        for session in sessions:
            try:
                await self._follow(session, loaded)
            except EngineError as exc:  # the next tick tries again
                log.warning("online session not followed", extra={"session": session.id, "error": exc.message})

    async def _sweep(self, running: set[str], loaded: set[str]) -> None:
        """Unload live adapters of sessions that are not running (a serving process that crashed left them)."""
        prefix = f"{self._gate.base_model}@"
        for name in loaded:
            rest = name.removeprefix(prefix)
            if name.startswith(prefix) and "-r" in rest and rest.rsplit("-r", 1)[0] not in running:
                with contextlib.suppress(EngineError):
                    await self._client.unload(name)
        self._swept = True

    async def _follow(self, session: OnlineSession, loaded: set[str]) -> None:
        """``loaded``: what the serving engine serves now (it may have restarted and lost what was loaded)."""
        live = session.output.live
        served = self._served.get(session.id)
        if live is not None and (served is None or served.refresh < live.refresh or served.name not in loaded):
            await self._load_live(session, live)
        controls = await self._store.controls(session.id)
        alias_version = controls.alias_version or session.spec.start_version
        for publication in session.output.publications:
            if controls.gate(publication.version) is not None:
                continue
            if not await self._store.claim_gate(session.id, publication.version, self._owner, GATE_LEASE_SECONDS):
                break  # another serving process judges it (the later ones wait: each is judged after it)
            verdict = await self._judge(publication.version, alias_version)
            await self._store.record_gate(session.id, publication.version, verdict)
            if verdict.passed:
                alias_version = publication.version
                await self._store.set(session.id, alias_version=alias_version)
        if session.spec.live_alias:
            await self._route_alias(session.id, session.spec.live_alias, alias_version, loaded)

    async def _judge(self, version: str, baseline: str) -> GateVerdict:
        try:
            summary = await self._gate.evaluate(version, baseline)
        except FailedPrecondition as exc:
            if exc.reason == "EVAL_SUITE_NOT_CONFIGURED":  # no gate here: as an activation, nothing to pass
                return GateVerdict(passed=True, gated=False)
            raise
        return GateVerdict(passed=summary.passed, failed_checks=summary.failed_checks, gated=True)

    async def _load_live(self, session: OnlineSession, live: LiveAdapter) -> None:
        base = session.spec.base_model
        folder = self._cache / session.id / f"r{live.refresh}"
        await asyncio.to_thread(shutil.rmtree, folder, True)
        await self._archive.fetch(CheckpointRecord(step=live.refresh, key=live.key, uri="", sha256=live.sha256,
                                                   size_bytes=0, loss=0.0, eval_loss=None,
                                                   create_time=session.create_time), folder)
        name = live_adapter_name(base, session.id, live.refresh)
        await self._client.load(name, str(folder.resolve()))
        self._router.set_route(live_model(base, session.id), name)
        previous = self._served.get(session.id)
        self._served[session.id] = _Served(live.refresh, name, folder)
        if previous is not None:
            await self._retire(previous)

    async def _retire(self, served: _Served) -> None:
        if await self._router.drain(served.name, DRAIN_SECONDS):
            with contextlib.suppress(EngineError):
                await self._client.unload(served.name)
        else:
            log.warning("live adapter still busy; left loaded", extra={"lora_name": served.name})
        await asyncio.to_thread(shutil.rmtree, served.folder, True)

    async def _route_alias(self, session_id: str, alias: str, version: str, loaded: set[str]) -> None:
        name = lora_name(self._gate.base_model, version)
        if self._router.routes.get(alias) == name and name in loaded:
            return
        if name not in loaded:
            adapter = await self._adapters.fetch(self._gate.base_model, version)
            await self._client.load(name, str(adapter.path))
        self._router.set_route(alias, name, version)
        self._aliases[session_id] = alias

    async def _end(self, session_id: str) -> None:
        """A session that ended: its names are no longer routed and its live adapter is unloaded (the versions it
        published stay in the registry, to activate like any other)."""
        self._router.drop_route(live_model(self._gate.base_model, session_id))
        alias = self._aliases.pop(session_id, None)
        if alias is not None:
            self._router.drop_route(alias)
        served = self._served.pop(session_id, None)
        if served is not None:
            await self._retire(served)
