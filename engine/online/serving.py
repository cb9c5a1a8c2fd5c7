"""The serving side of online sessions, in each serving process: live adapters, the gate, the live alias.

``OnlineServing.tick`` (run periodically, engine.periodic) looks at the sessions that are running:

* A session's newest live adapter (its worker stores one after every update) is fetched, loaded into the
  serving engine under a new name (``<base>@<session>-r<refresh>``) and ``<base>@<session>`` is switched to it;
  the name it replaces is drained and unloaded. Nothing being served is ever unloaded under a request.
* Each publication the gate has not judged goes through the forgetting-aware gate against what the session's
  live alias serves (its start version at first), as an activation's would, in one serving process: each claims
  it first (``OnlineStore.claim_gate``, with a lease another takes over when it runs out). The verdict is stored on the
  session's controls; one that passes moves the alias (``live_alias``, when the operator named one) to it, in the
  same write. One that fails leaves the alias where it was. A publication deleted before it was judged gets a failed
  verdict ("deleted"); one made before a negative-feedback spike has one already (the spike's, "feedback_spike"),
  so the gate never moves the alias back onto weights the spike put aside.
* Every live alias that is routed (the controls' ``AliasState``: FOLLOWING a session, or KEPT after it) is routed
  to the version it serves, loaded under that version's usual name. A version an alias leaves (moved, or the
  alias removed) is drained and handed to LoraControl, which unloads it unless it serves it too.

A session that ended has its live adapter unloaded and ``<base>@<session>`` dropped. Its live alias outlives it:
once the gate has judged every publication, one serving process settles it (``OnlineStore.end_alias``, exactly
once) and says so on the session's events. An alias moved off the start version (a publication passed the gate,
or an operator or a feedback spike chose a version) is KEPT on that version, in every serving process and across
restarts (it is read from the controls at each tick), until an operator moves it or removes it; one that only
ever served the start version by default ENDS (a LIVE_ALIAS_ENDED warning) and is no longer routed. A serving
process that starts unloads the live adapters of sessions that are no longer running (left by a crash).
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

from engine.errors import EngineError, FailedPrecondition, NotFound
from engine.jobs.core import JobState, Noticed, Warned
from engine.lora.state import EvalSummary, FetchedAdapter, lora_name
from engine.online.ports import OnlineStore
from engine.online.spec import (
    DELETED_VERDICT,
    LIVE_PREFIX,
    AliasState,
    Controls,
    GateVerdict,
    LiveAdapter,
    OnlineOutput,
    OnlineSession,
    live_adapter_name,
    live_model,
    told,
    untold_verdicts,
)
from engine.registry.ports import ArtifactStore
from engine.serving.alias_router import AliasRouter
from engine.serving.client import ServingClient
from engine.training.checkpoint_store import CheckpointArchive
from engine.training.spec import CheckpointRecord

log = logging.getLogger(__name__)
RUNNING = (JobState.PREPARING, JobState.RUNNING, JobState.CANCELLING, JobState.PAUSING, JobState.QUEUED)
DRAIN_SECONDS = 30.0
GATE_LEASE_SECONDS = 1800.0  # how long a serving process may take to judge a publication before another may
# How long the controls of a session whose job is not stored are left alone: a create stores the controls (and takes
# the alias name) first and the job after, so a look between the two finds no job; one that never got its job (its
# server stopped between the two) has its alias ended once its controls are this old.
UNSTORED_SESSION_SECONDS = 300.0
# what ``_settle`` says on the session's events, the one or the other
ALIAS_KEPT, ALIAS_ENDED = "LIVE_ALIAS_KEPT", "LIVE_ALIAS_ENDED"
ALIAS_ENDS = (ALIAS_KEPT, ALIAS_ENDED)


class Sessions(Protocol):
    async def running(self) -> list[OnlineSession]: ...

    async def job(self, session_id: str) -> OnlineSession:
        """NOT_FOUND for a session that does not exist."""
        ...

    async def note(self, session_id: str, *payloads: object, output: OnlineOutput | None = None) -> None:
        """Events on the log of a session that has ended (and, given ``output``, its output as it is now)."""
        ...


class Gate(Protocol):
    """LoraControl, as the serving side of sessions uses it."""

    @property
    def base_model(self) -> str: ...

    async def evaluate(self, version: str, baseline_version: str | None) -> EvalSummary: ...

    async def release(self, version: str) -> None:
        """Unload ``version`` unless LoraControl or another live alias still uses it."""
        ...


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
        self._routed: dict[str, str] = {}  # live alias -> the version it is routed to here
        self._swept = False
        self._owner = secrets.token_hex(8)  # this process, as it claims the gate on a publication
        # session id -> the gate judging its publications here (``_judged``): off the tick, which goes on following
        # the other sessions (their live adapters, their aliases) meanwhile
        self._judging: dict[str, asyncio.Task[tuple[Controls, bool]]] = {}

    async def tick(self) -> None:
        base = self._gate.base_model
        sessions = [s for s in await self._sessions.running() if s.spec.base_model == base]
        running = {s.id for s in sessions}
        held = {c.session_id: c for c in await self._store.aliases(base)}
        if not (sessions or held or self._served or self._routed) and self._swept:
            return
        loaded = {m.id for m in await self._client.list_models()}
        if not self._swept:
            await self._sweep(running, loaded)
        for session_id in [i for i in self._served if i not in running]:
            await self._end(session_id)
        for session in sessions:
            try:
                controls = await self._follow(session, loaded)
            except EngineError as exc:  # the next tick tries again
                log.warning("online session not followed", extra={"session": session.id, "error": exc.message})
                continue
            if session.id in held:
                held[session.id] = controls
        for session_id, controls in list(held.items()):
            if session_id in running or controls.alias_state is not AliasState.FOLLOWING:
                continue
            try:
                held[session_id] = await self._settle(controls)
            except EngineError as exc:
                log.warning("live alias of an ended session not settled", extra={"session": session_id,
                                                                                 "error": exc.message})
        await self._route_aliases({c.live_alias: c.alias_serves for c in held.values() if c.alias_state.routed},
                                  loaded)

    async def _sweep(self, running: set[str], loaded: set[str]) -> None:
        """Unload live adapters of sessions that are not running (a serving process that crashed left them)."""
        prefix = f"{self._gate.base_model}@"
        for name in loaded:
            rest = name.removeprefix(prefix)
            if name.startswith(prefix) and "-r" in rest and rest.rsplit("-r", 1)[0] not in running:
                with contextlib.suppress(EngineError):
                    await self._client.unload(name)
        self._swept = True

    async def _follow(self, session: OnlineSession, loaded: set[str]) -> Controls:
        """``loaded``: what the serving engine serves now (it may have restarted and lost what was loaded)."""
        live = session.output.live
        served = self._served.get(session.id)
        if live is not None and (served is None or served.refresh < live.refresh or served.name not in loaded):
            await self._load_live(session, live)
        controls, _ = self._judged(session, await self._store.controls(session.id))
        return controls

    async def judging_ended(self) -> None:
        """Wait for the gate's judgments under way here to end (however they end)."""
        await asyncio.gather(*self._judging.values(), return_exceptions=True)

    def _judged(self, session: OnlineSession, controls: Controls) -> tuple[Controls, bool]:
        """Whether the gate has judged every publication of ``session`` (True once it has), with the controls as they
        are after the last verdict recorded here (else ``controls``). Publications not judged yet are judged in a
        task of their own, one a session at a time (``_judge_publications``), which the next ticks look at: an
        evaluation takes a while (tens of seconds on a CPU), and awaited in the tick it held up every other
        session's live adapter and alias, and an ended session's alias, for as long."""
        task = self._judging.get(session.id)
        if task is not None:
            if not task.done():
                return controls, False
            del self._judging[session.id]
            if not task.cancelled() and (exc := task.exception()) is not None:
                log.warning("online session's publications not judged; trying again",
                            extra={"session": session.id, "error": getattr(exc, "message", str(exc))},
                            exc_info=not isinstance(exc, EngineError))
            elif not task.cancelled():
                judged_controls, judged = task.result()
                if judged and all(judged_controls.gate(p.version) is not None for p in session.output.publications):
                    return judged_controls, True
        if all(controls.gate(p.version) is not None for p in session.output.publications):
            return controls, True
        self._judging[session.id] = asyncio.get_running_loop().create_task(
            self._judge_publications(session, controls), name=f"online-gate-{session.id}")
        return controls, False

    async def _judge_publications(self, session: OnlineSession, controls: Controls) -> tuple[Controls, bool]:
        """The gate's verdict on each publication it has not judged, in order, against what the alias serves; one
        that passes moves the alias. Whether every one is judged (False: another process judges one now)."""
        alias_version = controls.alias_version or session.spec.start_version
        for publication in session.output.publications:
            if controls.gate(publication.version) is not None:
                continue
            if not await self._store.claim_gate(session.id, publication.version, self._owner, GATE_LEASE_SECONDS):
                return controls, False  # another serving process judges it (the later ones wait: each after it)
            verdict = await self._judge(publication.version, alias_version)
            # One that passes moves the alias in the same write, unless a verdict was recorded meanwhile (a
            # negative-feedback spike's, which put the alias back); the alias stays where it is if the version was
            # deleted meanwhile.
            controls = await self._store.record_gate(session.id, publication.version, verdict)
            alias_version = controls.alias_version or session.spec.start_version
        return controls, True

    async def _settle(self, controls: Controls) -> Controls:
        """The live alias of a session that is not running: once the session has ended and the gate has judged
        its publications, KEPT or ENDED (engine.online.ports.OnlineStore.end_alias), said on its events by the one
        serving process that settled it."""
        try:
            job = await self._sessions.job(controls.session_id)
        except NotFound:  # not stored yet (a create under way), or never will be: nothing to follow or tell
            return await self._store.end_alias(controls.session_id, untouched_for=UNSTORED_SESSION_SECONDS) \
                or controls
        if not job.state.terminal:  # paused, or queued again: the alias goes on following it
            return controls
        controls, judged = self._judged(job, controls)
        if not judged:
            return controls
        settled = await self._store.end_alias(job.id)
        if settled is None:  # another serving process settled it
            return await self._store.controls(job.id)
        alias, version = settled.live_alias, settled.alias_version
        ended: Noticed | Warned
        if settled.alias_state is AliasState.KEPT:
            ended = Noticed(ALIAS_KEPT, f"the live alias {alias!r} keeps serving {version} now that the "
                                        "session has ended, until an operator moves it (MoveLiveAlias) or "
                                        "removes it (RemoveLiveAlias)")
        else:
            published = len(job.output.publications)
            ended = Warned(ALIAS_ENDED, f"the live alias {alias!r} ended with the session: no publication of "
                                        f"it passed the gate ({published} published), so it served only the "
                                        f"start version {job.spec.start_version}; it is no longer routed")
        # the verdicts the session's worker did not see before it ended (a publication just before the stop)
        verdicts = untold_verdicts(job.output, settled)
        await self._sessions.note(job.id, *verdicts, ended, output=told(job.output, verdicts) if verdicts else None)
        return settled

    async def _judge(self, version: str, baseline: str) -> GateVerdict:
        """The gate's verdict on ``version``; a failed one ("deleted") when it was deleted before it was judged
        (DeleteAdapter, or retention once it is no longer the session's latest publication), so the gate goes on
        with the next publication instead of trying it again at every tick."""
        try:
            summary = await self._gate.evaluate(version, baseline)
        except FailedPrecondition as exc:
            if exc.reason == "EVAL_SUITE_NOT_CONFIGURED":  # no gate here: as an activation, nothing to pass
                return GateVerdict(passed=True, gated=False)
            raise
        except NotFound as exc:
            if exc.reason == "ADAPTER_NOT_FOUND" and exc.metadata.get("version", version) == version:
                return DELETED_VERDICT
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

    async def _route_aliases(self, wanted: dict[str, str], loaded: set[str]) -> None:
        """Route each alias of ``wanted`` to the version it serves; drop the others this process routed."""
        for alias, version in wanted.items():
            try:
                await self._route_alias(alias, version, loaded)
            except EngineError as exc:  # the next tick tries again
                log.warning("live alias not routed", extra={"live_alias": alias, "version": version,
                                                            "error": exc.message})
        for alias in [a for a in self._routed if a not in wanted]:
            self._router.drop_route(alias)
            await self._release(self._routed.pop(alias))

    async def _route_alias(self, alias: str, version: str, loaded: set[str]) -> None:
        name = lora_name(self._gate.base_model, version)
        previous = self._routed.get(alias)
        if previous == version and self._router.routes.get(alias) == name and name in loaded:
            return
        if name not in loaded:
            adapter = await self._adapters.fetch(self._gate.base_model, version)
            await self._client.load(name, str(adapter.path))
            loaded.add(name)
        self._router.set_route(alias, name, version)
        self._routed[alias] = version
        if previous is not None and previous != version:
            await self._release(previous)

    async def _release(self, version: str) -> None:
        """A version an alias of this process left: drained, then unloaded unless something still uses it."""
        if version in self._routed.values():
            return
        if await self._router.drain(lora_name(self._gate.base_model, version), DRAIN_SECONDS):
            await self._gate.release(version)
        else:
            log.warning("version an alias left still busy; left loaded", extra={"version": version})

    async def _end(self, session_id: str) -> None:
        """A session that is no longer running: ``<base>@<session>`` is no longer routed and its live adapter is
        unloaded (its live alias is settled apart: ``_settle``)."""
        self._router.drop_route(live_model(self._gate.base_model, session_id))
        served = self._served.pop(session_id, None)
        if served is not None:
            await self._retire(served)
