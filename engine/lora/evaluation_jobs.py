"""Evaluation jobs: a version against the eval gate's suites and named golden suites, or the base model itself
against named golden suites, as a job of the typed job core (engine.jobs), with per-answer progress.

Golden suites are files below the data root (``suite_paths``) or stored dataset versions (``suite_datasets``,
engine.lora.dataset_suites). A dataset named without a version is pinned to its newest version when the job is
created (``EvaluationOutput.suite_datasets``), as a training job pins the dataset it trains on, so a version stored
while the job waits in the queue changes nothing.

The job runs where LoraControl runs (it needs the serving engine and its loaded adapters): its kind has its
own queue, which only serving processes take jobs from (engine.stores.job_queue). It loads what it needs the
way EvaluateAdapter does (the candidate and the baseline, unloaded again unless serving), scores through
LoraController.evaluate, and leaves the decision on the version and the reports in the artifact store.
Cancelling stops it at the next answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from engine.errors import Cancelled, FailedPrecondition, ViolationCollector
from engine.jobs.codec import request_digest
from engine.jobs.context import JobContext
from engine.jobs.core import Job, JobEvent, JobKind, JobProgress, JobState
from engine.jobs.manager import JobManager, RetriedCreates
from engine.lora.dataset_suites import DatasetSuites
from engine.lora.evaluation import Suite, check_suite_names, described, load_suite
from engine.lora.judge import JudgeChoice
from engine.lora.state import EvalSummary
from engine.registry import AdapterRegistry

MAX_SUITES = 16
PROGRESS_EVENTS = 100  # at most about this many progress events a job


def progress_due(answered: int, total: int) -> bool:
    """Whether the answer ``answered`` of ``total`` is told as progress: about PROGRESS_EVENTS of a suite's, and its
    last (an evaluation job's, a pipeline run's EVALUATE stage)."""
    return answered == total or answered % max(1, total // PROGRESS_EVENTS) == 0
SuitePath = Callable[[str, str], Path]  # (path below the data root, the request field) -> the file; raises if bad


def check_suite_count(issues: ViolationCollector, files: int, datasets: int, *, files_field: str,
                      datasets_field: str) -> None:
    """At most MAX_SUITES golden suites in all, files and stored datasets together (a job's spec, EvaluateAdapter):
    the violation names the datasets' field when there are any (the list that tipped it over), else the files'."""
    count = files + datasets
    issues.check(count <= MAX_SUITES, datasets_field if datasets else files_field,
                 f"at most {MAX_SUITES} suites in all ({files_field.rsplit('.', 1)[-1]} and "
                 f"{datasets_field.rsplit('.', 1)[-1]}), got {count}")


@dataclass(frozen=True)
class EvaluationJobSpec:
    base_model: str
    version: str  # "": the base model itself (base_model_itself), scored on golden suites only
    baseline_version: str = ""  # "": the version active when the job runs (the base model when none is)
    suite_paths: tuple[str, ...] = ()  # golden suites below the data root; () and no suite_datasets: the configured one
    judge: bool | None = None  # the LLM judge on or off for this job; None: as the server is configured
    judge_model: str = ""  # the judge's model; "": the configured one (or the base model)
    suite_datasets: tuple[str, ...] = ()  # stored dataset versions as golden suites, as asked ("datasets/x" or pinned)

    @property
    def base_model_itself(self) -> bool:
        """Whether the base model itself is evaluated (no adapter) rather than a version."""
        return not self.version


@dataclass(frozen=True)
class EvaluationOutput:
    eval: EvalSummary | None = None  # set on success
    suite_datasets: tuple[str, ...] = ()  # spec.suite_datasets pinned to their versions when the job was created


@dataclass(frozen=True)
class EvaluationProgress:
    """Event: answers received so far (each case is answered by candidate and baseline)."""

    suite: str
    answered: int
    total: int


EVALUATION = JobKind("evaluation", "evaluationJobs", EvaluationJobSpec, EvaluationOutput,
                     event_types=(EvaluationProgress,))
EvaluationJob = Job[EvaluationJobSpec, EvaluationOutput]


class Evaluator(Protocol):  # the part of engine.lora.controller.LoraController an evaluation job uses
    async def evaluate(self, version: str, baseline_version: str | None, suites: Sequence[Path | Suite] = (), *,
                       progress: Callable[[str, int, int], None] | None = None,
                       judge: JudgeChoice | None = None) -> EvalSummary: ...


class EvaluationRunner:
    kind = EVALUATION

    def __init__(self, control: Evaluator, *, suite_path: SuitePath, datasets: DatasetSuites) -> None:
        self._control = control
        self._suite_path = suite_path
        self._datasets = datasets

    async def run(self, ctx: JobContext[EvaluationJobSpec, EvaluationOutput]) -> str:
        spec = ctx.job.spec
        ctx.transition(JobState.PREPARING, "reading the suites")
        goldens: list[Path | Suite] = [await asyncio.to_thread(self._suite_path, p, f"spec.suite_paths[{i}]")
                                       for i, p in enumerate(spec.suite_paths)]
        pinned = ctx.job.output.suite_datasets or spec.suite_datasets
        goldens += [await self._datasets.suite(name, f"spec.suite_datasets[{i}]")
                    for i, name in enumerate(pinned)]
        ctx.started(JobState.RUNNING, f"evaluating {described(spec.version)} against "
                                      f"{spec.baseline_version or 'the active version'}")
        sink, cancel = ctx.sink, ctx.cancel

        def progress(suite: str, answered: int, total: int) -> None:
            if cancel.cancelled:
                raise Cancelled("JOB_CANCELLED", f"the evaluation was cancelled after {answered} of {total} answers")
            if progress_due(answered, total):
                sink.emit(EvaluationProgress(suite, answered, total))

        choice = JudgeChoice(spec.judge, spec.judge_model) if spec.judge is not None else None
        summary = await self._control.evaluate(spec.version, spec.baseline_version or None, goldens,
                                               progress=progress, judge=choice)
        await asyncio.sleep(0)  # let the last progress event land before the job ends
        ctx.set_output(replace(ctx.job.output, eval=summary))
        failed = "; ".join(summary.failed_checks)
        shown = described(spec.version)
        return f"{shown}: the gate passes" if summary.passed else f"{shown}: the gate fails ({failed})"

    def fold(self, job: EvaluationJob, payload: object) -> EvaluationJob:
        if isinstance(payload, EvaluationProgress):
            return replace(job, progress=JobProgress(payload.answered, payload.total))
        return job


class EvaluationJobs(RetriedCreates[EvaluationJobSpec, EvaluationOutput]):
    """The evaluation jobs servicers see: create (validated), get, list, cancel, watch."""

    def __init__(self, manager: JobManager[EvaluationJobSpec, EvaluationOutput], *, registry: AdapterRegistry,
                 suite_path: SuitePath, datasets: DatasetSuites, base_model: str, configured_suite: bool) -> None:
        self._manager = manager
        self._registry = registry
        self._suite_path = suite_path
        self._datasets = datasets
        self._base_model = base_model  # the one the serving target serves: what the jobs evaluate
        self._configured_suite = configured_suite  # whether the server has a golden suite (eval_suite_path)

    async def create(self, spec: EvaluationJobSpec, *, request_id: str = "",
                     received: object = None) -> EvaluationJob:
        """Validate ``spec`` and queue a job of it; the job of an earlier create with ``request_id`` and the same
        ``received`` (the request as the client sent it; ``spec`` if None) first, whatever changed since."""
        digest = request_digest(spec if received is None else received)
        earlier = await self._manager.created_for(request_id, digest)
        if earlier is not None:
            return earlier
        if spec.base_model != self._base_model:
            raise FailedPrecondition("BASE_MODEL_MISMATCH", f"this serving target serves base model "
                                                            f"{self._base_model}, not {spec.base_model}",
                                     metadata={"requested": spec.base_model, "served": self._base_model})
        if not spec.base_model_itself:
            await self._registry.get(spec.base_model, spec.version, field_path="spec.version")
        elif not (spec.suite_paths or spec.suite_datasets or self._configured_suite):
            raise FailedPrecondition("EVAL_SUITE_NOT_CONFIGURED",
                                     "the base model itself is scored on golden suites only (it has no training data "
                                     "of its own) and none is configured; name one with spec.suite_paths or "
                                     "spec.suite_datasets")
        if spec.baseline_version:
            await self._registry.get(spec.base_model, spec.baseline_version, field_path="spec.baseline_version")
        issues = ViolationCollector()  # a suite named as the gate's or another's: refused before a job exists
        check_suite_names(issues, spec.suite_paths, "spec.suite_paths")
        issues.raise_if_any("INVALID_EVALUATION_SPEC", "invalid evaluation job spec")
        for i, path in enumerate(spec.suite_paths):  # a missing file or a bad line: refused before a job exists
            await asyncio.to_thread(load_suite, await asyncio.to_thread(self._suite_path, path,
                                                                        f"spec.suite_paths[{i}]"))
        pinned = tuple([(await self._datasets.suite(name, f"spec.suite_datasets[{i}]")).name
                        for i, name in enumerate(spec.suite_datasets)])  # unknown, empty or unusable: refused here
        job = self._manager.new_job(spec, EvaluationOutput(suite_datasets=pinned), request_id=request_id,
                                    digest=digest)
        return await self._manager.submit(job)

    async def get(self, job_id: str) -> EvaluationJob:
        return await self._manager.get(job_id)

    async def list(self, *, states: Sequence[JobState], page_size: int,
                   page_token: str) -> tuple[list[EvaluationJob], str]:
        return await self._manager.list(states=states, page_size=page_size, page_token=page_token)

    async def cancel(self, job_id: str) -> EvaluationJob:
        return await self._manager.cancel(job_id)

    def watch(self, job_id: str, *, after_sequence: int = 0) -> AsyncIterator[EvaluationJob | JobEvent]:
        return self._manager.watch(job_id, after_sequence=after_sequence)
