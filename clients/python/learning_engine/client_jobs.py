"""The job calls of :class:`~learning_engine.client.AsyncClient`: training, Fisher, evaluation and data preparation
jobs, pipelines and online learning sessions."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence

from google.protobuf import field_mask_pb2

from learning.v1 import evaluation_pb2 as evaluation
from learning.v1 import fisher_pb2 as fisher
from learning.v1 import (
    online_pb2,
    pipeline_pb2,
    preparation_pb2,
)
from learning.v1 import training_pb2 as training
from learning_engine.calls import Calls, each
from learning_engine.handles import AsyncEvaluationJobHandle, AsyncFisherJobHandle, AsyncTrainingJobHandle


class JobCalls(Calls):
    """Training, Fisher, evaluation and preparation jobs, pipelines and online sessions."""

    # ---- training -----------------------------------------------------------------

    async def create_training_job(
        self,
        spec: training.TrainingJobSpec,
        *,
        request_id: str = "",
        validate_only: bool = False,
        priority: int = 0,
    ) -> training.TrainingJob:
        """Create and queue a job; with ``validate_only``, check the spec and its dataset and create nothing (the
        job returned then is what would run: defaults filled in, the dataset summarised, no name; a request whose
        ``request_id`` made a job already is answered with that job, named)."""
        request = training.CreateTrainingJobRequest(
            spec=spec, request_id=request_id, validate_only=validate_only, priority=priority
        )
        return (await self._unary(self.training.CreateTrainingJob, request)).training_job

    async def start_training_job(
        self, spec: training.TrainingJobSpec, *, request_id: str = "", priority: int = 0
    ) -> AsyncTrainingJobHandle:
        """Create a job and return its handle (``wait()``, ``events()``, ``cancel()``, ``pause()``, ...)."""
        job = await self.create_training_job(spec, request_id=request_id, priority=priority)
        return AsyncTrainingJobHandle(self, job.name)

    def get_training_job_handle(self, name: str) -> AsyncTrainingJobHandle:
        """A handle on an existing job ("trainingJobs/<id>"); makes no call."""
        return AsyncTrainingJobHandle(self, name)

    async def get_training_job(self, name: str) -> training.TrainingJob:
        return (
            await self._unary(self.training.GetTrainingJob, training.GetTrainingJobRequest(name=name))
        ).training_job

    async def list_training_jobs(
        self, *, states: Iterable[int] = (), page_size: int = 0, page_token: str = ""
    ) -> training.ListTrainingJobsResponse:
        request = training.ListTrainingJobsRequest(
            states=list(states), page_size=page_size, page_token=page_token
        )
        return await self._unary(self.training.ListTrainingJobs, request)

    async def cancel_training_job(self, name: str) -> training.TrainingJob:
        request = training.CancelTrainingJobRequest(name=name)
        return (await self._unary(self.training.CancelTrainingJob, request)).training_job

    async def pause_training_job(self, name: str) -> training.TrainingJob:
        """Pause a queued or running job (a running one checkpoints at its next step: PAUSING, then PAUSED)."""
        request = training.PauseTrainingJobRequest(name=name)
        return (await self._unary(self.training.PauseTrainingJob, request)).training_job

    async def resume_training_job(self, name: str) -> training.TrainingJob:
        """Queue a paused job again; it continues from its last checkpoint."""
        request = training.ResumeTrainingJobRequest(name=name)
        return (await self._unary(self.training.ResumeTrainingJob, request)).training_job

    def watch_training_job(
        self, name: str, *, after_sequence: int = 0
    ) -> AsyncIterator[training.WatchTrainingJobResponse]:
        """Snapshot, then every event until the job ends; survives dropped connections."""
        return self._resumable(
            self.training.WatchTrainingJob,
            lambda after: training.WatchTrainingJobRequest(name=name, after_sequence=after),
            after_sequence,
            lambda m: m.event.sequence if m.HasField("event") else None,
        )

    async def list_training_checkpoints(self, name: str) -> list[training.TrainingCheckpoint]:
        """The job's stored checkpoints, newest first."""
        request = training.ListTrainingCheckpointsRequest(name=name)
        return list((await self._unary(self.training.ListTrainingCheckpoints, request)).checkpoints)

    async def publish_checkpoint(self, name: str, step: int, *, request_id: str = "") -> str:
        """Publish the job's checkpoint of ``step`` as a new adapter version; returns the version."""
        request = training.PublishCheckpointRequest(name=name, step=step, request_id=request_id)
        return (await self._unary(self.training.PublishCheckpoint, request)).adapter_version

    async def get_training_metrics(self, name: str) -> training.GetTrainingMetricsResponse:
        """The job's metrics as its event log holds them now: one row per optimiser step, the same as CSV
        (``.csv``) and a loss-curve PNG (``.png``, empty while the job has no steps)."""
        request = training.GetTrainingMetricsRequest(name=name)
        return await self._unary(self.training.GetTrainingMetrics, request)

    # ---- fisher -------------------------------------------------------------------

    async def create_fisher_job(
        self, spec: fisher.FisherJobSpec, *, request_id: str = ""
    ) -> fisher.FisherJob:
        request = fisher.CreateFisherJobRequest(spec=spec, request_id=request_id)
        return (await self._unary(self.fisher.CreateFisherJob, request)).fisher_job

    async def start_fisher_job(self, spec: fisher.FisherJobSpec, *, request_id: str = "") -> AsyncFisherJobHandle:
        """Create a Fisher job and return its handle (``wait()``, ``events()``, ``cancel()``)."""
        job = await self.create_fisher_job(spec, request_id=request_id)
        return AsyncFisherJobHandle(self, job.name)

    def get_fisher_job_handle(self, name: str) -> AsyncFisherJobHandle:
        """A handle on an existing Fisher job ("fisherJobs/<id>"); makes no call."""
        return AsyncFisherJobHandle(self, name)

    async def get_fisher_job(self, name: str) -> fisher.FisherJob:
        return (await self._unary(self.fisher.GetFisherJob, fisher.GetFisherJobRequest(name=name))).fisher_job

    async def list_fisher_jobs(
        self, *, states: Iterable[int] = (), page_size: int = 0, page_token: str = ""
    ) -> fisher.ListFisherJobsResponse:
        request = fisher.ListFisherJobsRequest(states=list(states), page_size=page_size, page_token=page_token)
        return await self._unary(self.fisher.ListFisherJobs, request)

    async def cancel_fisher_job(self, name: str) -> fisher.FisherJob:
        request = fisher.CancelFisherJobRequest(name=name)
        return (await self._unary(self.fisher.CancelFisherJob, request)).fisher_job

    def watch_fisher_job(
        self, name: str, *, after_sequence: int = 0
    ) -> AsyncIterator[fisher.WatchFisherJobResponse]:
        return self._resumable(
            self.fisher.WatchFisherJob,
            lambda after: fisher.WatchFisherJobRequest(name=name, after_sequence=after),
            after_sequence,
            lambda m: m.event.sequence if m.HasField("event") else None,
        )

    async def list_fisher_snapshots(
        self, *, base_model: str = "", adapter_version: str = "", page_size: int = 0, page_token: str = ""
    ) -> fisher.ListFisherSnapshotsResponse:
        request = fisher.ListFisherSnapshotsRequest(
            base_model=base_model, adapter_version=adapter_version, page_size=page_size, page_token=page_token
        )
        return await self._unary(self.fisher.ListFisherSnapshots, request)

    async def get_fisher_snapshot(self, name: str) -> fisher.FisherSnapshot:
        request = fisher.GetFisherSnapshotRequest(name=name)
        return (await self._unary(self.fisher.GetFisherSnapshot, request)).fisher_snapshot

    async def delete_fisher_snapshot(self, name: str) -> None:
        await self._unary(self.fisher.DeleteFisherSnapshot, fisher.DeleteFisherSnapshotRequest(name=name))

    # ---- evaluation jobs ----------------------------------------------------------

    async def create_evaluation_job(
        self, spec: evaluation.EvaluationJobSpec, *, request_id: str = ""
    ) -> evaluation.EvaluationJob:
        """Evaluate a version against a baseline (the gate's suites, ``spec.suite_paths`` and
        ``spec.suite_datasets``) as a job; nothing is activated. The decision goes onto the version and the job's
        ``eval``. ``spec.base_model_itself`` (and no ``spec.version``) evaluates the base model itself, on the golden
        suites only."""
        request = evaluation.CreateEvaluationJobRequest(spec=spec, request_id=request_id)
        return (await self._unary(self.evaluation.CreateEvaluationJob, request)).evaluation_job

    async def start_evaluation_job(
        self, spec: evaluation.EvaluationJobSpec, *, request_id: str = ""
    ) -> AsyncEvaluationJobHandle:
        """Create an evaluation job and return its handle (``wait()``, ``events()``, ``cancel()``)."""
        job = await self.create_evaluation_job(spec, request_id=request_id)
        return AsyncEvaluationJobHandle(self, job.name)

    def get_evaluation_job_handle(self, name: str) -> AsyncEvaluationJobHandle:
        """A handle on an existing evaluation job ("evaluationJobs/<id>"); makes no call."""
        return AsyncEvaluationJobHandle(self, name)

    async def get_evaluation_job(self, name: str) -> evaluation.EvaluationJob:
        request = evaluation.GetEvaluationJobRequest(name=name)
        return (await self._unary(self.evaluation.GetEvaluationJob, request)).evaluation_job

    async def list_evaluation_jobs(
        self, *, states: Iterable[int] = (), page_size: int = 0, page_token: str = ""
    ) -> evaluation.ListEvaluationJobsResponse:
        request = evaluation.ListEvaluationJobsRequest(
            states=list(states), page_size=page_size, page_token=page_token
        )
        return await self._unary(self.evaluation.ListEvaluationJobs, request)

    async def cancel_evaluation_job(self, name: str) -> evaluation.EvaluationJob:
        request = evaluation.CancelEvaluationJobRequest(name=name)
        return (await self._unary(self.evaluation.CancelEvaluationJob, request)).evaluation_job

    def watch_evaluation_job(
        self, name: str, *, after_sequence: int = 0
    ) -> AsyncIterator[evaluation.WatchEvaluationJobResponse]:
        """Snapshot, then every event until the job ends; survives dropped connections."""
        return self._resumable(
            self.evaluation.WatchEvaluationJob,
            lambda after: evaluation.WatchEvaluationJobRequest(name=name, after_sequence=after),
            after_sequence,
            lambda m: m.event.sequence if m.HasField("event") else None,
        )

    # ---- data preparation jobs ----------------------------------------------------

    async def create_preparation_job(
        self, spec: preparation_pb2.PreparationJobSpec, *, request_id: str = ""
    ) -> preparation_pb2.PreparationJob:
        """Turn documents into question-answer pairs a served model writes, stored as a version of
        ``spec.dataset`` once the job succeeds (``result.dataset_version``)."""
        request = preparation_pb2.CreatePreparationJobRequest(spec=spec, request_id=request_id)
        return (await self._unary(self.preparation.CreatePreparationJob, request)).preparation_job

    async def get_preparation_job(self, name: str) -> preparation_pb2.PreparationJob:
        request = preparation_pb2.GetPreparationJobRequest(name=name)
        return (await self._unary(self.preparation.GetPreparationJob, request)).preparation_job

    async def list_preparation_jobs(
        self, *, states: Iterable[int] = (), page_size: int = 0, page_token: str = ""
    ) -> preparation_pb2.ListPreparationJobsResponse:
        request = preparation_pb2.ListPreparationJobsRequest(
            states=list(states), page_size=page_size, page_token=page_token
        )
        return await self._unary(self.preparation.ListPreparationJobs, request)

    async def cancel_preparation_job(self, name: str) -> preparation_pb2.PreparationJob:
        request = preparation_pb2.CancelPreparationJobRequest(name=name)
        return (await self._unary(self.preparation.CancelPreparationJob, request)).preparation_job

    def watch_preparation_job(
        self, name: str, *, after_sequence: int = 0
    ) -> AsyncIterator[preparation_pb2.WatchPreparationJobResponse]:
        """Snapshot, then every event (one per chunk) until the job ends; survives dropped connections."""
        return self._resumable(
            self.preparation.WatchPreparationJob,
            lambda after: preparation_pb2.WatchPreparationJobRequest(name=name, after_sequence=after),
            after_sequence,
            lambda m: m.event.sequence if m.HasField("event") else None,
        )

    # ---- pipelines ----------------------------------------------------------------

    async def create_pipeline(self, pipeline_id: str, pipeline: pipeline_pb2.Pipeline) -> pipeline_pb2.Pipeline:
        """A pipeline "pipelines/<pipeline_id>": its training template, suites, rollout and triggers."""
        request = pipeline_pb2.CreatePipelineRequest(pipeline_id=pipeline_id, pipeline=pipeline)
        return (await self._unary(self.pipelines.CreatePipeline, request)).pipeline

    async def get_pipeline(self, name: str) -> pipeline_pb2.Pipeline:
        return (await self._unary(self.pipelines.GetPipeline, pipeline_pb2.GetPipelineRequest(name=name))).pipeline

    async def list_pipelines(self, *, page_size: int = 0, page_token: str = "") -> pipeline_pb2.ListPipelinesResponse:
        request = pipeline_pb2.ListPipelinesRequest(page_size=page_size, page_token=page_token)
        return await self._unary(self.pipelines.ListPipelines, request)

    async def update_pipeline(self, pipeline: pipeline_pb2.Pipeline,
                              update_mask: Iterable[str]) -> pipeline_pb2.Pipeline:
        """Change the fields named in ``update_mask`` (training, suite_paths, rollout, triggers, enabled,
        description) of the pipeline ``pipeline.name`` to ``pipeline``'s; with ``pipeline.etag`` set, only if it
        has not changed since."""
        request = pipeline_pb2.UpdatePipelineRequest(pipeline=pipeline, update_mask=field_mask_pb2.FieldMask(
            paths=list(update_mask)))
        return (await self._unary(self.pipelines.UpdatePipeline, request)).pipeline

    async def delete_pipeline(self, name: str) -> None:
        await self._unary(self.pipelines.DeletePipeline, pipeline_pb2.DeletePipelineRequest(name=name))

    async def run_pipeline(self, name: str, *, reason: str = "", request_id: str = "") -> pipeline_pb2.PipelineRun:
        """Start a run now; the same ``request_id`` returns the run it started."""
        request = pipeline_pb2.RunPipelineRequest(name=name, reason=reason, request_id=request_id)
        return (await self._unary(self.pipelines.RunPipeline, request)).run

    async def list_pipeline_runs(
        self, pipeline: str, *, page_size: int = 0, page_token: str = ""
    ) -> pipeline_pb2.ListPipelineRunsResponse:
        request = pipeline_pb2.ListPipelineRunsRequest(pipeline=pipeline, page_size=page_size,
                                                       page_token=page_token)
        return await self._unary(self.pipelines.ListPipelineRuns, request)

    async def get_pipeline_run(self, name: str) -> pipeline_pb2.PipelineRun:
        return (await self._unary(self.pipelines.GetPipelineRun, pipeline_pb2.GetPipelineRunRequest(name=name))).run

    async def cancel_pipeline_run(self, name: str) -> pipeline_pb2.PipelineRun:
        request = pipeline_pb2.CancelPipelineRunRequest(name=name)
        return (await self._unary(self.pipelines.CancelPipelineRun, request)).run

    def watch_pipeline_run(
        self, name: str, *, after_sequence: int = 0
    ) -> AsyncIterator[pipeline_pb2.WatchPipelineRunResponse]:
        """Snapshot, then every event (stages started, progress, ended) until the run ends; survives dropped
        connections."""
        return self._resumable(
            self.pipelines.WatchPipelineRun,
            lambda after: pipeline_pb2.WatchPipelineRunRequest(name=name, after_sequence=after),
            after_sequence,
            lambda m: m.event.sequence if m.HasField("event") else None,
        )

    async def list_trigger_decisions(
        self, pipeline: str, *, page_size: int = 0, page_token: str = ""
    ) -> pipeline_pb2.ListTriggerDecisionsResponse:
        """Why each of the pipeline's triggers fired or was skipped, newest first, a page at a time (the response's
        ``next_page_token``, empty on the last page)."""
        request = pipeline_pb2.ListTriggerDecisionsRequest(pipeline=pipeline, page_size=page_size,
                                                           page_token=page_token)
        return await self._unary(self.pipelines.ListTriggerDecisions, request)

    # ---- online learning ----------------------------------------------------------

    async def create_online_session(
        self, spec: online_pb2.OnlineSessionSpec | None = None, *, session_id: str = "", request_id: str = ""
    ) -> online_pb2.OnlineSession:
        """A session "onlineSessions/<session_id>" learning from the examples it is sent, starting from
        ``spec.start_version`` (default: the active version); unset settings take the server's defaults.
        ``spec.loss = ONLINE_LOSS_KTO`` learns by KTO from examples labelled ``desirable`` true or false."""
        request = online_pb2.CreateOnlineSessionRequest(spec=spec, session_id=session_id, request_id=request_id)
        return (await self._unary(self.online.CreateOnlineSession, request)).session

    async def get_online_session(self, name: str) -> online_pb2.OnlineSession:
        return (await self._unary(self.online.GetOnlineSession, online_pb2.GetOnlineSessionRequest(name=name))).session

    async def list_online_sessions(
        self, *, page_size: int = 0, page_token: str = ""
    ) -> online_pb2.ListOnlineSessionsResponse:
        request = online_pb2.ListOnlineSessionsRequest(page_size=page_size, page_token=page_token)
        return await self._unary(self.online.ListOnlineSessions, request)

    async def stop_online_session(self, name: str) -> online_pb2.OnlineSession:
        """Stop learning for good: a last checkpoint, then the session ends CANCELLED."""
        request = online_pb2.StopOnlineSessionRequest(name=name)
        return (await self._unary(self.online.StopOnlineSession, request)).session

    async def set_learning_rate(self, name: str, learning_rate: float) -> online_pb2.OnlineSession:
        """From the session's next update on; (0, 1]."""
        request = online_pb2.SetLearningRateRequest(name=name, learning_rate=learning_rate)
        return (await self._unary(self.online.SetLearningRate, request)).session

    async def enable_online_learning(self, name: str) -> online_pb2.OnlineSession:
        request = online_pb2.EnableOnlineLearningRequest(name=name)
        return (await self._unary(self.online.EnableOnlineLearning, request)).session

    async def disable_online_learning(self, name: str, *, reason: str = "") -> online_pb2.OnlineSession:
        """Updates stop (examples are still taken and kept) until enabled again."""
        request = online_pb2.DisableOnlineLearningRequest(name=name, reason=reason)
        return (await self._unary(self.online.DisableOnlineLearning, request)).session

    async def force_update(self, name: str) -> online_pb2.OnlineSession:
        """One update now on what is buffered, even fewer than update_every examples."""
        return (await self._unary(self.online.ForceUpdate, online_pb2.ForceUpdateRequest(name=name))).session

    async def publish_online_session(self, name: str) -> online_pb2.OnlineSession:
        """Publish the session's adapter as a version (it then goes through the gate)."""
        request = online_pb2.PublishOnlineSessionRequest(name=name)
        return (await self._unary(self.online.PublishOnlineSession, request)).session

    async def get_online_stats(self, name: str) -> online_pb2.OnlineStats:
        return (await self._unary(self.online.GetOnlineStats, online_pb2.GetOnlineStatsRequest(name=name))).stats

    async def move_live_alias(self, name: str, version: str) -> online_pb2.OnlineSession:
        """Point the session's live alias at ``version`` (no gate: the caller's choice). While the session runs, its
        next publication that passes the gate moves it again; after it ended, the alias serves ``version`` until
        moved again or removed."""
        request = online_pb2.MoveLiveAliasRequest(name=name, version=version)
        return (await self._unary(self.online.MoveLiveAlias, request)).session

    async def remove_live_alias(self, name: str) -> online_pb2.OnlineSession:
        """Stop routing the session's live alias (also one kept after the session ended); the name is free again."""
        request = online_pb2.RemoveLiveAliasRequest(name=name)
        return (await self._unary(self.online.RemoveLiveAlias, request)).session

    def watch_online_session(
        self, name: str, *, after_sequence: int = 0
    ) -> AsyncIterator[online_pb2.WatchOnlineSessionResponse]:
        """Snapshot, then every event (updates, publications, loss spikes, warnings) until the session ends;
        survives dropped connections."""
        return self._resumable(
            self.online.WatchOnlineSession,
            lambda after: online_pb2.WatchOnlineSessionRequest(name=name, after_sequence=after),
            after_sequence,
            lambda m: m.event.sequence if m.HasField("event") else None,
        )

    async def add_examples(
        self, name: str, examples: Sequence[online_pb2.OnlineExample]
    ) -> online_pb2.AddExamplesResponse:
        """Store examples for the session (a target makes one supervised); empty or oversized ones are refused
        and the response says which. A KTO session needs ``desirable`` and a target on each; an SFT session
        refuses ``desirable=False``. An example's ``client_example_id`` makes it idempotent: one the session
        stored already is not stored again (``duplicates``), so a call retried after an error stores nothing
        twice."""
        request = online_pb2.AddExamplesRequest(name=name, examples=list(examples))
        return await self._unary(self.online.AddExamples, request)

    def stream_examples(
        self,
        name: str,
        batches: Iterable[Sequence[online_pb2.OnlineExample]] | AsyncIterable[Sequence[online_pb2.OnlineExample]],
    ) -> AsyncIterator[online_pb2.StreamExamplesResponse]:
        """Send ``batches`` of examples on one stream; yields the session's stats once at the start, after each
        update, and when everything sent has been trained on (or learning is off). Examples are refused, and
        deduplicated by ``client_example_id``, as by :meth:`add_examples`."""

        async def messages() -> AsyncIterator[online_pb2.StreamExamplesRequest]:
            yield online_pb2.StreamExamplesRequest(name=name)
            async for batch in each(batches):
                yield online_pb2.StreamExamplesRequest(examples=list(batch))

        return self._stream(self.online.StreamExamples, messages())
