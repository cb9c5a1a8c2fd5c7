"""Reference serving backend: MAX Serve's LoRA HTTP contract on CPU, for development and tests.

This is NOT MAX Serve. Production targets MAX Serve on a GPU (its LoRA kernels refuse the
CPU); this process exists so the control plane can be developed and tested end to end on
a laptop or CI. It implements the same contract as MAX 26.x (engine/serving/client.py):

- ``POST /v1/load_lora_adapter`` body exactly ``{"lora_name", "lora_path"}`` (other fields:
  400). Same name and path again: 200 without re-reading files; same name, other path: 409;
  unreadable adapter: 400; started without ``--enable-lora``: 501.
- ``POST /v1/unload_lora_adapter`` body ``{"lora_name"}``: 200, or 404 if not loaded.
- Errors: ``{"error": {"code": "409", "message": ..., "param": "", "type": "conflict_error"}}``, aiohttp's own
  refusals too (no route 404, wrong method 405, body over the limit 413); an empty prompt is a 400; a generation
  failing after a stream has begun ends it with that error as an event, then ``data: [DONE]``.
- Request bodies up to the gateway's limit (``gateway.MAX_BODY_BYTES``, 64 MiB) are taken, not aiohttp's 1 MiB:
  MAX sets no limit, and the gateway must not pass what the engine behind it refuses.
- ``GET /v1/models``, ``GET /health``, and ``POST /v1/chat/completions`` and ``/v1/completions`` with real
  transformers + PEFT inference that honours ``model``, ``max_tokens``, ``stop``, ``temperature``, ``top_p``,
  ``seed`` and ``stream_options.include_usage``; what it does not do (``n`` above 1, tools, ``echo``, ...) is a 400
  that says so. A request whose client has gone away, streamed or not, stops generating at the next token.
- The body is validated against one typed schema (pydantic, lax mode, as vLLM's and MAX's OpenAI-compatible
  servers validate theirs): a value they take is taken (``"stream": "false"`` is false, ``"temperature": "0.5"``
  is 0.5), one they refuse is a 400 naming the field (``"temperature": "hot"``); a null field is its default;
  fields it does not know are ignored, as there.
- Sampling: ``temperature`` omitted, null, 0 or below 1e-5 (as vLLM) is greedy decoding. OpenAI's default
  temperature is 1; the reference backend's is greedy, which keeps the engine (it sends temperature 0) and the
  tests deterministic. A larger ``temperature`` samples with that temperature and ``top_p`` (no top-k), the same
  text again for the same ``seed``. Ranges as OpenAI documents them: ``temperature`` in [0, 2], ``top_p`` in
  (0, 1]; outside: 400.
- Context: a prompt of as many tokens as the model's context (``max_position_embeddings``) or more is a 400 that
  says both numbers; a prompt that fits with room for fewer than ``max_tokens`` gets an answer ended at the
  context (finish_reason ``"length"``), as MAX clamps it (vLLM would refuse prompt + max_tokens > context).

One model, one lock: inference and adapter changes are serialised and run off the event loop.

    python -m engine.serving.reference_backend --model DIR --port P --enable-lora
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine import json_input
from engine.model_build import BUILDING
from engine.names import is_loopback
from engine.serving.gateway import MAX_BODY_BYTES
from engine.serving.lifetime import die_with_parent

log = logging.getLogger(__name__)

_ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error", 405: "invalid_request_error",
                409: "conflict_error", 413: "invalid_request_error", 500: "internal_server_error",
                501: "not_implemented_error"}


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"error": {"code": str(status), "message": message, "param": "", "type": _ERROR_TYPES.get(status, "error")}}


def error_response(status: int, message: str) -> web.Response:
    return web.json_response(error_body(status, message), status=status)


@dataclass(frozen=True)
class Generation:
    text: str
    tokens: tuple[str, ...]
    token_logprobs: tuple[float, ...]
    prompt_tokens: int
    finish_reason: str = "length"  # "stop" when the model ended its answer (EOS) or wrote a stop sequence


class ReferenceModel:
    """A base model plus named PEFT adapters; every method is thread-safe and blocking."""

    def __init__(self, model_dir: Path, served_name: str) -> None:
        from transformers import AutoTokenizer  # noqa: PLC0415 - heavy

        self.model_dir = model_dir
        self.served_name = served_name
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self._base = self._load_base()
        self._peft: Any = None
        self._paths: dict[str, str] = {}  # lora_name -> lora_path
        self._keys: dict[str, str] = {}  # lora_name -> PEFT adapter key (no dots allowed there)
        self._counter = 0
        self._lock = threading.Lock()
        # The longest sequence (prompt + answer) the model takes; None if its config does not say.
        self.context: int | None = getattr(self._base.config, "max_position_embeddings", None)

    def _load_base(self) -> Any:
        from transformers import AutoModelForCausalLM  # noqa: PLC0415 - heavy

        # transformers leaves PreTrainedModel.eval unannotated
        with BUILDING:
            return AutoModelForCausalLM.from_pretrained(self.model_dir).eval()  # type: ignore[no-untyped-call]

    def adapters(self) -> dict[str, str]:
        with self._lock:
            return dict(self._paths)

    def load(self, name: str, path: str) -> bool:
        """Load ``path`` as ``name``; False if that exact pair is already loaded (no file is read)."""
        with self._lock:
            if name in self._paths:
                if self._paths[name] == path:
                    return False
                raise HttpError(409, f"adapter {name!r} is already loaded from {self._paths[name]!r}")
            if not (Path(path) / "adapter_config.json").is_file():
                raise HttpError(400, f"{path!r} is not a PEFT adapter directory (no adapter_config.json)")
            self._counter += 1
            key = f"adapter{self._counter}"
            try:
                self._add(path, key)
            except Exception as exc:  # noqa: BLE001 - any load failure is the adapter's fault: 400
                raise HttpError(400, f"cannot load adapter {name!r} from {path!r}: {exc}") from exc
            self._paths[name], self._keys[name] = path, key
            return True

    def _add(self, path: str, key: str) -> None:
        """Add the adapter at ``path`` as ``key``; if that fails, what PEFT had injected for it is removed again, so
        a refused load leaves what is served exactly as it was."""
        from peft import PeftConfig, get_peft_model  # noqa: PLC0415

        if self._peft is not None:
            try:
                self._peft.load_adapter(path, adapter_name=key)
            except Exception:
                if key in self._peft.peft_config:
                    self._peft.delete_adapter(key)
                raise
            return
        # Not PeftModel.from_pretrained: it injects the LoRA layers into the base model before it reads the weights,
        # and when reading them fails keeps those layers, with no PeftModel to unload them from.
        config = PeftConfig.from_pretrained(path)
        config.inference_mode = True
        try:
            peft = get_peft_model(self._base, config, adapter_name=key)
        except Exception:
            self._base = self._load_base()  # injecting failed part-way (e.g. an unsupported target module)
            raise
        try:
            peft.load_adapter(path, adapter_name=key)
        except Exception:
            self._base = peft.unload()  # strips the LoRA layers: the plain base model again
            raise
        self._peft = peft.eval()

    def unload(self, name: str) -> None:
        with self._lock:
            if name not in self._paths:
                raise HttpError(404, f"adapter {name!r} is not loaded")
            key = self._keys.pop(name)
            del self._paths[name]
            if self._keys:
                self._peft.delete_adapter(key)
            else:  # PEFT cannot run with zero adapters: strip the LoRA layers instead
                self._base, self._peft = self._peft.unload(), None

    def resolve(self, model: str) -> str | None:
        """The lora_name for ``model``, None for the base model; HttpError(404) if unknown."""
        if model in (self.served_name, str(self.model_dir)):
            return None
        if model in self._paths:
            return model
        raise HttpError(404, f"model {model!r} does not exist")

    def room(self, prompt_tokens: int) -> int | None:
        """How many tokens the model can still write after a prompt of ``prompt_tokens`` (None: no known limit);
        HttpError(400) if the prompt alone fills its context (vLLM's words)."""
        if self.context is None:
            return None
        if prompt_tokens >= self.context:
            raise HttpError(400, f"This model's maximum context length is {self.context} tokens. However, your "
                                 f"request has {prompt_tokens} input tokens, leaving no room for an answer. Please "
                                 "reduce the length of the input.")
        return self.context - prompt_tokens

    def generate(self, model: str, prompt_ids: list[int], max_tokens: int, streamer: Any = None, *,
                 stop: tuple[str, ...] = (), cancel: threading.Event | None = None,
                 temperature: float | None = None, top_p: float | None = None,
                 seed: int | None = None) -> Generation:
        """Greedy generation when ``temperature`` is None or below GREEDY_BELOW, else sampling with ``temperature``
        and ``top_p`` (reproducible for a ``seed``), ending at the model's context, at the first of ``stop`` (left out
        of the text, as OpenAI does) or once ``cancel`` is set; ``streamer`` (transformers' TextIteratorStreamer) hears
        the text as it comes."""
        import torch  # noqa: PLC0415
        from transformers import StoppingCriteriaList  # noqa: PLC0415

        room = self.room(len(prompt_ids))
        # top_k=0: no top-k cut (OpenAI has none; a model's generation config may set one)
        sampling = dict(do_sample=True, temperature=temperature, top_p=1.0 if top_p is None else top_p,
                        top_k=0) if temperature is not None and temperature >= GREEDY_BELOW else dict(do_sample=False)
        with self._lock:
            lora = self.resolve(model)
            ids = torch.tensor([prompt_ids])
            kwargs = dict(max_new_tokens=max_tokens if room is None else min(max_tokens, room), output_logits=True,
                          return_dict_in_generate=True, attention_mask=torch.ones_like(ids),
                          pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
                          streamer=streamer, stop_strings=list(stop) or None, tokenizer=self.tokenizer,
                          stopping_criteria=StoppingCriteriaList([_until(cancel)] if cancel is not None else []),
                          **sampling)
            # transformers samples with torch's global generator (generate takes none of its own): a seeded
            # request forks it, seeds the fork and restores it after; the lock keeps other generations out.
            seeded = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
            with torch.inference_mode(), seeded:
                if seed is not None:
                    torch.manual_seed(seed)
                if lora is None and self._peft is not None:
                    with self._peft.disable_adapter():
                        out = self._peft.generate(input_ids=ids, **kwargs)
                elif lora is None:
                    out = self._base.generate(input_ids=ids, **kwargs)
                else:
                    self._peft.set_adapter(self._keys[lora])
                    out = self._peft.generate(input_ids=ids, **kwargs)
        new = out.sequences[0, len(prompt_ids):].tolist()
        # the model's own log-probabilities (its logits, not those that temperature and top_p reshaped), as vLLM's
        logprobs = [
            float(torch.log_softmax(logit[0].float(), dim=-1)[tok]) for logit, tok in zip(out.logits, new, strict=False)
        ]
        eos = self.tokenizer.eos_token_id
        text_ids = [t for t in new if t != eos]
        # One sequence decodes to one str; transformers types the batch case's list[str] in too.
        text, stopped = until_stop(self.tokenizer.decode(text_ids, skip_special_tokens=True), stop)  # type: ignore[arg-type]
        return Generation(
            text=text,
            tokens=tuple(self.tokenizer.convert_ids_to_tokens(new)),
            token_logprobs=tuple(logprobs),
            prompt_tokens=len(prompt_ids),
            finish_reason="stop" if stopped or eos in new else "length",
        )


def _until(cancel: threading.Event) -> Any:
    """A stopping criterion for generate, true once ``cancel`` is set."""
    import torch  # noqa: PLC0415
    from transformers import StoppingCriteria  # noqa: PLC0415

    class Cancelled(StoppingCriteria):
        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
            return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool,  # type: ignore[return-value]
                              device=input_ids.device)

    return Cancelled()


