"""Learning Engine Python SDK: typed async/sync clients, job handles, typed errors, resumable job watches, CLI."""

from learning_engine.client import AsyncClient
from learning_engine.connection import Connection, TlsConfig
from learning_engine.errors import LearningEngineError
from learning_engine.handles import AsyncEvaluationJobHandle, AsyncFisherJobHandle, AsyncTrainingJobHandle
from learning_engine.sync import Client, EvaluationJobHandle, FisherJobHandle, TrainingJobHandle

__all__ = [
    "AsyncClient",
    "AsyncEvaluationJobHandle",
    "AsyncFisherJobHandle",
    "AsyncTrainingJobHandle",
    "Client",
    "Connection",
    "EvaluationJobHandle",
    "FisherJobHandle",
    "LearningEngineError",
    "TlsConfig",
    "TrainingJobHandle",
]
