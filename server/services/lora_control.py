"""LoraControlService: validate, convert, call the LoraController, convert back."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from engine import LoraControlApi
from engine.errors import FailedPrecondition, FieldViolation, InvalidArgument, ViolationCollector
from engine.lora.dataset_suites import DatasetSuites
from engine.lora.evaluation import Suite, reserved_suite_name
from engine.lora.evaluation_jobs import check_suite_count
from engine.registry import parse_version
from engine.training.datasets import resolve_dataset_path
from learning.v1 import lora_control_pb2 as pb
from learning.v1 import lora_control_pb2_grpc as pb_grpc
from server import convert_lora as convert
from server.access import current_principal
from server.convert_adapter import eval_to_pb

MAX_REASON = 1024
ACTOR_HEADER = "x-actor"
EVALUATION_ID = re.compile(r"\d{8}T\d{12}-vs-(base|v\d+\.\d+(\.\d+)?)")  # engine.lora.controller names them
_REPORT_FILES = {
    pb.REPORT_FORMAT_UNSPECIFIED: ("report.html", "text/html; charset=utf-8"),
    pb.REPORT_FORMAT_HTML: ("report.html", "text/html; charset=utf-8"),
    pb.REPORT_FORMAT_JSON: ("report.json", "application/json"),
    pb.REPORT_FORMAT_MARKDOWN: ("report.md", "text/markdown; charset=utf-8"),
    pb.REPORT_FORMAT_PNG: ("report.png", "image/png"),
    pb.REPORT_FORMAT_LINEAGE_PNG: ("lineage.png", "image/png"),
}


def actor_of(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The authenticated principal if auth is on; else the ``x-actor`` header; else the peer address."""
    principal = current_principal()
    if principal is not None and principal.role is not None:
        return principal.name
    for key, value in context.invocation_metadata() or ():
        if key == ACTOR_HEADER and isinstance(value, str) and value.strip():
            return value.strip()[:128]
    return context.peer() or "unknown"


def _reason(reason: str) -> str:
    if len(reason) > MAX_REASON:
        raise InvalidArgument("REASON_TOO_LONG", f"reason must be at most {MAX_REASON} characters",
                              violations=[FieldViolation("reason", f"at most {MAX_REASON} characters")])
    return reason


