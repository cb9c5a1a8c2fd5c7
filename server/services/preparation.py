"""DataPreparationService: convert, call the preparation jobs (engine.preparation.creation), convert back."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from engine.jobs.core import JobEvent
from engine.preparation.creation import PreparationJobs
from learning.v1 import preparation_pb2 as pb
from learning.v1 import preparation_pb2_grpc as pb_grpc
from server import preparation_convert as pc
from server.convert_jobs import after_sequence_from_pb, as_sent, check_request_id, page_size, states_from_pb

MAX_REQUEST_ID = 128


class DataPreparationService(pb_grpc.DataPreparationServiceServicer):
    def __init__(self, jobs: PreparationJobs) -> None:
        self._jobs = jobs

    async def CreatePreparationJob(
        self,
        request: pb.CreatePreparationJobRequest,
        context: grpc.aio.ServicerContext[pb.CreatePreparationJobRequest, pb.CreatePreparationJobResponse],
    ) -> pb.CreatePreparationJobResponse:
        check_request_id(request.request_id, "request_id", MAX_REQUEST_ID)
        received = as_sent(request)
        earlier = await self._jobs.created(request.request_id, received)
        if earlier is not None:  # a retry, before anything of it is checked
            return pb.CreatePreparationJobResponse(preparation_job=pc.job_to_pb(earlier))
        job = await self._jobs.create(pc.request_from_pb(request.spec), request_id=request.request_id,
                                      received=received)
        return pb.CreatePreparationJobResponse(preparation_job=pc.job_to_pb(job))

    async def GetPreparationJob(
        self,
        request: pb.GetPreparationJobRequest,
        context: grpc.aio.ServicerContext[pb.GetPreparationJobRequest, pb.GetPreparationJobResponse],
    ) -> pb.GetPreparationJobResponse:
        job = await self._jobs.get(pc.job_id_from_name(request.name))
        return pb.GetPreparationJobResponse(preparation_job=pc.job_to_pb(job))

    async def ListPreparationJobs(
        self,
        request: pb.ListPreparationJobsRequest,
        context: grpc.aio.ServicerContext[pb.ListPreparationJobsRequest, pb.ListPreparationJobsResponse],
    ) -> pb.ListPreparationJobsResponse:
        jobs, token = await self._jobs.list(states=states_from_pb(request.states),
                                            page_size=page_size(request.page_size),
                                            page_token=request.page_token)
        return pb.ListPreparationJobsResponse(preparation_jobs=[pc.job_to_pb(j) for j in jobs],
                                              next_page_token=token)

    async def CancelPreparationJob(
        self,
        request: pb.CancelPreparationJobRequest,
        context: grpc.aio.ServicerContext[pb.CancelPreparationJobRequest, pb.CancelPreparationJobResponse],
    ) -> pb.CancelPreparationJobResponse:
        job = await self._jobs.cancel(pc.job_id_from_name(request.name))
        return pb.CancelPreparationJobResponse(preparation_job=pc.job_to_pb(job))

    async def WatchPreparationJob(
        self,
        request: pb.WatchPreparationJobRequest,
        context: grpc.aio.ServicerContext[pb.WatchPreparationJobRequest, pb.WatchPreparationJobResponse],
    ) -> AsyncIterator[pb.WatchPreparationJobResponse]:
        job_id = pc.job_id_from_name(request.name)
        after = after_sequence_from_pb(request.after_sequence)
        async for item in self._jobs.watch(job_id, after_sequence=after):
            if isinstance(item, JobEvent):
                yield pb.WatchPreparationJobResponse(event=pc.event_to_pb(item))
            else:
                yield pb.WatchPreparationJobResponse(snapshot=pc.job_to_pb(item))
