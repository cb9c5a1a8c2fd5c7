"""Training jobs' runs (:class:`TrainingRunner`); validation at create time is engine.training.service's
(``TrainingJobs``).

A run: PREPARING (the inputs validated at create time, or resolved again from the job's provenance after a
restart; the parent fetched; the base model loaded once, with the job's adapter attached; for a continuation
the continual planner's penalty and replay, measuring the parent's Fisher on that same model), RUNNING (the
recipe in a worker thread; its checkpoints saved and resumed by engine.training.job_checkpoints), then publishing
the adapter as a new version with its provenance and lineage (what that registers: engine.training.job_results).
When the job ends (succeeded, failed or cancelled; not when it is paused or handed to another worker), its
metrics.csv and loss.png are stored beside it, best effort (engine.training.metrics; for a job cancelled while
paused or queued, no run of it left, by ``cancelled_while_idle``). A worker that takes a job up whose version an
earlier run published (its worker stopped before the job's end was stored) ends it SUCCEEDED with that version,
untrained again (``earlier_result``): only a version a run of the job published as its result
(engine.training.job_results's ``is_own_result``), not any other registered under the job's result request id
(``result_request_id``; a client's may no longer take one of those, server.convert_jobs.check_request_id, but a
version registered before could hold one).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from engine import telemetry
from engine.domain import BaseProtectionMethod, Example
from engine.errors import AlreadyExists, Cancelled
from engine.jobs.context import IdleCancel, JobContext
from engine.jobs.core import JobEvent, JobProgress, JobState, Noticed, Warned
from engine.jobs.ports import CancelToken, LeaseLost, StopReason
from engine.registry import AdapterRecord, AdapterRegistry
from engine.registry.ports import ArtifactStore
from engine.splits import Split, SplitRule
from engine.telemetry import tracer
from engine.training.base_kl import rehearsal_objective
from engine.training.checkpoint_store import CheckpointArchive
from engine.training.distributed import train as train_on_devices
from engine.training.job_checkpoints import resume_point, saver
from engine.training.job_results import is_own_result, publish_request, result_request_id, whose
from engine.training.kto import BALANCED_RANGE, KtoObjective, weight_balance
from engine.training.loading import LoadedModel, load_for_training, release
from engine.training.metrics import store_metrics
from engine.training.ports import BaseEwc, ContinualPlanner, PlanRequest, Rehearsal
from engine.training.preparation import JobPreparer, PreparedInputs, ResolvedDataset
from engine.training.run import AddedPenalties, KnowledgeProbe, TrainingResult, TrainingRun
from engine.training.run_state import Checkpointing
from engine.training.spec import TRAINING, StepMetrics, TrainingJob, TrainingJobSpec, TrainingOutput
from engine.training.tracking import TrackerRun, Trackers

log = logging.getLogger(__name__)

TrainFn = Callable[..., TrainingResult]
LoadFn = Callable[[TrainingRun], LoadedModel]


def _base_inputs(ctx: JobContext[TrainingJobSpec, TrainingOutput], run: TrainingRun,
                 loaded: LoadedModel) -> dict[str, Any]:
    """What the base protections build from (engine.training.ports' Rehearsal and BaseEwc): the job's model, the
    base model it was loaded from and how the job encodes its rows."""
    hp = run.spec.hyperparameters
    return {"model": loaded.model, "tokenizer": loaded.tokenizer, "plan": loaded.plan,
            "base_model_dir": run.base_model_dir, "quantization": hp.quantization.value,
            "max_seq_length": hp.max_seq_length, "cancel": ctx.cancel}


class TrainingRunner:
    """The training kind of job: see the module docstring."""

    kind = TRAINING

    def __init__(
        self,
        *,
        preparer: JobPreparer,
        registry: AdapterRegistry,
        planner: ContinualPlanner | None = None,
        train: TrainFn = train_on_devices,
        load: LoadFn = load_for_training,
        artifacts: ArtifactStore | None = None,
        probe: KnowledgeProbe | None = None,
        rehearsal: Rehearsal | None = None,
        base_ewc: BaseEwc | None = None,
        trackers: Trackers | None = None,
    ) -> None:
        self._preparer = preparer
        self._registry = registry
        self._planner = planner
        self._train = train
        self._load = load
        self._artifacts = artifacts  # where checkpoints go (None: the job does not checkpoint)
        self._probe = probe  # measures base retention after training (None: not measured)
        self._rehearsal = rehearsal  # the base model's answers for self-rehearsal (None: not available)
        self._base_ewc = base_ewc  # EWC against the base model (None: not available)
        self._trackers = trackers  # experiment trackers every job logs to (engine.training.tracking)
        self._tracking: dict[str, TrackerRun] = {}  # the runs of the jobs running here, by job id

    async def run(self, ctx: JobContext[TrainingJobSpec, TrainingOutput]) -> str:
        tracking = await self._start_tracking(ctx)
        try:
            message = await self._run(ctx)
        except Exception as exc:
            if _ends_the_job(exc, ctx.cancel):
                await self._store_metrics(ctx)
            raise
        finally:
            if tracking is not None:
                del self._tracking[ctx.job.id]
                await asyncio.to_thread(tracking.close)
        await self._store_metrics(ctx)
        return message

    async def _run(self, ctx: JobContext[TrainingJobSpec, TrainingOutput]) -> str:
        ctx.transition(JobState.PREPARING, "loading dataset and model")
        with tracer.start_as_current_span("training_job.prepare", attributes={"job": ctx.job.name}):
            inputs = await self._inputs(ctx)
            spec, dataset = inputs.spec, inputs.dataset
            parent_dir = await self._preparer.fetch_parent(inputs.parent, ctx.work_dir / "parent") \
                if inputs.parent is not None else None
            (trained, desirable), (held_out, held_out_desirable) = self._split(ctx, spec, dataset)
            if desirable is not None:
                _check_kto_balance(ctx, trained, desirable)
            run = TrainingRun(
                spec=spec, base_model_dir=inputs.model_dir, examples=trained, eval_examples=held_out,
                output_dir=ctx.work_dir / "adapter", parent_adapter_dir=parent_dir,
                objective=KtoObjective(desirable) if desirable is not None else None,
                eval_objective=KtoObjective(held_out_desirable) if held_out_desirable is not None else None,
                probe=self._probe,
            )
            loaded = await ctx.in_worker(self._load, run)
        try:
            ctx.set_output(replace(ctx.job.output, device=loaded.training_plan.device))
            if self._planner is not None and inputs.parent is not None and parent_dir is not None \
                    and (not spec.ewc.disabled or spec.ewc.replay_fraction > 0):
                plan = await self._planner.plan(PlanRequest(
                    spec=_with_earlier_fisher(ctx, spec), parent=inputs.parent, parent_dir=parent_dir,
                    model_dir=inputs.model_dir,
                    examples=run.examples, model=loaded,
                    in_worker=ctx.in_worker, sink=ctx.sink, cancel=ctx.cancel,
                    split=ctx.job.output.eval_split if run.eval_examples else None,
                ))
                objective = run.objective.extended(plan.replayed) if run.objective and plan.replayed \
                    else run.objective
                run = replace(run, penalty=plan.penalty, examples=plan.examples, objective=objective)
                ctx.set_output(replace(ctx.job.output, ewc_lineage=plan.lineage))
            run = await self._rehearse(ctx, run, loaded)
            run = await self._hold_to_base(ctx, run, loaded)
            if self._artifacts is not None:
                archive = CheckpointArchive(self._artifacts, ctx.work_dir / "archive")
                policy = spec.checkpoints
                run = replace(run, checkpointing=Checkpointing(
                    every_steps=policy.every_steps, every_seconds=policy.every_minutes * 60,
                    scratch_dir=ctx.work_dir / "checkpoint", save=saver(ctx, archive),
                    resume_from=await resume_point(ctx, archive),
                ))
        except BaseException:
            release(loaded)
            raise
        if ctx.cancel.cancelled:  # asked while it was preparing: stop before it says RUNNING
            release(loaded)
            raise Cancelled("JOB_CANCELLED", "stopped before training started")
        ctx.started(JobState.RUNNING, f"training on {loaded.description}")
        with tracer.start_as_current_span("training_job.train", attributes={"job": ctx.job.name}):
            result = await ctx.in_worker(self._train, run, ctx.sink, ctx.cancel, loaded)
        # The resolved summary knows the data's origin (feedback window, composition); training adds the tokens.
        summary = replace(dataset.summary, target_token_count=result.dataset.target_token_count)
        ctx.set_output(replace(ctx.job.output, dataset=summary, base_retention=result.base_retention))
        with tracer.start_as_current_span("training_job.publish", attributes={"job": ctx.job.name}):
            record = await self._publish(ctx.job, inputs.parent, result, fence=(ctx.job.id, ctx.lease_token))
        ctx.set_output(replace(ctx.job.output, adapter_version=record.version))
        return f"published adapter {record.version}"

    @staticmethod
    def _split(ctx: JobContext[TrainingJobSpec, TrainingOutput], spec: TrainingJobSpec, dataset: ResolvedDataset,
               ) -> tuple[tuple[list[Example], tuple[bool, ...] | None], tuple[list[Example], tuple[bool, ...] | None]]:
        """((trained on, their KTO labels), (held out, their KTO labels)) under the eval split: the dataset's own (a
        stored dataset's), else the job's; the rule used is recorded on the job, and on its version. The labels are
        None for an SFT job; the held-out ones make a KTO job's eval loss its KTO loss."""
        examples, desirable = dataset.examples, dataset.desirable
        rule = dataset.split or eval_split(spec)
        if dataset.split is not None and spec.hyperparameters.eval_fraction > 0:
            ctx.record(Noticed("EVAL_SPLIT_OF_THE_DATASET", "the dataset's own eval split is held out; the job's "
                                                            "eval_fraction is not applied on top of it"))
        if rule is None:
            return (examples, desirable), ([], None)
        sides = [rule.of(e) is Split.EVAL for e in examples]
        held_out = [e for e, out in zip(examples, sides, strict=True) if out]
        if not held_out or len(held_out) == len(examples):
            ctx.record(Warned("EVAL_SPLIT_EMPTY", f"eval_fraction {rule.eval_fraction:g} held out {len(held_out)} "
                                                  f"of the {len(examples)} examples: every example is trained on "
                                                  "and no eval loss is reported"))
            return (examples, desirable), ([], None)
        ctx.record(Noticed("EVAL_SPLIT", f"held out {len(held_out)} of {len(examples)} examples as the eval split "
                                         f"(by prompt, seed {rule.seed}): never trained on"))
        ctx.set_output(replace(ctx.job.output, eval_split=rule))
        trained = [e for e, out in zip(examples, sides, strict=True) if not out]
        if desirable is None:
            return (trained, None), (held_out, None)
        labels = [tuple(d for d, out in zip(desirable, sides, strict=True) if out == side) for side in (False, True)]
        return (trained, labels[0]), (held_out, labels[1])

    async def _rehearse(self, ctx: JobContext[TrainingJobSpec, TrainingOutput], run: TrainingRun,
                        loaded: LoadedModel) -> TrainingRun:
        """Self-rehearsal or BASE_KL when the job asks for it: the base model's own answers mixed into its examples,
        trained on (SELF_REHEARSAL) and/or held to the base model's distribution by a KL term (BASE_KL, or a
        kl_weight with SELF_REHEARSAL)."""
        protection = run.spec.base_protection
        if not protection.rehearses:
            return run
        if self._rehearsal is None:
            ctx.record(Warned("BASE_REHEARSAL_UNAVAILABLE", "this worker has no self-rehearsal set up: the job "
                                                            "trains without it"))
            return run
        mix = functools.partial(self._rehearsal.mix, run.examples, protection.fraction,
                                **_base_inputs(ctx, run, loaded))
        mixed = await ctx.in_worker(mix)
        trained = protection.method is BaseProtectionMethod.SELF_REHEARSAL
        kl = f"a KL term to the base model's distribution (weight {protection.kl_weight:g})"
        how = ("trained on" + (f", with {kl}" if protection.kl_weight > 0 else "")) if trained else f"{kl} only"
        if protection.prompt_kl_weight > 0:
            how += (f"; and the same KL term at the training examples' prompt positions (weight "
                    f"{protection.prompt_kl_weight:g})")
        ctx.record(Noticed("BASE_REHEARSAL_MIXED", f"mixed {mixed.rehearsed} of the base model's own answers to "
                                                   f"general prompts into each epoch of the {len(run.examples)} "
                                                   f"training examples, in rotation over {mixed.pool}: {how}"))
        ctx.set_output(replace(ctx.job.output, base_rehearsed_examples=mixed.rehearsed))
        objective = rehearsal_objective(run.objective, protection, len(run.examples), mixed.pool,
                                        mixed.references)
        return replace(run, examples=mixed.examples, objective=objective,
                       rotation=mixed.rotation if mixed.pool else None)

    async def _hold_to_base(self, ctx: JobContext[TrainingJobSpec, TrainingOutput], run: TrainingRun,
                            loaded: LoadedModel) -> TrainingRun:
        """EWC_BASE when the job asks for it: its penalty added to the run's (EWC against a parent, if any)."""
        protection = run.spec.base_protection
        if protection.method is not BaseProtectionMethod.EWC_BASE:
            return run
        if self._base_ewc is None:
            ctx.record(Warned("BASE_EWC_UNAVAILABLE", "this worker has no EWC against the base model set up: the "
                                                      "job trains without it"))
            return run
        measure = functools.partial(self._base_ewc.penalty, protection.ewc_lambda, **_base_inputs(ctx, run, loaded))
        penalty, answers = await ctx.in_worker(measure)
        ctx.record(Noticed("BASE_EWC", f"EWC against the base model (lambda {protection.ewc_lambda:g}): each LoRA "
                                       f"product held near 0 under the base model's Kronecker-factored Fisher on "
                                       f"its answers to {answers} general questions"))
        return replace(run, penalty=AddedPenalties(run.penalty, penalty) if run.penalty is not None else penalty)

    def fold(self, job: TrainingJob, payload: object) -> TrainingJob:
        tracking = self._tracking.get(job.id)
        if tracking is not None:
            tracking.log(payload)
        if isinstance(payload, StepMetrics):
            telemetry.training_step(job.id, payload.loss, payload.tokens_per_second)
            return replace(job, output=replace(job.output, latest_metrics=payload),
                           progress=JobProgress(payload.step, payload.total_steps, payload.eta_seconds))
        return job

    async def _inputs(self, ctx: JobContext[TrainingJobSpec, TrainingOutput]) -> PreparedInputs:
        """What validation resolved when the job was created here; after a restart, the same inputs again."""
        if isinstance(ctx.prepared, PreparedInputs):
            return ctx.prepared
        inputs = await self._preparer.resolve(ctx.job.spec, ctx.job.output.dataset)
        if inputs.note:
            ctx.record(Warned("DATASET_RESOLVED_AGAIN", inputs.note))
        ctx.set_output(replace(ctx.job.output, dataset=inputs.dataset.summary))
        return inputs

    async def _publish(self, job: TrainingJob, parent: AdapterRecord | None, result: TrainingResult, *,
                       fence: tuple[str, str]) -> AdapterRecord:
        """The job's version, fenced by its lease. Its request_id is the job's (``result_request_id``): a worker that
        takes the job over after a publish whose SUCCEEDED was never stored finds that version before it trains
        (``earlier_result``); a publish of it cut short by another's (retried) gets it back, not a second one.

        The registry answers a request id it knows with the version registered under it, whatever that is: one that
        is not the job's own (``is_own_result``: an import or a checkpoint publish a client made under the job's
        request id, before such ids were refused) fails the job ALREADY_EXISTS REQUEST_ID_REUSED, naming that
        version, rather than end it with a version it did not make: its result cannot be published under its
        request id."""
        request_id = result_request_id(job)
        record = await self._registry.publish(publish_request(
            job, parent, result.adapter_dir,
            result.train_loss if math.isfinite(result.train_loss) else result.final_task_loss,  # NaN: not measured
            fence=fence, request_id=request_id,
            base_retention=result.base_retention, eval_loss=result.eval_loss))
        if not is_own_result(job, record):
            raise AlreadyExists(
                "REQUEST_ID_REUSED",
                f"the job's result was not published: request id {request_id}, under which the job publishes its "
                f"result, is taken by version {record.version} of {record.base_model} ({whose(record)}), which the "
                "job did not make; create the job again to train and publish it under a request id of its own",
                metadata={"request_id": request_id, "base_model": record.base_model,
                          "adapter_version": record.version})
        return record

    async def earlier_result(self, ctx: JobContext[TrainingJobSpec, TrainingOutput]) -> str | None:
        """The job core's hook (engine.jobs.context.ResultHook), asked whenever a worker takes the job up: the
        version an earlier run of the job published, under the job's request id, whose worker stopped before the
        job's end was stored (killed while it stored the job's metrics, after the publish). The job then ends
        SUCCEEDED with it, its output as that run left it and its metrics stored if they are not, instead of training
        again from its last checkpoint and perhaps ending CANCELLED or FAILED with a version published in its name.
        None if no run published it: a version under the job's request id that is not its own (``is_own_result``)
        is none of its runs' (the run that trains the job then fails to publish under it: ``_publish``)."""
        job = ctx.job
        record = await self._registry.by_request_id(job.spec.base_model, result_request_id(job))
        if record is None or not is_own_result(job, record):
            return None
        ctx.record(Noticed("RESULT_PUBLISHED_EARLIER", f"an earlier run of this job published {record.version} "
                                                       "before its worker stopped; the job ends with it, without "
                                                       "training again"))
        ctx.set_output(replace(job.output, adapter_version=record.version,
                               dataset=record.dataset or job.output.dataset, base_retention=record.base_retention))
        if job.output.metrics_artifacts is None:
            await self._store_metrics(ctx)
        return f"published adapter {record.version}"

    async def _start_tracking(self, ctx: JobContext[TrainingJobSpec, TrainingOutput]) -> TrackerRun | None:
        if self._trackers is None or not self._trackers.names:
            return None
        sink = ctx.sink

        def warn(message: str) -> None:
            sink.emit(Warned("TRACKER_FAILED", message))

        tracking = self._tracking[ctx.job.id] = await ctx.in_worker(self._trackers.start, ctx.job, warn)
        return tracking

    async def cancelled_while_idle(self, job: TrainingJob, events: Sequence[JobEvent]) -> IdleCancel[TrainingOutput]:
        """The job core's hook (engine.jobs.context.CancelHook) for a job cancelled while none of it ran (paused, or
        queued again): its metrics are stored as a job cancelled while it runs has them (no run of it is left to);
        best effort, a failure a warning."""
        if self._artifacts is None:
            return IdleCancel()
        try:  # no lease: a token of its own names this store's write (the store is create-only)
            stored = await store_metrics(self._artifacts, job, uuid.uuid4().hex, events)
        except Exception as exc:  # noqa: BLE001 - the store down, or full: the cancel stands
            log.warning("training metrics not stored", extra={"job_id": job.id}, exc_info=True)
            return IdleCancel([_metrics_not_stored(exc)])
        return IdleCancel() if stored is None else IdleCancel(output=replace(job.output, metrics_artifacts=stored))

    async def _store_metrics(self, ctx: JobContext[TrainingJobSpec, TrainingOutput]) -> None:
        """The ended job's metrics into the artifact store, recorded on its output. Best effort: a failure is logged
        and recorded as a warning, and the job ends as it would have (GetTrainingMetrics renders them anyway)."""
        if self._artifacts is None:
            return
        try:
            stored = await store_metrics(self._artifacts, ctx.job, ctx.lease_token, ctx.events)
        except Exception as exc:  # noqa: BLE001 - the store down, or full: the job's outcome stands
            log.warning("training metrics not stored", extra={"job_id": ctx.job.id}, exc_info=True)
            ctx.record(_metrics_not_stored(exc))
            return
        if stored is not None:
            ctx.set_output(replace(ctx.job.output, metrics_artifacts=stored))


def _with_earlier_fisher(ctx: JobContext[TrainingJobSpec, TrainingOutput], spec: TrainingJobSpec) -> TrainingJobSpec:
    """``spec`` naming the parent's Fisher snapshot an earlier run of the job measured (it was paused, or its worker
    stopped), as if the job had named it: the steps it took trained against that snapshot, and so do the rest (not
    against a second measure, stored again). Gone since, the job fails as one naming a missing snapshot does."""
    lineage = ctx.job.output.ewc_lineage
    if spec.ewc.disabled or spec.ewc.fisher_snapshot or lineage is None or not lineage.fisher_snapshot:
        return spec
    ctx.record(Noticed("FISHER_OF_EARLIER_RUN", f"{lineage.fisher_snapshot}, the Fisher of "
                                                f"{lineage.parent_adapter_version} an earlier run of this job "
                                                "measured, anchors its EWC again"))
    return replace(spec, ewc=replace(spec.ewc, fisher_snapshot=lineage.fisher_snapshot))


def _ends_the_job(exc: Exception, cancel: CancelToken) -> bool:
    """Whether the job manager ends the job for ``exc`` (FAILED or CANCELLED), rather than pausing it, queueing it
    again for another worker, or dropping it (its lease lost: nothing more may be written)."""
    if isinstance(exc, LeaseLost) or cancel.reason is StopReason.LEASE_LOST:
        return False
    return not (isinstance(exc, Cancelled) and cancel.keeps_progress)


def _check_kto_balance(ctx: JobContext[TrainingJobSpec, TrainingOutput], examples: Sequence[Example],
                       desirable: Sequence[bool]) -> None:
    """A warning when a KTO job's desirable and undesirable examples are weighted outside the range the KTO paper
    recommends (as TRL's KTOTrainer warns): the loss then leans on one kind of example."""
    ratio = weight_balance([e.weight for e in examples], desirable)
    low, high = BALANCED_RANGE
    if ratio is None or low <= ratio <= high:
        return
    wanted = sum(1 for good in desirable if good)
    leaning = "desirable" if ratio > high else "undesirable"
    ctx.record(Warned("KTO_WEIGHTS_UNBALANCED", (
        f"the {wanted} desirable examples weigh {ratio:.2f} times the {len(desirable) - wanted} undesirable ones "
        f"(lambda_D * n_D / (lambda_U * n_U), the weights standing for lambda), outside [{low:g}, {high:.2f}], the "
        f"range the KTO paper recommends: the loss leans on the {leaning} examples; the feedback dataset's "
        "thumbs_up_weight and thumbs_down_weight (or the examples' weights) set it")))


def eval_split(spec: TrainingJobSpec) -> SplitRule | None:
    """How a job holds its eval split out of its dataset: by prompt, with the job's seed (None: it does not)."""
    fraction = spec.hyperparameters.eval_fraction
    return SplitRule(eval_fraction=fraction, seed=spec.hyperparameters.seed) if fraction > 0 else None


def _metrics_not_stored(exc: Exception) -> Warned:
    return Warned("METRICS_NOT_STORED", f"metrics.csv and loss.png were not stored ({type(exc).__name__}: {exc}); "
                                        "GetTrainingMetrics still renders them from the job's events")
