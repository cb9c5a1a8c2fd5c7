"""The reference backend refuses ``echo`` on /v1/chat/completions as on /v1/completions (docs/serving.md: "refuses
with a 400 that says so what it does not do: ... ``echo``"): vLLM's OpenAI server takes it on chat too (the answer
then begins with the last message), so a chat request asking for it is a 400 naming it, never answered 200 with the
flag ignored. ``echo`` false, null or absent asks for nothing and is answered on both endpoints."""

from __future__ import annotations

import aiohttp
import pytest

from tests.fixtures.serving import running_backend

NAME = "tiny-llama"
CHAT = {"model": NAME, "max_tokens": 2, "messages": [{"role": "user", "content": "Hello"}]}
COMPLETION = {"model": NAME, "max_tokens": 2, "prompt": "Hello"}


async def _post(be, path: str, body: dict) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s, s.post(be.url + path, json=body) as r:
        return r.status, await r.json()


async def test_echo_on_chat_is_refused_as_on_completions(tiny_model_dir) -> None:
    async with running_backend(tiny_model_dir, NAME) as be:
        status, chat = await _post(be, "/v1/chat/completions", CHAT | {"echo": True})
        _, completion = await _post(be, "/v1/completions", COMPLETION | {"echo": True})
        wrong, typed = await _post(be, "/v1/chat/completions", CHAT | {"echo": "loud"})
    assert status == 400, f"echo on chat was accepted: {status} {chat}"
    assert chat == completion, (chat, completion)  # the same refusal, the same error body
    assert chat["error"]["type"] == "invalid_request_error" and "echo" in chat["error"]["message"], chat
    # typed on chat as on completions (pydantic): a value that is no bool is a 400 naming the field
    assert wrong == 400 and "'echo'" in typed["error"]["message"], typed


@pytest.mark.parametrize("echo", [False, None, "absent"], ids=["false", "null", "absent"])
async def test_no_echo_is_answered_on_both_endpoints(tiny_model_dir, echo) -> None:
    asked = {} if echo == "absent" else {"echo": echo}
    async with running_backend(tiny_model_dir, NAME) as be:
        for path, body in (("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION)):
            status, answer = await _post(be, path, body | asked)
            assert status == 200, (path, answer)
            assert len(answer["choices"]) == 1, (path, answer)
