"""A reusable evaluation is taken before anything is loaded: ``evaluate(..., reuse=True)`` (what a pipeline's EVALUATE
stage and the gate of the activation after it call) sends the serving engine no load, no unload and no answer when
the version's latest evaluation was against the same baseline on the same basis."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from engine.serving.reference_backend import create_app, start_site
from engine.serving.reference_model import ReferenceModel
from tests.server.conftest import TINY
from tests.server.test_gate import FIRST, facts, trained

LOADS = ("/v1/load_lora_adapter", "/v1/unload_lora_adapter")


async def test_a_reused_evaluation_loads_nothing(make_server, data_dir: Path, tiny_model_dir: Path):
    seen: list[str] = []  # every request the serving engine received, as "METHOD /path"

    @web.middleware
    async def record(request: web.Request, handler):
        seen.append(f"{request.method} {request.path}")
        return await handler(request)

    app = create_app(ReferenceModel(tiny_model_dir, TINY), enable_lora=True)
    app.middlewares.insert(0, record)
    runner, port = await start_site(app, "127.0.0.1", 0)
    try:
        client = await make_server(serving_url=f"http://127.0.0.1:{port}", eval_gate=True, eval_max_tokens=4)
        v10 = await trained(client, facts(data_dir, "first.jsonl", FIRST), epochs=1)
        controller = client.app.owned.lora.controller

        seen.clear()
        first = await controller.evaluate(v10, None, reuse=True)  # none stored yet: loads v1.0, answers, unloads
        assert [r for r in seen if r.endswith(LOADS)] == [f"POST {LOADS[0]}", f"POST {LOADS[1]}"], seen
        assert any(r.endswith("/completions") for r in seen)

        seen.clear()
        again = await controller.evaluate(v10, None, reuse=True)
        assert again.id == first.id and again.basis == first.basis  # the stored verdict stands
        assert not [r for r in seen if r.endswith(LOADS) or r.endswith("/completions")], seen

        seen.clear()
        fresh = await controller.evaluate(v10, None)  # without reuse it evaluates again, loading as it must
        assert fresh.id != first.id and f"POST {LOADS[0]}" in seen
    finally:
        await runner.cleanup()