def until_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """``text`` up to the first stop sequence in it, and whether there was one."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _stop_prefix(text: str, stop: tuple[str, ...]) -> int:
    """Length of the longest end of ``text`` that begins a stop sequence: a stream holds it back until it knows."""
    return max((n for s in stop for n in range(1, len(s)) if text.endswith(s[:n])), default=0)


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = json_input.loads(await request.text())
    except ValueError as exc:
        raise HttpError(400, f"request body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise HttpError(400, "request body must be a JSON object")
    return body


def _exact_fields(body: dict[str, Any], fields: tuple[str, ...]) -> list[str]:
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


# A temperature this small is greedy decoding (vLLM's _SAMPLING_EPS): dividing the logits by less overflows them to
# inf, and sampling from that fails
GREEDY_BELOW = 1e-5
MAX_TOKENS_LIMIT = 512  # the largest max_tokens a request may ask for, unless started with another
CLIENT_CHECK_SECONDS = 0.1  # how often a request not streamed looks whether its client is still there


class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool | None = None


class _Body(BaseModel):
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


class _CompletionBody(_Body):
    prompt: str | list[str] | None = None  # token ids (a list of ints) are not taken
    logprobs: int | None = None


class _ChatBody(_Body):
    messages: Any = None  # checked by _flat_messages
    logprobs: bool | None = None


_B = TypeVar("_B", bound=_Body)


def _validated(kind: type[_B], body: dict[str, Any]) -> _B:
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


def _stop(value: Any) -> tuple[str, ...]:
    """OpenAI's ``stop``: null, a string, or a list of up to 4."""
    stop = [value] if isinstance(value, str) else [] if value is None else value
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) and s for s in stop):
        raise HttpError(400, "field 'stop' must be a non-empty string or a list of up to 4 of them")
    return tuple(stop)


