"""What the OnlineLearningService calls: sessions (jobs of kind ``onlineSession``), their controls and examples, and
their live aliases (which outlive them: engine.online.serving)."""

from __future__ import annotations

import builtins
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from engine.domain import Objective
from engine.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound
from engine.feedback.ingest import FeedbackLimits
from engine.jobs.codec import request_digest
from engine.jobs.core import JobEvent, JobState, Noticed, Warned
from engine.jobs.manager import JobManager
from engine.online.ports import OnlineStore
from engine.online.serving import ALIAS_ENDS, RUNNING
from engine.online.spec import (
    AliasState,
    Controls,
    NewExample,
    OnlineOutput,
    OnlineSession,
    OnlineSessionSpec,
    OnlineStats,
    learning_disabled,
    not_found,
    session_ended,
    session_exists,
)
from engine.registry import AdapterRegistry
from engine.registry.records import parse_version, version_not_found

MAX_WEIGHT = 100.0
MAX_ID_CHARS = FeedbackLimits.max_id_chars  # a client_example_id, as feedback's client_event_id
ENDED = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)
# How long a watch of an ended session waits for its live alias to be settled (the gate judges the last
# publications first: minutes on a CPU), and for the event that says so once it is (stored just after; its writer
# stopping between the two would leave it untold)
SETTLE_WAIT_SECONDS = 300.0
SETTLED_UNTOLD_SECONDS = 30.0


@dataclass(frozen=True)
class SessionView:
    """A session as clients see it: the job, its controls, and how many of its examples are stored after the last
    one its stats count (``unread``: sent to a queued or paused session, or not read or reported by its worker yet)."""

    job: OnlineSession
    controls: Controls
    unread: int = 0

    def with_job(self, job: OnlineSession) -> SessionView:
        return replace(self, job=job)

    @property
    def stats(self) -> OnlineStats:
        """The worker's figures, with what only the controls know (the setting in force, the API's refusals)."""
        stats = self.job.output.stats
        return replace(stats, enabled=self.controls.enabled, learning_rate=self.controls.learning_rate,
                       skipped_examples=stats.skipped_examples + self.controls.refused_examples)


@dataclass(frozen=True)
class Added:
    accepted: int
    refusals: tuple[str, ...]
    last_sequence: int
    duplicates: int = 0  # not stored: the session holds their client_example_id already


