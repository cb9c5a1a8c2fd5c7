"""EvaluationService: validate, convert, call the evaluation jobs, convert back."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from engine.jobs.core import JobEvent
from engine.lora.evaluation_jobs import EvaluationJobs
from learning.v1 import evaluation_pb2 as pb
from learning.v1 import evaluation_pb2_grpc as pb_grpc
from server import evaluation_convert as ec
from server.convert_jobs import after_sequence_from_pb, as_sent, check_request_id, page_size, states_from_pb

MAX_REQUEST_ID = 128


class EvaluationService(pb_grpc.EvaluationServiceServicer):
    def __init__(self, jobs: EvaluationJobs, *, default_base_model: str) -> None:
        self._jobs = jobs
        self._default_base_model = default_base_model

    async def CreateEvaluationJob(
        self,
        request: pb.CreateEvaluationJobRequest,
        context: grpc.aio.ServicerContext[pb.CreateEvaluationJobRequest, pb.CreateEvaluationJobResponse],
    ) -> pb.CreateEvaluationJobResponse:
        check_request_id(request.request_id, "request_id", MAX_REQUEST_ID)
        received = as_sent(request)
        earlier = await self._jobs.created(request.request_id, received)
        if earlier is not None:  # a retry, before anything of it is checked
            return pb.CreateEvaluationJobResponse(evaluation_job=ec.job_to_pb(earlier))
        spec = ec.spec_from_pb(request.spec, default_base_model=self._default_base_model)
        job = await self._jobs.create(spec, request_id=request.request_id, received=received)
        return pb.CreateEvaluationJobResponse(evaluation_job=ec.job_to_pb(job))

    async def GetEvaluationJob(
        self,
        request: pb.GetEvaluationJobRequest,
        context: grpc.aio.ServicerContext[pb.GetEvaluationJobRequest, pb.GetEvaluationJobResponse],
    ) -> pb.GetEvaluationJobResponse:
        job = await self._jobs.get(ec.job_id_from_name(request.name))
        return pb.GetEvaluationJobResponse(evaluation_job=ec.job_to_pb(job))

    async def ListEvaluationJobs(
        self,
        request: pb.ListEvaluationJobsRequest,
        context: grpc.aio.ServicerContext[pb.ListEvaluationJobsRequest, pb.ListEvaluationJobsResponse],
    ) -> pb.ListEvaluationJobsResponse:
        jobs, token = await self._jobs.list(states=states_from_pb(request.states),
                                            page_size=page_size(request.page_size),
                                            page_token=request.page_token)
        return pb.ListEvaluationJobsResponse(evaluation_jobs=[ec.job_to_pb(j) for j in jobs], next_page_token=token)

    async def CancelEvaluationJob(
        self,
        request: pb.CancelEvaluationJobRequest,
        context: grpc.aio.ServicerContext[pb.CancelEvaluationJobRequest, pb.CancelEvaluationJobResponse],
    ) -> pb.CancelEvaluationJobResponse:
        job = await self._jobs.cancel(ec.job_id_from_name(request.name))
        return pb.CancelEvaluationJobResponse(evaluation_job=ec.job_to_pb(job))

    async def WatchEvaluationJob(
        self,
        request: pb.WatchEvaluationJobRequest,
        context: grpc.aio.ServicerContext[pb.WatchEvaluationJobRequest, pb.WatchEvaluationJobResponse],
    ) -> AsyncIterator[pb.WatchEvaluationJobResponse]:
        job_id = ec.job_id_from_name(request.name)
        after = after_sequence_from_pb(request.after_sequence)
        async for item in self._jobs.watch(job_id, after_sequence=after):
            if isinstance(item, JobEvent):
                yield pb.WatchEvaluationJobResponse(event=ec.event_to_pb(item))
            else:
                yield pb.WatchEvaluationJobResponse(snapshot=ec.job_to_pb(item))
