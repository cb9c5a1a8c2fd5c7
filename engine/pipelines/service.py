"""Pipelines as the PipelineService uses them, and the triggers that start their runs.

Every serving process calls :meth:`Pipelines.tick` every ``pipeline_trigger_interval_seconds`` (engine.periodic):
it looks at each enabled pipeline under that pipeline's lock (engine.stores.pipeline_store) and decides each
trigger's occasion once (engine.pipelines.triggers says what the occasions are). An occasion fires a run unless a
run of the pipeline has not ended (a cron tick is then skipped, and recorded so; a count or drift waits for the run
to end) or the data has fewer usable examples than the template's ``min_samples`` (skipped with the count found;
``force`` on the template trains anyway).
A run started by an occasion has the request id ``<pipeline>/<created>/<key>``
(engine.pipelines.triggers.request_id): two replicas that both decide to fire start one run, and a pipeline created
again under a deleted one's id does not meet the runs of its predecessor. That request id is internal, the run's
dedup key: the API shows the key the run was started with (triggers.shown_request_id). An occasion (or a RunPipeline
request_id) whose run was stored but whose decision was not (the write failed, the process stopped) finds its run
again by that request id: the next check records it as fired with that run, not as skipped because of it, and
RunPipeline returns it. Missed ticks (the service was down) are not replayed one by one: the latest runs once. A
trigger that cannot be decided (a failure of its own) is logged and recorded as a decision that did not fire, with
why, and the pipeline's other triggers are decided all the same.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from croniter import CroniterError

from engine import telemetry
from engine.domain import FeedbackSource, Objective, StoredDatasetSource
from engine.errors import EngineError, FailedPrecondition, FieldViolation, InvalidArgument, NotFound, ViolationCollector
from engine.jobs.core import Job, JobEvent
from engine.jobs.manager import JobManager
from engine.lora.evaluation import check_suite_names, load_suite
from engine.lora.evaluation_jobs import check_suite_count
from engine.pipelines import triggers as tr
from engine.pipelines.ports import Datasets, DriftReading, DriftSource, GoldenDatasets, PipelineStore, Serving
from engine.pipelines.spec import (
    PIPELINE_ID_RE,
    CronTrigger,
    DriftTrigger,
    FeedbackTrigger,
    Pipeline,
    PipelineRun,
    PipelineRunOutput,
    PipelineRunSpec,
    RolloutMode,
    Trigger,
    TriggerDecision,
    TriggerKind,
)
from engine.splits import SplitRule
from engine.training.spec import TrainingJobSpec

log = logging.getLogger(__name__)

SuitePath = Callable[[str, str], Path]
TrainingCheck = Callable[[TrainingJobSpec, str], Awaitable[object]]  # JobPreparer.check_request
MAX_TRIGGERS = 16


def _invalid(field_path: str, description: str, reason: str = "INVALID_PIPELINE") -> InvalidArgument:
    return InvalidArgument(reason, f"{field_path}: {description}", violations=[FieldViolation(field_path, description)])


class Pipelines:
    """Create, read, change and run pipelines; their runs are jobs of ``manager``."""

    def __init__(self, store: PipelineStore, manager: JobManager[PipelineRunSpec, PipelineRunOutput], *,
                 serving: Serving, datasets: Datasets, suite_path: SuitePath, suites: GoldenDatasets,
                 base_model_known: Callable[[str], bool], check_training: TrainingCheck, rating_negative_max: int = 2,
                 drift: DriftSource | None = None, drift_check_seconds: float = 3600.0) -> None:
        self._store = store
        self._manager = manager
        self._serving = serving
        self._datasets = datasets
        self._suite_path = suite_path
        self._suites = suites
        self._base_model_known = base_model_known
        self._check_training = check_training
        self._rating_negative_max = rating_negative_max
        self._drift = drift
        self._drift_check = drift_check_seconds
        # base model -> (when measured, the reading; None if measuring failed)
        self._drift_seen: dict[str, tuple[datetime, DriftReading | None]] = {}

    # ---- pipelines ---------------------------------------------------------------------------------

    async def check(self, pipeline: Pipeline, field_prefix: str = "pipeline") -> None:
        """INVALID_ARGUMENT for a pipeline that cannot work (a training template is checked as a training job's
        spec is, but for its data); FAILED_PRECONDITION for a base model this server does not know (or does not
        serve, when the pipeline rolls out or names golden suites: its versions are not evaluated here), for a
        golden suite that is missing and for a golden dataset to train on."""
        if not PIPELINE_ID_RE.match(pipeline.id):
            raise _invalid("pipeline_id", "lowercase letters, digits and '-', 1 to 40, starting and ending with a "
                                          "letter or digit")
        if not self._base_model_known(pipeline.base_model):
            raise FailedPrecondition("PIPELINE_BASE_MODEL_UNKNOWN",
                                     f"base model {pipeline.base_model!r} is not one this server knows",
                                     metadata={"base_model": pipeline.base_model})
        served = self._serving.base_model
        if pipeline.rollout.mode is not RolloutMode.NONE and pipeline.base_model != served:
            raise FailedPrecondition("PIPELINE_NOT_SERVED", f"this server serves {served}, not "
                                                            f"{pipeline.base_model}; a pipeline for another base model "
                                                            "can only publish (rollout mode NONE)",
                                     metadata={"base_model": pipeline.base_model})
        if pipeline.base_model != served and (pipeline.suite_paths or pipeline.suite_datasets):
            # this server's evaluations score its own base model's versions only: a run of this pipeline skips
            # EVALUATE (engine.pipelines.runner), so a golden suite named here would never be scored
            field_path = f"{field_prefix}.{'suite_paths' if pipeline.suite_paths else 'suite_datasets'}"
            why = (f"this server evaluates versions of {served} only, not of {pipeline.base_model}: a run of this "
                   "pipeline publishes its version unevaluated, so golden suites cannot be scored")
            raise FailedPrecondition("PIPELINE_NOT_SERVED", f"{field_path}: {why}",
                                     violations=[FieldViolation(field_path, why)],
                                     metadata={"base_model": pipeline.base_model, "field": field_path})
        if pipeline.rollout.mode is RolloutMode.CANARY:
            pipeline.rollout.canary.check(f"{field_prefix}.rollout.canary")
        if len(pipeline.triggers) > MAX_TRIGGERS:
            raise _invalid(f"{field_prefix}.triggers", f"at most {MAX_TRIGGERS}")
        for i, trigger in enumerate(pipeline.triggers):
            tr.check_trigger(trigger, f"{field_prefix}.triggers[{i}]")
            if isinstance(trigger, DriftTrigger) and self._drift is None:
                raise FailedPrecondition("PIPELINE_DRIFT_NOT_AVAILABLE",
                                         "this server measures no drift; a drift trigger cannot fire")
        issues = ViolationCollector()
        check_suite_count(issues, len(pipeline.suite_paths), len(pipeline.suite_datasets),
                          files_field=f"{field_prefix}.suite_paths", datasets_field=f"{field_prefix}.suite_datasets")
        check_suite_names(issues, pipeline.suite_paths, f"{field_prefix}.suite_paths")
        issues.raise_if_any("INVALID_PIPELINE", "invalid pipeline")
        # what a training job refuses whatever the data (which may arrive later): every run would fail to train
        await self._check_training(pipeline.training, f"{field_prefix}.training")
        if pipeline.training.objective is Objective.KTO:  # KTO_NEEDS_FEEDBACK at every run's training stage
            raise _invalid(f"{field_prefix}.training.objective", "a run trains on the dataset version it freezes "
                           "its data into, which holds no desirable/undesirable labels: KTO cannot run in a "
                           "pipeline (an online session learns with KTO from feedback)", "KTO_NEEDS_FEEDBACK")
        source = pipeline.training.dataset
        if isinstance(source, StoredDatasetSource):  # a golden version trains nothing (GOLDEN_DATASET_NOT_TRAINABLE)
            with contextlib.suppress(NotFound):  # a dataset stored later is resolved when a run takes it
                await self._datasets.trainable(source.name, f"{field_prefix}.training.dataset_name")
        for i, name in enumerate(pipeline.suite_datasets):  # unknown, empty or unusable: refused as an evaluation's
            await self._suites.suite(name, f"{field_prefix}.suite_datasets[{i}]")
        for i, path in enumerate(pipeline.suite_paths):
            field_path = f"{field_prefix}.suite_paths[{i}]"
            try:
                resolved = await asyncio.to_thread(self._suite_path, path, field_path)
            except InvalidArgument as exc:
                if exc.reason != "DATASET_NOT_FOUND":
                    raise
                raise FailedPrecondition("PIPELINE_SUITE_NOT_FOUND", f"{field_path}: suite {path!r} does not exist",
                                         metadata={"field": field_path, "path": path}) from exc
            try:  # a file of bad lines (training examples, not golden cases): every run would train, then fail
                await asyncio.to_thread(load_suite, resolved)
            except InvalidArgument as exc:  # the first bad line, and how many more, on the pipeline's field
                raise InvalidArgument(exc.reason, f"{field_path}: {exc.message}", metadata=exc.metadata,
                                      violations=[FieldViolation(field_path, exc.message)]) from exc

    async def create(self, pipeline: Pipeline) -> Pipeline:
        await self.check(pipeline)
        return await self._store.insert(pipeline)

    async def get(self, pipeline_id: str) -> Pipeline:
        return await self._store.get(pipeline_id)

    async def list(self, *, page_size: int, page_token: str) -> tuple[builtins.list[Pipeline], str]:
        return await self._store.list(page_size=page_size, page_token=page_token)

    async def update(self, pipeline: Pipeline, *, etag: str = "") -> Pipeline:
        current = await self._store.get(pipeline.id)
        changed = replace(pipeline, create_time=current.create_time, base_model=current.base_model)
        await self.check(changed)
        return await self._store.replace(changed, etag=etag)

    async def delete(self, pipeline_id: str) -> None:
        async with self._store.locked(pipeline_id) as store:
            pipeline = await store.get(pipeline_id)
            active, _ = await store.run_ids(pipeline, active_only=True, page_size=1, page_token="")
            if active:
                raise FailedPrecondition("PIPELINE_RUN_ACTIVE", f"pipelineRuns/{active[0]} of pipelines/{pipeline_id}"
                                                                " has not ended; cancel it first",
                                         metadata={"run": f"pipelineRuns/{active[0]}"})
            await store.delete(pipeline_id)

    async def decisions(self, pipeline_id: str, *, page_size: int,
                        page_token: str = "") -> tuple[builtins.list[TriggerDecision], str]:
        await self._store.get(pipeline_id)
        return await self._store.decisions(pipeline_id, page_size=page_size, page_token=page_token)

    # ---- runs --------------------------------------------------------------------------------------

    async def run(self, pipeline_id: str, *, reason: str = "", request_id: str = "") -> PipelineRun:
        """Start a run now (whether or not the pipeline is enabled); FAILED_PRECONDITION while one has not ended.
        The same ``request_id`` again returns the run it started, its decision recorded or not (a write that failed
        after the run was stored), before any other check."""
        async with self._store.locked(pipeline_id) as store:
            pipeline = await store.get(pipeline_id)
            key = tr.manual_key(request_id)
            if request_id:
                earlier = await store.decision(pipeline_id, key)
                if earlier is not None:  # the same request again: the run it started
                    return await self._manager.get(earlier.run_id)
                started = await self._started(pipeline, key)
                if started is not None:  # it started the run, and its decision was not recorded: recorded now
                    await store.record(TriggerDecision(pipeline.id, TriggerKind.MANUAL, key, True, started.spec.reason,
                                                       datetime.now(UTC), started.id))
                    return started
            active, _ = await store.run_ids(pipeline, active_only=True, page_size=1, page_token="")
            if active:
                raise FailedPrecondition("PIPELINE_RUN_ACTIVE", f"pipelineRuns/{active[0]} of {pipeline.name} has "
                                                                "not ended; runs of one pipeline never overlap",
                                         metadata={"run": f"pipelineRuns/{active[0]}"})
            run = await self._start(pipeline, TriggerKind.MANUAL, key, reason or "run on request")
            await store.record(TriggerDecision(pipeline.id, TriggerKind.MANUAL, key, True, reason or "run on request",
                                               datetime.now(UTC), run.id))
            return run

    async def _start(self, pipeline: Pipeline, kind: TriggerKind, key: str, reason: str) -> PipelineRun:
        spec = PipelineRunSpec(pipeline=pipeline, trigger=kind, trigger_key=key, reason=reason)
        request_id = tr.request_id(pipeline.id, pipeline.create_time, key)  # this pipeline's, not a predecessor's
        job = self._manager.new_job(spec, PipelineRunOutput(), request_id=request_id)
        return await self._manager.submit(job)

    async def _started(self, pipeline: Pipeline, key: str) -> PipelineRun | None:
        """The run the occasion ``key`` of ``pipeline`` started, if it did: found by its request id, so also when the
        decision that started it was not recorded (the write failed, or the process stopped, after the run was
        stored)."""
        return await self._manager.for_request(tr.request_id(pipeline.id, pipeline.create_time, key))

    async def get_run(self, run_id: str) -> PipelineRun:
        return await self._manager.get(run_id)

    async def list_runs(self, pipeline_id: str, *, page_size: int,
                        page_token: str) -> tuple[builtins.list[PipelineRun], str]:
        pipeline = await self._store.get(pipeline_id)
        ids, token = await self._store.run_ids(pipeline, active_only=False, page_size=page_size,
                                               page_token=page_token)
        return [await self._manager.get(i) for i in ids], token

    async def cancel_run(self, run_id: str) -> PipelineRun:
        return await self._manager.cancel(run_id)

    def watch_run(self, run_id: str, *, after_sequence: int = 0) -> AsyncIterator[Job[PipelineRunSpec,
                                                                                         PipelineRunOutput] | JobEvent]:
        return self._manager.watch(run_id, after_sequence=after_sequence)

    # ---- triggers ----------------------------------------------------------------------------------

    async def tick(self, now: datetime | None = None) -> builtins.list[TriggerDecision]:
        """Decide every enabled pipeline's triggers once; returns the decisions this call recorded."""
        now = now or datetime.now(UTC)
        made: builtins.list[TriggerDecision] = []
        token = ""
        while True:
            page, token = await self._store.list(page_size=100, page_token=token)
            for pipeline in page:
                if pipeline.enabled and pipeline.triggers:
                    try:
                        made += await self._decide(pipeline.id, now)
                    except EngineError as exc:
                        log.warning("pipeline triggers failed", extra={"pipeline": pipeline.id, "reason": exc.reason,
                                                                       "error": exc.message})
                    except Exception:  # noqa: BLE001 - one pipeline's failure leaves the others' decisions be
                        log.exception("pipeline triggers failed", extra={"pipeline": pipeline.id})
            if not token:
                return made

    async def _decide(self, pipeline_id: str, now: datetime) -> builtins.list[TriggerDecision]:
        made: builtins.list[TriggerDecision] = []
        async with self._store.locked(pipeline_id) as store:
            pipeline = await store.get(pipeline_id)  # as it is now, under the lock
            if not pipeline.enabled:
                return made
            active, _ = await store.run_ids(pipeline, active_only=True, page_size=1, page_token="")
            since = await store.last_run_start(pipeline) or pipeline.create_time or now
            samples: int | None = -1  # not counted yet
            for i, trigger in enumerate(pipeline.triggers):
                kind = tr.kind_of(trigger)
                key = ""
                started, run_id = False, ""  # this trigger's occasion started a run (now, or at an earlier check)
                try:  # one trigger that cannot be decided (a bug, a schedule that matches no date) leaves the others
                    occasion = await self._occasion(store, pipeline, trigger, now, since)
                    if occasion is None:
                        continue
                    key, why = occasion
                    if await store.decision(pipeline.id, key) is not None:
                        continue
                    earlier = await self._started(pipeline, key)
                    if earlier is not None:  # an earlier check started its run but failed to record that: the
                        # occasion fired, whether its run has ended or not (not skipped because of that very run)
                        started, run_id = True, earlier.id
                        made += await self._keep(store, pipeline, kind, key, True, now, earlier.spec.reason,
                                                 run_id=earlier.id)
                        log.info("pipeline trigger decision recorded late",
                                 extra={"pipeline": pipeline.id, "run": earlier.name, "key": key})
                        break  # one run at a time, as when it started
                    if active:
                        if isinstance(trigger, CronTrigger):  # a tick is now or never; counts and drift can wait
                            made += await self._keep(store, pipeline, kind, key, False, now,
                                                     f"{why}; skipped: pipelineRuns/{active[0]} has not ended")
                        continue
                    if samples == -1:
                        samples = await self._samples(pipeline)
                    source = pipeline.training.dataset
                    if samples is not None and isinstance(source, FeedbackSource) and samples < source.min_samples \
                            and not source.force:
                        skip_key = key if isinstance(trigger, CronTrigger) else f"{key}:skipped:{samples}"
                        made += await self._keep(store, pipeline, kind, skip_key, False, now,
                                                 f"{why}; skipped: {samples} usable examples in the last "
                                                 f"{source.days} day(s), fewer than min_samples={source.min_samples}",
                                                 count=samples)
                        continue
                    run = await self._start(pipeline, kind, key, why)
                    started, run_id = True, run.id
                    made += await self._keep(store, pipeline, kind, key, True, now, why, run_id=run.id,
                                             count=samples or 0)
                    log.info("pipeline triggered", extra={"pipeline": pipeline.id, "run": run.name, "why": why})
                except Exception as exc:  # noqa: BLE001 - logged and recorded; the next trigger is decided still
                    made += await self._failed(store, pipeline, i, trigger, key, now, exc, run_id=run_id)
                if started:
                    break  # one run at a time
        return made

    async def _failed(self, store: PipelineStore, pipeline: Pipeline, index: int, trigger: Trigger, key: str,
                      now: datetime, exc: Exception, *, run_id: str = "") -> builtins.list[TriggerDecision]:
        """Log a trigger that could not be decided and record it as a decision that did not fire, once per
        occasion (or trigger, when its occasion is not known) and cause: its key is not the occasion's, which the
        next tick decides again. ``run_id``: the occasion's run had started when its decision failed to be
        recorded; the next tick finds that run and records the occasion as fired with it."""
        field_path = f"triggers[{index}]"
        if isinstance(exc, EngineError):
            cause, what = exc.reason, exc.message
            log.warning("pipeline trigger failed", extra={"pipeline": pipeline.id, "trigger": field_path,
                                                          "key": key, "reason": exc.reason, "error": exc.message})
        else:
            cause = type(exc).__name__
            what = f"{cause} (see the server log)"
            if isinstance(exc, CroniterError):
                what = f"cron {getattr(trigger, 'expression', '')!r} has no tick: {exc}"
            log.error("pipeline trigger failed", exc_info=exc,
                      extra={"pipeline": pipeline.id, "trigger": field_path, "key": key})
        failed_key = f"{key or _trigger_label(trigger)}:failed:{cause}"
        reason = f"{pipeline.name} {field_path} ({_trigger_label(trigger)}) could not be decided: {what}"
        if run_id:
            reason += f" (its run pipelineRuns/{run_id} started: the next check records the occasion as fired)"
        try:
            return await self._keep(store, pipeline, tr.kind_of(trigger), failed_key, False, now, reason)
        except Exception:  # noqa: BLE001 - the store failing too: the log says it
            log.exception("pipeline trigger failure not recorded", extra={"pipeline": pipeline.id,
                                                                          "trigger": field_path})
            return []

    async def _keep(self, store: PipelineStore, pipeline: Pipeline, kind: TriggerKind, key: str, fired: bool,
                    now: datetime, reason: str, *, run_id: str = "",
                    count: int = 0) -> builtins.list[TriggerDecision]:
        """Record a decision through ``store``, the pipeline's locked one."""
        decision = TriggerDecision(pipeline.id, kind, key, fired, reason, now, run_id, count)
        if not await store.record(decision):
            return []
        telemetry.pipeline_triggered(pipeline.id, kind.value, fired)
        return [decision]

    async def _occasion(self, store: PipelineStore, pipeline: Pipeline, trigger: Trigger, now: datetime,
                        since: datetime) -> tuple[str, str] | None:
        """(key, why) when ``trigger`` has an occasion now, else None; ``store`` is the pipeline's locked one."""
        if isinstance(trigger, CronTrigger):
            tick = tr.last_tick(trigger, now)
            changed = pipeline.update_time or pipeline.create_time  # no tick from before it was created or changed
            if changed is not None and tick <= changed:
                return None
            return tr.occasion_key(trigger, tick=tick), f"cron {trigger.expression!r} ({trigger.time_zone}) " \
                                                        f"ticked at {tr.stamp(tick)}"
        if isinstance(trigger, FeedbackTrigger):
            count = await store.feedback_count(base_model=pipeline.base_model, since=since, labels=_labels(pipeline),
                                               negative_only=trigger.negative_only,
                                               rating_negative_max=self._rating_negative_max)
            if count < trigger.count:
                return None
            what = "negative feedback events" if trigger.negative_only else "feedback events"
            return tr.occasion_key(trigger, since=since), f"{count} {what} since {tr.stamp(since)} " \
                                                          f"(threshold {trigger.count})"
        reading = await self._drift_now(pipeline.base_model, now)
        if reading is None:
            return None
        against = reading.reference_version or "none"
        if trigger.threshold:  # the pipeline's own bar on the statistic
            if reading.statistic < trigger.threshold:
                return None
            return tr.occasion_key(trigger, reference=reading.reference_version), \
                f"drift statistic {reading.statistic:.4g} against {against} at or above the trigger's " \
                f"{trigger.threshold:.4g}"
        if not reading.drifted:
            return None
        return tr.occasion_key(trigger, reference=reading.reference_version), \
            f"drift statistic {reading.statistic:.4g} against {against} over the detector's threshold " \
            f"{reading.threshold:.4g}"

    async def _drift_now(self, base_model: str, now: datetime) -> DriftReading | None:
        """The base model's drift, measured at most every ``drift_check_seconds`` (a report embeds prompts); None
        if the measurement failed (logged, and not tried again before the next check either)."""
        assert self._drift is not None  # checked when the pipeline was made
        seen = self._drift_seen.get(base_model)
        if seen is None or (now - seen[0]).total_seconds() >= self._drift_check:
            reading: DriftReading | None = None
            try:
                reading = await self._drift.report(base_model)
            except Exception:  # noqa: BLE001 - no reading: the trigger does not fire, the next check tries again
                log.exception("drift measurement failed", extra={"base_model": base_model})
            seen = self._drift_seen[base_model] = (now, reading)
        return seen[1]

    async def _samples(self, pipeline: Pipeline) -> int | None:
        """Usable examples in the template's feedback window now; None for data that is not feedback."""
        source = pipeline.training.dataset
        if not isinstance(source, FeedbackSource):
            return None
        try:
            content = await self._datasets.validate(replace(source, force=True), split=SplitRule(),
                                                    base_model=pipeline.base_model)
        except FailedPrecondition as exc:
            if exc.reason == "FEEDBACK_DATASET_EMPTY":
                return 0
            raise
        count: int = content.example_count
        return count


def _trigger_label(trigger: Trigger) -> str:
    """The trigger as a failed decision's key names it when it has no occasion to name."""
    if isinstance(trigger, CronTrigger):
        return f"cron:{trigger.expression} {trigger.time_zone or 'UTC'}"
    if isinstance(trigger, FeedbackTrigger):
        return f"{'negative' if trigger.negative_only else 'feedback'}:count={trigger.count}"
    return f"drift:threshold={trigger.threshold:g}"


def _labels(pipeline: Pipeline) -> Sequence[tuple[str, str]]:
    source = pipeline.training.dataset
    return source.labels if isinstance(source, FeedbackSource) else ()
