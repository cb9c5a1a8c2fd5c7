"""The reference backend against the OpenAI/vLLM/MAX request contract: the body is validated as those servers
validate theirs (pydantic, lax mode), so a field of the wrong type or out of OpenAI's range is a 400 naming it, and a
value they take ("false" for a bool, "0.5" for a number) is taken with the meaning they give it. ``temperature``,
``top_p`` and ``seed`` are honoured: greedy when temperature is omitted, null or 0 (the reference backend's default,
where OpenAI's is 1), sampling otherwise, the same text again for the same seed. A prompt that fills the model's
context is a 400 that says the numbers; one that leaves less room than max_tokens gets an answer ended at the
context (as MAX clamps it)."""

from __future__ import annotations

import json

import aiohttp
import pytest

from tests.fixtures.serving import running_backend

NAME = "tiny-llama"
HELLO = {"model": NAME, "prompt": "Hello", "max_tokens": 12}


async def _post(be, path: str, body: dict) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s, s.post(be.url + path, json=body) as r:
        return r.status, await r.json()


async def _text(be, body: dict) -> str:
    status, answer = await _post(be, "/v1/completions", body)
    assert status == 200, answer
    return answer["choices"][0]["text"]


@pytest.mark.parametrize("field", [
    {"temperature": "hot"},
    {"top_p": "most"},
    {"seed": "abc"},
    {"stream": "maybe"},
    {"max_tokens": 1.5},
    {"echo": "loud"},
], ids=["temperature", "top_p", "seed", "stream", "max_tokens", "echo"])
async def test_a_field_of_the_wrong_type_is_a_400(tiny_model_dir, field) -> None:
    async with running_backend(tiny_model_dir, NAME) as be, aiohttp.ClientSession() as s:
        body = {"model": NAME, "prompt": "Hello", "max_tokens": 2, **field}
        async with s.post(be.url + "/v1/completions", json=body) as r:
            text = await r.text()
        assert r.status == 400, f"{field}: {r.status} {r.headers.get('content-type')} {text[:160]}"
        error = json.loads(text)["error"]
        (name,) = field
        assert error["code"] == "400" and error["type"] == "invalid_request_error", error
        assert f"'{name}'" in error["message"], error


@pytest.mark.parametrize("field", [
    {"temperature": 2.5}, {"temperature": -0.1}, {"top_p": 0}, {"top_p": 1.5}, {"seed": 2**64},
], ids=["temperature-high", "temperature-negative", "top_p-zero", "top_p-high", "seed-huge"])
@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
async def test_a_sampling_field_out_of_range_is_a_400_naming_it(tiny_model_dir, field, path: str) -> None:
    body = {"model": NAME, "max_tokens": 2, **field}
    body |= {"messages": [{"role": "user", "content": "Hello"}]} if "chat" in path else {"prompt": "Hello"}
    async with running_backend(tiny_model_dir, NAME) as be:
        status, answer = await _post(be, path, body)
    (name,) = field
    assert status == 400 and f"'{name}'" in answer["error"]["message"], answer


async def test_stream_false_as_a_string_is_not_a_stream(tiny_model_dir) -> None:
    """pydantic (vLLM, MAX) reads "false" as False (and "true" as True); ``bool("false")`` is True."""
    async with running_backend(tiny_model_dir, NAME) as be, aiohttp.ClientSession() as s:
        body = {"model": NAME, "prompt": "Hello", "max_tokens": 2, "stream": "false"}
        async with s.post(be.url + "/v1/completions", json=body) as r:
            await r.read()
        assert r.status == 200 and r.headers["content-type"].startswith("application/json"), \
            r.headers["content-type"]
        async with s.post(be.url + "/v1/completions", json=body | {"stream": "true"}) as r:
            await r.read()
        assert r.status == 200 and r.headers["content-type"].startswith("text/event-stream")


async def test_a_number_as_a_string_is_the_number(tiny_model_dir) -> None:
    """vLLM and MAX take "0" for temperature 0 (pydantic's lax mode): so does the reference backend."""
    async with running_backend(tiny_model_dir, NAME) as be:
        assert await _text(be, HELLO | {"temperature": "0", "seed": "7"}) == await _text(be, HELLO)


