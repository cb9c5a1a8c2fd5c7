"""A completion whose text is not a string (a list of content parts, a number) is the serving engine's bad answer:
the client raises UNAVAILABLE SERVING_BAD_RESPONSE, so data preparation fails with GENERATOR_UNAVAILABLE instead
of an internal error when it reads the reply."""

from __future__ import annotations

import pytest
from aiohttp import web

from engine.errors import EngineError, Unavailable
from engine.preparation import generation
from engine.preparation.documents import Chunk
from engine.preparation.jobs import GeneratorConfig, PreparationRunner
from engine.serving.client import ServingClient, ServingConfig
from engine.serving.reference_backend import start_site

PARTS = [{"type": "text", "text": "Q: x\nA: y"}]


async def engine(chat_content: object, text: object = "Q: x\nA: y"):
    async def chat(request: web.Request) -> web.Response:
        return web.json_response({"choices": [{"message": {"role": "assistant", "content": chat_content}}]})

    async def plain(request: web.Request) -> web.Response:
        return web.json_response({"choices": [{"text": text}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", plain)
    runner, port = await start_site(app, "127.0.0.1", 0)
    return runner, f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("content", [PARTS, 42, {"text": "Q: x"}, True])
async def test_a_chat_reply_whose_content_is_not_a_string_is_a_bad_response(content: object) -> None:
    runner, url = await engine(content)
    try:
        async with ServingClient(ServingConfig(base_url=url, retries=0)) as client:
            with pytest.raises(Unavailable) as err:
                await client.complete("m", "hello", max_tokens=8)
    finally:
        await runner.cleanup()
    assert err.value.reason == "SERVING_BAD_RESPONSE"


async def test_a_plain_completion_whose_text_is_not_a_string_is_a_bad_response() -> None:
    runner, url = await engine("fine", text=["Q: x"])
    try:
        async with ServingClient(ServingConfig(base_url=url, retries=0)) as client:
            with pytest.raises(Unavailable) as err:
                await client.complete("m", "hello", max_tokens=8, chat=False)
    finally:
        await runner.cleanup()
    assert err.value.reason == "SERVING_BAD_RESPONSE"


@pytest.mark.parametrize(("content", "expected"), [("Q: x\nA: y", "Q: x\nA: y"), (None, ""), ("", "")])
async def test_a_string_or_null_content_is_read_as_before(content: object, expected: str) -> None:
    runner, url = await engine(content)
    try:
        async with ServingClient(ServingConfig(base_url=url, retries=0)) as client:
            completion = await client.complete("m", "hello", max_tokens=8)
    finally:
        await runner.cleanup()
    assert completion.text == expected


async def test_a_reply_whose_content_is_not_a_string_does_not_fail_the_preparation_as_internal() -> None:
    # The preparation runner asks the generator, then reads its reply (engine.preparation.jobs): a list of content
    # parts used to reach generation.parse and fail the job with AttributeError (INTERNAL).
    runner, url = await engine(PARTS)
    try:
        async with ServingClient(ServingConfig(base_url=url, retries=0)) as client:
            prep = PreparationRunner(client, artifacts=None, datasets=None,  # type: ignore[arg-type]
                                     config=GeneratorConfig(model="m"), base_model=lambda: "m")
            chunk = Chunk(document="handbook.md", index=0, start=0, end=40, text="The capital of Veloria is Marnesse.")
            with pytest.raises(EngineError) as err:
                generation.parse(await prep._ask("m", chunk, 1))
    finally:
        await runner.cleanup()
    assert isinstance(err.value, Unavailable)
    assert err.value.reason == "GENERATOR_UNAVAILABLE"
    assert err.value.metadata["cause"] == "SERVING_BAD_RESPONSE"
