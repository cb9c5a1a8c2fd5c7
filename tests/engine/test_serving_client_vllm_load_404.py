"""A 404 answering a *load* is not "the LoRA is not loaded".

vLLM (vllm/entrypoints/openai/serving_models.py, load_lora_adapter) answers 404 NotFoundError when it cannot
read the adapter's path (``"No adapter found"``), and without ``VLLM_ALLOW_RUNTIME_LORA_UPDATING`` the load and
unload routes do not exist at all (FastAPI's 404 ``{"detail": "Not Found"}``). MAX never answers 404 to a load
(its route maps only 400/409/500/501). So a 404 on a load is FAILED_PRECONDITION naming both causes; a 404 on
an unload still means the adapter is not loaded.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from aiohttp import web

from engine.errors import FailedPrecondition, NotFound
from engine.serving.client import ServingClient, ServingConfig, ServingMode, map_status
from engine.serving.reference_backend import start_site

NO_ADAPTER = {"error": {"message": "Loading lora m@v1.0 failed: No adapter found for /data/work/serving-adapters/"
                                   "m/v1.0-abc", "type": "NotFoundError", "param": None, "code": 404}}
NO_ROUTE = {"detail": "Not Found"}


def test_vllm_404_on_load_is_not_reported_as_lora_not_loaded():
    error = map_status(404, json.dumps(NO_ADAPTER), action="load", lora_name="m@v1.0")
    assert isinstance(error, FailedPrecondition), (error.reason, error.message)
    assert error.reason == "SERVING_REJECTED_REQUEST"
    assert error.metadata["http_status"] == "404" and error.metadata["lora_name"] == "m@v1.0"
    assert "No adapter found" in error.message  # the engine's own words still pass through
    assert "cannot read" in error.message and "runtime LoRA loading" in error.message


def test_vllm_mode_names_the_runtime_updating_switch_and_max_mode_does_not():
    vllm = map_status(404, json.dumps(NO_ROUTE), action="load", lora_name="m@v1.0", mode=ServingMode.VLLM)
    assert vllm.reason == "SERVING_REJECTED_REQUEST" and "VLLM_ALLOW_RUNTIME_LORA_UPDATING" in vllm.message
    max_ = map_status(404, json.dumps(NO_ROUTE), action="load", lora_name="m@v1.0", mode=ServingMode.MAX)
    assert max_.reason == "SERVING_REJECTED_REQUEST" and "VLLM_" not in max_.message


def test_404_on_unload_and_other_actions_still_means_not_loaded():
    for action in ("unload", "completion"):
        error = map_status(404, json.dumps(NO_ADAPTER), action=action, lora_name="m@v1.0", mode=ServingMode.VLLM)
        assert isinstance(error, NotFound) and error.reason == "LORA_NOT_LOADED", action


async def test_a_vllm_engine_answering_404_to_a_load_through_the_client():
    calls: Counter[str] = Counter()

    async def handle(request: web.Request) -> web.Response:
        calls[request.path] += 1
        if request.path == "/v1/load_lora_adapter":
            return web.json_response(NO_ADAPTER, status=404)
        return web.json_response({"error": {"message": "The lora adapter 'm@v7.0' cannot be found.",
                                            "type": "NotFoundError", "code": 404}}, status=404)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner, port = await start_site(app, "127.0.0.1", 0)
    try:
        async with ServingClient(ServingConfig(base_url=f"http://127.0.0.1:{port}", mode=ServingMode.VLLM,
                                               retries=2, backoff_seconds=0.01)) as c:
            with pytest.raises(FailedPrecondition) as load:
                await c.load("m@v1.0", "/data/work/serving-adapters/m/v1.0-abc")
            with pytest.raises(NotFound) as unload:
                await c.unload("m@v7.0")
    finally:
        await runner.cleanup()
    assert load.value.reason == "SERVING_REJECTED_REQUEST"
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING" in load.value.message
    assert unload.value.reason == "LORA_NOT_LOADED"
    assert calls["/v1/load_lora_adapter"] == 1  # a 4xx is not retried