@pytest.mark.parametrize("greedy", [{"temperature": 0}, {"temperature": None}, {"temperature": 0, "top_p": 0.5,
                                                                                 "seed": 3},
                                    {"temperature": 1e-40, "seed": 3}, {"temperature": 9e-6}],
                         ids=["zero", "null", "zero-with-top_p-and-seed", "tiny", "below-1e-5"])
async def test_greedy_when_temperature_is_omitted_null_or_zero(tiny_model_dir, greedy) -> None:
    """A temperature below 1e-5 is greedy too, as vLLM's: dividing the logits by 1e-40 overflowed them, and
    sampling from them answered a 500."""
    async with running_backend(tiny_model_dir, NAME) as be:
        omitted = await _text(be, HELLO)
        assert await _text(be, HELLO | greedy) == omitted
        assert await _text(be, HELLO) == omitted  # and deterministic


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_seed_gives_the_same_sample_again_and_another_seed_another(tiny_model_dir, stream: bool) -> None:
    sampled = HELLO | {"temperature": 1.5, "max_tokens": 16}
    async with running_backend(tiny_model_dir, NAME) as be:
        greedy = await _text(be, HELLO | {"max_tokens": 16})
        if stream:
            async with aiohttp.ClientSession() as s, s.post(be.url + "/v1/completions",
                                                            json=sampled | {"seed": 1, "stream": True}) as r:
                lines = [line.removeprefix("data: ") for line in (await r.text()).splitlines() if line]
            first = "".join(json.loads(line)["choices"][0]["text"] for line in lines[:-1])
        else:
            first = await _text(be, sampled | {"seed": 1})
        again = await _text(be, sampled | {"seed": 1})
        other = await _text(be, sampled | {"seed": 2})
    assert first == again, (first, again)
    assert other != first, other
    assert greedy not in (first, other), (greedy, first, other)  # sampled, not greedy


async def test_top_p_is_honoured(tiny_model_dir) -> None:
    """A top_p so small that only the likeliest token is left is greedy decoding, whatever the temperature."""
    async with running_backend(tiny_model_dir, NAME) as be:
        greedy = await _text(be, HELLO)
        assert await _text(be, HELLO | {"temperature": 2, "top_p": 1e-9, "seed": 5}) == greedy
        assert await _text(be, HELLO | {"temperature": 2, "top_p": 1, "seed": 5}) != greedy


async def test_a_prompt_longer_than_the_context_is_a_400(tiny_model_dir) -> None:
    from transformers import AutoConfig

    context = AutoConfig.from_pretrained(tiny_model_dir).max_position_embeddings
    async with running_backend(tiny_model_dir, NAME) as be, aiohttp.ClientSession() as s:
        for path, body in (("/v1/completions", {"prompt": "x " * context}),
                           ("/v1/completions", {"prompt": "x " * context, "stream": True}),
                           ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x " * context}]})):
            async with s.post(be.url + path, json={"model": NAME, "max_tokens": 2, **body}) as r:
                answer = await r.json()
            assert r.status == 400, f"{r.status}: prompt_tokens {answer.get('usage')} > context {context}"
            message = answer["error"]["message"]
            prompt_tokens = len(be.model.tokenizer("x " * context)["input_ids"])
            assert f"maximum context length is {context} tokens" in message, message
            if "chat" not in path:
                assert f"{prompt_tokens} input tokens" in message, message


async def test_an_answer_that_would_overrun_the_context_ends_at_it(tiny_model_dir) -> None:
    """MAX clamps max_tokens to the room the prompt leaves (vLLM would refuse): the answer ends at the context."""
    async with running_backend(tiny_model_dir, NAME) as be:
        context = be.model.context
        assert context is not None
        prompt = "the " * (context - 8)  # about a token each; the tiny model answers it without an EOS
        prompt_tokens = len(be.model.tokenizer(prompt)["input_ids"])
        assert prompt_tokens < context < prompt_tokens + 16
        status, answer = await _post(be, "/v1/completions", {"model": NAME, "prompt": prompt, "max_tokens": 16})
    assert status == 200, answer
    assert answer["usage"]["prompt_tokens"] == prompt_tokens
    assert answer["usage"]["completion_tokens"] == context - prompt_tokens  # the tiny model writes no EOS here
    assert answer["choices"][0]["finish_reason"] == "length"
