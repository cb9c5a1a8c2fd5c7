"""Event payloads to and from JSON: the job store's rows, and a distributed run's reports to its worker."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from pydantic import TypeAdapter


def dump_json(adapter: TypeAdapter[Any], value: object) -> bytes:
    """``value`` as JSON, as ``adapter.dump_json`` writes it, except a number JSON cannot hold (an infinite or NaN
    float: a diverged loss, a gradient norm that overflowed), which pydantic would write as null, so that the
    value could not be read back: it is written as the string pydantic reads back as that number ("Infinity",
    "-Infinity", "NaN")."""
    return json.dumps(_finite_json(adapter.dump_python(value, mode="json")), ensure_ascii=False, allow_nan=False,
                      separators=(",", ":")).encode()


def _finite_json(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_json(v) for v in value]
    return value


class EventCodec:
    """Event payloads to and from (type name, JSON)."""

    def __init__(self, types: Sequence[type]) -> None:
        self._adapters: dict[str, TypeAdapter[Any]] = {cls.__name__: TypeAdapter(cls) for cls in types}

    def encode(self, payload: object) -> tuple[str, bytes]:
        kind = type(payload).__name__
        return kind, dump_json(self._adapters[kind], payload)

    def decode(self, kind: str, data: str | bytes) -> object:
        return self._adapters[kind].validate_json(data)
