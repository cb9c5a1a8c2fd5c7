"""Learning Engine Python SDK: typed async/sync clients, typed errors, resumable job watches, CLI."""

from learning_engine.client import AsyncClient
from learning_engine.connection import Connection, TlsConfig
from learning_engine.errors import LearningEngineError
from learning_engine.sync import Client

__all__ = ["AsyncClient", "Client", "Connection", "LearningEngineError", "TlsConfig"]
