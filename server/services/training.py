"""TrainingService: validate, convert, call the job manager, convert back."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from engine import TrainingJobsApi
from engine.jobs.core import JobEvent
from engine.training.spec import TrainingDefaults
from learning.v1 import training_pb2 as pb
from learning.v1 import training_pb2_grpc as pb_grpc
from server import convert
from server.convert_jobs import (
    after_sequence_from_pb,
    as_sent,
    check_request_id,
    page_size,
    priority_from_pb,
    states_from_pb,
)

MAX_REQUEST_ID = 128


class TrainingService(pb_grpc.TrainingServiceServicer):
    def __init__(self, jobs: TrainingJobsApi, *, default_base_model: str, ewc_defaults: convert.EwcDefaults,
                 defaults: TrainingDefaults = convert.DEFAULT_TRAINING) -> None:
        self._jobs = jobs
        self._default_base_model = default_base_model
        self._ewc_defaults = ewc_defaults
        self._defaults = defaults

    async def CreateTrainingJob(
        self,
        request: pb.CreateTrainingJobRequest,
        context: grpc.aio.ServicerContext[pb.CreateTrainingJobRequest, pb.CreateTrainingJobResponse],
    ) -> pb.CreateTrainingJobResponse:
        check_request_id(request.request_id, "request_id", MAX_REQUEST_ID)
        received = as_sent(request)
        earlier = await self._jobs.created(request.request_id, received)
        if earlier is not None:  # a retry, before anything of it is checked: its job, named (validate_only too)
            return pb.CreateTrainingJobResponse(training_job=convert.job_to_pb(earlier))
        spec = convert.spec_from_pb(
            request.spec, default_base_model=self._default_base_model, ewc_defaults=self._ewc_defaults,
            defaults=self._defaults,
        )
        job = await self._jobs.create(spec, request_id=request.request_id, validate_only=request.validate_only,
                                      priority=priority_from_pb(request.priority), received=received)
        checked = convert.job_to_pb(job)
        if request.validate_only:  # no job exists: what was checked and resolved, with no name or state
            for name in ("name", "state", "create_time", "last_sequence"):
                checked.ClearField(name)
        return pb.CreateTrainingJobResponse(training_job=checked)

    async def GetTrainingJob(
        self,
        request: pb.GetTrainingJobRequest,
        context: grpc.aio.ServicerContext[pb.GetTrainingJobRequest, pb.GetTrainingJobResponse],
    ) -> pb.GetTrainingJobResponse:
        job = await self._jobs.get(convert.job_id_from_name(request.name))
        return pb.GetTrainingJobResponse(training_job=convert.job_to_pb(job))

    async def ListTrainingJobs(
        self,
        request: pb.ListTrainingJobsRequest,
        context: grpc.aio.ServicerContext[pb.ListTrainingJobsRequest, pb.ListTrainingJobsResponse],
    ) -> pb.ListTrainingJobsResponse:
        jobs, token = await self._jobs.list(
            states=states_from_pb(request.states),
            page_size=page_size(request.page_size),
            page_token=request.page_token,
        )
        return pb.ListTrainingJobsResponse(
            training_jobs=[convert.job_to_pb(j) for j in jobs], next_page_token=token
        )

    async def CancelTrainingJob(
        self,
        request: pb.CancelTrainingJobRequest,
        context: grpc.aio.ServicerContext[pb.CancelTrainingJobRequest, pb.CancelTrainingJobResponse],
    ) -> pb.CancelTrainingJobResponse:
        job = await self._jobs.cancel(convert.job_id_from_name(request.name))
        return pb.CancelTrainingJobResponse(training_job=convert.job_to_pb(job))

    async def WatchTrainingJob(
        self,
        request: pb.WatchTrainingJobRequest,
        context: grpc.aio.ServicerContext[pb.WatchTrainingJobRequest, pb.WatchTrainingJobResponse],
    ) -> AsyncIterator[pb.WatchTrainingJobResponse]:
        job_id = convert.job_id_from_name(request.name)
        after = after_sequence_from_pb(request.after_sequence)
        async for item in self._jobs.watch(job_id, after_sequence=after):
            if isinstance(item, JobEvent):
                yield pb.WatchTrainingJobResponse(event=convert.event_to_pb(item))
            else:
                yield pb.WatchTrainingJobResponse(snapshot=convert.job_to_pb(item))

    async def PauseTrainingJob(
        self,
        request: pb.PauseTrainingJobRequest,
        context: grpc.aio.ServicerContext[pb.PauseTrainingJobRequest, pb.PauseTrainingJobResponse],
    ) -> pb.PauseTrainingJobResponse:
        job = await self._jobs.pause(convert.job_id_from_name(request.name))
        return pb.PauseTrainingJobResponse(training_job=convert.job_to_pb(job))

    async def ResumeTrainingJob(
        self,
        request: pb.ResumeTrainingJobRequest,
        context: grpc.aio.ServicerContext[pb.ResumeTrainingJobRequest, pb.ResumeTrainingJobResponse],
    ) -> pb.ResumeTrainingJobResponse:
        job = await self._jobs.resume(convert.job_id_from_name(request.name))
        return pb.ResumeTrainingJobResponse(training_job=convert.job_to_pb(job))

    async def ListTrainingCheckpoints(
        self,
        request: pb.ListTrainingCheckpointsRequest,
        context: grpc.aio.ServicerContext[pb.ListTrainingCheckpointsRequest, pb.ListTrainingCheckpointsResponse],
    ) -> pb.ListTrainingCheckpointsResponse:
        job = await self._jobs.get(convert.job_id_from_name(request.name))
        return pb.ListTrainingCheckpointsResponse(
            checkpoints=[convert.checkpoint_to_pb(c) for c in job.output.checkpoints])

    async def PublishCheckpoint(
        self,
        request: pb.PublishCheckpointRequest,
        context: grpc.aio.ServicerContext[pb.PublishCheckpointRequest, pb.PublishCheckpointResponse],
    ) -> pb.PublishCheckpointResponse:
        check_request_id(request.request_id, "request_id", MAX_REQUEST_ID)
        record = await self._jobs.publish_checkpoint(convert.job_id_from_name(request.name), request.step,
                                                     request_id=request.request_id)
        return pb.PublishCheckpointResponse(adapter_version=record.version)

    async def GetTrainingMetrics(
        self,
        request: pb.GetTrainingMetricsRequest,
        context: grpc.aio.ServicerContext[pb.GetTrainingMetricsRequest, pb.GetTrainingMetricsResponse],
    ) -> pb.GetTrainingMetricsResponse:
        job, metrics = await self._jobs.metrics(convert.job_id_from_name(request.name))
        return convert.training_metrics_to_pb(job, metrics)
