"""The reference backend's request bodies: JSON parsing, the typed completion schema, and the checks on its fields."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine import json_input
from engine.serving.reference_errors import HttpError


async def json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = json_input.loads(await request.text())
    except ValueError as exc:
        raise HttpError(400, f"request body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise HttpError(400, "request body must be a JSON object")
    return body


def exact_fields(body: dict[str, Any], fields: tuple[str, ...]) -> list[str]:
    extra = sorted(set(body) - set(fields))
    if extra:
        raise HttpError(400, f"unexpected fields: {', '.join(extra)}")
    values = []
    for name in fields:
        value = body.get(name)
        if not isinstance(value, str) or not value:
            raise HttpError(400, f"field {name!r} is required and must be a non-empty string")
        values.append(value)
    return values


class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool | None = None


class Body(BaseModel):
    """A completion request's body, typed as vLLM's and MAX's OpenAI-compatible servers type it, in pydantic's lax
    mode as theirs: ``"false"`` is false and ``"0.5"`` is 0.5 there and here, ``"hot"`` is no number in either. Every
    field is nullable, null being its default (OpenAI's are nullable); fields not named here are ignored, as there
    (``user``, ``frequency_penalty``, ...). What is typed loosely (``tools``, ``response_format``, ``messages``)
    is checked where it is used, with its own message."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = None
    stream_options: _StreamOptions | None = None
    n: int | None = None
    temperature: float | None = Field(None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)  # torch's int64, as vLLM bounds it
    response_format: Any = None
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    echo: bool | None = None  # vLLM takes it on both endpoints (on chat: the answer begins with the last message)


class CompletionBody(Body):
    prompt: str | list[str] | None = None  # token ids (a list of ints) are not taken
    logprobs: int | None = None


class ChatBody(Body):
    messages: Any = None  # checked by flat_messages
    logprobs: bool | None = None


_B = TypeVar("_B", bound=Body)


def validated(kind: type[_B], body: dict[str, Any]) -> _B:
    """``body`` as ``kind``; a 400 naming each field that does not fit."""
    try:
        return kind.model_validate(body)
    except ValidationError as exc:
        said: dict[str, str] = {}
        for error in exc.errors():  # a union's members each fail: the field's first message says enough
            said.setdefault(str(error["loc"][0]) if error["loc"] else "body", error["msg"])
        raise HttpError(400, "; ".join(f"field {name!r}: {msg}" for name, msg in said.items())) from exc


@dataclass(frozen=True)
class Ask:
    """What a completion request asks for, checked."""

    model: str
    max_tokens: int
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool  # stream_options.include_usage: a last chunk with the usage
    temperature: float | None = None  # None or 0: greedy
    top_p: float | None = None
    seed: int | None = None

    def sampling(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p, "seed": self.seed}


def stop_sequences(value: Any) -> tuple[str, ...]:
    """OpenAI's ``stop``: null, a string, or a list of up to 4."""
    stop = [value] if isinstance(value, str) else [] if value is None else value
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) and s for s in stop):
        raise HttpError(400, "field 'stop' must be a non-empty string or a list of up to 4 of them")
    return tuple(stop)


def flat_messages(messages: Any) -> list[Any]:
    """``messages`` with content given as text parts joined into one string (by newlines, as vLLM does): the chat
    template takes strings. Any other part (an image, audio, a file) is a 400."""
    if not isinstance(messages, list) or not messages:
        raise HttpError(400, "field 'messages' must be a non-empty list")
    flat = []
    for message in messages:
        parts = message.get("content") if isinstance(message, dict) else None
        if isinstance(parts, list):
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in parts):
                raise HttpError(400, "not supported by the reference backend: message content parts other than text")
            message = {**message, "content": "\n".join(p["text"] for p in parts)}
        flat.append(message)
    return flat

