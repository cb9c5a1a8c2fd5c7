"""Conformance of Learning Engine's serving parts against real MAX Serve on CPU (opt-in: `make max-conformance`).

Usage:
    python scripts/max_conformance.py --max var/max-venv/bin/max [--model-dir var/models/SmolLM2-135M-Instruct]
    python scripts/max_conformance.py --url http://127.0.0.1:8000   # a MAX Serve already running

Starts ``max serve --devices cpu`` on the local base model (no hub download: HF_HUB_OFFLINE=1), without
``--enable-lora``, waits until it is healthy, then checks what Learning Engine relies on, with its own code:
the serving client (engine/serving/client.py) for ``/health``, ``/v1/models`` and the 501 of a LoRA load, and
the gateway (engine/serving/gateway.py) for chat completions, plain and streamed, through the alias. Prints one
line a check and ``N passed, N failed``; exits 1 if any failed. MAX's log goes to ``--log``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from google.rpc import error_details_pb2

from engine.errors import EngineError
from engine.serving.alias_router import AliasRouter
from engine.serving.client import ServingClient, ServingConfig
from engine.serving.gateway import Gateway
from engine.training.models import SMOLLM2_MODEL_ID
from server.errors import engine_error_status

ROOT = Path(__file__).resolve().parent.parent
ALIAS = "active"
QUESTION = "What is the capital of France?"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Checks:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    async def run(self, name: str, check: Callable[[], Awaitable[str]]) -> None:
        began = time.monotonic()
        try:
            detail = await check()
        except Exception as exc:  # a failed check is reported, and the others still run
            self.failed += 1
            print(f"FAIL {name} ({time.monotonic() - began:.1f} s): {type(exc).__name__}: {exc}", flush=True)
            return
        self.passed += 1
        print(f"ok   {name} ({time.monotonic() - began:.1f} s): {detail}", flush=True)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


async def conformance(url: str, served_name: str, model_dir: Path) -> Checks:
    checks = Checks()
    client = ServingClient(ServingConfig(base_url=url, timeout_seconds=30.0, load_timeout_seconds=120.0))
    gateway = Gateway(AliasRouter(ALIAS, served_name), url, timeout_seconds=300.0)
    await client.start()
    port = await gateway.start("127.0.0.1", 0)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as http:

            async def health() -> str:
                _require(await client.health(), f"ServingClient.health() is False for {url}")
                async with http.get(f"{base}/health") as r:
                    _require(r.status == 200, f"gateway /health answered {r.status}")
                return "ServingClient.health() is True; the gateway's /health is 200"

            async def models() -> str:
                listed = [m.id for m in await client.list_models()]
                _require(served_name in listed, f"{served_name!r} not in MAX's /v1/models: {listed}")
                async with http.get(f"{base}/v1/models") as r:
                    ids = [m["id"] for m in (await r.json())["data"]]
                _require(ids == [ALIAS, *listed], f"gateway /v1/models lists {ids}")
                async with http.get(f"{base}/v1/models/{served_name}") as r:
                    _require(r.status == 200 and (await r.json())["id"] == served_name,
                             f"gateway /v1/models/{served_name} answered {r.status}")
                return f"MAX lists {listed}; the gateway lists {ids} and serves /v1/models/{served_name}"

            async def chat() -> str:
                body = {"model": ALIAS, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 24,
                        "temperature": 0}
                async with http.post(f"{base}/v1/chat/completions", json=body) as r:
                    if r.status != 200:
                        raise AssertionError(f"gateway answered {r.status}: {(await r.text())[:300]}")
                    served = r.headers.get("x-served-model")
                    doc = await r.json()
                text = doc["choices"][0]["message"]["content"]
                _require(bool(text.strip()) and served == served_name, f"answer {text!r} from {served!r}")
                return f"{QUESTION!r} -> {text.strip()!r} (x-served-model: {served})"

            async def chat_stream() -> str:
                body = {"model": ALIAS, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 24,
                        "temperature": 0, "stream": True}
                pieces, events, done = [], 0, False
                async with http.post(f"{base}/v1/chat/completions", json=body) as r:
                    if r.status != 200:
                        raise AssertionError(f"gateway answered {r.status}: {(await r.text())[:300]}")
                    _require(r.content_type == "text/event-stream", f"content type {r.content_type}")
                    async for raw in r.content:
                        line = raw.decode().strip()
                        if not line.startswith("data:"):
                            continue
                        data = line[len("data:"):].strip()
                        if data == "[DONE]":
                            done = True
                            continue
                        events += 1
                        delta = json.loads(data)["choices"][0].get("delta") or {}
                        pieces.append(delta.get("content") or "")
                text = "".join(pieces)
                _require(done and events > 1 and bool(text.strip()), f"{events} events, [DONE]={done}, {text!r}")
                return f"{events} server-sent events then [DONE]: {text.strip()!r}"

            async def load_without_lora() -> str:
                try:
                    await client.load("conformance", str(model_dir))
                except EngineError as err:
                    status = engine_error_status(err)
                    infos = [error_details_pb2.ErrorInfo.FromString(d.value) for d in status.details
                             if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
                    _require(err.reason == "SERVING_LORA_DISABLED" and err.metadata.get("http_status") == "501"
                             and "--enable-lora" in err.message, f"{err.reason}: {err.message}")
                    _require([i.reason for i in infos] == ["SERVING_LORA_DISABLED"], f"ErrorInfo {infos}")
                    return f"HTTP 501 -> {type(err).__name__} {err.reason} (gRPC code {status.code}): {err.message}"
                raise AssertionError("MAX without --enable-lora accepted a LoRA load")

            await checks.run("health", health)
            await checks.run("/v1/models", models)
            await checks.run("chat completion through the gateway", chat)
            await checks.run("streamed chat completion through the gateway", chat_stream)
            await checks.run("LoRA load without --enable-lora", load_without_lora)
    finally:
        await gateway.stop()
        await client.close()
    return checks


async def wait_healthy(url: str, process: subprocess.Popen[bytes] | None, timeout: float, log: Path | None) -> float:
    began = time.monotonic()
    async with ServingClient(ServingConfig(base_url=url, timeout_seconds=2.0, retries=0)) as probe:
        while not await probe.health():
            if process is not None and process.poll() is not None:
                raise SystemExit(f"max serve exited with {process.returncode}; see {log}")
            if time.monotonic() - began > timeout:
                raise SystemExit(f"max serve was not healthy after {timeout:g} s; see {log}")
            await asyncio.sleep(2)
    return time.monotonic() - began


def start_max(args: argparse.Namespace, port: int) -> subprocess.Popen[bytes]:
    cmd = [args.max, "serve", "--model-path", str(args.model_dir), "--served-model-name", args.served_model_name,
           "--devices", "cpu", "--host", "127.0.0.1", "--port", str(port), "--max-length", "2048"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MAX_SERVE_DISABLE_TELEMETRY": "1",
           "MAX_SERVE_METRICS_ENDPOINT_PORT": str(_free_port())}
    print("$ " + " ".join(cmd), flush=True)
    args.log.parent.mkdir(parents=True, exist_ok=True)
    with args.log.open("wb") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def stop_max(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, 15)  # its own session: MAX's model and metrics workers go with it
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max", default="max", help="the `max` command (of the MAX virtualenv)")
    parser.add_argument("--url", help="an already running MAX Serve (without --enable-lora); none is started")
    parser.add_argument("--model-dir", type=Path, default=ROOT / "var" / "models" / SMOLLM2_MODEL_ID,
                        help="the base model, an HF directory (`make model` writes this one)")
    parser.add_argument("--served-model-name", default=SMOLLM2_MODEL_ID)
    parser.add_argument("--startup-timeout", type=float, default=1800.0, help="seconds MAX may take to be healthy")
    parser.add_argument("--log", type=Path, default=ROOT / "var" / "max-conformance.log", help="MAX's output")
    args = parser.parse_args(argv)
    if args.url is None and not (args.model_dir / "config.json").is_file():
        parser.error(f"{args.model_dir} is no HF model directory; run `make model` first")
    process = None
    url = args.url
    if url is None:
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        process = start_max(args, port)
    try:
        seconds = asyncio.run(wait_healthy(url, process, args.startup_timeout, args.log if process else None))
        print(f"MAX Serve healthy at {url} after {seconds:.0f} s", flush=True)
        checks = asyncio.run(conformance(url, args.served_model_name, args.model_dir))
    finally:
        if process is not None:
            stop_max(process)
    print(f"{checks.passed} passed, {checks.failed} failed")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
