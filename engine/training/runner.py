"""Training jobs: validation at create time (:class:`TrainingJobs`) and the run (:class:`TrainingRunner`).

A run: PREPARING (the inputs validated at create time, or resolved again from the job's provenance after a
restart; the parent fetched; the base model loaded once, with the job's adapter attached; for a continuation
the continual planner's penalty and replay, measuring the parent's Fisher on that same model), RUNNING (the
recipe in a worker thread), then publishing the adapter as a new version with its provenance and lineage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace

from engine import telemetry
from engine.errors import Unimplemented
from engine.jobs.core import JobEvent, JobProgress, JobState, Warned
from engine.jobs.manager import JobContext, JobManager
from engine.registry import AdapterRecord, AdapterRegistry, PublishRequest
from engine.telemetry import tracer
from engine.training.kto import KtoObjective
from engine.training.ports import ContinualPlanner, PlanRequest
from engine.training.preparation import JobPreparer, PreparedInputs
from engine.training.recipe import LoadedModel, TrainingResult, TrainingRun, load_for_training, release, run_training
from engine.training.spec import TRAINING, StepMetrics, TrainingJob, TrainingJobSpec, TrainingOutput

TrainFn = Callable[..., TrainingResult]
LoadFn = Callable[[TrainingRun], LoadedModel]


class TrainingRunner:
    """The training kind of job: see the module docstring."""

    kind = TRAINING

    def __init__(
        self,
        *,
        preparer: JobPreparer,
        registry: AdapterRegistry,
        planner: ContinualPlanner | None = None,
        train: TrainFn = run_training,
        load: LoadFn = load_for_training,
    ) -> None:
        self._preparer = preparer
        self._registry = registry
        self._planner = planner
        self._train = train
        self._load = load

    async def run(self, ctx: JobContext[TrainingJobSpec, TrainingOutput]) -> str:
        ctx.transition(JobState.PREPARING, "loading dataset and model")
        with tracer.start_as_current_span("training_job.prepare", attributes={"job": ctx.job.name}):
            inputs = await self._inputs(ctx)
            spec, dataset = inputs.spec, inputs.dataset
            parent_dir = await self._preparer.fetch_parent(inputs.parent, ctx.work_dir / "parent") \
                if inputs.parent is not None else None
            run = TrainingRun(
                spec=spec, base_model_dir=inputs.model_dir, examples=dataset.examples,
                output_dir=ctx.work_dir / "adapter", parent_adapter_dir=parent_dir,
                objective=KtoObjective(dataset.desirable) if dataset.desirable is not None else None,
            )
            loaded = await ctx.in_worker(self._load, run)
        try:
            ctx.set_output(replace(ctx.job.output, device=loaded.plan.device))
            if self._planner is not None and inputs.parent is not None and parent_dir is not None \
                    and not spec.ewc.disabled:
                plan = await self._planner.plan(PlanRequest(
                    spec=spec, parent=inputs.parent, parent_dir=parent_dir, model_dir=inputs.model_dir,
                    examples=run.examples, model=loaded,
                    in_worker=ctx.in_worker, sink=ctx.sink, cancel=ctx.cancel,
                ))
                objective = run.objective.extended(plan.replayed) if run.objective and plan.replayed \
                    else run.objective
                run = replace(run, penalty=plan.penalty, examples=plan.examples, objective=objective)
                ctx.set_output(replace(ctx.job.output, ewc_lineage=plan.lineage))
        except BaseException:
            release(loaded)
            raise
        ctx.started(JobState.RUNNING, f"training on {loaded.plan.device}")
        with tracer.start_as_current_span("training_job.train", attributes={"job": ctx.job.name}):
            result = await ctx.in_worker(self._train, run, ctx.sink, ctx.cancel, loaded)
        # The resolved summary knows the data's origin (feedback window, composition); training adds the tokens.
        summary = replace(dataset.summary, target_token_count=result.dataset.target_token_count)
        ctx.set_output(replace(ctx.job.output, dataset=summary))
        with tracer.start_as_current_span("training_job.publish", attributes={"job": ctx.job.name}):
            record = await self._publish(ctx.job, inputs.parent, result)
        ctx.set_output(replace(ctx.job.output, adapter_version=record.version))
        return f"published adapter {record.version}"

    def fold(self, job: TrainingJob, payload: object) -> TrainingJob:
        if isinstance(payload, StepMetrics):
            telemetry.training_step(payload.loss, payload.tokens_per_second)
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

    async def _publish(self, job: TrainingJob, parent: AdapterRecord | None, result: TrainingResult) -> AdapterRecord:
        spec, lineage = job.spec, job.output.ewc_lineage
        return await self._registry.publish(PublishRequest(
            base_model=spec.base_model,
            adapter_dir=result.adapter_dir,
            parent=parent,
            major_bump=spec.major_version_bump,
            training_job=job.name,
            dataset=job.output.dataset,
            train_loss=result.final_task_loss,
            ewc_lambda=lineage.ewc_lambda if lineage else 0.0,
            ewc_gamma=lineage.gamma if lineage else 0.0,
            fisher_snapshot=lineage.fisher_snapshot if lineage else "",
            ewc_fisher_space=lineage.space if lineage else None,
            labels=spec.labels,
        ))


class TrainingJobs:
    """The training jobs servicers see: create (validate, resolve, submit), get, list, cancel, watch."""

    def __init__(
        self, manager: JobManager[TrainingJobSpec, TrainingOutput], preparer: JobPreparer,
        planner: ContinualPlanner | None = None,
    ) -> None:
        self._manager = manager
        self._preparer = preparer
        self._planner = planner

    async def create(self, spec: TrainingJobSpec, *, request_id: str = "", validate_only: bool = False,
                     priority: int = 0) -> TrainingJob:
        inputs = await self._preparer.validate(spec)
        if self._planner is not None and inputs.parent is not None and not inputs.spec.ewc.disabled:
            await self._planner.check(inputs.spec, inputs.parent)
        job = self._manager.new_job(inputs.spec, TrainingOutput(dataset=inputs.dataset.summary),
                                    request_id=request_id, priority=priority)
        if validate_only:
            return job
        return await self._manager.submit(job, prepared=inputs)

    async def get(self, job_id: str) -> TrainingJob:
        return await self._manager.get(job_id)

    async def list(self, *, states: Sequence[JobState], page_size: int,
                   page_token: str) -> tuple[list[TrainingJob], str]:
        return await self._manager.list(states=states, page_size=page_size, page_token=page_token)

    async def cancel(self, job_id: str) -> TrainingJob:
        return await self._manager.cancel(job_id)

    async def pause(self, job_id: str) -> TrainingJob:
        return await self._manager.pause(job_id)

    async def resume(self, job_id: str) -> TrainingJob:
        return await self._manager.resume(job_id)

    async def publish_checkpoint(self, job_id: str, step: int, *, request_id: str = "") -> AdapterRecord:
        raise Unimplemented("CHECKPOINT_PUBLISH_UNAVAILABLE", "publishing a checkpoint is not built yet")

    def watch(self, job_id: str, *, after_sequence: int = 0) -> AsyncIterator[TrainingJob | JobEvent]:
        return self._manager.watch(job_id, after_sequence=after_sequence)

