"""Event payloads to and from JSON: the job store's rows, and a distributed run's reports to its worker."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import TypeAdapter


class EventCodec:
    """Event payloads to and from (type name, JSON)."""

    def __init__(self, types: Sequence[type]) -> None:
        self._adapters: dict[str, TypeAdapter[Any]] = {cls.__name__: TypeAdapter(cls) for cls in types}

    def encode(self, payload: object) -> tuple[str, bytes]:
        kind = type(payload).__name__
        return kind, self._adapters[kind].dump_json(payload)

    def decode(self, kind: str, data: str | bytes) -> object:
        return self._adapters[kind].validate_json(data)
