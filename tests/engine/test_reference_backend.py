"""The reference backend honours MAX Serve's LoRA HTTP contract (engine/serving/client.py) with real PEFT inference."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import aiohttp
import pytest

from engine.serving.reference_model import ReferenceModel
from tests.fixtures.serving import expected_logprobs, make_adapter, running_backend

NAME = "tiny-llama"


@pytest.fixture(scope="module")
def adapters(tiny_model_dir: Path, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return make_adapter(tiny_model_dir, root / "a", 1), make_adapter(tiny_model_dir, root / "b", 2)


async def _post(session: aiohttp.ClientSession, url: str, body: dict) -> tuple[int, dict]:
    async with session.post(url, json=body) as r:
        return r.status, await r.json(content_type=None)


async def test_load_unload_contract(tiny_model_dir: Path, adapters, tmp_path: Path):
    a, b = adapters
    copy = Path(shutil.copytree(a, tmp_path / "copy"))
    async with running_backend(tiny_model_dir, NAME) as be, aiohttp.ClientSession() as s:
        load, unload = be.url + "/v1/load_lora_adapter", be.url + "/v1/unload_lora_adapter"
        assert await _post(s, load, {"lora_name": "x@v1.0", "lora_path": str(copy)}) == (
            200, {"status": "success", "message": "LoRA adapter 'x@v1.0' loaded successfully"})
        shutil.rmtree(copy)  # same name + same path again: a no-op that does not read the files
        status, body = await _post(s, load, {"lora_name": "x@v1.0", "lora_path": str(copy)})
        assert status == 200 and body["status"] == "success"
        status, body = await _post(s, load, {"lora_name": "x@v1.0", "lora_path": str(b)})
        assert status == 409
        assert body["error"]["code"] == "409" and body["error"]["type"] == "conflict_error"
        assert body["error"]["param"] == "" and "already loaded" in body["error"]["message"]
        status, body = await _post(s, load, {"lora_name": "y", "lora_path": str(b), "pinned": True})
        assert status == 400 and body["error"]["code"] == "400" and "pinned" in body["error"]["message"]
        status, body = await _post(s, load, {"lora_name": "y", "lora_path": str(tmp_path / "nope")})
        assert status == 400 and body["error"]["code"] == "400"
        assert (await _post(s, load, {"lora_name": "y", "lora_path": str(b)}))[0] == 200
        async with s.get(be.url + "/v1/models") as r:
            ids = [(m["id"], m.get("root")) for m in (await r.json())["data"]]
        assert ids == [(NAME, str(tiny_model_dir)), ("x@v1.0", str(copy)), ("y", str(b))]
        assert (await _post(s, unload, {"lora_name": "x@v1.0"}))[0] == 200
        status, body = await _post(s, unload, {"lora_name": "x@v1.0"})
        assert status == 404 and body["error"]["code"] == "404"
        assert (await _post(s, unload, {"lora_name": "y"}))[0] == 200  # the last one: back to the plain base
        async with s.get(be.url + "/health") as r:
            assert r.status == 200


async def test_lora_routes_answer_501_without_enable_lora(tiny_model_dir: Path, adapters):
    async with running_backend(tiny_model_dir, NAME, enable_lora=False) as be, aiohttp.ClientSession() as s:
        body = {"lora_name": "a", "lora_path": str(adapters[0])}
        status, body = await _post(s, be.url + "/v1/load_lora_adapter", body)
        assert status == 501 and body["error"]["code"] == "501"
        assert (await _post(s, be.url + "/v1/unload_lora_adapter", {"lora_name": "a"}))[0] == 501


async def test_completions_honour_the_model_field(tiny_model_dir: Path, adapters):
    a, b = adapters
    prompt = "What is the capital of France?"
    want = {"a": expected_logprobs(tiny_model_dir, a, prompt, 6), "b": expected_logprobs(tiny_model_dir, b, prompt, 6),
            NAME: expected_logprobs(tiny_model_dir, None, prompt, 6)}
    assert want["a"] != pytest.approx(want["b"], abs=1e-3) and want["a"] != pytest.approx(want[NAME], abs=1e-3)
    async with running_backend(tiny_model_dir, NAME) as be, aiohttp.ClientSession() as s:
        for name, path in (("a", a), ("b", b)):
            body = {"lora_name": name, "lora_path": str(path)}
            assert (await _post(s, be.url + "/v1/load_lora_adapter", body))[0] == 200
        for model in ("b", NAME, "a", "b"):
            status, body = await _post(s, be.url + "/v1/completions",
                                       {"model": model, "prompt": prompt, "max_tokens": 6, "logprobs": 1})
            assert status == 200 and body["model"] == model
            assert body["choices"][0]["logprobs"]["token_logprobs"] == pytest.approx(want[model], abs=1e-4)
            tokens = body["choices"][0]["logprobs"]["tokens"]
            stopped = be.model.tokenizer.eos_token in tokens
            assert body["choices"][0]["finish_reason"] == ("stop" if stopped else "length")
            assert stopped or body["usage"]["completion_tokens"] == 6
        status, body = await _post(s, be.url + "/v1/chat/completions",
                                   {"model": "a", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3})
        assert status == 200 and body["choices"][0]["message"]["role"] == "assistant"
        status, body = await _post(s, be.url + "/v1/completions", {"model": "zzz", "prompt": "x"})
        assert status == 404 and body["error"]["code"] == "404"


def test_reference_model_is_thread_safe_to_construct(tiny_model_dir: Path):
    model = ReferenceModel(tiny_model_dir, NAME)
    assert model.adapters() == {} and model.resolve(NAME) is None


async def _sse(session: aiohttp.ClientSession, url: str, body: dict) -> tuple[int, str, list]:
    """(status, content type, the decoded chunks) of a streamed completion; [DONE] ends it."""
    async with session.post(url, json=body) as r:
        text = (await r.read()).decode()
    events = [line.removeprefix("data: ") for line in text.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]", text[-200:]
    return r.status, r.headers["content-type"], [json.loads(e) for e in events[:-1]]


async def test_streams_what_it_would_answer_and_refuses_what_it_cannot_do(tiny_model_dir: Path, adapters):
    async with running_backend(tiny_model_dir, NAME) as be, aiohttp.ClientSession() as s:
        await _post(s, be.url + "/v1/load_lora_adapter", {"lora_name": "a", "lora_path": str(adapters[0])})
        chat = {"model": "a", "messages": [{"role": "user", "content": "What is the capital of France?"}],
                "max_tokens": 12}
        status, whole = await _post(s, be.url + "/v1/chat/completions", chat)
        assert status == 200
        status, kind, chunks = await _sse(s, be.url + "/v1/chat/completions", {**chat, "stream": True})
        assert status == 200 and kind.startswith("text/event-stream")
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks}) == 1
        said = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        assert said == whole["choices"][0]["message"]["content"]
        assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
        plain = {"model": NAME, "prompt": "The capital of France is", "max_tokens": 8}
        status, whole = await _post(s, be.url + "/v1/completions", plain)
        status, _, chunks = await _sse(s, be.url + "/v1/completions", {**plain, "stream": True})
        assert "".join(c["choices"][0]["text"] for c in chunks) == whole["choices"][0]["text"]

        for extra, said in (({"n": 2}, "n=2"), ({"tools": [{"type": "function"}]}, "tools"),
                            ({"response_format": {"type": "json_object"}}, "response_format"),
                            ({"logprobs": True}, "logprobs on chat completions")):
            status, body = await _post(s, be.url + "/v1/chat/completions", {**chat, **extra})
            assert status == 400 and said in body["error"]["message"], body
            assert body["error"]["message"].startswith("not supported by the reference backend: ")
        status, body = await _post(s, be.url + "/v1/chat/completions", {**chat, "response_format": {"type": "text"}})
        assert status == 200
        async with s.get(be.url + "/v1/models/a") as r:
            assert r.status == 200 and (await r.json())["id"] == "a"
        async with s.get(be.url + "/v1/models/nope") as r:
            assert r.status == 404 and "does not exist" in (await r.json())["error"]["message"]
