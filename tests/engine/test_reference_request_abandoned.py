"""A client that leaves before its whole (non-streamed) answer has come ends its generation, as a client leaving a
stream does: the reference backend runs one generation at a time under the model's lock, so an answer nobody waits
for any more would hold up every other request, and every adapter load and unload (a hot swap), until it had
written all of max_tokens."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.engine.test_reference_stream_abandoned import NAME, counted_generations, stopped_early
from tests.fixtures.serving import running_backend


@pytest.mark.parametrize(("path", "ask"), [
    ("/v1/completions", {"prompt": "Hello"}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hello"}]}),
])
async def test_a_request_the_client_left_stops_generating(tiny_model_dir, path, ask) -> None:
    async with running_backend(tiny_model_dir, NAME) as be:
        started, made = counted_generations(be.model)
        body = {"model": NAME, "max_tokens": 512} | ask
        async with aiohttp.ClientSession() as s:
            asking = asyncio.ensure_future(s.post(be.url + path, json=body))
            for _ in range(600):  # wait for the generation to begin, then the client leaves
                if started:
                    break
                await asyncio.sleep(0.01)
            assert started, "the generation never began"
            asking.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asking
        await stopped_early(made)
        async with aiohttp.ClientSession() as s:  # and the model serves the next request
            async with s.post(be.url + path, json=body | {"max_tokens": 4}) as r:
                assert r.status == 200
