"""An online session's run, a job of the typed job core on the training queue of any worker.

PREPARING loads the base model once with the start version's adapter attached (trainable) and, as a training
job continuing that version would, measures its Fisher on its own training data for the EWC penalty (a session
prepared again, after a hand-back, loads the snapshot of it an earlier run stored instead) and gathers its
lineage's data for replay (engine.continual.planner). A checkpoint, when the session has one, puts back the
adapter, the optimiser, the counters and the buffer.

RUNNING is a loop on the event loop that only waits: it reads new examples from PostgreSQL (from the last
sequence number read; with ``learn_from_feedback``, the feedback on the live model's answers is turned into
examples there first), reads the controls, and hands each update to the job's worker thread
(engine.online.learner). After an update: the adapter goes to the artifact store as the session's live adapter
(the serving side loads it under a new name and switches ``<base>@<session>`` to it), the stats go on the job,
and every ``checkpoint_every`` / ``publish_every`` updates a checkpoint is stored or a version published (its
parent the start version, or the session's previous publication; fenced by the job's lease). A loss spike puts
the adapter back, disables learning and says why on the controls; in the same write, every publication of the
weights it put aside fails the gate (check ``loss_spike``), and an alias serving one goes back to the newest
publication that passed before them and is still published, or the start version (where it cannot move, the
reason says what it still serves). So does a negative-feedback spike on the live
model (its ratings, read every ``feedback_seconds``, against the start version's), which also stores a
checkpoint of the start version's weights it put back and puts the alias back on the start version, failing the
gate of every publication not judged yet in the same write. ``online_max_update_share`` caps the share of
wall time updates take (the loop waits after each update in proportion), so a session never starves serving.

StopOnlineSession cancels the job: it stores a last checkpoint and ends CANCELLED, saying how many examples
received were never trained on (an EXAMPLES_NOT_TRAINED warning); from the stop on, a client's examples are refused
(ONLINE_SESSION_ENDED), and every one stored before is in that count. A worker shutting down stores
one and hands the session to another worker, which goes on from it. So does a running session that finds a store
unreachable for a moment (``TRANSIENT_ERRORS``: PostgreSQL restarting, the object store cut off), with a
SESSION_INTERRUPTED warning, instead of failing: it goes back to the queue, and the worker that takes it reads the
examples after its checkpoint again by sequence number, so none it had read is lost. A store error while a worker
prepares the session hands it back too. The interruptions in a row are counted on the job: each after the first
waits longer before the hand-back, and the ``MAX_INTERRUPTIONS``-th fails the session with the error.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import math
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import torch

from engine import telemetry
from engine.domain import (
    DatasetSummary,
    Example,
    FeedbackSource,
    JsonlSource,
    Objective,
    OnlineExamplesSource,
)
from engine.errors import Cancelled, DataLoss, FailedPrecondition, NotFound
from engine.jobs.core import JobProgress, JobState, Noticed, Warned
from engine.jobs.ports import StopReason
from engine.lora.state import FeedbackRates
from engine.online.interruptions import TRANSIENT_ERRORS, Ctx, describe, hand_back, steady_since
from engine.online.learner import OnlineLearner, UpdateResult
from engine.online.ports import FeedbackExamples, OnlineStore
from engine.online.spec import (
    CHECKPOINT_PREFIX,
    LIVE_PREFIX,
    ONLINE_SESSION,
    SPIKE_VERDICT,
    AliasState,
    FeedbackSpike,
    GateVerdict,
    LiveAdapter,
    LossSpike,
    NewExample,
    OnlineSession,
    OnlineSessionSpec,
    Publication,
    Published,
    Updated,
    live_model,
)
from engine.registry import AdapterRecord, AdapterRegistry, PublishRequest
from engine.registry.ports import ArtifactStore
from engine.registry.records import AdapterSource
from engine.thresholds import at_most
from engine.training.checkpoint_store import CheckpointArchive
from engine.training.loading import LoadedModel, load_for_training, release, save_adapter
from engine.training.ports import ContinualPlan, ContinualPlanner, PlanRequest
from engine.training.preparation import JobPreparer, inherit_lora
from engine.training.run import TrainingRun
from engine.training.spec import EwcSpec, Hyperparameters, TrainingJobSpec

STATE_FILE = "online.pt"
LIVE_KEPT = 3  # live archives kept in the store (the serving side needs only the newest)
CHECKPOINTS_KEPT = 2
BASELINE_WINDOW = timedelta(days=7)  # the start version's ratings a negative-feedback spike is judged against
FEEDBACK_LAG_SECONDS = 5.0  # feedback is read up to this long ago: events sent a moment late are not missed
# The verdict a loss spike records on the publications of the weights it put aside (not judged yet by the gate).
LOSS_SPIKE_VERDICT = GateVerdict(passed=False, failed_checks=("loss_spike",))
# Where the store moves a session's alias_version: the alias follows the session, or the session named none.
_ALIAS_MOVABLE = (AliasState.NONE, AliasState.FOLLOWING)


@dataclass(frozen=True)
class OnlineConfig:
    poll_seconds: float = 0.5
    max_update_share: float = 0.5  # of wall time; after an update of t seconds the loop waits t * (1 - s) / s
    fisher_batch_size: int = 4
    feedback_seconds: float = 5.0  # how often a session reads the feedback on its live model
    ratings_window_seconds: float = 3600.0  # the live model's ratings judged for a negative-feedback spike


def training_spec(spec: OnlineSessionSpec, parent: AdapterRecord, fisher_batch_size: int) -> TrainingJobSpec:
    """The session as the training job continuing its start version would be: what loads the model and plans
    EWC and replay (its dataset is never read: the session's examples come from its clients)."""
    ewc = EwcSpec(ewc_lambda=spec.ewc_lambda, replay_fraction=spec.replay_fraction, disabled=spec.ewc_lambda <= 0,
                  space=parent.ewc_fisher_space or EwcSpec().space)
    hp = Hyperparameters(max_seq_length=spec.max_seq_length, seed=spec.seed, batch_size=fisher_batch_size)
    return inherit_lora(TrainingJobSpec(base_model=spec.base_model, dataset=JsonlSource("-"), hyperparameters=hp,
                                        objective=spec.loss, parent_adapter_version=parent.version, ewc=ewc,
                                        lora_fields_set=()), parent)


class OnlineRunner:
    kind = ONLINE_SESSION

    def __init__(self, *, store: OnlineStore, registry: AdapterRegistry, preparer: JobPreparer,
                 planner: ContinualPlanner | None, artifacts: ArtifactStore, config: OnlineConfig | None = None,
                 feedback: FeedbackExamples | None = None, rates: FeedbackRates | None = None,
                 load: Any = load_for_training) -> None:
        self._parts = _Parts(store, registry, artifacts, config or OnlineConfig(), feedback, rates)
        self._preparer = preparer
        self._planner = planner
        self._load = load

    def fold(self, job: OnlineSession, payload: object) -> OnlineSession:
        if isinstance(payload, Updated):
            return replace(job, progress=JobProgress(payload.update, 0))
        return job

    async def run(self, ctx: Ctx) -> str:
        spec = ctx.job.spec
        ctx.transition(JobState.PREPARING, f"loading {spec.base_model} with {spec.start_version}")
        try:
            start, loaded, learner, erasures, request = await self._set_up(ctx)
        except TRANSIENT_ERRORS as exc:  # a store down: the session goes back to the queue (bounded)
            handed = await hand_back(ctx, exc, preparing=True)
            raise Cancelled("JOB_CANCELLED", "stopped to continue later" if handed
                            else "stopped before learning started") from exc
        try:
            if ctx.cancel.cancelled:
                raise Cancelled("JOB_CANCELLED", "stopped before learning started")
            ctx.started(JobState.RUNNING, f"learning online on {loaded.description} from {spec.start_version}")
            lineage = functools.partial(self._replay_pool, request) if learner.earlier else None
            return await _Session(self._parts, ctx, learner, start, erasures=erasures, lineage=lineage).loop()
        finally:
            release(loaded)

    async def _set_up(self, ctx: Ctx) -> tuple[AdapterRecord, LoadedModel, OnlineLearner, int, PlanRequest]:
        """The start version, the model loaded with it, the erasures counted, and the learner (EWC, replay, and
        the checkpoint put back); the model is released if any of it fails."""
        spec = ctx.job.spec
        start = await self._parts.registry.get(spec.base_model, spec.start_version, field_path="spec.start_version")
        parent_dir = await self._preparer.fetch_parent(start, ctx.work_dir / "start")
        model_dir = await self._preparer.model_dir(spec.base_model)
        tspec = training_spec(spec, start, self._parts.config.fisher_batch_size)
        run = TrainingRun(spec=tspec, base_model_dir=model_dir, examples=[], output_dir=ctx.work_dir / "unused",
                          parent_adapter_dir=parent_dir)
        loaded: LoadedModel = await ctx.in_worker(self._load, run)
        try:
            # The erasures counted before this worker reads any example: the data it reads is without what they
            # deleted, and it acts on those counted after.
            erasures = (await self._parts.store.controls(ctx.job.id)).erasures
            request = PlanRequest(spec=tspec, parent=start, parent_dir=parent_dir, model_dir=model_dir, examples=[],
                                  model=loaded, in_worker=ctx.in_worker, sink=ctx.sink, cancel=ctx.cancel)
            learner = await self._prepare(ctx, request)
        except BaseException:
            release(loaded)
            raise
        return start, loaded, learner, erasures, request

    async def _prepare(self, ctx: Ctx, request: PlanRequest) -> OnlineLearner:
        spec = ctx.job.spec
        penalty, earlier, snapshot = None, [], ""
        if self._planner is not None and (spec.ewc_lambda > 0 or spec.replay_fraction > 0):
            plan = await self._plan(ctx, request)
            penalty, earlier, snapshot = plan.penalty, plan.earlier, plan.lineage.fisher_snapshot
        ctx.set_output(replace(ctx.job.output, device=request.model.plan.device, fisher_snapshot=snapshot))
        learner = OnlineLearner(request.model, spec, penalty=penalty, earlier=earlier)
        if ctx.job.output.checkpoints:
            await self._resume(ctx, learner)
        return learner

    async def _plan(self, ctx: Ctx, request: PlanRequest) -> ContinualPlan:
        """EWC and replay: against the start version's Fisher snapshot an earlier run of the session measured and
        stored (OnlineOutput.fisher_snapshot), loaded, when there is one, as a training job resumed does
        (engine.training.runner ``_with_earlier_fisher``): a session handed back and prepared again does not measure
        and store it again. One gone or unreadable since is measured again, with a notice."""
        assert self._planner is not None
        stored, ewc = ctx.job.output.fisher_snapshot, request.spec.ewc
        if ewc.disabled or not stored:
            return await self._planner.plan(request)
        reuse = replace(request, spec=replace(request.spec, ewc=replace(ewc, fisher_snapshot=stored)))
        try:
            plan = await self._planner.plan(reuse)
        except (NotFound, DataLoss) as exc:  # the row deleted, the file missing or corrupt
            ctx.record(Noticed("FISHER_MEASURED_AGAIN", f"{stored}, the Fisher of {request.parent.version} an earlier "
                                                        f"run of this session stored, cannot be read ({exc.message}): "
                                                        "measuring it again"))
            return await self._planner.plan(request)
        ctx.record(Noticed("FISHER_OF_EARLIER_RUN", f"{stored}, the Fisher of {request.parent.version} an earlier run "
                                                    "of this session measured, anchors its EWC again"))
        return plan

    async def _replay_pool(self, request: PlanRequest) -> list[Example]:
        """The start version's lineage's data to replay, read again (a plan without EWC: nothing is measured),
        as the store has it now: without what DeleteUserFeedback deleted since it was read."""
        assert self._planner is not None
        replay_only = replace(request.spec, ewc=replace(request.spec.ewc, disabled=True))
        return (await self._planner.plan(replace(request, spec=replay_only))).earlier

    async def _resume(self, ctx: Ctx, learner: OnlineLearner) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        record = ctx.job.output.checkpoints[0]
        archive = CheckpointArchive(self._parts.artifacts, ctx.work_dir / "archive", prefix=CHECKPOINT_PREFIX)
        folder = await archive.fetch(record, ctx.work_dir / "resume")
        state = await asyncio.to_thread(torch.load, folder / STATE_FILE, map_location="cpu", weights_only=True)
        weights = await asyncio.to_thread(load_file, str(folder / "adapter" / "adapter_model.safetensors"))
        buffered = await self._parts.store.by_sequence(ctx.job.id, state["buffer"])
        pending = await self._parts.store.by_sequence(ctx.job.id, state["pending"])

        def put_back() -> None:
            set_peft_model_state_dict(learner.loaded.model, weights)
            learner.restore(state, buffered, pending)

        await ctx.in_worker(put_back)
        await asyncio.to_thread(shutil.rmtree, folder, True)
        ctx.record(Noticed("RESUMED", f"continuing from the checkpoint of update {record.step} (example "
                                      f"{learner.last_sequence} read, {len(buffered)} in the buffer, {len(pending)} "
                                      "waiting for an update)"))


@dataclass(frozen=True)
class _Parts:
    """What a running session works with."""

    store: OnlineStore
    registry: AdapterRegistry
    artifacts: ArtifactStore
    config: OnlineConfig
    feedback: FeedbackExamples | None
    rates: FeedbackRates | None


def _row(example: Example, desirable: bool | None) -> NewExample | None:
    """An example as a session stores it: the last user turn and the answer (earlier turns are not kept), with
    its KTO label (None: an SFT session's)."""
    if not example.is_chat:
        return NewExample(example.prompt, example.completion, example.weight, desirable) \
            if example.prompt.strip() else None
    users = [m.content for m in example.messages if m.role == "user"]
    answer = example.messages[-1]
    if not users or answer.role != "assistant":
        return None
    return NewExample(users[-1], answer.content, example.weight, desirable)


class _Session:
    """The running loop of one session (see the module docstring)."""

    def __init__(self, parts: _Parts, ctx: Ctx, learner: OnlineLearner, start: AdapterRecord, *, erasures: int = 0,
                 lineage: Callable[[], Awaitable[list[Example]]] | None = None) -> None:
        self.r = parts
        self.ctx = ctx
        self.learner = learner
        self.start = start
        self.id = ctx.job.id
        self.live_keys: collections.deque[str] = collections.deque()
        self.resting_until = 0.0
        # The weights (or the optimiser, the counters) changed since the last checkpoint: an update, or a
        # negative-feedback spike putting the start version's weights back, did it. A learner just built or just
        # restored from its checkpoint has nothing a checkpoint would add.
        self.changed = False
        # A loss spike put weights back that its write (learning off, verdicts, alias) has not stored yet: a stop
        # for a store's error stores no checkpoint of them, which would resume as if nothing had happened.
        self.spike_unstored = False
        done = ctx.job.output.publications
        if done:
            # A learner restored from a checkpoint older than the session's last publication (or, with none, from
            # the start version) trains again on examples that publication claimed: the next window starts after it.
            learner.published(done[-1].last_sequence)
        self.feedback_at = 0.0  # when the feedback was last read (monotonic)
        self.ran_since: float | None = None  # when the loop started (monotonic): a long run resets the interruptions
        self.erasures_seen = erasures  # the session's erasure count (Controls.erasures) acted on
        self.lineage = lineage  # reads the lineage's data the learner replays again (None: it holds none)
        scratch = ctx.work_dir / "archive"
        self.live_archive = CheckpointArchive(parts.artifacts, scratch, prefix=LIVE_PREFIX)
        self.checkpoint_archive = CheckpointArchive(parts.artifacts, scratch, prefix=CHECKPOINT_PREFIX)

    @property
    def spec(self) -> OnlineSessionSpec:
        return self.ctx.job.spec

    async def loop(self) -> str:
        self.ran_since = time.monotonic()
        while True:
            if self.ctx.cancel.cancelled:
                return await self._stop()
            try:
                updated = await self._tick()
            except TRANSIENT_ERRORS as exc:
                return await self._interrupted(exc)
            if not updated:
                await asyncio.sleep(self.r.config.poll_seconds)

    async def _tick(self) -> bool:
        """One look at the controls and the examples, and an update when one is due; whether one was made."""
        ctx, learner = self.ctx, self.learner
        controls = await self.r.store.controls(self.id)
        if controls.refused_examples > ctx.job.output.refused_warned:
            await self._warn_refused(controls.refused_examples)
        if controls.erasures != self.erasures_seen:
            await self._forget_erased(controls.erasures)
        if time.monotonic() - self.feedback_at >= self.r.config.feedback_seconds:
            self.feedback_at = time.monotonic()
            if self.spec.learn_from_feedback:
                await self._take_feedback()
            if controls.enabled and await self._feedback_spike():
                controls = await self.r.store.controls(self.id)
        room = self.spec.buffer_size - len(learner.pending)  # the rest wait in the database, never dropped
        rows = await self.r.store.after(self.id, learner.last_sequence, room) if room > 0 else []
        if rows:
            warnings = learner.add(rows)
            if warnings:
                ctx.record(Warned("EXAMPLES_SKIPPED", f"{len(warnings)} examples skipped: {warnings[0]}"))
        output = ctx.job.output
        forced = controls.force_updates > output.force_updates_seen
        publish = controls.publish_requests > output.publish_requests_seen
        updated = False
        if controls.enabled and time.monotonic() >= self.resting_until and learner.due(forced):
            await self._update(controls.learning_rate)
            updated = True
        if publish and learner.updates > 0:
            await self._publish()
        output = ctx.job.output
        ctx.set_output(replace(
            output,
            stats=learner.stats(learning_rate=controls.learning_rate, enabled=controls.enabled,
                                published=len(output.publications)),
            # a forced update is done once one update followed it (or there was nothing to update)
            force_updates_seen=controls.force_updates if forced and (updated or not learner.pending)
            else output.force_updates_seen,
            publish_requests_seen=controls.publish_requests if learner.updates > 0
            else output.publish_requests_seen,
        ))
        if rows or forced or publish or updated:
            await ctx.persist()
        return updated

    async def _update(self, learning_rate: float) -> None:
        ctx, learner, spec = self.ctx, self.learner, self.spec
        began = time.monotonic()
        result: UpdateResult = await ctx.in_worker(learner.update, learning_rate)
        self.changed = True  # also a skipped update: its counters and optimiser moved
        took = time.monotonic() - began
        share = self.r.config.max_update_share
        self.resting_until = time.monotonic() + (took * (1 - share) / share if 0 < share < 1 else 0.0)
        spiked = not math.isnan(result.spike_median)
        self.spike_unstored = spiked
        telemetry.online_update(self.id, "SKIPPED" if result.skipped else "SPIKE" if spiked else "TRAINED",
                                result.loss)
        if result.skipped:
            ctx.record(Warned("UPDATE_SKIPPED", f"update {result.update}: {result.skipped}"))
            return
        await self._refresh_live(result.update)
        if spiked:
            factor = result.loss / result.spike_median
            # The publications made after the update whose weights were put back published weights put aside.
            aside = [p.version for p in ctx.job.output.publications if p.update > result.put_back_to]
            reason = (f"loss spike at update {result.update}: loss {result.loss:.4g} is {factor:.1f}x the median "
                      f"{result.spike_median:.4g} of the last updates (limit {spec.loss_spike_factor:g}x); the "
                      "adapter was put back to its weights before the update that made it"
                      f"{f' (those of update {result.put_back_to})' if result.put_back_to else ''}")
            if aside:
                reason += (f"; {', '.join(aside)} published weights it put aside: "
                           f"{'it fails' if len(aside) == 1 else 'they fail'} the gate (loss_spike)")
            await ctx.persist()  # a session read as disabled already serves the weights put back
            reason, back = await self._loss_spike_write(reason, aside)
            if back is not None:
                ctx.record(Warned("LIVE_ALIAS_MOVED_BACK", f"the live alias served {back[0]}, whose weights the "
                                                           f"loss spike at update {result.update} put aside; it "
                                                           f"serves {back[1]} again"))
            self.spike_unstored = False
            ctx.record(LossSpike(result.update, result.loss, result.spike_median, factor))
            ctx.record(Warned("LEARNING_DISABLED", reason))
        stats = learner.stats(learning_rate=learning_rate, enabled=math.isnan(result.spike_median),
                              published=len(ctx.job.output.publications))
        # an update made and its live adapter stored: the stores answer, the interruptions in a row start again
        ctx.set_output(replace(ctx.job.output, stats=stats, interruptions=0))
        ctx.record(Updated(result.update, result.loss, result.examples, result.replayed, result.ewc_penalty, stats))
        if spec.publish_every and learner.updates % spec.publish_every == 0:
            await self._publish()
        if learner.updates % spec.checkpoint_every == 0:
            await self._checkpoint()

    async def _loss_spike_write(self, reason: str, aside: list[str]) -> tuple[str, tuple[str, str] | None]:
        """Learning off after a loss spike, in one write (as a negative-feedback spike's) with a failed verdict
        (``loss_spike``) on each publication of ``aside`` the gate has not judged, and the live alias moved off the
        one of them it serves, if any: back to the newest publication before them that passed the gate and is
        still published (made after the last negative-feedback spike, which put those before it aside), or else
        the start version. Where the alias serves another version it is written again as it is, so that a verdict
        the gate records between the read and the write does not leave it on weights put aside.

        The store moves the alias only onto a version still published, and only while it follows the session:
        what it serves is read from the controls the write returns, not assumed. A version deleted between the
        look-up and the write leaves the alias where it was, and the next one is tried. Where it could not move
        (a kept alias never does; nothing to go back to is published any more) ``reason`` says what it still serves.
        The reason as stored, and (version it served, version it serves now) when it moved."""
        ctx, spec = self.ctx, self.spec
        if not aside:
            await self.r.store.set(self.id, enabled=False, disabled_reason=reason)
            return reason, None
        controls = await self.r.store.controls(self.id)
        since = ctx.job.output.ratings_since
        passed = [p.version for p in reversed(ctx.job.output.publications) if p.version not in aside
                  and (since is None or p.time >= since)
                  and (verdict := controls.gate(p.version)) is not None and verdict.passed]
        versions = iter((*passed, spec.start_version))  # newest first, the start version last

        async def next_published() -> str | None:
            for version in versions:
                try:
                    await self.r.registry.get(spec.base_model, version)
                except NotFound:  # deleted since it was published (DeleteAdapter, retention)
                    continue
                return version
            return None

        target = controls.alias_version
        if controls.alias_serves in aside:
            target = await next_published() or controls.alias_version
        after = await self.r.store.set(self.id, enabled=False, disabled_reason=reason, alias_version=target,
                                       verdicts={v: LOSS_SPIKE_VERDICT for v in aside})
        # what the alias served of the weights put aside: as read, or as the gate moved it meanwhile
        served = controls.alias_serves if controls.alias_serves in aside else after.alias_serves
        while after.alias_serves in aside and after.alias_state in _ALIAS_MOVABLE:
            version = await next_published()
            if version is None:
                break
            after = await self.r.store.set(self.id, alias_version=version)
        if after.alias_serves not in aside:
            return reason, ((served, after.alias_serves) if served in aside else None)
        if after.alias_state.routed:
            if after.alias_state is AliasState.KEPT:
                why = "it is kept there (it no longer follows the session) and was not moved"
            else:
                why = ("no publication that passed the gate before them is still published, nor is the start "
                       f"version {spec.start_version}")
            reason += (f"; the live alias {after.live_alias or spec.live_alias!r} still serves {after.alias_serves}, "
                       f"whose weights the spike put aside: {why} (MoveLiveAlias moves it)")
            await self.r.store.set(self.id, disabled_reason=reason)
        return reason, None

    async def _warn_refused(self, refused: int) -> None:
        """Examples the API refused on arrival since the last warning (it counts them on the controls; the response
        that sent them named each and why): one EXAMPLES_REFUSED warning for them, stored at once with the count it
        covers, so that it is given once, also across a restart."""
        ctx = self.ctx
        new = refused - ctx.job.output.refused_warned
        ctx.set_output(replace(ctx.job.output, refused_warned=refused))
        ctx.record(Warned("EXAMPLES_REFUSED", f"{new} example{'' if new == 1 else 's'} refused on arrival ({refused} "
                                              "in all); the AddExamples or StreamExamples response that sent "
                                              f"{'it' if new == 1 else 'them'} said which and why"))
        await ctx.persist()

    async def _take_feedback(self) -> None:
        """The feedback on the live model's answers since the last read, as examples: what a training job's
        feedback dataset of the session's loss makes of it. SFT keeps corrections and responses voted for, never
        a voted-down response; KTO keeps those as desirable, and voted-down responses (and responses a correction
        replaced) as undesirable, each with its label.

        The last read ends at the store's watermark, not at the job's ``feedback_through`` (the copy the API
        shows): the store moves it in the transaction that stores the window's examples, and the job is stored
        after. A worker that dies (or fails to store the job) in between leaves the window read, so the worker
        going on from the job does not make the same feedback into examples, and train on them, twice."""
        ctx, spec = self.ctx, self.spec
        if self.r.feedback is None:
            return
        stored = await self.r.store.feedback_through(self.id)
        shown = ctx.job.output.feedback_through
        # The store's is later after a crash between the two writes: the job shows it from now on. The job's copy is
        # later only where a worker of an earlier server version read on after migration 0026 copied it to the
        # store: that window was made into examples too, so the read starts after it.
        if stored is not None and (shown is None or stored > shown):
            ctx.set_output(replace(ctx.job.output, feedback_through=stored))
        start = ctx.job.output.feedback_through or ctx.job.create_time
        end = datetime.now(UTC) - timedelta(seconds=FEEDBACK_LAG_SECONDS)
        if end <= start:
            return
        source = FeedbackSource(adapter_version=live_model(spec.base_model, self.id), min_samples=0)
        kto = spec.loss is Objective.KTO
        found: list[tuple[Example, bool | None, frozenset[str]]]
        try:
            built = await self.r.feedback.rebuild(source, spec.loss, start, end, base_model=spec.base_model)
            if kto:
                found = list(zip(built.examples, built.desirable, built.users, strict=True))
            else:
                found = [(e, None, u) for e, u in zip(built.wanted(), built.wanted_users(), strict=True)]
        except FailedPrecondition:  # none in the window
            found = []
        kept = [(row, users) for row, users in ((_row(e, d), u) for e, d, u in found) if row is not None]
        rows = [row for row, _ in kept]
        # each with its users, so that DeleteUserFeedback deletes it with their events
        stored_rows = await self.r.store.add_feedback(self.id, rows, [users for _, users in kept], since=stored,
                                                      through=end)
        if stored_rows is None:
            return  # read already, by a worker that held the session before this one; the next read goes on after it
        if stored_rows:
            ctx.record(Noticed("FEEDBACK_EXAMPLES", f"{stored_rows} examples from the feedback on "
                                                    f"{source.adapter_version} up to {end:%H:%M:%S} UTC"))
        ctx.set_output(replace(ctx.job.output, feedback_through=end))
        await ctx.persist()

    async def _forget_erased(self, erasures: int) -> None:
        """DeleteUserFeedback deleted data this session may hold: the session's own examples, or its lineage's
        data (other sessions' examples, feedback events). What the learner holds of it (to train on, or to replay)
        goes too. What earlier updates learnt from it stays in the weights, as in any version trained on it."""
        learner = self.learner
        held = [h.seq for h in (*learner.buffer, *learner.pending)]
        present = await self.r.store.present(self.id, held)
        lineage = await self.lineage() if self.lineage is not None and learner.earlier else None
        dropped = await self.ctx.in_worker(learner.forget, present, lineage)
        self.erasures_seen = erasures
        if dropped:
            self.ctx.record(Noticed("EXAMPLES_ERASED", f"dropped {dropped} of the examples held in memory: they were "
                                                       "made from feedback deleted since (DeleteUserFeedback)"))
            await self.ctx.persist()

    async def _feedback_spike(self) -> bool:
        """Whether users rate the live model down: its negative rate over the ratings window (at least
        ``negative_feedback_min_ratings`` ratings) above the start version's over the last week by more than
        ``negative_feedback_margin``. If so, learning is disabled, the live model is put back to the start
        version's weights and the alias to the start version, with the figures."""
        ctx, spec = self.ctx, self.spec
        if self.r.rates is None or spec.negative_feedback_margin <= 0:
            return False
        now = datetime.now(UTC)
        since = max(ctx.job.output.ratings_since or ctx.job.create_time,
                    now - timedelta(seconds=self.r.config.ratings_window_seconds))
        live = await self.r.rates.named(since, live_model(spec.base_model, self.id), base_model=spec.base_model)
        if live.total < spec.negative_feedback_min_ratings:
            return False
        start = await self.r.rates.counts(spec.base_model, spec.start_version, now - BASELINE_WINDOW)
        if at_most(live.negative_rate, start.negative_rate + spec.negative_feedback_margin):
            return False
        spike = FeedbackSpike(self.learner.updates, live.total, live.negative, start.negative_rate, start.total,
                              spec.negative_feedback_margin)
        reason = (f"negative-feedback spike: {live.negative} of {live.total} ratings of "
                  f"{live_model(spec.base_model, self.id)} since {since:%H:%M:%S} UTC were negative "
                  f"({spike.negative_rate:.1%}), above {spec.start_version}'s {start.negative_rate:.1%} of "
                  f"{start.total} by more than {spec.negative_feedback_margin:.1%}; the live model was put back to "
                  f"{spec.start_version}'s weights and the alias to {spec.start_version}")
        # The live model is put back and stored first, so a session read as disabled already serves the start
        # weights, and checkpointed (with the job), so a worker that goes on from here, after a stop or a crash,
        # resumes the start weights and not those users rated down. The ratings are put aside last: a crash before
        # that finds the same spike again on resume.
        await ctx.in_worker(self.learner.put_back_start)
        self.changed = True
        await self._refresh_live(self.learner.updates)
        await self._checkpoint()
        # Learning off, the alias back on the start version and a failed verdict on every publication the gate has
        # not judged yet, in one write: the gate, which judges a publication against what the alias serves and
        # moves it onto one that passes, never moves it back onto weights of before the spike.
        await self.r.store.set(self.id, enabled=False, disabled_reason=reason, alias_version=spec.start_version,
                               verdicts={p.version: SPIKE_VERDICT for p in ctx.job.output.publications})
        ctx.set_output(replace(ctx.job.output, ratings_since=now))
        ctx.record(spike)
        ctx.record(Warned("LEARNING_DISABLED", reason))
        await ctx.persist()
        return True

    async def _save_adapter(self, name: str) -> Path:
        folder = self.ctx.work_dir / name
        await asyncio.to_thread(shutil.rmtree, folder, True)
        return await self.ctx.in_worker(save_adapter, self.learner.loaded.model, folder)

    async def _refresh_live(self, update: int) -> None:
        """The adapter as it is now, stored for the serving side to load (the newest few are kept)."""
        folder = await self._save_adapter("live")
        live = self.ctx.job.output.live
        refresh = (live.refresh if live is not None else 0) + 1
        record = await self.live_archive.save(self.id, refresh, self.ctx.lease_token, folder, loss=0.0,
                                              eval_loss=None)
        self.ctx.set_output(replace(self.ctx.job.output, live=LiveAdapter(update, record.key, record.sha256,
                                                                          refresh)))
        self.live_keys.append(record.key)
        if len(self.live_keys) > LIVE_KEPT:
            await self.r.artifacts.delete([self.live_keys.popleft()])

    async def _publish(self) -> None:
        """Publish the adapter as it is now, claiming the examples trained on since the last publication. Nothing
        is published, with a PUBLISH_SKIPPED notice, when the session's last publication is at this update or a
        later one (a worker that resumed from an older checkpoint: its weights are older than that publication's,
        which it would follow as a child), or when no example was trained on since it."""
        ctx, learner, spec = self.ctx, self.learner, self.spec
        done = ctx.job.output.publications
        skipped = ""
        if done and learner.updates <= done[-1].update:
            skipped = (f"{done[-1].version} was published at update {done[-1].update}, which this session has not "
                       "gone past since it resumed from an older checkpoint; the next publication after that update "
                       f"follows on from {done[-1].version}")
        elif learner.trained_through < learner.window_first:
            skipped = (f"no example was trained on since {done[-1].version if done else 'the last publication'}, "
                       f"whose window ended at example {learner.window_first - 1}")
        if skipped:
            ctx.record(Noticed("PUBLISH_SKIPPED", f"nothing published at update {learner.updates}: {skipped}"))
            return
        parent = self.start
        if done:
            parent = await self.r.registry.get(spec.base_model, done[-1].version)
        folder = await self._save_adapter("publish")
        first, last = learner.window_first, learner.trained_through
        trained_on = await self.r.store.window(self.id, first, last)  # read again by later jobs' EWC and replay
        wanted = len(trained_on.wanted())
        count = len(trained_on.examples)
        parts = (("online", count),) if trained_on.desirable is None else tuple(
            (k, n) for k, n in (("online_desirable", wanted), ("online_undesirable", count - wanted)) if n)
        dataset = DatasetSummary(digest=trained_on.digest, example_count=count, composition=parts,
                                 objective=spec.loss, source=OnlineExamplesSource(self.id, first, last))
        try:
            record = await self.r.registry.publish(PublishRequest(
                base_model=spec.base_model, adapter_dir=folder, parent=parent, patch=True, source=AdapterSource.ONLINE,
                training_job=ctx.job.name, train_loss=learner.stats(learning_rate=0, enabled=True,
                                                                    published=0).average_loss or 0.0,
                ewc_lambda=spec.ewc_lambda, fisher_snapshot=ctx.job.output.fisher_snapshot, dataset=dataset,
                labels=(("online_session", self.id), ("examples", f"{first}-{last}")),
                request_id=f"{ctx.job.name}/publish/{learner.updates}", fence=(ctx.job.id, ctx.lease_token),
            ))
        finally:
            await asyncio.to_thread(shutil.rmtree, folder, True)
        publication = Publication(record.version, learner.updates, first, last, datetime.now(UTC))
        learner.published(last)
        ctx.set_output(replace(ctx.job.output, publications=(*done, publication)))
        ctx.record(Published(publication))
        await ctx.persist()

    async def _checkpoint(self) -> None:
        ctx, learner = self.ctx, self.learner
        if not self.changed and ctx.job.output.checkpoints:
            return
        folder = ctx.work_dir / "checkpoint"
        await asyncio.to_thread(shutil.rmtree, folder, True)

        def write() -> None:
            learner.loaded.model.save_pretrained(folder / "adapter", safe_serialization=True)
            torch.save(learner.state(), folder / STATE_FILE)

        await ctx.in_worker(write)
        archive = self.checkpoint_archive
        record = await archive.save(self.id, learner.updates, ctx.lease_token, folder,
                                    loss=learner.last_loss, eval_loss=None)
        # a second checkpoint at the same update (a feedback spike's) is stored under the same key: it replaces it
        kept = (record, *(c for c in ctx.job.output.checkpoints if c.key != record.key))
        ctx.set_output(replace(ctx.job.output, checkpoints=kept[:CHECKPOINTS_KEPT]))
        await ctx.persist()
        self.changed = False
        if len(kept) > CHECKPOINTS_KEPT:
            await archive.delete(list(kept[CHECKPOINTS_KEPT:]))

    async def _stop(self) -> str:
        """A stop asked by a client (a last checkpoint, then CANCELLED) or by this worker's shutdown or a pause
        (a checkpoint, then the session goes to another worker); a lost lease writes nothing more. A store out of
        reach does not turn a client's stop into a failure: the checkpoint is then not stored (a notice says so)
        and the examples not read yet are not counted."""
        reason = self.ctx.cancel.reason
        if reason is not StopReason.LEASE_LOST and self.changed:
            await self._checkpoint_if_possible()
        if reason is StopReason.CANCEL:
            raise Cancelled("JOB_CANCELLED", await self._untrained())
        raise Cancelled("JOB_CANCELLED", "stopped to continue later")

    async def _interrupted(self, exc: BaseException) -> str:
        """A store could not be reached for a moment (``TRANSIENT_ERRORS``): the session stops as at this worker's
        shutdown instead of failing. After a wait that grows with the interruptions in a row (none after the
        first), it stores a checkpoint if it can (the store may still be down: the worker going on from it then
        starts from the previous one) and goes back to the queue; the worker that takes it resumes from its
        checkpoint and reads the examples after it again by sequence number, so an example read (or popped for an
        update the error cut short) is trained on, once the stores are back. The ``MAX_INTERRUPTIONS``-th in a row
        fails the session with the error (engine.online.interruptions). A stop asked meanwhile goes on as asked (a
        client's stop ends the session; a lost lease writes nothing)."""
        if not await hand_back(self.ctx, exc, steady=steady_since(self.ran_since)):
            return await self._stop()  # a client's stop, asked before or during the wait
        if self.changed and not self.spike_unstored:
            await self._checkpoint_if_possible()
        raise Cancelled("JOB_CANCELLED", "stopped to continue later")

    async def _checkpoint_if_possible(self) -> None:
        """A checkpoint before the session goes to another worker; if a store cannot be reached, the worker going
        on from it starts from the previous one (the job, naming the checkpoints, is stored when it is released)."""
        ctx = self.ctx
        before = ctx.job.output.checkpoints
        try:
            await self._checkpoint()
        except TRANSIENT_ERRORS as exc:
            if ctx.job.output.checkpoints == before:  # not stored (else only the job's write failed: its release
                # writes the job, which names it)
                ctx.record(Noticed("CHECKPOINT_NOT_STORED", f"no checkpoint stored at update {self.learner.updates} "
                                                            f"({describe(exc)}): the worker going on "
                                                            "from the session starts from the previous one and "
                                                            "trains on the examples after it again"))

    async def _untrained(self) -> str:
        """The end of a session a client stopped: what it trained on, and the examples it received and never will
        train on (those waiting for a full update, and those stored and not read yet), with an EXAMPLES_NOT_TRAINED
        warning when there are any."""
        learner = self.learner
        waiting = len(learner.pending)
        try:
            # The session stored as stopping (CANCELLING) first: a client's insert of examples looks at that under
            # the session's lock, which the count takes too, so each example is counted here or refused there
            # (OnlineStore.add), none told it was stored and left out.
            await self.ctx.persist()
            unread: int | None = await self.r.store.count_after(self.id, learner.last_sequence)
        except TRANSIENT_ERRORS:  # the store out of reach: the examples not read yet are not counted
            unread = None
        trained = max(0, learner.total_examples - learner.skipped - waiting)
        said = f"stopped after {learner.updates} updates on {trained} examples"
        untrained = waiting + (unread or 0)
        if not untrained:
            return said if unread is not None else f"{said}; the examples not read yet could not be counted"
        unread_said = f"{unread} not read yet" if unread is not None else "those not read yet could not be counted"
        what = (f"{untrained} example{'' if untrained == 1 else 's'} received {'was' if untrained == 1 else 'were'} "
                f"not trained on ({waiting} waiting for a full update of {self.spec.update_every}, {unread_said})")
        self.ctx.record(Warned("EXAMPLES_NOT_TRAINED", f"{what}: the session stopped, so no update will train on "
                                                       "them; they stay in its examples until the retention "
                                                       "deletes them"))
        return f"{said}; {what}"

