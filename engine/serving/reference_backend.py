"""Reference serving backend: MAX Serve's LoRA HTTP contract on CPU, for development and tests.

This is NOT MAX Serve. Production targets MAX Serve on a GPU (its LoRA kernels refuse the
CPU); this process exists so the control plane can be developed and tested end to end on
a laptop or CI. It implements the same contract as MAX 26.x (engine/serving/client.py):

- ``POST /v1/load_lora_adapter`` body exactly ``{"lora_name", "lora_path"}`` (other fields:
  400). Same name and path again: 200 without re-reading files; same name, other path: 409;
  unreadable adapter: 400; started without ``--enable-lora``: 501.
- ``POST /v1/unload_lora_adapter`` body ``{"lora_name"}``: 200, or 404 if not loaded.
- Errors: ``{"error": {"code": "409", "message": ..., "param": "", "type": "conflict_error"}}``; an empty
  prompt is a 400; a generation failing after a stream has begun ends it with that error as an event, then
  ``data: [DONE]``.
- ``GET /v1/models``, ``GET /health``, and greedy ``POST /v1/chat/completions`` and
  ``/v1/completions`` with real transformers + PEFT inference that honours ``model``.

One model, one lock: inference and adapter changes are serialised and run off the event loop.

    python -m engine.serving.reference_backend --model DIR --port P --enable-lora
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from engine import json_input
from engine.model_build import BUILDING
from engine.serving.lifetime import die_with_parent

log = logging.getLogger(__name__)

_ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error", 409: "conflict_error",
                500: "internal_server_error", 501: "not_implemented_error"}


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
    finish_reason: str = "length"  # "stop" when the model ended its answer (EOS) within max_tokens


class ReferenceModel:
    """A base model plus named PEFT adapters; every method is thread-safe and blocking."""

    def __init__(self, model_dir: Path, served_name: str) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415 - heavy

        self.model_dir = model_dir
        self.served_name = served_name
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        # transformers leaves PreTrainedModel.eval unannotated
        with BUILDING:
            self._base = AutoModelForCausalLM.from_pretrained(model_dir).eval()  # type: ignore[no-untyped-call]
        self._peft: Any = None
        self._paths: dict[str, str] = {}  # lora_name -> lora_path
        self._keys: dict[str, str] = {}  # lora_name -> PEFT adapter key (no dots allowed there)
        self._counter = 0
        self._lock = threading.Lock()

    def adapters(self) -> dict[str, str]:
        with self._lock:
            return dict(self._paths)

    def load(self, name: str, path: str) -> bool:
        """Load ``path`` as ``name``; False if that exact pair is already loaded (no file is read)."""
        from peft import PeftModel  # noqa: PLC0415

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
                if self._peft is None:
                    self._peft = PeftModel.from_pretrained(self._base, path, adapter_name=key).eval()
                else:
                    self._peft.load_adapter(path, adapter_name=key)
            except Exception as exc:  # noqa: BLE001 - any load failure is the adapter's fault: 400
                if self._peft is not None and key in self._peft.peft_config and self._keys:
                    self._peft.delete_adapter(key)
                raise HttpError(400, f"cannot load adapter {name!r} from {path!r}: {exc}") from exc
            self._paths[name], self._keys[name] = path, key
            return True

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

    def generate(self, model: str, prompt_ids: list[int], max_tokens: int, streamer: Any = None) -> Generation:
        """Greedy generation; ``streamer`` (transformers' TextIteratorStreamer) hears the text as it comes."""
        import torch  # noqa: PLC0415

        with self._lock:
            lora = self.resolve(model)
            ids = torch.tensor([prompt_ids])
            kwargs = dict(max_new_tokens=max_tokens, do_sample=False, output_scores=True,
                          return_dict_in_generate=True, attention_mask=torch.ones_like(ids),
                          pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
                          streamer=streamer)
            with torch.inference_mode():
                if lora is None and self._peft is not None:
                    with self._peft.disable_adapter():
                        out = self._peft.generate(input_ids=ids, **kwargs)
                elif lora is None:
                    out = self._base.generate(input_ids=ids, **kwargs)
                else:
                    self._peft.set_adapter(self._keys[lora])
                    out = self._peft.generate(input_ids=ids, **kwargs)
        new = out.sequences[0, len(prompt_ids):].tolist()
        logprobs = [
            float(torch.log_softmax(score[0].float(), dim=-1)[tok]) for score, tok in zip(out.scores, new, strict=False)
        ]
        eos = self.tokenizer.eos_token_id
        text_ids = [t for t in new if t != eos]
        return Generation(
            # One sequence decodes to one str; transformers types the batch case's list[str] in too.
            text=self.tokenizer.decode(text_ids, skip_special_tokens=True),  # type: ignore[arg-type]
            tokens=tuple(self.tokenizer.convert_ids_to_tokens(new)),
            token_logprobs=tuple(logprobs),
            prompt_tokens=len(prompt_ids),
            finish_reason="stop" if eos in new else "length",
        )


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


def create_app(model: ReferenceModel, *, enable_lora: bool, max_tokens_limit: int = 512) -> web.Application:
    created = int(time.time())

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except HttpError as exc:
            return error_response(exc.status, exc.message)

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

    def _common(body: dict[str, Any], *, chat: bool) -> tuple[str, int]:
        name = body.get("model")
        if not isinstance(name, str) or not name:
            raise HttpError(400, "field 'model' is required")
        refused = [f"{key}" for key in ("tools", "tool_choice", "functions", "function_call") if body.get(key)]
        if body.get("n", 1) != 1:
            refused.append(f"n={body['n']} (one choice only)")
        if (body.get("response_format") or {"type": "text"}) != {"type": "text"}:
            refused.append("response_format other than text")
        if chat and body.get("logprobs"):
            refused.append("logprobs on chat completions (the completions endpoint has them)")
        if refused:
            raise HttpError(400, f"not supported by the reference backend: {', '.join(refused)}")
        limit = body.get("max_tokens", body.get("max_completion_tokens", 16))
        if not isinstance(limit, int) or not 1 <= limit <= max_tokens_limit:
            raise HttpError(400, f"max_tokens must be an integer in [1, {max_tokens_limit}]")
        model.resolve(name)  # 404 early for unknown models
        return name, limit

    def _usage(gen: Generation) -> dict[str, int]:
        return {"prompt_tokens": gen.prompt_tokens, "completion_tokens": len(gen.tokens),
                "total_tokens": gen.prompt_tokens + len(gen.tokens)}

    async def stream(request: web.Request, name: str, ids: list[int], limit: int, *, chat: bool) -> web.StreamResponse:
        """OpenAI's server-sent events: a chunk per piece of text as it is generated, the finish reason in the
        last, then ``[DONE]``."""
        from transformers import TextIteratorStreamer  # noqa: PLC0415

        streamer = TextIteratorStreamer(model.tokenizer, skip_prompt=True, skip_special_tokens=True)
        ident, kind = (f"chatcmpl-{time.time_ns()}", "chat.completion.chunk") if chat else (
            f"cmpl-{time.time_ns()}", "text_completion")

        def run() -> Generation:
            try:
                return model.generate(name, ids, limit, streamer)
            finally:
                streamer.end()  # type: ignore[no-untyped-call]  # a failed generation must not leave the reader waiting

        def chunk(text: str, finish: str | None, first: bool = False) -> bytes:
            if chat:
                delta = {"role": "assistant", "content": text} if first else {"content": text} if text else {}
                choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            else:
                choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
            doc = {"id": ident, "object": kind, "created": int(time.time()), "model": name, "choices": [choice]}
            return b"data: " + json.dumps(doc).encode() + b"\n\n"

        generating = asyncio.ensure_future(asyncio.to_thread(run))
        out = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
        await out.prepare(request)
        if chat:
            await out.write(chunk("", None, first=True))
        pieces = iter(streamer)
        while (piece := await asyncio.to_thread(next, pieces, None)) is not None:
            if piece:
                await out.write(chunk(piece, None))
        try:
            gen = await generating
        except Exception as exc:  # noqa: BLE001 - the answer has begun (200 sent): the stream says what failed
            log.exception("generation failed mid-stream")
            failed = error_body(500, f"generation failed: {type(exc).__name__}: {exc}")
            await out.write(b"data: " + json.dumps(failed).encode() + b"\n\n")
        else:
            await out.write(chunk("", gen.finish_reason))
        await out.write(b"data: [DONE]\n\n")
        await out.write_eof()
        return out

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await _json_object(request)
        name, limit = _common(body, chat=False)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise HttpError(400, "field 'prompt' must be a string")
        ids = model.tokenizer(prompt)["input_ids"]
        if not ids:  # nothing to continue from (a tokenizer that adds no start token, and an empty prompt)
            raise HttpError(400, "field 'prompt' must not be empty")
        if body.get("stream"):
            return await stream(request, name, ids, limit, chat=False)
        gen = await asyncio.to_thread(model.generate, name, ids, limit)
        choice: dict[str, Any] = {"index": 0, "text": gen.text, "finish_reason": gen.finish_reason, "logprobs": None}
        if body.get("logprobs") is not None:
            choice["logprobs"] = {"tokens": list(gen.tokens), "token_logprobs": list(gen.token_logprobs)}
        return web.json_response({"id": f"cmpl-{time.time_ns()}", "object": "text_completion",
                                  "created": int(time.time()), "model": name, "choices": [choice],
                                  "usage": _usage(gen)})

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await _json_object(request)
        name, limit = _common(body, chat=True)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise HttpError(400, "field 'messages' must be a non-empty list")
        try:
            ids = model.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        except Exception as exc:  # noqa: BLE001 - malformed messages
            raise HttpError(400, f"cannot apply the chat template: {exc}") from exc
        # transformers types the result of every flag combination at once; tokenize=True gives token ids,
        # directly or in a BatchEncoding.
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]  # type: ignore[call-overload,index]
        if body.get("stream"):
            return await stream(request, name, list(ids), limit, chat=True)  # type: ignore[arg-type]
        gen = await asyncio.to_thread(model.generate, name, list(ids), limit)  # type: ignore[arg-type]
        return web.json_response({
            "id": f"chatcmpl-{time.time_ns()}", "object": "chat.completion", "created": int(time.time()),
            "model": name, "usage": _usage(gen),
            "choices": [{"index": 0, "finish_reason": gen.finish_reason, "logprobs": None,
                         "message": {"role": "assistant", "content": gen.text}}],
        })

    app = web.Application(middlewares=[errors])
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
    parser.add_argument("--parent-pid", type=int, default=0,
                        help="end (SIGTERM) when this process, the one that started it, ends")
    args = parser.parse_args(argv)
    if args.parent_pid:
        die_with_parent(args.parent_pid)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s reference-backend %(message)s")
    if args.threads:
        import torch  # noqa: PLC0415

        torch.set_num_threads(args.threads)
    model = ReferenceModel(args.model, args.served_model_name or args.model.name)

    async def run() -> None:
        runner, port = await start_site(create_app(model, enable_lora=args.enable_lora), args.host, args.port)
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
