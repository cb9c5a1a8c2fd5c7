"""Event payloads to and from JSON: the job store's rows, and a distributed run's reports to its worker; the digest of a
create request a job records."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any

from pydantic import TypeAdapter
from pydantic_core import to_jsonable_python


def dump_json(adapter: TypeAdapter[Any], value: object) -> bytes:
    """``value`` as JSON, as ``adapter.dump_json`` writes it, except a number JSON cannot hold (an infinite or NaN
    float: a diverged loss, a gradient norm that overflowed), which pydantic would write as null, so that the
    value could not be read back: it is written as the string pydantic reads back as that number ("Infinity",
    "-Infinity", "NaN")."""
    return json.dumps(_finite_json(adapter.dump_python(value, mode="json")), ensure_ascii=False, allow_nan=False,
                      separators=(",", ":")).encode()


def request_digest(request: object) -> str:
    """The digest a job records of the create request that made it, as the client sent it (what a repeat of its
    request_id is compared with, before anything is validated or resolved): SHA-256 of its canonical JSON (keys
    sorted, bytes in base64, a non-finite float as ``dump_json`` writes it, a whole float as the integer it equals,
    as Python compares them: a spec read back from the store, its numbers floats, is the request it was before).
    ``request`` is what pydantic writes as JSON: a spec (dataclasses), or a request message as a dict
    (server.convert_jobs.as_sent)."""
    value = _canonical(to_jsonable_python(request, bytes_mode="base64"))
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _canonical(value: object) -> object:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return _finite_json(value)


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
