"""The reference backend answers a client's bad input with a 4xx, never a 500 nor a broken stream: an empty prompt
(nothing to continue from) is a 400 streamed or not, as is a body nested too deeply to parse; and a generation that
fails after a stream has begun (its 200 sent) ends the stream with an error event and ``[DONE]``, not a cut
connection."""

from __future__ import annotations

import json

import aiohttp
import pytest

from tests.fixtures.serving import running_backend


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