class LoraControlService(pb_grpc.LoraControlServiceServicer):
    def __init__(self, controller: LoraControlApi, *, datasets_dir: Path,
                 datasets: DatasetSuites | None = None) -> None:
        self._control = controller
        self._datasets_dir = datasets_dir
        self._datasets = datasets  # None: no dataset store (suite_datasets refused)

    def _check_base_model(self, base_model: str) -> None:
        mine = self._control.base_model
        if base_model and base_model != mine:
            raise FailedPrecondition(
                "BASE_MODEL_MISMATCH",
                f"this serving target serves base model {mine}, not {base_model}",
                metadata={"requested": base_model, "served": mine},
            )

    def _version(self, version: str, field_path: str = "version", *, hint: str = "") -> str:
        if not version:
            raise InvalidArgument("MISSING_VERSION", f"{field_path} is required{hint}",
                                  violations=[FieldViolation(field_path, f"required, e.g. v1.2{hint}")])
        parse_version(version, field_path)
        return version

    def _candidate(self, version: str, base_model_itself: bool, reason: str) -> str:
        """The version a request evaluates (or reports on), or "" for the base model itself: then ``version`` must
        be empty (INVALID_ARGUMENT ``reason``)."""
        if not base_model_itself:
            return self._version(version, hint=" (or set base_model_itself for the base model itself)")
        if version:
            raise InvalidArgument(reason, f"version {version!r} and base_model_itself name two candidates; give one",
                                  violations=[FieldViolation("version", "must be empty with base_model_itself (the "
                                                                        "base model itself, not a version)")])
        return ""

    async def GetLoraStatus(
        self, request: pb.GetLoraStatusRequest,
        context: grpc.aio.ServicerContext[pb.GetLoraStatusRequest, pb.GetLoraStatusResponse],
    ) -> pb.GetLoraStatusResponse:
        return pb.GetLoraStatusResponse(status=convert.status_to_pb(await self._control.status()))

    async def ActivateAdapter(
        self, request: pb.ActivateAdapterRequest,
        context: grpc.aio.ServicerContext[pb.ActivateAdapterRequest, pb.ActivateAdapterResponse],
    ) -> pb.ActivateAdapterResponse:
        version = self._version(request.version)
        self._check_base_model(request.base_model)
        result = await self._control.activate(
            version, actor=actor_of(context), reason=_reason(request.reason), force=request.force,
            mark_known_good=request.mark_known_good,
        )
        response = pb.ActivateAdapterResponse(status=convert.status_to_pb(result.status))
        if result.eval is not None:
            response.eval.CopyFrom(eval_to_pb(result.eval))
        return response

    async def RollbackAdapter(
        self, request: pb.RollbackAdapterRequest,
        context: grpc.aio.ServicerContext[pb.RollbackAdapterRequest, pb.RollbackAdapterResponse],
    ) -> pb.RollbackAdapterResponse:
        status = await self._control.rollback(actor=actor_of(context), reason=_reason(request.reason))
        return pb.RollbackAdapterResponse(status=convert.status_to_pb(status))

    async def EnableLora(
        self, request: pb.EnableLoraRequest,
        context: grpc.aio.ServicerContext[pb.EnableLoraRequest, pb.EnableLoraResponse],
    ) -> pb.EnableLoraResponse:
        status = await self._control.set_enabled(True, actor=actor_of(context), reason=_reason(request.reason))
        return pb.EnableLoraResponse(status=convert.status_to_pb(status))

    async def DisableLora(
        self, request: pb.DisableLoraRequest,
        context: grpc.aio.ServicerContext[pb.DisableLoraRequest, pb.DisableLoraResponse],
    ) -> pb.DisableLoraResponse:
        status = await self._control.set_enabled(False, actor=actor_of(context), reason=_reason(request.reason))
        return pb.DisableLoraResponse(status=convert.status_to_pb(status))

    async def ListLoadedAdapters(
        self, request: pb.ListLoadedAdaptersRequest,
        context: grpc.aio.ServicerContext[pb.ListLoadedAdaptersRequest, pb.ListLoadedAdaptersResponse],
    ) -> pb.ListLoadedAdaptersResponse:
        loaded = await self._control.list_loaded()
        return pb.ListLoadedAdaptersResponse(loaded=[convert.loaded_to_pb(a) for a in loaded])

    async def WatchLoraStatus(
        self, request: pb.WatchLoraStatusRequest,
        context: grpc.aio.ServicerContext[pb.WatchLoraStatusRequest, pb.WatchLoraStatusResponse],
    ) -> AsyncIterator[pb.WatchLoraStatusResponse]:
        async for status in self._control.watch():
            yield pb.WatchLoraStatusResponse(status=convert.status_to_pb(status))

    async def GetEvaluationReport(
        self, request: pb.GetEvaluationReportRequest,
        context: grpc.aio.ServicerContext[pb.GetEvaluationReportRequest, pb.GetEvaluationReportResponse],
    ) -> pb.GetEvaluationReportResponse:
        version = self._candidate(request.version, request.base_model_itself, "INVALID_REPORT_REQUEST")
        self._check_base_model(request.base_model)
        issues = ViolationCollector()
        issues.check(not request.evaluation_id or bool(EVALUATION_ID.fullmatch(request.evaluation_id)),
                     "evaluation_id", "must be an AdapterEvalSummary's evaluation_id, e.g. "
                                      "20261203T101500123456-vs-v1.0")
        issues.check(request.format in _REPORT_FILES, "format", f"unknown report format {request.format}")
        issues.raise_if_any("INVALID_REPORT_REQUEST", "invalid report request")
        file, content_type = _REPORT_FILES[request.format]
        summary, content, uri = await self._control.report(version, request.evaluation_id, file)
        return pb.GetEvaluationReportResponse(eval=eval_to_pb(summary), content_type=content_type,
                                              content=content, uri=uri)

    async def EvaluateAdapter(
        self, request: pb.EvaluateAdapterRequest,
        context: grpc.aio.ServicerContext[pb.EvaluateAdapterRequest, pb.EvaluateAdapterResponse],
    ) -> pb.EvaluateAdapterResponse:
        version = self._candidate(request.version, request.base_model_itself, "INVALID_EVALUATION_SPEC")
        self._check_base_model(request.base_model)
        baseline = self._version(request.baseline_version, "baseline_version") if request.baseline_version else None
        issues = ViolationCollector()
        check_suite_count(issues, bool(request.suite_path), len(request.suite_datasets), files_field="suite_path",
                          datasets_field="suite_datasets")
        if request.suite_path and (reserved := reserved_suite_name(request.suite_path)):
            issues.add("suite_path", reserved)  # checked here, as every entry point checks its own suite fields
        issues.raise_if_any("INVALID_EVALUATION_SPEC", "invalid evaluation request")
        goldens: list[Path | Suite] = [resolve_dataset_path(self._datasets_dir, request.suite_path, "suite_path")] \
            if request.suite_path else []
        for i, name in enumerate(request.suite_datasets):
            if self._datasets is None:
                raise FailedPrecondition("STORED_DATASETS_UNAVAILABLE", "this server has no dataset store",
                                         violations=[FieldViolation("suite_datasets", "needs a dataset store")])
            goldens.append(await self._datasets.suite(name, f"suite_datasets[{i}]"))
        summary = await self._control.evaluate(version, baseline, goldens)
        return pb.EvaluateAdapterResponse(eval=eval_to_pb(summary))

    async def StartCanary(
        self, request: pb.StartCanaryRequest,
        context: grpc.aio.ServicerContext[pb.StartCanaryRequest, pb.StartCanaryResponse],
    ) -> pb.StartCanaryResponse:
        version = self._version(request.version)
        self._check_base_model(request.base_model)
        status = await self._control.start_canary(version, convert.policy_from_pb(request.policy),
                                                  actor=actor_of(context), reason=_reason(request.reason),
                                                  force=request.force)
        return pb.StartCanaryResponse(status=convert.status_to_pb(status))

    async def AbortCanary(
        self, request: pb.AbortCanaryRequest,
        context: grpc.aio.ServicerContext[pb.AbortCanaryRequest, pb.AbortCanaryResponse],
    ) -> pb.AbortCanaryResponse:
        # no version aborts whatever canary is in force; one names the canary meant, and no other is aborted
        version = self._version(request.version) if request.version else ""
        status = await self._control.abort_canary(actor=actor_of(context), reason=_reason(request.reason),
                                                  version=version)
        return pb.AbortCanaryResponse(status=convert.status_to_pb(status))

    async def SetTrafficSplit(
        self, request: pb.SetTrafficSplitRequest,
        context: grpc.aio.ServicerContext[pb.SetTrafficSplitRequest, pb.SetTrafficSplitResponse],
    ) -> pb.SetTrafficSplitResponse:
        # share 0 ends the split, and needs no version; the engine checks the share itself
        version = self._version(request.version) if request.share > 0 or request.version else ""
        self._check_base_model(request.base_model)
        status = await self._control.set_traffic_split(version, request.share, actor=actor_of(context),
                                                       reason=_reason(request.reason))
        return pb.SetTrafficSplitResponse(status=convert.status_to_pb(status))

