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

This module is the job's runner and PREPARING; the RUNNING loop and the stops are engine.online.session, what it
stores (live adapter, checkpoints, publications) engine.online.artifacts, what it does on a spike
engine.online.spikes, and what it holds while it runs engine.online.session_state.
"""

from __future__ import annotations

import asyncio
import functools
import shutil
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch

from engine.domain import Example, JsonlSource
from engine.errors import Cancelled, DataLoss, NotFound
from engine.jobs.context import IdleCancel
from engine.jobs.core import JobEvent, JobProgress, JobState, Noticed
from engine.lora.state import FeedbackRates
from engine.online.artifacts import STATE_FILE
from engine.online.interruptions import TRANSIENT_ERRORS, Ctx, hand_back
from engine.online.learner import OnlineLearner
from engine.online.ports import FeedbackExamples, OnlineStore
from engine.online.session import RunningSession, untrained_examples
from engine.online.session_state import OnlineConfig, SessionParts
from engine.online.spec import (
    CHECKPOINT_PREFIX,
    ONLINE_SESSION,
    OnlineOutput,
    OnlineSession,
    OnlineSessionSpec,
    Updated,
)
from engine.registry import AdapterRecord, AdapterRegistry
from engine.registry.ports import ArtifactStore
from engine.training.checkpoint_store import CheckpointArchive
from engine.training.loading import LoadedModel, load_for_training, release
from engine.training.ports import ContinualPlan, ContinualPlanner, PlanRequest
from engine.training.preparation import JobPreparer, inherit_lora
from engine.training.run import TrainingRun
from engine.training.spec import EwcSpec, Hyperparameters, TrainingJobSpec


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
        self._parts = SessionParts(store, registry, artifacts, config or OnlineConfig(), feedback, rates)
        self._preparer = preparer
        self._planner = planner
        self._load = load

    async def cancelled_while_idle(self, job: OnlineSession, events: Sequence[JobEvent]) -> IdleCancel[OnlineOutput]:
        """The job core's hook (engine.jobs.context.CancelHook) for a session stopped while queued (waiting for a
        place, or handed back by a stopping worker) or paused: as a running session's stop says, the examples it
        received and no update will train on, those waiting for a full update when it last ran and those stored
        after what it had read. The session is stored CANCELLED first, so an insert of examples is counted here or
        refused there (the count takes the session's lock, as ``OnlineStore.add`` does)."""
        stats = job.output.stats
        try:
            unread: int | None = await self._parts.store.count_after(job.id, stats.last_sequence)
        except TRANSIENT_ERRORS:
            unread = None
        _, warning = untrained_examples(stats.pending_examples, unread, job.spec.update_every)
        return IdleCancel(() if warning is None else (warning,))

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
            return await RunningSession(self._parts, ctx, learner, start, erasures=erasures, lineage=lineage).loop()
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
