"""Async HTTP client for a serving engine's LoRA control API (MAX Serve, vLLM, or custom paths).

MAX Serve 26.x (read from its installed source): ``POST /v1/load_lora_adapter`` with exactly
``{"lora_name", "lora_path"}``, ``POST /v1/unload_lora_adapter`` with ``{"lora_name"}``,
``GET /v1/models``, ``GET /health``. Errors are ``{"error": {"code": "409", "message", ...}}``.
vLLM serves the same two routes with a plain-text body on success, so any 2xx counts as
success and only the two documented fields are ever sent.

Errors map to typed engine errors; only idempotent calls are retried (GETs, and a load in
MAX mode, where loading the same name and path again is a no-op).
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from engine.errors import AlreadyExists, EngineError, FailedPrecondition, NotFound, Unavailable

log = logging.getLogger(__name__)


class ServingMode(enum.StrEnum):
    MAX = "max"
    VLLM = "vllm"
    CUSTOM = "custom"


@dataclass(frozen=True)
class ServingPaths:
    load: str = "/v1/load_lora_adapter"
    unload: str = "/v1/unload_lora_adapter"
    models: str = "/v1/models"
    health: str = "/health"


@dataclass(frozen=True)
class ServingConfig:
    base_url: str
    mode: ServingMode = ServingMode.MAX
    paths: ServingPaths = ServingPaths()
    timeout_seconds: float = 10.0
    load_timeout_seconds: float = 120.0
    retries: int = 3
    backoff_seconds: float = 0.2
    # The name LoraControl keeps this engine's state under (active and known-good versions, splits, operations;
    # engine.stores.lora_store), "" : its URL. Processes that name the same engine share one state, as replicas in
    # front of one MAX Serve do; an engine whose URL changes from start to start (the embedded reference backend's
    # port) needs a name that does not.
    name: str = ""


@dataclass(frozen=True)
class ServedModel:
    """One entry of ``/v1/models``: ``root`` is the adapter path or model source, when reported."""

    id: str
    root: str = ""
    parent: str = ""


@dataclass(frozen=True)
class Completion:
    text: str
    model: str
    token_logprobs: tuple[float, ...] = ()


class _Retryable(Exception):
    def __init__(self, error: EngineError) -> None:
        super().__init__(error.message)
        self.error = error


def _error_message(status: int, body: str) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        return body.strip()[:500] or f"HTTP {status}"
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        return str(doc["error"].get("message", ""))[:500] or f"HTTP {status}"
    if isinstance(doc, dict) and "detail" in doc:  # vLLM / FastAPI style
        return str(doc["detail"])[:500]
    return body.strip()[:500]


def map_status(status: int, body: str, *, action: str, lora_name: str = "",
               mode: ServingMode | None = None) -> EngineError:
    """The typed error for a non-2xx answer of the serving engine.

    A 404 means the adapter is not loaded, except on a load: MAX never answers 404 there, and vLLM does
    when it cannot read the adapter's path ("No adapter found") or when runtime LoRA updating is off (the
    route does not exist), so a load's 404 is a refusal, not NotFound.
    """
    message = _error_message(status, body)
    meta = {"http_status": str(status), "action": action}
    if lora_name:
        meta["lora_name"] = lora_name
    text = f"serving engine refused {action}" + (f" of {lora_name}" if lora_name else "") + f": {message}"
    if status == 400:
        return FailedPrecondition("SERVING_REJECTED_REQUEST", text, metadata=meta)
    if status == 404 and action == "load":
        hint = "the serving engine cannot read the adapter's path, or runtime LoRA loading is not enabled on it"
        if mode is not ServingMode.MAX:
            hint += " (vLLM: start it with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)"
        return FailedPrecondition("SERVING_REJECTED_REQUEST", f"{text} ({hint})", metadata=meta)
    if status == 404:
        return NotFound("LORA_NOT_LOADED", text, metadata=meta)
    if status == 409:
        return AlreadyExists("LORA_NAME_CONFLICT", text, metadata=meta)
    if status == 501:
        return FailedPrecondition(
            "SERVING_LORA_DISABLED", f"{text} (start the serving engine with --enable-lora)", metadata=meta
        )
    if status >= 500:
        return Unavailable("SERVING_ENGINE_ERROR", text, metadata=meta)
    return FailedPrecondition("SERVING_REJECTED_REQUEST", text, metadata=meta)


class ServingClient:
    """One serving target. Open with ``start()`` (or ``async with``), release with ``close()``."""

    def __init__(self, config: ServingConfig) -> None:
        self.config = config
        self._base = config.base_url.rstrip("/")
        # What messages, metadata, logs and the serving state show: the URL without any user and password in it.
        self._shown = str(URL(self._base).with_user(None))
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> ServingClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def target(self) -> str:
        """The engine's name (ServingConfig.name), else its URL as shown (no credentials)."""
        return self.config.name or self._shown

    # ---- the LoRA control API -----------------------------------------------------

    async def load(self, lora_name: str, lora_path: str) -> None:
        """Load an adapter; MAX answers 200 without re-reading files for the same name and path."""
        body = {"lora_name": lora_name, "lora_path": lora_path}
        retry = self.config.mode is ServingMode.MAX
        await self._call("POST", self.config.paths.load, body, action="load", lora_name=lora_name,
                         retry=retry, timeout=self.config.load_timeout_seconds)

    async def unload(self, lora_name: str) -> None:
        """Unload an adapter; NotFound(LORA_NOT_LOADED) if the engine does not have it."""
        await self._call("POST", self.config.paths.unload, {"lora_name": lora_name}, action="unload",
                         lora_name=lora_name, retry=False, timeout=self.config.load_timeout_seconds)

    async def list_models(self) -> list[ServedModel]:
        status, text = await self._call("GET", self.config.paths.models, None, action="list models", retry=True)
        try:
            data = json.loads(text).get("data", [])
            return [
                ServedModel(id=str(m["id"]), root=str(m.get("root") or ""), parent=str(m.get("parent") or ""))
                for m in data
            ]
        except (ValueError, AttributeError, KeyError, TypeError) as exc:
            raise Unavailable("SERVING_BAD_RESPONSE", f"unreadable /v1/models answer: {text[:200]}") from exc

    async def health(self) -> bool:
        try:
            await self._call("GET", self.config.paths.health, None, action="health", retry=False)
            return True
        except EngineError:
            return False

    async def complete(self, model: str, prompt: str, *, max_tokens: int, chat: bool = True,
                       logprobs: bool = False) -> Completion:
        """One greedy completion from ``model`` (a lora_name or the base model id)."""
        if chat:
            path = "/v1/chat/completions"
            body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": prompt}],
                                    "max_tokens": max_tokens, "temperature": 0}
        else:
            path = "/v1/completions"
            body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
            if logprobs:
                body["logprobs"] = 1
        _, text = await self._call("POST", path, body, action="completion", lora_name=model, retry=False,
                                   timeout=self.config.load_timeout_seconds)
        try:
            choice = json.loads(text)["choices"][0]
            content = choice["message"]["content"] if chat else choice["text"]
            if content is not None and not isinstance(content, str):
                # Not the contract (a string, or null for an empty message), e.g. a list of content parts: every
                # caller reads the text as a string, so this is the engine's bad answer, not the caller's bug.
                raise TypeError(f"the completion's text is a {type(content).__name__}, not a string")
            lp = (choice.get("logprobs") or {}).get("token_logprobs") or ()
            return Completion(text=content or "", model=model, token_logprobs=tuple(float(x) for x in lp))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise Unavailable("SERVING_BAD_RESPONSE", f"unreadable completion answer: {text[:200]}") from exc

    # ---- transport ----------------------------------------------------------------

    async def _call(self, method: str, path: str, body: Mapping[str, object] | None, *, action: str,
                    lora_name: str = "", retry: bool, timeout: float | None = None) -> tuple[int, str]:
        attempts = 1 + (self.config.retries if retry else 0)
        delay = self.config.backoff_seconds
        for attempt in range(attempts):
            try:
                return await self._once(method, path, body, action=action, lora_name=lora_name,
                                        timeout=timeout or self.config.timeout_seconds)
            except _Retryable as exc:
                if attempt == attempts - 1:
                    raise exc.error from None
                log.warning("serving call failed, retrying",
                            extra={"action": action, "attempt": attempt + 1, "error": exc.error.message})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")

    async def _once(self, method: str, path: str, body: Mapping[str, object] | None, *, action: str, lora_name: str,
                    timeout: float) -> tuple[int, str]:
        if self._session is None:
            await self.start()
        assert self._session is not None
        url = self._base + path
        try:
            async with self._session.request(
                method, url, json=body, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as response:
                text = await response.text()
                status = response.status
        except TimeoutError as exc:
            raise _Retryable(Unavailable(
                "SERVING_TIMEOUT", f"serving engine at {self._shown} did not answer {action} within {timeout:g} s",
                metadata={"action": action, "target": self._shown},
            )) from exc
        except aiohttp.ClientError as exc:
            raise _Retryable(Unavailable(
                "SERVING_UNAVAILABLE", f"serving engine at {self._shown} is unreachable ({action}): {exc}",
                metadata={"action": action, "target": self._shown},
            )) from exc
        if 200 <= status < 300:
            return status, text
        error = map_status(status, text, action=action, lora_name=lora_name, mode=self.config.mode)
        if status >= 500 and status != 501:
            raise _Retryable(error)
        raise error
