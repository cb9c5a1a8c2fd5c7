"""The embedded reference backend (the serving target when no serving_url is set) serves every answer length the
settings accept: eval_max_tokens (le=4096, the floor of every gate prompt's budget), eval_judge_max_tokens (le=1024)
and prepare_max_tokens (le=8192) may each be above its own default limit of 512."""

from __future__ import annotations

import pytest

from engine.errors import EngineError
from engine.serving.client import ServingClient, ServingConfig
from server.lora_wiring import backend_max_tokens, start_reference_backend
from server.settings import Settings

TINY = "tiny-llama"
LENGTHS = {"eval_max_tokens": 700, "eval_judge_max_tokens": 1024, "prepare_max_tokens": 900}


def test_the_limit_covers_the_longest_configured_length(tmp_path) -> None:
    assert backend_max_tokens(Settings(data_dir=tmp_path)) == 512
    assert backend_max_tokens(Settings(data_dir=tmp_path, **LENGTHS)) == 1024
    assert backend_max_tokens(Settings(data_dir=tmp_path, prepare_max_tokens=8192)) == 8192


@pytest.mark.slow
async def test_an_answer_length_the_settings_accept_is_served(tiny_model_dir, data_dir, monkeypatch) -> None:
    monkeypatch.delenv("LEARNING_ENGINE_CONFIG", raising=False)
    settings = Settings(data_dir=data_dir, default_base_model=TINY, base_models={TINY: tiny_model_dir},
                        torch_threads=1, **LENGTHS)
    assert settings.serving_url is None  # the embedded reference backend, started as the server starts it
    process, url = await start_reference_backend(settings)
    client = ServingClient(ServingConfig(base_url=url, retries=0, timeout_seconds=120))
    try:
        for field, length in LENGTHS.items():
            try:
                await client.complete(TINY, "Hello", max_tokens=length, chat=False)
            except EngineError as exc:
                pytest.fail(f"{field}={length} accepted by the settings, refused by the reference backend: "
                            f"{exc.message}")
    finally:
        await client.close()
        process.terminate()
        await process.wait()
