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

This module is the HTTP app and its entry point; the model and its generation are in ``reference_model``, the
request schema and its checks in ``reference_requests``, the error shape in ``reference_errors``.

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
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from engine.names import is_loopback
from engine.serving.gateway import MAX_BODY_BYTES
from engine.serving.lifetime import die_with_parent
from engine.serving.reference_errors import HttpError, error_body, error_response
from engine.serving.reference_model import Generation, ReferenceModel, until_stop
from engine.serving.reference_requests import (
    Ask,
    Body,
    ChatBody,
    CompletionBody,
    exact_fields,
    flat_messages,
    json_object,
    stop_sequences,
    validated,
)

log = logging.getLogger(__name__)

MAX_TOKENS_LIMIT = 512  # the largest max_tokens a request may ask for, unless started with another
CLIENT_CHECK_SECONDS = 0.1  # how often a request not streamed looks whether its client is still there


def _stop_prefix(text: str, stop: tuple[str, ...]) -> int:
    """Length of the longest end of ``text`` that begins a stop sequence: a stream holds it back until it knows."""
    return max((n for s in stop for n in range(1, len(s)) if text.endswith(s[:n])), default=0)


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
        name, path = exact_fields(await json_object(request), ("lora_name", "lora_path"))
        loaded = await asyncio.to_thread(model.load, name, path)
        message = f"LoRA adapter '{name}' " + ("loaded successfully" if loaded else "is already loaded")
        return web.json_response({"status": "success", "message": message})

    async def unload(request: web.Request) -> web.Response:
        if not enable_lora:
            raise HttpError(501, "LoRA is not enabled on this server (start it with --enable-lora)")
        (name,) = exact_fields(await json_object(request), ("lora_name",))
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

    def _common(body: Body) -> Ask:
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
        if isinstance(body, ChatBody) and body.logprobs:
            refused.append("logprobs on chat completions (the completions endpoint has them)")
        if refused:
            raise HttpError(400, f"not supported by the reference backend: {', '.join(refused)}")
        limit = next((v for v in (body.max_tokens, body.max_completion_tokens) if v is not None), 16)
        if not 1 <= limit <= max_tokens_limit:
            raise HttpError(400, f"max_tokens must be an integer in [1, {max_tokens_limit}]")
        if body.stream_options is not None and not body.stream:
            raise HttpError(400, "field 'stream_options' must be an object, and only comes with 'stream'")
        stop = stop_sequences(body.stop)
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
        body = validated(CompletionBody, await json_object(request))
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
        body = validated(ChatBody, await json_object(request))
        ask = _common(body)
        messages = flat_messages(body.messages)
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
