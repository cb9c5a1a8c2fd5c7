"""A LoRA load the reference backend refuses (400: a damaged adapter) leaves what it serves exactly as it was, also
when PEFT had already injected the adapter's layers into the base model (its first adapter) before it failed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import aiohttp
import pytest

from tests.fixtures.serving import make_adapter, running_backend

NAME = "tiny-llama"
BODY = {"model": NAME, "prompt": "Hello there", "max_tokens": 8, "logprobs": 1}


def _truncated(adapter: Path) -> None:
    weights = next(adapter.glob("adapter_model.*"))
    weights.write_bytes(weights.read_bytes()[:64])  # unreadable


def _other_rank(adapter: Path) -> None:
    config = adapter / "adapter_config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {"r": 8}))  # weights of rank 4: size mismatch


def _unsupported_target(adapter: Path) -> None:
    config = adapter / "adapter_config.json"  # q_proj is injected before the norm fails
    doc = json.loads(config.read_text())
    config.write_text(json.dumps(doc | {"target_modules": ["q_proj", "input_layernorm"]}))


@pytest.mark.parametrize("damage", [_truncated, _other_rank, _unsupported_target])
@pytest.mark.parametrize("first", [True, False], ids=["first adapter", "another adapter"])
async def test_a_refused_load_leaves_what_is_served_as_it_was(tiny_model_dir, tmp_path, damage, first) -> None:
    good = make_adapter(tiny_model_dir, tmp_path / "good", seed=1)
    damaged = Path(shutil.copytree(good, tmp_path / "damaged"))
    damage(damaged)
    async with running_backend(tiny_model_dir, NAME) as be, aiohttp.ClientSession() as s:
        load = be.url + "/v1/load_lora_adapter"
        if not first:
            async with s.post(load, json={"lora_name": "good", "lora_path": str(good)}) as r:
                assert r.status == 200
        before = {}
        for model in (NAME,) if first else (NAME, "good"):
            async with s.post(be.url + "/v1/completions", json=BODY | {"model": model}) as r:
                before[model] = (await r.json())["choices"][0]
        async with s.post(load, json={"lora_name": "bad", "lora_path": str(damaged)}) as r:
            refused = await r.json()
        assert r.status == 400, refused
        for model, answer in before.items():
            async with s.post(be.url + "/v1/completions", json=BODY | {"model": model}) as r:
                after = (await r.json())["choices"][0]
            assert after["text"] == answer["text"]
            assert after["logprobs"]["token_logprobs"] == answer["logprobs"]["token_logprobs"]
        async with s.post(load, json={"lora_name": "bad", "lora_path": str(good)}) as r:
            assert r.status == 200  # the refused name is free
