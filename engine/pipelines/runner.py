"""One pipeline run, a job of the typed job core: fix the data, train, evaluate, roll out.

The run is a chain of stages (engine.pipelines.spec.Stage). Each stage's result goes on the run's output and is
stored before the next begins, so a run taken over after a restart (or resumed after a pause) starts at the
first stage that has not ended; no stage runs twice to completion:

- DATASET freezes the data: a feedback window becomes a version of the dataset ``pipeline-<id>`` (the same bytes
  give the same version), a stored dataset named without a version resolves to its newest. A JSONL file needs
  nothing (the training job records its digest).
- TRAIN creates one training job continuing the version active at that moment (EWC and replay as the template
  asks), with request id ``pipelineRuns/<run>/train``. The parent it continues is stored on the run before the job
  is created, so a run resumed between creating the job and storing its name asks for the same job (even if
  another version became active meanwhile) and finds it, never a second. It waits for the job, forwarding its
  progress; cancelling the run cancels the job, while a restart leaves it running (it is a job of its own) and the
  resumed run waits again.
- EVALUATE runs the forgetting-aware gate (and the pipeline's golden suites) on the new version against the
  active one; it is skipped, saying so, for a (publish-only) pipeline of a base model this server does not serve,
  whose versions its serving engine cannot score. A refusal ends the run FAILED with PIPELINE_GATE_REFUSED and the
  failed checks. A run resumed after its evaluation was stored (and before the stage's end was) takes that
  evaluation instead of answering the suites again, as long as it was against the same active version on the same
  basis.
- ROLLOUT activates the version, or skips when the pipeline only publishes. The activation's own gate takes
  EVALUATE's evaluation when it was against the same active version on the same basis, and runs again
  otherwise. With a canary, cancelling the run aborts the run's canary (by its version and the split it opened)
  wherever the run was: running (the run does), or paused, queued or stopping (the job core calls
  ``cancelled_while_idle``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from engine.domain import FeedbackSource, JsonlSource, StoredDatasetSource
from engine.errors import Cancelled, EngineError, FailedPrecondition
from engine.jobs.context import IdleCancel, JobContext
from engine.jobs.core import JobEvent, JobProgress, JobState, Noticed, Warned
from engine.jobs.ports import LeaseLost, StopReason
from engine.lora.canary import CanaryDecision, CanaryOutcome
from engine.lora.evaluation_jobs import progress_due
from engine.pipelines.ports import Datasets, GoldenDatasets, Serving, TrainingJobs
from engine.pipelines.spec import (
    PIPELINE_RUN,
    STAGES,
    PipelineRun,
    PipelineRunOutput,
    PipelineRunSpec,
    RolloutMode,
    Stage,
    StageEnded,
    StageProgress,
    StageResult,
    StageStarted,
    StageState,
)
from engine.splits import SplitRule

log = logging.getLogger(__name__)

SuitePath = Callable[[str, str], Path]
Ctx = JobContext[PipelineRunSpec, PipelineRunOutput]


def dataset_id(pipeline_id: str) -> str:
    return f"pipeline-{pipeline_id}"


@dataclass(frozen=True)
class _Outcome:
    output: PipelineRunOutput
    message: str
    resource: str = ""
    state: StageState = StageState.SUCCEEDED


class PipelineRunner:
    kind = PIPELINE_RUN

    def __init__(self, *, datasets: Datasets, training: TrainingJobs, serving: Serving, suite_path: SuitePath,
                 suites: GoldenDatasets, poll_seconds: float = 2.0) -> None:
        self._datasets = datasets
        self._training = training
        self._serving = serving
        self._suite_path = suite_path
        self._suites = suites
        self._poll = poll_seconds

    async def run(self, ctx: Ctx) -> str:
        pipeline = ctx.job.spec.pipeline
        done = len(ctx.job.output.stages)
        ctx.started(JobState.RUNNING, f"running {pipeline.name}" + (f" from {STAGES[done].value}" if done else ""),
                    total_steps=len(STAGES))
        for stage in STAGES:
            output = ctx.job.output
            if output.ended(stage) is not None:
                continue
            self._check_cancel(ctx, stage)
            ctx.record(StageStarted(stage, f"{stage.value.lower()} started"))
            began = datetime.now(UTC)
            try:
                outcome = await self._stage(ctx, stage, output)
            except Cancelled:
                if ctx.cancel.reason is StopReason.CANCEL:  # paused, the stage runs again when the run resumes
                    # stored with the run's end (a write here failing would turn the cancel into a failure)
                    self._end(ctx, StageResult(stage, StageState.CANCELLED, "the run was cancelled", began,
                                               datetime.now(UTC)))
                raise
            except EngineError as exc:
                self._end(ctx, StageResult(stage, StageState.FAILED, exc.message, began, datetime.now(UTC)))
                await ctx.persist()
                raise
            ctx.set_output(outcome.output)
            self._end(ctx, StageResult(stage, outcome.state, outcome.message, began, datetime.now(UTC),
                                       outcome.resource))
            await ctx.persist()
        out = ctx.job.output
        return f"{pipeline.name}: {out.version or 'no version'} {out.rollout.lower() or 'published'}"

    def fold(self, job: PipelineRun, payload: object) -> PipelineRun:
        if isinstance(payload, StageEnded):
            return replace(job, progress=JobProgress(len(job.output.stages), len(STAGES)))
        return job

    @staticmethod
    def _end(ctx: Ctx, result: StageResult) -> None:
        output = ctx.job.output
        ctx.set_output(replace(output, stages=(*output.stages, result)))
        ctx.record(StageEnded(result))

    @staticmethod
    def _check_cancel(ctx: Ctx, stage: Stage) -> None:
        if ctx.cancel.cancelled:
            raise Cancelled("JOB_CANCELLED", f"the run stopped before {stage.value}")

    async def _stage(self, ctx: Ctx, stage: Stage, output: PipelineRunOutput) -> _Outcome:
        if stage is Stage.DATASET:
            return await self._dataset(ctx, output)
        if stage is Stage.TRAIN:
            return await self._train(ctx, output)
        if stage is Stage.EVALUATE:
            return await self._evaluate(ctx, output)
        return await self._rollout(ctx, output)

    # ---- stages ------------------------------------------------------------------------------

    async def _dataset(self, ctx: Ctx, output: PipelineRunOutput) -> _Outcome:
        pipeline = ctx.job.spec.pipeline
        source = pipeline.training.dataset
        if isinstance(source, JsonlSource):
            return _Outcome(output, f"{source.path} is read by the training job, which records its digest",
                            state=StageState.SKIPPED)
        if isinstance(source, FeedbackSource):
            stored, new = await self._datasets.create(f"datasets/{dataset_id(pipeline.id)}", source,
                                                      split=SplitRule(), base_model=pipeline.base_model)
            how = "froze" if new else "found the same examples in"
        else:
            stored = await self._datasets.trainable(source.name, "pipeline.training.dataset_name")
            how = "resolved to"
        name = f"datasets/{stored.dataset_id}/versions/{stored.version}"
        return _Outcome(replace(output, dataset=name),
                        f"{how} {name} ({stored.content.example_count} examples)", name)

    async def _train(self, ctx: Ctx, output: PipelineRunOutput) -> _Outcome:
        pipeline, run = ctx.job.spec.pipeline, ctx.job
        if not output.training_job:
            if not output.parent_chosen:
                # the parent is chosen once and stored before the job is created: a run resumed between creating
                # the job and storing its name asks for the same spec under the same request id, and so finds the
                # job it created, whatever is active by then
                status = await self._serving.status()
                parent = status.active_version if status.base_model == pipeline.base_model else ""
                output = replace(output, parent_version=parent, parent_chosen=True)
                ctx.set_output(output)
                await ctx.persist()
            template = pipeline.training
            spec = replace(
                template, base_model=pipeline.base_model, parent_adapter_version=output.parent_version,
                dataset=StoredDatasetSource(output.dataset) if output.dataset else template.dataset,
                labels=(*template.labels, ("pipeline", pipeline.id), ("pipeline_run", run.id)),
            )
            job = await self._training.create(spec, request_id=f"{run.name}/train")
            output = replace(output, training_job=job.name)
            ctx.set_output(output)
            await ctx.persist()
        job_id = output.training_job.split("/", 1)[1]
        seen = -1
        while True:
            job = await self._training.get(job_id)
            if job.progress.completed_steps != seen:
                seen = job.progress.completed_steps
                ctx.record(StageProgress(Stage.TRAIN, seen, job.progress.total_steps, job.state.value))
            if job.state.terminal:
                break
            if ctx.cancel.cancelled:
                if ctx.cancel.reason is StopReason.CANCEL:
                    await self._training.cancel(job_id)
                raise Cancelled("JOB_CANCELLED", f"the run stopped while {output.training_job} was "
                                                 f"{job.state.value.lower()}")
            await asyncio.sleep(self._poll)
        if job.state is not JobState.SUCCEEDED:
            why = job.failure.message if job.failure else job.state.value.lower()
            raise FailedPrecondition("PIPELINE_STAGE_FAILED", f"training job {output.training_job} ended "
                                                              f"{job.state.value}: {why}",
                                     metadata={"stage": Stage.TRAIN.value, "job": output.training_job})
        version = job.output.adapter_version
        base = f" continuing {output.parent_version}" if output.parent_version else " from the base model"
        return _Outcome(replace(output, version=version), f"{output.training_job} trained {version}{base}",
                        output.training_job)

    async def _evaluate(self, ctx: Ctx, output: PipelineRunOutput) -> _Outcome:
        pipeline = ctx.job.spec.pipeline
        served = self._serving.base_model
        if pipeline.base_model != served:  # a publish-only pipeline of another base model (Pipelines.check)
            # the serving engine scores versions of the base model it serves: asked for this version's number, it
            # would score that base model's adapter of the same number (another adapter), or find none
            return _Outcome(output, f"not evaluated: this server evaluates versions of {served}, not of "
                                    f"{pipeline.base_model}; {output.version} is published unevaluated",
                            state=StageState.SKIPPED)
        paths = [await asyncio.to_thread(self._suite_path, p, f"pipeline.suite_paths[{i}]")
                 for i, p in enumerate(pipeline.suite_paths)]
        pinned = output.suite_datasets or pipeline.suite_datasets  # a resumed run takes the versions it took
        stored = [await self._suites.suite(name, f"pipeline.suite_datasets[{i}]") for i, name in enumerate(pinned)]
        if stored:
            output = replace(output, suite_datasets=tuple(s.name for s in stored))
            ctx.set_output(output)
            await ctx.persist()
        cancel, sink = ctx.cancel, ctx.sink

        def progress(suite: str, answered: int, total: int) -> None:
            """The evaluation is shielded (it runs to its end for whoever waits on it): a stop reaches it here, at
            its next answer, as an evaluation job's does; a resumed run reuses what was stored (reuse). How far each
            suite has come is told as an evaluation job tells it (a watch showed nothing for minutes)."""
            if cancel.cancelled:
                raise Cancelled("JOB_CANCELLED", f"the run stopped while {output.version} was evaluated, after "
                                                 f"{answered} of {total} answers of {suite}")
            if progress_due(answered, total):
                sink.emit(StageProgress(Stage.EVALUATE, answered, total, suite))

        try:
            summary = await self._serving.evaluate(output.version, None, [*paths, *stored], progress=progress,
                                                   reuse=True)
        except FailedPrecondition as exc:
            if exc.reason != "EVAL_SUITE_NOT_CONFIGURED":
                raise
            return _Outcome(output, "nothing to evaluate: the gate is off (eval_gate) and no golden suite is named",
                            state=StageState.SKIPPED)
        output = replace(output, evaluation_id=summary.id)
        ctx.set_output(output)
        against = summary.baseline_version or "the base model"
        if not summary.passed:
            failed = "; ".join(summary.failed_checks)
            raise FailedPrecondition("PIPELINE_GATE_REFUSED", f"the gate refused {output.version} against "
                                                              f"{against}: {failed}",
                                     metadata={"version": output.version, "evaluation_id": summary.id,
                                               "failed_checks": failed})
        return _Outcome(output, f"the gate passed {output.version} against {against}", summary.id)

    async def _rollout(self, ctx: Ctx, output: PipelineRunOutput) -> _Outcome:
        pipeline, run = ctx.job.spec.pipeline, ctx.job
        mode = pipeline.rollout.mode
        if mode is RolloutMode.NONE:
            return _Outcome(replace(output, rollout="NONE"), f"{output.version} is published; the pipeline "
                                                             "does not roll out", state=StageState.SKIPPED)
        reason = f"{run.name}: the gate passed (evaluation {output.evaluation_id or 'skipped'})"
        if mode is RolloutMode.CANARY and output.rollout == "CANARY":
            # resumed after the canary was to start: that canary decides, whatever is active now (a promoted canary
            # has made its version the active one; activating it again would report what the run did not do)
            return await self._canary(ctx, output, reason)
        if mode is RolloutMode.CANARY and output.rollout != "ACTIVATED":
            active = (await self._serving.status()).active_version
            if active and active != output.version:
                return await self._canary(ctx, output, reason)
        return await self._activate(ctx, output, reason)

    async def _activate(self, ctx: Ctx, output: PipelineRunOutput, reason: str, *, already: bool = False) -> _Outcome:
        """Activate the version (``already``: it is active already, no canary of it having started: activating it
        again only makes sure it is loaded)."""
        pipeline = ctx.job.spec.pipeline
        await self._serving.activate(output.version, actor=pipeline.name, reason=reason)
        why = ""
        if already:
            why = " (it was active already when the run resumed; no canary of it had started)"
        elif pipeline.rollout.mode is RolloutMode.CANARY:
            why = " (no version was active: nothing to compare a canary with)"
        return _Outcome(replace(output, rollout="ACTIVATED"), f"{output.version} is active{why}", output.version)

    async def _canary(self, ctx: Ctx, output: PipelineRunOutput, reason: str) -> _Outcome:
        """A share of the traffic for the version until the canary policy promotes or rolls it back. ``rollout``
        is CANARY on the output (stored) before the canary starts, so a resumed run waits for the canary it
        started (or its recorded outcome) instead of starting another."""
        pipeline, version = ctx.job.spec.pipeline, output.version
        outcome: CanaryOutcome | None = None
        if output.rollout == "CANARY":  # resumed: the canary this run started, running or decided, if it started
            try:
                outcome = await self._await_canary(ctx, version)
            except FailedPrecondition as exc:
                if exc.reason != "NO_CANARY_RUNNING":
                    raise
            if outcome is None:  # stopped before its canary started: as a run that had not got that far
                active = (await self._serving.status()).active_version
                if not active or active == version:  # nothing to compare a canary with
                    return await self._activate(ctx, output, reason, already=active == version)
        else:
            ctx.set_output(replace(output, rollout="CANARY"))
            await ctx.persist()
        if outcome is None:
            status = await self._serving.start_canary(version, pipeline.rollout.canary, actor=pipeline.name,
                                                      reason=reason)
            if status.split is not None and status.split.candidate_version == version:  # which canary is the run's
                ctx.set_output(replace(ctx.job.output, canary_split=status.split.id))
                try:
                    await ctx.persist()
                except LeaseLost:
                    raise
                except Exception:  # noqa: BLE001 - kept pending, stored by the run's next write; failing the run
                    # here would leave its canary in force, with nothing waiting on it, to promote a failed run
                    log.warning("the run's canary split is not stored yet", extra={"job_id": ctx.job.id},
                                exc_info=True)
            outcome = await self._await_canary(ctx, version)
        decision = outcome.decision.value
        output = replace(ctx.job.output, rollout=decision)
        ctx.set_output(output)
        if outcome.decision is not CanaryDecision.PROMOTED:
            how = decision.lower().replace("_", " ")
            raise FailedPrecondition("PIPELINE_CANARY_FAILED", f"the canary of {version} was {how}: {outcome.reason}",
                                     metadata={"version": version, "decision": decision})
        return _Outcome(output, f"the canary promoted {version}: {outcome.reason}", version)

    async def _await_canary(self, ctx: Ctx, version: str) -> CanaryOutcome:
        """The canary's outcome; cancelling the run aborts the canary, a restart leaves it to the serving process."""
        waiting = asyncio.ensure_future(self._serving.wait_canary(version, poll_seconds=self._poll))
        try:
            while True:
                done, _ = await asyncio.wait({waiting}, timeout=self._poll)
                if done:
                    return waiting.result()
                if ctx.cancel.cancelled:
                    if ctx.cancel.reason is StopReason.CANCEL and await self._abort_canary(ctx.job):
                        ctx.set_output(replace(ctx.job.output, rollout=CanaryDecision.ABORTED.value))
                    raise Cancelled("JOB_CANCELLED", f"the run stopped while the canary of {version} was running")
        finally:
            waiting.cancel()

    async def cancelled_while_idle(self, job: PipelineRun,
                                   events: Sequence[JobEvent]) -> IdleCancel[PipelineRunOutput]:
        """The job core's hook (engine.jobs.context.CancelHook) for a run cancelled with none of it running: paused,
        queued again after its worker stopped, or stopping. The stage it had begun ends CANCELLED, as a running
        run's does. A canary it started is aborted as a running run's is, lest the policy promote the version of a
        run that was cancelled. The abort works while the serving engine is unreachable; should it fail all the
        same (the database), the run's log says so and the canary goes on until its policy decides it or someone
        aborts it."""
        canary = await self._canary_cancelled(job)
        begun = next(((e.payload.stage, e.time) for e in reversed(events) if isinstance(e.payload, StageStarted)),
                     None)
        if begun is None or job.output.ended(begun[0]) is not None:
            return canary
        result = StageResult(begun[0], StageState.CANCELLED, "the run was cancelled while none of it was running",
                             begun[1], datetime.now(UTC))
        output = canary.output or job.output
        return IdleCancel([*canary.notes, StageEnded(result)], output=replace(output, stages=(*output.stages, result)))

    async def _canary_cancelled(self, job: PipelineRun) -> IdleCancel[PipelineRunOutput]:
        """What cancelling ``job``, none of it running, made of a canary it started."""
        version = job.output.version
        if job.output.rollout != "CANARY" or not version:  # no canary started (or it was decided before the stop)
            return IdleCancel()
        try:
            aborted = await self._abort_canary(job)
        except Exception as exc:  # noqa: BLE001 - the run is cancelled whatever becomes of its canary
            why = exc.message if isinstance(exc, EngineError) else type(exc).__name__
            log.warning("could not abort a cancelled pipeline run's canary",
                        extra={"job_id": job.id, "version": version, "error": why})
            return IdleCancel([Warned("CANARY_NOT_ABORTED", f"the canary of {version} this run started could not be "
                                                            f"aborted ({why}): it goes on until its policy decides it, "
                                                            f"unless aborted (AbortCanary with version {version})")])
        if not aborted:  # it never started, or it has ended (decided, or aborted by someone else)
            return IdleCancel()
        return IdleCancel([Noticed("CANARY_ABORTED", f"aborted the canary of {version} this run started: the run "
                                                     "was cancelled while none of it was running")],
                          output=replace(job.output, rollout=CanaryDecision.ABORTED.value))

    async def _abort_canary(self, run: PipelineRun) -> bool:
        """Abort the run's own canary, by its version and the split it opened (when the run recorded it): the canary
        in force may be another by now (the run's ended and an operator's or another pipeline's began, of another
        version or the same, or this process had not yet followed that), and that one is not the run's to end. None
        of the run's in force is nothing to abort (False)."""
        try:
            await self._serving.abort_canary(actor=run.spec.pipeline.name, reason=f"{run.name} was cancelled",
                                             version=run.output.version, split_id=run.output.canary_split)
        except FailedPrecondition as exc:
            if exc.reason != "NO_CANARY_RUNNING":
                raise
            return False
        return True
