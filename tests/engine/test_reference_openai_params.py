"""The reference backend against the OpenAI request contract it claims (and that MAX Serve honours): a parameter a
standard client sends works or is refused with a 400 that says so, never silently ignored. ``stop`` ends the answer
before the stop sequence (finish_reason "stop"), streamed or not; a field the OpenAI API declares nullable is its
default when null; text-only content parts are the same message as a string; ``stream_options.include_usage`` adds
OpenAI's last chunk with the usage."""

from __future__ import annotations

import json

import aiohttp
import pytest

from tests.fixtures.serving import running_backend

NAME = "tiny-llama"


async def _post(be, path: str, body: dict) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s, s.post(be.url + path, json=body) as r:
        return r.status, await r.json()


async def _events(be, path: str, body: dict) -> list[dict]:
    async with aiohttp.ClientSession() as s, s.post(be.url + path, json=body | {"stream": True}) as r:
        assert r.status == 200
        lines = [line.removeprefix("data: ") for line in (await r.text()).splitlines() if line]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


@pytest.mark.parametrize("as_list", [True, False], ids=["list", "string"])
async def test_stop_ends_the_answer_before_the_stop_sequence(tiny_model_dir, as_list: bool) -> None:
    body = {"model": NAME, "prompt": "Hello", "max_tokens": 8}
    async with running_backend(tiny_model_dir, NAME) as be:
        status, plain = await _post(be, "/v1/completions", body)
        assert status == 200
        text = plain["choices"][0]["text"]
        stop = text[len(text) // 2:][:3]  # a piece of what it generates, past its start
        assert stop.strip(), text
        asked = body | {"stop": [stop] if as_list else stop}
        status, answer = await _post(be, "/v1/completions", asked)
        assert status == 200, answer
        assert answer["choices"][0]["text"] == text[:text.index(stop)]
        assert answer["choices"][0]["finish_reason"] == "stop"
        events = await _events(be, "/v1/completions", asked)
    assert "".join(e["choices"][0]["text"] for e in events) == text[:text.index(stop)]
    assert events[-1]["choices"][0]["finish_reason"] == "stop"


async def test_a_stop_sequence_never_written_changes_nothing(tiny_model_dir) -> None:
    body = {"model": NAME, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8}
    async with running_backend(tiny_model_dir, NAME) as be:
        _, plain = await _post(be, "/v1/chat/completions", body)
        status, answer = await _post(be, "/v1/chat/completions", body | {"stop": ["\x00never"]})
        events = await _events(be, "/v1/chat/completions", body | {"stop": ["\x00never"]})
    assert status == 200 and answer["choices"] == plain["choices"]
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events) == (
        plain["choices"][0]["message"]["content"])


@pytest.mark.parametrize("stop", ["", ["a", ""], 3, ["a", "b", "c", "d", "e"]])
async def test_a_malformed_stop_is_a_400(tiny_model_dir, stop) -> None:
    async with running_backend(tiny_model_dir, NAME) as be:
        status, answer = await _post(be, "/v1/completions", {"model": NAME, "prompt": "Hello", "stop": stop})
    assert status == 400 and "stop" in answer["error"]["message"]


async def test_echo_is_refused(tiny_model_dir) -> None:
    async with running_backend(tiny_model_dir, NAME) as be:
        status, answer = await _post(be, "/v1/completions", {"model": NAME, "prompt": "Hello", "echo": True})
    assert status == 400 and "echo" in answer["error"]["message"]


@pytest.mark.parametrize("field", ["max_tokens", "n", "stop", "stream_options", "response_format", "echo"])
async def test_nullable_fields_accept_null(tiny_model_dir, field: str) -> None:
    async with running_backend(tiny_model_dir, NAME) as be:
        _, plain = await _post(be, "/v1/completions", {"model": NAME, "prompt": "Hello"})
        status, answer = await _post(be, "/v1/completions", {"model": NAME, "prompt": "Hello", field: None})
    assert status == 200, answer
    assert answer["choices"] == plain["choices"]


async def test_chat_content_as_a_list_of_text_parts(tiny_model_dir) -> None:
    """OpenAI's (and MAX's) message content may be an array of parts; a text-only one is the same message."""
    async with running_backend(tiny_model_dir, NAME) as be:
        status, as_parts = await _post(be, "/v1/chat/completions", {
            "model": NAME, "max_tokens": 8,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]})
        assert status == 200, as_parts
        _, as_text = await _post(be, "/v1/chat/completions", {
            "model": NAME, "max_tokens": 8, "messages": [{"role": "user", "content": "Hello"}]})
        assert as_parts["choices"][0]["message"] == as_text["choices"][0]["message"]
        status, refused = await _post(be, "/v1/chat/completions", {
            "model": NAME, "max_tokens": 8, "messages": [{"role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]})
    assert status == 400 and "content parts other than text" in refused["error"]["message"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
async def test_stream_include_usage_sends_a_last_usage_chunk(tiny_model_dir, path: str) -> None:
    body = {"model": NAME, "max_tokens": 4, "stream_options": {"include_usage": True}}
    body |= {"messages": [{"role": "user", "content": "Hello"}]} if "chat" in path else {"prompt": "Hello"}
    async with running_backend(tiny_model_dir, NAME) as be:
        events = await _events(be, path, body)
        _, whole = await _post(be, path, {k: v for k, v in body.items() if k != "stream_options"})
    *answer, last = events
    assert last["choices"] == [] and last["usage"] == whole["usage"]
    assert all(e["usage"] is None and len(e["choices"]) == 1 for e in answer)


async def test_stream_options_without_stream_is_a_400(tiny_model_dir) -> None:
    async with running_backend(tiny_model_dir, NAME) as be:
        status, answer = await _post(be, "/v1/completions", {"model": NAME, "prompt": "Hello",
                                                             "stream_options": {"include_usage": True}})
    assert status == 400 and "stream_options" in answer["error"]["message"]
