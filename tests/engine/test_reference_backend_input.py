"""The reference backend answers a client's bad input with a 4xx, never a 500 nor a broken stream: an empty prompt
(nothing to continue from) is a 400 streamed or not, as is a body nested too deeply to parse; and a generation that
fails after a stream has begun (its 200 sent) ends the stream with an error event and ``[DONE]``, not a cut
connection. A body the gateway takes (up to its 64 MiB, not aiohttp's 1 MiB) reaches the backend, and aiohttp's own
refusals (no route, wrong method, a body over the limit) are in the OpenAI error shape too, not plain text."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from engine.serving import reference_backend
from engine.serving.alias_router import AliasRouter
from engine.serving.gateway import MAX_BODY_BYTES, Gateway
from tests.fixtures.serving import running_backend

TWO_MIB = 2 * 1024 * 1024


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_an_empty_prompt_is_a_400(tiny_model_dir, stream: bool) -> None:
    async with running_backend(tiny_model_dir, "tiny-llama") as be, aiohttp.ClientSession() as s:
        body = {"model": "tiny-llama", "prompt": "", "stream": stream}
        async with s.post(be.url + "/v1/completions", json=body) as r:
            answer = await r.json()
        assert r.status == 400, answer
        assert answer["error"]["code"] == "400" and "prompt" in answer["error"]["message"]


async def test_a_body_nested_too_deeply_is_a_400(tiny_model_dir) -> None:
    async with running_backend(tiny_model_dir, "tiny-llama") as be, aiohttp.ClientSession() as s:
        async with s.post(be.url + "/v1/completions", data="[" * 100_000) as r:
            answer = await r.json()
        assert r.status == 400 and "not JSON" in answer["error"]["message"], answer


async def test_a_generation_failing_mid_stream_ends_it_with_an_error_event(tiny_model_dir, monkeypatch) -> None:
    async with running_backend(tiny_model_dir, "tiny-llama") as be, aiohttp.ClientSession() as s:
        def failing(*args, **kwargs):
            raise RuntimeError("out of memory")

        monkeypatch.setattr(be.model, "generate", failing)
        body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
        async with s.post(be.url + "/v1/chat/completions", json=body) as r:
            assert r.status == 200  # the stream had begun
            events = [line.removeprefix("data: ") for line in (await r.text()).splitlines() if line]
    assert events[-1] == "[DONE]"
    failed = json.loads(events[-2])
    assert failed["error"]["code"] == "500" and "out of memory" in failed["error"]["message"]


async def test_a_body_the_gateway_takes_reaches_the_backend(tiny_model_dir: Path) -> None:
    assert TWO_MIB < MAX_BODY_BYTES
    async with running_backend(tiny_model_dir, "tiny-llama") as be, aiohttp.ClientSession() as s:
        gateway = Gateway(AliasRouter("active", "tiny-llama"), be.url, timeout_seconds=60)
        port = await gateway.start("127.0.0.1", 0)
        try:  # a short prompt, so the answer is quick once the body is read; the size is in a field OpenAI allows
            body = {"model": "active", "prompt": "hi", "max_tokens": 1, "user": "u" * TWO_MIB}
            async with s.post(f"http://127.0.0.1:{port}/v1/completions", json=body) as r:
                answer = await r.text()
        finally:
            await gateway.stop()
    assert r.status == 200, (r.status, r.headers.get("content-type"), answer[:200])


@pytest.mark.parametrize("method, path, status", [("GET", "/v1/nothing", 404), ("GET", "/v1/completions", 405),
                                                  ("POST", "/v1/completions", 413)], ids=["no-route", "method", "size"])
async def test_aiohttps_own_refusals_are_in_the_openai_error_shape(tiny_model_dir: Path,
                                                                   monkeypatch: pytest.MonkeyPatch, method: str,
                                                                   path: str, status: int) -> None:
    if status == 413:
        monkeypatch.setattr(reference_backend, "MAX_BODY_BYTES", 1024)  # a small limit, to go over it cheaply
    async with running_backend(tiny_model_dir, "tiny-llama") as be, aiohttp.ClientSession() as s:
        body = {"model": "tiny-llama", "prompt": "hi", "user": "u" * 2048} if method == "POST" else None
        async with s.request(method, be.url + path, json=body) as r:
            answer = await r.json(content_type=None)
            allow = r.headers.get("Allow")
    assert r.status == status and r.content_type == "application/json", (r.status, answer)
    assert answer["error"]["code"] == str(status) and answer["error"]["message"], answer
    if status == 405:
        assert allow == "POST", allow
    if status == 413:
        assert "1024" in answer["error"]["message"], answer


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "backend.example"])
def test_the_standalone_backend_refuses_a_host_off_loopback(host: str, tmp_path: Path, capsys) -> None:
    # It has no tokens (anyone reaching it could load adapters from the machine's paths): refused before any model
    # is read, with why (the model folder here does not even exist).
    with pytest.raises(SystemExit) as exited:
        reference_backend.main(["--model", str(tmp_path / "absent"), "--host", host])
    assert exited.value.code == 2
    assert "not loopback" in capsys.readouterr().err
