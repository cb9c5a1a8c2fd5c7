"""PipelineService: validate, convert, call the pipelines, convert back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import grpc

from engine.errors import FieldViolation, InvalidArgument
from engine.jobs.core import JobEvent
from engine.names import check_chosen_id
from engine.pipelines.service import Pipelines
from engine.pipelines.spec import Pipeline
from engine.training.spec import TrainingDefaults
from learning.v1 import pipeline_pb2 as pb
from learning.v1 import pipeline_pb2_grpc as pb_grpc
from server import convert
from server import pipeline_convert as pc
from server.convert_jobs import after_sequence_from_pb, check_request_id, page_size

MAX_REQUEST_ID = 128
MAX_DESCRIPTION = 2000


class PipelineService(pb_grpc.PipelineServiceServicer):
    def __init__(self, pipelines: Pipelines, *, default_base_model: str, ewc_defaults: convert.EwcDefaults,
                 defaults: TrainingDefaults = convert.DEFAULT_TRAINING) -> None:
        self._pipelines = pipelines
        self._default_base_model = default_base_model
        self._ewc_defaults = ewc_defaults
        self._defaults = defaults

    def _from_pb(self, msg: pb.Pipeline, pipeline_id: str) -> Pipeline:
        if len(msg.description) > MAX_DESCRIPTION:
            raise InvalidArgument("INVALID_PIPELINE", f"pipeline.description: at most {MAX_DESCRIPTION} characters",
                                  violations=[FieldViolation("pipeline.description",
                                                             f"at most {MAX_DESCRIPTION} characters")])
        return pc.pipeline_from_pb(msg, pipeline_id, default_base_model=self._default_base_model,
                                   ewc_defaults=self._ewc_defaults, defaults=self._defaults)

    async def CreatePipeline(
        self, request: pb.CreatePipelineRequest,
        context: grpc.aio.ServicerContext[pb.CreatePipelineRequest, pb.CreatePipelineResponse],
    ) -> pb.CreatePipelineResponse:
        pipeline_id = check_chosen_id(request.pipeline_id, "pipelines", "pipeline_id")
        created = await self._pipelines.create(self._from_pb(request.pipeline, pipeline_id))
        return pb.CreatePipelineResponse(pipeline=pc.pipeline_to_pb(created))

    async def GetPipeline(
        self, request: pb.GetPipelineRequest,
        context: grpc.aio.ServicerContext[pb.GetPipelineRequest, pb.GetPipelineResponse],
    ) -> pb.GetPipelineResponse:
        pipeline = await self._pipelines.get(pc.pipeline_id_from_name(request.name))
        return pb.GetPipelineResponse(pipeline=pc.pipeline_to_pb(pipeline))

    async def ListPipelines(
        self, request: pb.ListPipelinesRequest,
        context: grpc.aio.ServicerContext[pb.ListPipelinesRequest, pb.ListPipelinesResponse],
    ) -> pb.ListPipelinesResponse:
        found, token = await self._pipelines.list(page_size=page_size(request.page_size),
                                                  page_token=request.page_token)
        return pb.ListPipelinesResponse(pipelines=[pc.pipeline_to_pb(p) for p in found], next_page_token=token)

    async def UpdatePipeline(
        self, request: pb.UpdatePipelineRequest,
        context: grpc.aio.ServicerContext[pb.UpdatePipelineRequest, pb.UpdatePipelineResponse],
    ) -> pb.UpdatePipelineResponse:
        pipeline_id = pc.pipeline_id_from_name(request.pipeline.name, "pipeline.name")
        paths = list(request.update_mask.paths)
        bad = [p for p in paths if p not in pc.UPDATABLE]
        if not paths or bad:
            raise InvalidArgument("INVALID_UPDATE_MASK", f"update_mask: name fields among {', '.join(pc.UPDATABLE)}",
                                  violations=[FieldViolation("update_mask.paths",
                                                             f"unknown or fixed: {', '.join(bad)}" if bad
                                                             else "name at least one field")])
        current = await self._pipelines.get(pipeline_id)
        given = self._from_pb(request.pipeline, pipeline_id) if "training" in paths else None
        if given is None:  # the template is converted only when it changes (an unset one is not a valid spec)
            merged = pb.Pipeline()
            merged.CopyFrom(request.pipeline)
            merged.training.CopyFrom(pc.pipeline_to_pb(current).training)
            given = self._from_pb(merged, pipeline_id)
        changed = replace(current, **{p: getattr(given, p) for p in paths})
        updated = await self._pipelines.update(changed, etag=request.pipeline.etag)
        return pb.UpdatePipelineResponse(pipeline=pc.pipeline_to_pb(updated))

    async def DeletePipeline(
        self, request: pb.DeletePipelineRequest,
        context: grpc.aio.ServicerContext[pb.DeletePipelineRequest, pb.DeletePipelineResponse],
    ) -> pb.DeletePipelineResponse:
        await self._pipelines.delete(pc.pipeline_id_from_name(request.name))
        return pb.DeletePipelineResponse()

    async def RunPipeline(
        self, request: pb.RunPipelineRequest,
        context: grpc.aio.ServicerContext[pb.RunPipelineRequest, pb.RunPipelineResponse],
    ) -> pb.RunPipelineResponse:
        check_request_id(request.request_id, "request_id", MAX_REQUEST_ID)
        run = await self._pipelines.run(pc.pipeline_id_from_name(request.name), reason=request.reason[:500],
                                        request_id=request.request_id)
        return pb.RunPipelineResponse(run=pc.run_to_pb(run))

    async def ListPipelineRuns(
        self, request: pb.ListPipelineRunsRequest,
        context: grpc.aio.ServicerContext[pb.ListPipelineRunsRequest, pb.ListPipelineRunsResponse],
    ) -> pb.ListPipelineRunsResponse:
        runs, token = await self._pipelines.list_runs(pc.pipeline_id_from_name(request.pipeline, "pipeline"),
                                                      page_size=page_size(request.page_size),
                                                      page_token=request.page_token)
        return pb.ListPipelineRunsResponse(runs=[pc.run_to_pb(r) for r in runs], next_page_token=token)

    async def GetPipelineRun(
        self, request: pb.GetPipelineRunRequest,
        context: grpc.aio.ServicerContext[pb.GetPipelineRunRequest, pb.GetPipelineRunResponse],
    ) -> pb.GetPipelineRunResponse:
        run = await self._pipelines.get_run(pc.run_id_from_name(request.name))
        return pb.GetPipelineRunResponse(run=pc.run_to_pb(run))

    async def CancelPipelineRun(
        self, request: pb.CancelPipelineRunRequest,
        context: grpc.aio.ServicerContext[pb.CancelPipelineRunRequest, pb.CancelPipelineRunResponse],
    ) -> pb.CancelPipelineRunResponse:
        run = await self._pipelines.cancel_run(pc.run_id_from_name(request.name))
        return pb.CancelPipelineRunResponse(run=pc.run_to_pb(run))

    async def WatchPipelineRun(
        self, request: pb.WatchPipelineRunRequest,
        context: grpc.aio.ServicerContext[pb.WatchPipelineRunRequest, pb.WatchPipelineRunResponse],
    ) -> AsyncIterator[pb.WatchPipelineRunResponse]:
        run_id = pc.run_id_from_name(request.name)
        after = after_sequence_from_pb(request.after_sequence)
        async for item in self._pipelines.watch_run(run_id, after_sequence=after):
            if isinstance(item, JobEvent):
                yield pb.WatchPipelineRunResponse(event=pc.event_to_pb(item))
            else:
                yield pb.WatchPipelineRunResponse(snapshot=pc.run_to_pb(item))

    async def ListTriggerDecisions(
        self, request: pb.ListTriggerDecisionsRequest,
        context: grpc.aio.ServicerContext[pb.ListTriggerDecisionsRequest, pb.ListTriggerDecisionsResponse],
    ) -> pb.ListTriggerDecisionsResponse:
        decisions, token = await self._pipelines.decisions(
            pc.pipeline_id_from_name(request.pipeline, "pipeline"), page_size=page_size(request.page_size, maximum=500),
            page_token=request.page_token)
        return pb.ListTriggerDecisionsResponse(decisions=[pc.decision_to_pb(d) for d in decisions],
                                               next_page_token=token)
