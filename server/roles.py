"""The roles a caller may hold, and which one each RPC needs.

``METHOD_ROLES`` is the one table from RPC to the role it needs. It names every
method of the learning.v1 services; :func:`check_method_roles` compares it
with the proto descriptors at start (and in a test), so an RPC added to a proto
without a role stops the server from starting. Health and reflection stay open
(``OPEN_SERVICES``). server/access.py enforces the table before any handler runs.
"""

from __future__ import annotations

import enum

from server.services import SERVICE_DESCRIPTORS


class Role(enum.StrEnum):
    READER = "reader"
    FEEDBACK = "feedback"
    TRAINER = "trainer"
    OPERATOR = "operator"
    INFERENCE = "inference"  # the OpenAI-compatible gateway (server/http_doors.py); no RPC needs it


# What holding a role allows; operator implies everything.
GRANTS: dict[Role, frozenset[Role]] = {
    Role.READER: frozenset({Role.READER}),
    Role.FEEDBACK: frozenset({Role.FEEDBACK}),
    Role.TRAINER: frozenset({Role.TRAINER, Role.READER}),
    Role.OPERATOR: frozenset(Role),
    Role.INFERENCE: frozenset({Role.INFERENCE}),
}

_R, _F, _T, _O = Role.READER, Role.FEEDBACK, Role.TRAINER, Role.OPERATOR

METHOD_ROLES: dict[str, dict[str, Role]] = {
    "learning.v1.TrainingService": {
        "CreateTrainingJob": _T,
        "GetTrainingJob": _R,
        "ListTrainingJobs": _R,
        "CancelTrainingJob": _T,
        "WatchTrainingJob": _R,
        "PauseTrainingJob": _T,
        "ResumeTrainingJob": _T,
        "ListTrainingCheckpoints": _R,
        "PublishCheckpoint": _T,
        "GetTrainingMetrics": _R,
    },
    "learning.v1.EvaluationService": {
        "CreateEvaluationJob": _T,
        "GetEvaluationJob": _R,
        "ListEvaluationJobs": _R,
        "CancelEvaluationJob": _T,
        "WatchEvaluationJob": _R,
    },
    "learning.v1.DataPreparationService": {
        "CreatePreparationJob": _T,
        "GetPreparationJob": _R,
        "ListPreparationJobs": _R,
        "CancelPreparationJob": _T,
        "WatchPreparationJob": _R,
    },
    "learning.v1.PipelineService": {
        "CreatePipeline": _O,
        "GetPipeline": _R,
        "ListPipelines": _R,
        "UpdatePipeline": _O,
        "DeletePipeline": _O,
        "RunPipeline": _O,
        "ListPipelineRuns": _R,
        "GetPipelineRun": _R,
        "CancelPipelineRun": _O,
        "WatchPipelineRun": _R,
        "ListTriggerDecisions": _R,
    },
    "learning.v1.OnlineLearningService": {
        "CreateOnlineSession": _O,
        "GetOnlineSession": _R,
        "ListOnlineSessions": _R,
        "StopOnlineSession": _O,
        "SetLearningRate": _O,
        "EnableOnlineLearning": _O,
        "DisableOnlineLearning": _O,
        "ForceUpdate": _O,
        "PublishOnlineSession": _O,
        "MoveLiveAlias": _O,
        "RemoveLiveAlias": _O,
        "GetOnlineStats": _R,
        "WatchOnlineSession": _R,
        "StreamExamples": _F,  # an application's live examples, as its feedback (docs/security.md)
        "AddExamples": _F,
    },
    "learning.v1.FisherService": {
        "CreateFisherJob": _T,
        "GetFisherJob": _R,
        "ListFisherJobs": _R,
        "CancelFisherJob": _T,
        "WatchFisherJob": _R,
        "GetFisherSnapshot": _R,
        "ListFisherSnapshots": _R,
        "DeleteFisherSnapshot": _O,
    },
    "learning.v1.AdapterService": {
        "ListAdapters": _R,
        "GetAdapter": _R,
        "DownloadAdapter": _R,
        "GetLineage": _R,
        "ImportAdapter": _T,
        "DeleteAdapter": _O,
        "PruneAdapters": _O,
    },
    "learning.v1.LoraControlService": {
        "GetLoraStatus": _R,
        "ListLoadedAdapters": _R,
        "WatchLoraStatus": _R,
        "EvaluateAdapter": _T,
        "GetEvaluationReport": _R,
        "ActivateAdapter": _O,
        "RollbackAdapter": _O,
        "EnableLora": _O,
        "DisableLora": _O,
        "StartCanary": _O,
        "AbortCanary": _O,
        "SetTrafficSplit": _O,
    },
    "learning.v1.FeedbackService": {
        "SubmitFeedback": _F,
        "StreamFeedback": _F,
        "GetFeedbackStats": _R,
        "DeleteUserFeedback": _O,
    },
    "learning.v1.DatasetService": {
        "UploadDataset": _T,
        "CreateDataset": _T,
        "GetDataset": _R,
        "ListDatasets": _R,
        "DeleteDataset": _T,
        "ValidateDataset": _R,
    },
    "learning.v1.DriftService": {
        "GetDriftReport": _R,
    },
}

OPEN_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)


def all_methods() -> list[str]:
    """Every RPC of the learning.v1 services as a gRPC path, read from the descriptors."""
    return [f"/{s.full_name}/{m.name}" for s in SERVICE_DESCRIPTORS for m in s.methods]


def role_for(method: str) -> Role | None:
    service, _, name = method.lstrip("/").partition("/")
    return METHOD_ROLES.get(service, {}).get(name)


def check_method_roles() -> None:
    """Raise if the table and the protos disagree (a method without a role, or a stale entry)."""
    declared = set(all_methods())
    tabled = {f"/{s}/{m}" for s, methods in METHOD_ROLES.items() for m in methods}
    missing, stale = sorted(declared - tabled), sorted(tabled - declared)
    if missing or stale:
        raise RuntimeError(f"METHOD_ROLES out of date: no role for {missing}; unknown methods {stale}")