def _flat_messages(messages: Any) -> list[Any]:
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


def create_app(model: ReferenceModel, *, enable_lora: bool,
               max_tokens_limit: int = MAX_TOKENS_LIMIT) -> web.Application:
    created = int(time.time())

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except HttpError as exc:
            return error_response(exc.status, exc.message)
        except web.HTTPException as exc:  # aiohttp's own: no route 404, wrong method 405, body over the limit 413
            if exc.status < 400:
                raise
            text = exc.text or ""  # aiohttp's default text only repeats the reason; its own (a size) says more
            plain = text == f"{exc.status}: {exc.reason}"
            message = f"{exc.reason} ({request.method} {request.path})" if plain else text
            response = error_response(exc.status, message)
            for key, value in exc.headers.items():  # e.g. a 405's Allow
                if key.lower() not in ("content-type", "content-length"):
                    response.headers[key] = value
            return response

    async def load(request: web.Request) -> web.Response:
        if not enable_lora:
            raise HttpError(501, "LoRA is not enabled on this server (start it with --enable-lora)")
        name, path = _exact_fields(await _json_object(request), ("lora_name", "lora_path"))
        loaded = await asyncio.to_thread(model.load, name, path)
        message = f"LoRA adapter '{name}' " + ("loaded successfully" if loaded else "is already loaded")
        return web.json_response({"status": "success", "message": message})

    async def unload(request: web.Request) -> web.Response:
        if not enable_lora:
            raise HttpError(501, "LoRA is not enabled on this server (start it with --enable-lora)")
        (name,) = _exact_fields(await _json_object(request), ("lora_name",))
        await asyncio.to_thread(model.unload, name)
        return web.json_response({"status": "success", "message": f"LoRA adapter '{name}' unloaded successfully"})

    async def models(request: web.Request) -> web.Response:
        data = [{"id": model.served_name, "object": "model", "created": created, "owned_by": "reference-backend",
                 "root": str(model.model_dir), "parent": None}]
        data += [{"id": name, "object": "model", "created": created, "owned_by": "reference-backend",
                  "root": path, "parent": model.served_name} for name, path in model.adapters().items()]
        return web.json_response({"object": "list", "data": data})

    async def health(request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def one_model(request: web.Request) -> web.Response:
        wanted = request.match_info["model"]
        listed = json.loads((await models(request)).text or "{}")["data"]
        for entry in listed:
            if entry["id"] == wanted:
                return web.json_response(entry)
        raise HttpError(404, f"model {wanted!r} does not exist")

    def _common(body: _Body) -> Ask:
        """The request's parameters, from its validated body."""
        name = body.model
        if not isinstance(name, str) or not name:
            raise HttpError(400, "field 'model' is required")
        refused = [key for key in ("tools", "tool_choice", "functions", "function_call") if getattr(body, key)]
        if body.echo:
            refused.append("echo (the answer never repeats the prompt)")
        if body.n not in (None, 1):
            refused.append(f"n={body.n} (one choice only)")
        if (body.response_format or {"type": "text"}) != {"type": "text"}:
            refused.append("response_format other than text")
        if isinstance(body, _ChatBody) and body.logprobs:
            refused.append("logprobs on chat completions (the completions endpoint has them)")
        if refused:
            raise HttpError(400, f"not supported by the reference backend: {', '.join(refused)}")
        limit = next((v for v in (body.max_tokens, body.max_completion_tokens) if v is not None), 16)
        if not 1 <= limit <= max_tokens_limit:
            raise HttpError(400, f"max_tokens must be an integer in [1, {max_tokens_limit}]")
        if body.stream_options is not None and not body.stream:
            raise HttpError(400, "field 'stream_options' must be an object, and only comes with 'stream'")
        stop = _stop(body.stop)
        model.resolve(name)  # 404 early for unknown models
        return Ask(name, limit, stop, bool(body.stream),
                   bool(body.stream_options is not None and body.stream_options.include_usage),
                   temperature=body.temperature, top_p=body.top_p, seed=body.seed)

    def _usage(gen: Generation) -> dict[str, int]:
        return {"prompt_tokens": gen.prompt_tokens, "completion_tokens": len(gen.tokens),
                "total_tokens": gen.prompt_tokens + len(gen.tokens)}

    async def answer(request: web.Request, ask: Ask, ids: list[int]) -> Generation:
        """The whole generation for a request not streamed. It stops at the next token once the client has gone
        away: aiohttp does not cancel the handler when the connection is lost (handler_cancellation is off), and
        nothing is written before the end that could fail, so the connection is looked at while the model works.
        The answer cut short is then written to no one."""
        cancel = threading.Event()
        generating = asyncio.ensure_future(
            asyncio.to_thread(model.generate, ask.model, ids, ask.max_tokens, stop=ask.stop, cancel=cancel,
                              **ask.sampling()))
        try:
            while not generating.done():
                await asyncio.wait({generating}, timeout=CLIENT_CHECK_SECONDS)
                if request.transport is None or request.transport.is_closing():
                    cancel.set()  # free the model's lock for the next request at the next token, not at max_tokens
                    break
            return await generating
        finally:
            if not generating.done():  # the handler was cancelled (the server stopping)
                cancel.set()
                with contextlib.suppress(Exception):  # a failure is no one's answer any more
                    await generating

    async def stream(request: web.Request, ask: Ask, ids: list[int], *, chat: bool) -> web.StreamResponse:
        """OpenAI's server-sent events: a chunk per piece of text as it is generated, the finish reason in the
        last (then one with the usage if asked), then ``[DONE]``. Text that may begin a stop sequence is held
        back until it is known not to."""
        from transformers import TextIteratorStreamer  # noqa: PLC0415

        streamer = TextIteratorStreamer(model.tokenizer, skip_prompt=True, skip_special_tokens=True)
        ident, kind = (f"chatcmpl-{time.time_ns()}", "chat.completion.chunk") if chat else (
            f"cmpl-{time.time_ns()}", "text_completion")
        cancel = threading.Event()

        def run() -> Generation:
            try:
                return model.generate(ask.model, ids, ask.max_tokens, streamer, stop=ask.stop, cancel=cancel,
                                      **ask.sampling())
            finally:
                streamer.end()  # type: ignore[no-untyped-call]  # a failed generation must not leave the reader waiting

        def event(doc: dict[str, Any]) -> bytes:
            return b"data: " + json.dumps(doc).encode() + b"\n\n"

        def chunk(text: str, finish: str | None, first: bool = False) -> bytes:
            if chat:
                delta = {"role": "assistant", "content": text} if first else {"content": text} if text else {}
                choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            else:
                choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
            doc = {"id": ident, "object": kind, "created": int(time.time()), "model": ask.model, "choices": [choice]}
            return event(doc | {"usage": None} if ask.include_usage else doc)

        generating = asyncio.ensure_future(asyncio.to_thread(run))
        try:
            out = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
            await out.prepare(request)
            if chat:
                await out.write(chunk("", None, first=True))
            text, sent = "", 0  # what the model has written, and how much of it the client has
            pieces = iter(streamer)
            while (piece := await asyncio.to_thread(next, pieces, None)) is not None:
                text += piece
                kept, stopped = until_stop(text, ask.stop)
                end = len(kept) if stopped else len(text) - _stop_prefix(text, ask.stop)
                if end > sent:
                    await out.write(chunk(text[sent:end], None))
                    sent = end
            try:
                gen = await generating
            except Exception as exc:  # noqa: BLE001 - the answer has begun (200 sent): the stream says what failed
                log.exception("generation failed mid-stream")
                await out.write(event(error_body(500, f"generation failed: {type(exc).__name__}: {exc}")))
            else:
                await out.write(chunk(until_stop(text, ask.stop)[0][sent:], gen.finish_reason))
                if ask.include_usage:
                    await out.write(event({"id": ident, "object": kind, "created": int(time.time()),
                                           "model": ask.model, "choices": [], "usage": _usage(gen)}))
            await out.write(b"data: [DONE]\n\n")
            await out.write_eof()
            return out
        finally:
            if not generating.done():  # the client went away (a write failed, or the handler was cancelled)
                cancel.set()  # free the model's lock for the next request at the next token, not at max_tokens
                with contextlib.suppress(Exception):  # a failure is no one's answer any more
                    await generating

    async def completions(request: web.Request) -> web.StreamResponse:
        body = _validated(_CompletionBody, await _json_object(request))
        ask = _common(body)
        prompt = body.prompt
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise HttpError(400, "field 'prompt' must be a string")
        ids = model.tokenizer(prompt)["input_ids"]
        if not ids:  # nothing to continue from (a tokenizer that adds no start token, and an empty prompt)
            raise HttpError(400, "field 'prompt' must not be empty")
        model.room(len(ids))  # a 400 before a stream's 200
        if ask.stream:
            return await stream(request, ask, ids, chat=False)
        gen = await answer(request, ask, ids)
        choice: dict[str, Any] = {"index": 0, "text": gen.text, "finish_reason": gen.finish_reason, "logprobs": None}
        if body.logprobs is not None:
            choice["logprobs"] = {"tokens": list(gen.tokens), "token_logprobs": list(gen.token_logprobs)}
        return web.json_response({"id": f"cmpl-{time.time_ns()}", "object": "text_completion",
                                  "created": int(time.time()), "model": ask.model, "choices": [choice],
                                  "usage": _usage(gen)})

    async def chat(request: web.Request) -> web.StreamResponse:
        body = _validated(_ChatBody, await _json_object(request))
        ask = _common(body)
        messages = _flat_messages(body.messages)
        try:
            ids = model.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        except Exception as exc:  # noqa: BLE001 - malformed messages
            raise HttpError(400, f"cannot apply the chat template: {exc}") from exc
        # transformers types the result of every flag combination at once; tokenize=True gives token ids,
        # directly or in a BatchEncoding.
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]  # type: ignore[call-overload,index]
        model.room(len(ids))  # a 400 before a stream's 200
        if ask.stream:
            return await stream(request, ask, list(ids), chat=True)  # type: ignore[arg-type]
        gen = await answer(request, ask, list(ids))  # type: ignore[arg-type]
        return web.json_response({
            "id": f"chatcmpl-{time.time_ns()}", "object": "chat.completion", "created": int(time.time()),
            "model": ask.model, "usage": _usage(gen),
            "choices": [{"index": 0, "finish_reason": gen.finish_reason, "logprobs": None,
                         "message": {"role": "assistant", "content": gen.text}}],
        })

    app = web.Application(middlewares=[errors], client_max_size=MAX_BODY_BYTES)
    app.add_routes([
        web.post("/v1/load_lora_adapter", load), web.post("/v1/unload_lora_adapter", unload),
        web.get("/v1/models", models), web.get("/v1/models/{model:.+}", one_model), web.get("/health", health),
        web.post("/v1/completions", completions), web.post("/v1/chat/completions", chat),
    ])
    return app


