"""The gateway answers a body nested too deeply to parse (a few bytes anyone with inference access can send) with
the 400 of any body that is not JSON, not a 500 (json raises RecursionError there, engine.json_input)."""

from __future__ import annotations

import aiohttp

from tests.engine.test_gateway_metric_labels import gateway  # noqa: F401 - the fixture: a stub engine behind it


async def test_a_body_nested_too_deeply_is_a_400(gateway) -> None:  # noqa: F811
    url, _ = gateway
    async with aiohttp.ClientSession() as s, s.post(f"{url}/v1/completions", data="[" * 100_000) as r:
        answer = await r.json()
    assert r.status == 400 and answer["error"]["message"] == "request body is not JSON", answer