class OnlineSessions:
    def __init__(self, manager: JobManager[OnlineSessionSpec, OnlineOutput], store: OnlineStore, *,
                 registry: AdapterRegistry, active_version: Callable[[str], str], reserved_names: Sequence[str],
                 max_example_chars: int) -> None:
        self._manager = manager
        self._store = store
        self._registry = registry
        self._active_version = active_version  # of a base model ("" when none)
        self._reserved = set(reserved_names)  # names a live alias may not take (the LoraControl alias)
        self._max_chars = max_example_chars

    async def created(self, request_id: str, received: object) -> SessionView | None:
        """The session an earlier create with ``request_id`` and the same ``received`` made, for the API to answer a
        retry before it converts anything of the request (engine.jobs.manager.RetriedCreates); None without one."""
        earlier = await self._manager.created_for(request_id, request_digest(received)) if request_id else None
        return await self.get(earlier.id) if earlier is not None else None

    async def create(self, spec: OnlineSessionSpec, *, session_id: str = "", request_id: str = "",
                     received: object = None) -> SessionView:
        """Check ``spec`` (its start_version, the active version if it names none) and start a session of it. The
        session an earlier create with ``request_id`` and the same ``received`` (the request as the client sent it,
        before the server's defaults; ``spec`` and ``session_id`` if None) made is returned first, before anything
        is checked or resolved: a retry finds it whatever changed since (another version active, its start
        version deleted)."""
        digest = request_digest({"spec": spec, "session_id": session_id} if received is None else received)
        earlier = await self._manager.created_for(request_id, digest)
        if earlier is not None:
            return await self.get(earlier.id)
        if spec.live_alias:
            self._check_live_alias(spec.live_alias, spec.base_model)
        if not spec.start_version:
            active = self._active_version(spec.base_model)
            if not active:
                raise FailedPrecondition("ONLINE_NO_START_VERSION", f"no start_version was named and no version of "
                                                                    f"{spec.base_model} is active",
                                         metadata={"base_model": spec.base_model})
            spec = replace(spec, start_version=active)
        await self._registry.get(spec.base_model, spec.start_version, field_path="spec.start_version")
        job = self._manager.new_job(spec, OnlineOutput(stats=OnlineStats(learning_rate=spec.learning_rate)),
                                    request_id=request_id, digest=digest)
        if session_id:
            job = replace(job, id=session_id)
        # Creates of one session id take turns, in every process on the database, from the look for an earlier
        # create to the job's insert: a create that comes second finds the first's session (a retry of its
        # request_id) or is ALREADY_EXISTS, and never stores controls of its own nor discards the first's.
        async with self._store.creating(job.id):
            prior = await self._manager.check_request(job)  # a retry (the same request_id): the session it made
            if prior is not None:
                return await self.get(prior.id)
            if session_id and await self._exists(session_id):
                raise session_exists(session_id)
            await self._store.create(job.id, spec.learning_rate, base_model=spec.base_model,
                                     start_version=spec.start_version, live_alias=spec.live_alias,
                                     request_id=request_id)
            try:
                stored = await self._manager.submit(job)
            except BaseException:
                await self._store.discard(job.id)
                raise
            if stored.id != job.id:  # its request_id made a session before: that one, and these controls go
                await self._store.discard(job.id)
        return await self.get(stored.id)

    async def _exists(self, session_id: str) -> bool:
        try:
            await self._manager.get(session_id)
        except NotFound:
            return False
        return True

    async def _job(self, session_id: str) -> OnlineSession:
        try:
            return await self._manager.get(session_id)
        except NotFound:
            raise not_found(session_id) from None

    async def get(self, session_id: str) -> SessionView:
        return await self._view(await self._job(session_id), await self._store.controls(session_id))

    async def _view(self, job: OnlineSession, controls: Controls) -> SessionView:
        return (await self._views([job], {job.id: controls}))[0]

    async def _views(self, jobs: Sequence[OnlineSession],
                     controls: Mapping[str, Controls]) -> builtins.list[SessionView]:
        """``jobs`` with their ``controls`` (a job without any is left out: its create is under way)."""
        shown = [j for j in jobs if j.id in controls]
        unread = await self._store.unread({j.id: j.output.stats.last_sequence for j in shown})
        return [SessionView(j, controls[j.id], unread.get(j.id, 0)) for j in shown]

    async def job(self, session_id: str) -> OnlineSession:
        """NOT_FOUND (ONLINE_SESSION_NOT_FOUND) for a session that does not exist."""
        return await self._job(session_id)

    async def note(self, session_id: str, *payloads: object, output: OnlineOutput | None = None) -> None:
        """Events on the log of a session that has ended (what became of its live alias, the gate's verdicts on
        its last publications), and, given ``output``, its output as it is now."""
        await self._manager.note(session_id, *payloads, output=output)

    async def list(self, *, page_size: int, page_token: str) -> tuple[builtins.list[SessionView], str]:
        jobs, token = await self._manager.list(states=(), page_size=page_size, page_token=page_token)
        return await self._views(jobs, await self._store.controls_of([j.id for j in jobs])), token

    async def running(self) -> builtins.list[OnlineSession]:
        return await self._every(RUNNING)

    async def ended(self) -> builtins.list[OnlineSession]:
        """Every session that has ended (succeeded, failed or stopped)."""
        return await self._every(ENDED)

    async def _every(self, states: Sequence[JobState]) -> builtins.list[OnlineSession]:
        """Every session in one of ``states``, page by page."""
        found: builtins.list[OnlineSession] = []
        token = ""
        while True:
            jobs, token = await self._manager.list(states=states, page_size=100, page_token=token)
            found.extend(jobs)
            if not token:
                return found

    async def move_alias(self, session_id: str, version: str) -> SessionView:
        """Point the session's live alias at ``version`` (of its base model), without the gate: an operator's
        choice. While the session runs, its next publication that passes the gate moves it again."""
        parse_version(version, "version")  # a malformed one is INVALID_ARGUMENT whatever the session
        job = await self._job(session_id)
        await self._registry.get(job.spec.base_model, version, field_path="version")
        controls = await self._store.move_alias(session_id, version)
        if controls is None:
            raise await self._no_alias(job)
        if controls.alias_version != version:  # deleted since the look above: the alias stays where it was
            raise version_not_found(job.spec.base_model, version)
        return await self._view(job, controls)

    async def remove_alias(self, session_id: str) -> SessionView:
        """The session's live alias is no longer routed, on any serving process from its next look."""
        job = await self._job(session_id)
        controls = await self._store.remove_alias(session_id)
        if controls is None:
            raise await self._no_alias(job)
        return await self._view(job, controls)

    async def _no_alias(self, job: OnlineSession) -> FailedPrecondition:
        controls = await self._store.controls(job.id)
        why = {AliasState.NONE: "names no live alias", AliasState.ENDED: f"ended its live alias "
               f"{controls.live_alias!r} with it (no publication passed the gate)",
               AliasState.REMOVED: f"had its live alias {controls.live_alias!r} removed"}.get(
                   controls.alias_state, "has no live alias routed")
        return FailedPrecondition("ONLINE_NO_LIVE_ALIAS", f"online session {job.name} {why}",
                                  metadata={"name": job.name, "live_alias": controls.live_alias,
                                            "alias_state": controls.alias_state.value or "NONE"})

    def _check_live_alias(self, alias: str, base_model: str) -> None:
        """INVALID_ARGUMENT for a live alias that is a name the gateway resolves otherwise: routed as the alias, it
        would take that name's requests (the base model's, a version's, another session's live name) away from what
        they ask for. The LoraControl alias, the base model's id, and any ``<base>@...`` name (a version's serving
        name, a session's live name) are the gateway's own."""
        why = ("the serving alias LoraControl routes" if alias in self._reserved
               else "the base model's own name" if alias == base_model
               else "of the form <base>@..., the gateway's names of versions and of sessions' live names"
               if "@" in alias else "")
        if why:
            raise InvalidArgument("INVALID_ONLINE_SETTING", f"spec.live_alias {alias!r} is {why}; name another",
                                  violations=[FieldViolation("spec.live_alias", f"must not be {why}")])

    async def _open(self, session_id: str) -> OnlineSession:
        """The session, FAILED_PRECONDITION once it has ended."""
        job = await self._job(session_id)
        if job.state.terminal or job.state is JobState.CANCELLING:
            raise session_ended(session_id, job.state)
        return job

    async def stop(self, session_id: str) -> SessionView:
        await self._open(session_id)
        job = await self._manager.cancel(session_id)
        return await self._view(job, await self._store.controls(session_id))

    async def set_learning_rate(self, session_id: str, learning_rate: float) -> SessionView:
        check_learning_rate(learning_rate, "learning_rate")
        await self._open(session_id)
        await self._store.set(session_id, learning_rate=learning_rate)
        return await self.get(session_id)

    async def set_enabled(self, session_id: str, enabled: bool, reason: str = "") -> SessionView:
        await self._open(session_id)
        await self._store.set(session_id, enabled=enabled, disabled_reason="" if enabled else reason)
        return await self.get(session_id)

    async def force_update(self, session_id: str) -> SessionView:
        """One update now on what is buffered. FAILED_PRECONDITION (ONLINE_LEARNING_DISABLED) while learning is
        disabled: the runner only updates an enabled session, so the request would sit unseen until someone enabled
        learning, and the caller, told "requested", would wait for an update that does not come. The check and the
        request are one write (a disable committed between them would leave the request unseen)."""
        await self._open(session_id)
        controls, requested = await self._store.request(session_id, "force_updates", while_enabled=True)
        if not requested:
            raise learning_disabled(session_id, controls.disabled_reason)
        return await self.get(session_id)

    async def publish(self, session_id: str) -> SessionView:
        """A publication at the session's next update point (learning disabled or not: it publishes what the
        session has learned so far)."""
        await self._open(session_id)
        await self._store.request(session_id, "publish_requests")
        return await self.get(session_id)

    async def add(self, session_id: str, examples: Sequence[NewExample], *, offset: int = 0) -> Added:
        """Store the acceptable ``examples``, but those whose client_example_id the session holds already
        (duplicates: a retry's); the others are refused with why (``offset``: the index of the first in the
        caller's numbering). A KTO session keeps each example's label; an SFT session stores none (the label true
        it takes says what SFT assumes of every example). FAILED_PRECONDITION (ONLINE_SESSION_ENDED) once the
        session is stopping: an example stored is one its stop counts (OnlineStore.add)."""
        job = await self._open(session_id)
        kto = job.spec.loss is Objective.KTO
        rows, refusals = [], []
        for i, example in enumerate(examples, start=offset):
            why = self._refusal(example, kto)
            if why:
                refusals.append(f"examples[{i}]: {why}")
            else:
                rows.append(example if kto else replace(example, desirable=None))
        stored = await self._store.add(session_id, rows, refused=len(refusals))
        return Added(len(rows) - stored.duplicates, tuple(refusals), stored.last_sequence, stored.duplicates)

    def _refusal(self, example: NewExample, kto: bool) -> str:
        ident = example.client_example_id
        if len(ident) > MAX_ID_CHARS or not ident.isprintable():
            return f"client_example_id must be at most {MAX_ID_CHARS} printable characters"
        if not example.prompt.strip():
            return "empty prompt"
        size = len(example.prompt) + len(example.target)
        if size > self._max_chars:
            return f"{size} characters, over the limit of {self._max_chars}"
        if not (math.isfinite(example.weight) and 0 <= example.weight <= MAX_WEIGHT):
            return f"weight {example.weight} is outside [0, {MAX_WEIGHT:g}]"
        if kto and example.desirable is None:
            return "no desirable label: a KTO session needs one (true: an answer to give, false: one to avoid)"
        if kto and not example.target:
            return "no target: a KTO session learns from a prompt's answer labelled desirable or not"
        if not kto and example.desirable is False:
            return "desirable false: an SFT session would imitate the answer (a session with loss KTO learns to " \
                   "avoid it)"
        return ""

    async def watch(self, session_id: str, *, after_sequence: int = 0,
                    through_alias: bool = True) -> AsyncIterator[OnlineSession | JobEvent]:
        """The session as it is now, then its events, until it ends; and after (``through_alias``), while its live
        alias is not settled yet, what a serving process tells then: the gate's verdicts on its last publications
        and the alias KEPT or ENDED (engine.online.serving). An alias removed, or none, adds nothing to wait for;
        one that no serving process settles within SETTLE_WAIT_SECONDS (none runs for the base model, or the gate
        keeps failing) ends the watch all the same."""
        seen = after_sequence
        told = False  # the alias's end, on the events (already stored, it comes with the session's own)

        def tell(event: JobEvent) -> JobEvent:
            nonlocal seen, told
            seen = max(seen, event.sequence)
            told = told or _ends_alias(event)
            return event

        async for item in self._manager.watch(session_id, after_sequence=after_sequence):
            yield tell(item) if isinstance(item, JobEvent) else item
        if not through_alias or not (await self._manager.get(session_id)).state.terminal:  # paused: still followed
            return
        began = time.monotonic()
        settled_at: float | None = None

        async def done() -> bool:
            nonlocal settled_at, told
            if told:
                return True
            state = (await self._store.controls(session_id)).alias_state
            if state in (AliasState.NONE, AliasState.REMOVED):
                return True
            if state is AliasState.FOLLOWING:
                return time.monotonic() - began > SETTLE_WAIT_SECONDS
            # KEPT or ENDED: the event follows the write that settled it, unless its writer stopped between them;
            # it may be before ``after_sequence`` (a watch resumed past it), so the whole log is looked at, once
            if settled_at is None:
                settled_at = time.monotonic()
                _, events = await self._manager.events(session_id)
                told = any(_ends_alias(e) for e in events if e.sequence <= seen)  # later ones come in the watch
                if told:
                    return True
            return time.monotonic() - settled_at > SETTLED_UNTOLD_SECONDS

        async for event in self._manager.watch_ended(session_id, after_sequence=seen, done=done):
            yield tell(event)


def _ends_alias(event: JobEvent) -> bool:
    """Whether ``event`` is what a serving process says as it settles the session's live alias (KEPT or ENDED)."""
    return isinstance(event.payload, Noticed | Warned) and event.payload.code in ALIAS_ENDS


def check_learning_rate(value: float, field_path: str) -> None:
    if not (math.isfinite(value) and 0 < value <= 1):
        raise InvalidArgument("INVALID_ONLINE_SETTING", f"{field_path} {value} is outside (0, 1]",
                              violations=[FieldViolation(field_path, "must be in (0, 1]")])