async def start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``host:port`` (0 picks a free port); returns the runner and the bound port."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]  # the bound (host, port, ...) of the one site
    return runner, bound


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.serving.reference_backend",
                                     description="CPU reference backend with MAX Serve's LoRA HTTP API (not MAX)")
    parser.add_argument("--model", type=Path, required=True, help="HF model directory")
    parser.add_argument("--served-model-name", default="", help="model id in /v1/models (default: dir name)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--enable-lora", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 keeps torch's default")
    parser.add_argument("--max-tokens-limit", type=int, default=MAX_TOKENS_LIMIT,
                        help="largest max_tokens a request may ask for")
    parser.add_argument("--parent-pid", type=int, default=0,
                        help="end (SIGTERM) when this process, the one that started it, ends")
    args = parser.parse_args(argv)
    if not is_loopback(args.host):  # every door off loopback takes tokens; this one has none (it loads adapters)
        parser.error(f"--host {args.host} is not loopback: the reference backend has no authentication (anyone "
                     "reaching it could load adapters from this machine's paths), so it serves on 127.0.0.1, ::1 or "
                     "localhost only; clients reach it through the server's gateway, which takes tokens")
    if args.parent_pid:
        die_with_parent(args.parent_pid)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s reference-backend %(message)s")
    if args.threads:
        import torch  # noqa: PLC0415

        torch.set_num_threads(args.threads)
    model = ReferenceModel(args.model, args.served_model_name or args.model.name)

    async def run() -> None:
        app = create_app(model, enable_lora=args.enable_lora, max_tokens_limit=args.max_tokens_limit)
        runner, port = await start_site(app, args.host, args.port)
        print(f"reference backend serving {model.served_name} on http://{args.host}:{port}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
