"""A client that leaves a stream (a user pressing "stop") ends its generation: the reference backend runs one
generation at a time under the model's lock, so a generation nobody reads any more would hold up every other request,
and every adapter load and unload (a hot swap), until it had written all of max_tokens."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.fixtures.serving import running_backend

NAME = "tiny-llama"


def counted_generations(model) -> tuple[list[bool], list[int]]:
    """(a True for each generation begun, the tokens of each ended) of ``model`` from now on, which never ends an
    answer early: the tiny random model may end early with EOS; a real model answering at length does not."""
    started: list[bool] = []
    made: list[int] = []
    real = model.generate

    def counting(*args, **kwargs):
        started.append(True)
        gen = real(*args, **kwargs)
        made.append(len(gen.tokens))
        return gen

    model.generate = counting
    model._base.generation_config.eos_token_id = None
    model.tokenizer.eos_token_id = None
    return started, made


async def stopped_early(made: list[int]) -> None:
    """Wait for the abandoned generation to end; it must end before max_tokens (512)."""
    for _ in range(600):
        if made:
            break
        await asyncio.sleep(0.1)
    assert made, "the generation never ended"
    assert made[0] < 512, f"the abandoned generation ran on to {made[0]} tokens"


async def test_a_stream_the_client_left_stops_generating(tiny_model_dir) -> None:
    async with running_backend(tiny_model_dir, NAME) as be:
        _, made = counted_generations(be.model)
        body = {"model": NAME, "prompt": "Hello", "max_tokens": 512, "stream": True}
        async with aiohttp.ClientSession() as s:
            async with s.post(be.url + "/v1/completions", json=body) as r:
                assert r.status == 200
                await r.content.readuntil(b"\n\n")  # the first event, then the client leaves
        await stopped_early(made)
        async with aiohttp.ClientSession() as s:  # and the model serves the next request
            async with s.post(be.url + "/v1/completions", json=body | {"max_tokens": 4, "stream": False}) as r:
                assert r.status == 200
