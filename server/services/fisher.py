"""FisherService: validate, convert, call the Fisher job manager or the snapshot store, convert back."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from engine import FisherJobsApi
from engine.continual.ports import FisherSnapshots
from engine.continual.spec import snapshot_id_from_name
from engine.domain import FisherSpace
from engine.jobs.core import JobEvent
from engine.names import PageScope, decode_page_token, encode_page_token
from learning.v1 import fisher_pb2 as pb
from learning.v1 import fisher_pb2_grpc as pb_grpc
from server import fisher_convert as fc
from server.convert_jobs import after_sequence_from_pb, as_sent, check_request_id, page_size, states_from_pb

MAX_REQUEST_ID = 128


class FisherService(pb_grpc.FisherServiceServicer):
    def __init__(self, jobs: FisherJobsApi, snapshots: FisherSnapshots, *, default_base_model: str,
                 default_space: FisherSpace) -> None:
        self._jobs = jobs
        self._snapshots = snapshots
        self._default_base_model = default_base_model
        self._default_space = default_space

    async def CreateFisherJob(
        self,
        request: pb.CreateFisherJobRequest,
        context: grpc.aio.ServicerContext[pb.CreateFisherJobRequest, pb.CreateFisherJobResponse],
    ) -> pb.CreateFisherJobResponse:
        check_request_id(request.request_id, "request_id", MAX_REQUEST_ID)
        received = as_sent(request)
        earlier = await self._jobs.created(request.request_id, received)
        if earlier is not None:  # a retry, before anything of it is checked
            return pb.CreateFisherJobResponse(fisher_job=fc.job_to_pb(earlier))
        spec = fc.spec_from_pb(request.spec, default_base_model=self._default_base_model,
                               default_space=self._default_space)
        job = await self._jobs.create(spec, request_id=request.request_id, received=received)
        return pb.CreateFisherJobResponse(fisher_job=fc.job_to_pb(job))

    async def GetFisherJob(
        self,
        request: pb.GetFisherJobRequest,
        context: grpc.aio.ServicerContext[pb.GetFisherJobRequest, pb.GetFisherJobResponse],
    ) -> pb.GetFisherJobResponse:
        job = await self._jobs.get(fc.job_id_from_name(request.name))
        return pb.GetFisherJobResponse(fisher_job=fc.job_to_pb(job))

    async def ListFisherJobs(
        self,
        request: pb.ListFisherJobsRequest,
        context: grpc.aio.ServicerContext[pb.ListFisherJobsRequest, pb.ListFisherJobsResponse],
    ) -> pb.ListFisherJobsResponse:
        jobs, token = await self._jobs.list(states=states_from_pb(request.states),
                                            page_size=page_size(request.page_size),
                                            page_token=request.page_token)
        return pb.ListFisherJobsResponse(fisher_jobs=[fc.job_to_pb(j) for j in jobs], next_page_token=token)

    async def CancelFisherJob(
        self,
        request: pb.CancelFisherJobRequest,
        context: grpc.aio.ServicerContext[pb.CancelFisherJobRequest, pb.CancelFisherJobResponse],
    ) -> pb.CancelFisherJobResponse:
        job = await self._jobs.cancel(fc.job_id_from_name(request.name))
        return pb.CancelFisherJobResponse(fisher_job=fc.job_to_pb(job))

    async def WatchFisherJob(
        self,
        request: pb.WatchFisherJobRequest,
        context: grpc.aio.ServicerContext[pb.WatchFisherJobRequest, pb.WatchFisherJobResponse],
    ) -> AsyncIterator[pb.WatchFisherJobResponse]:
        job_id = fc.job_id_from_name(request.name)
        after = after_sequence_from_pb(request.after_sequence)
        async for item in self._jobs.watch(job_id, after_sequence=after):
            if isinstance(item, JobEvent):
                yield pb.WatchFisherJobResponse(event=fc.event_to_pb(item))
            else:
                yield pb.WatchFisherJobResponse(snapshot=fc.job_to_pb(item))

    async def GetFisherSnapshot(
        self,
        request: pb.GetFisherSnapshotRequest,
        context: grpc.aio.ServicerContext[pb.GetFisherSnapshotRequest, pb.GetFisherSnapshotResponse],
    ) -> pb.GetFisherSnapshotResponse:
        snapshot = await self._snapshots.get(snapshot_id_from_name(request.name))
        return pb.GetFisherSnapshotResponse(fisher_snapshot=fc.snapshot_to_pb(snapshot))

    async def ListFisherSnapshots(
        self,
        request: pb.ListFisherSnapshotsRequest,
        context: grpc.aio.ServicerContext[pb.ListFisherSnapshotsRequest, pb.ListFisherSnapshotsResponse],
    ) -> pb.ListFisherSnapshotsResponse:
        size = page_size(request.page_size)
        scope = PageScope("fisherSnapshots", (request.base_model, request.adapter_version))
        before = decode_page_token(request.page_token, scope) if request.page_token else None
        rows = await self._snapshots.list(base_model=request.base_model, adapter_version=request.adapter_version,
                                          limit=size + 1, before=before)
        page = rows[:size]
        token = encode_page_token(scope, page[-1].create_time, page[-1].id) if len(rows) > size and page else ""
        return pb.ListFisherSnapshotsResponse(fisher_snapshots=[fc.snapshot_to_pb(s) for s in page],
                                              next_page_token=token)

    async def DeleteFisherSnapshot(
        self,
        request: pb.DeleteFisherSnapshotRequest,
        context: grpc.aio.ServicerContext[pb.DeleteFisherSnapshotRequest, pb.DeleteFisherSnapshotResponse],
    ) -> pb.DeleteFisherSnapshotResponse:
        await self._snapshots.delete(snapshot_id_from_name(request.name))
        return pb.DeleteFisherSnapshotResponse()
