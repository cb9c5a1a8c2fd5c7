"""DriftService: validate, convert, ask the drift detector, convert back."""

from __future__ import annotations

import grpc

from engine import DriftApi
from learning.v1 import drift_pb2 as pb
from learning.v1 import drift_pb2_grpc as pb_grpc
from server import convert_drift


class DriftService(pb_grpc.DriftServiceServicer):
    def __init__(self, drift: DriftApi, *, default_base_model: str) -> None:
        self._drift = drift
        self._default_base_model = default_base_model

    async def GetDriftReport(
        self, request: pb.GetDriftReportRequest,
        context: grpc.aio.ServicerContext[pb.GetDriftReportRequest, pb.GetDriftReportResponse],
    ) -> pb.GetDriftReportResponse:
        base_model, window, end = convert_drift.request_from_pb(request, default_base_model=self._default_base_model)
        report = await self._drift.report(base_model, window=window, end=end)
        return pb.GetDriftReportResponse(report=convert_drift.report_to_pb(report))
