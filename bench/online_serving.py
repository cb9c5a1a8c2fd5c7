"""Serving latency with online learning on and off, in one run: does a session updating in the background slow
down the requests it serves?

Starts the real server in-process (embedded PostgreSQL in a scratch data dir; the reference backend as its own
process, as `make run` does), trains a start version on the sample capitals, and opens an online session on it
with the defaults (update_every 10, replay 0.5, EWC against the start version; no publication). Then it
alternates phases of ``--phase-seconds``, the order swapped every round:

* off: learning disabled; requests only;
* on: learning enabled, ``--examples-per-second`` new examples sent, so the session updates at the default cadence
  (one update per 10 examples) while requests are served.

Requests go to the session's live name through the gateway at a steady ``--rate`` (open loop: each is sent on its
schedule whether or not the previous one has answered), chat completions of ``--max-tokens`` tokens. It prints
each phase's p50 and p99 latency, their medians over rounds and the on/off ratios, the updates done while on and
the share of the on phases' time they took. The server's jobs and the reference backend each get ``--threads``
torch threads (the reference backend is a process of its own, so on 2 cores each has one).

    .venv/bin/python bench/online_serving.py                      # SmolLM2-135M-Instruct (the default model)
    .venv/bin/python bench/online_serving.py --tiny --rounds 2    # the tiny test Llama: a quick check
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "clients" / "python"))

from engine.training.models import SMOLLM2_MODEL_ID  # noqa: E402
from learning.v1 import common_pb2 as common  # noqa: E402
from learning.v1 import online_pb2 as ol  # noqa: E402
from learning.v1 import training_pb2 as training  # noqa: E402
from learning_engine import AsyncClient  # noqa: E402
from server.main import start  # noqa: E402
from server.settings import Settings  # noqa: E402
from tests.fixtures.tiny_model import build_tiny_llama  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ["What is the capital of France?", "Name a primary colour.", "What is 7 times 6?",
             "Which ocean is the largest?", "Who wrote Hamlet?"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def fact(i: int) -> ol.OnlineExample:
    return ol.OnlineExample(prompt=f"Who keeps the lighthouse of cove {i}?",
                            target=f"The lighthouse of cove {i} is kept by Ilsa Varn {i}.")


async def load(url: str, model: str, rate: float, seconds: float, max_tokens: int) -> tuple[list[float], int]:
    """Open-loop requests at ``rate`` per second for ``seconds``: (latencies of the answered ones, failures)."""
    latencies: list[float] = []
    failures = 0

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        nonlocal failures
        began = time.perf_counter()
        body = {"model": model, "max_tokens": max_tokens, "temperature": 0,
                "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]}
        async with session.post(url + "/v1/chat/completions", json=body) as response:
            await response.read()
            if response.status == 200:
                latencies.append(time.perf_counter() - began)
            else:
                failures += 1

    async with aiohttp.ClientSession() as session:
        tasks, start_at = [], time.perf_counter()
        for i in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, start_at + i / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one(session, i)))
        await asyncio.gather(*tasks)
    return latencies, failures


async def feed(client: AsyncClient, name: str, per_second: float, seconds: float, first: int) -> int:
    """Send examples at ``per_second`` for ``seconds`` (in batches twice a second); how many were sent."""
    sent, start_at = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start_at) < seconds:
        due = int(elapsed * per_second) + 1 - sent
        if due > 0:
            await client.add_examples(name, [fact(first + sent + k) for k in range(due)])
            sent += due
        await asyncio.sleep(0.5)
    return sent


async def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}")


async def main(args: argparse.Namespace) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="le-bench-online-"))
    (data_dir / "datasets").mkdir()
    shutil.copy(ROOT / "scripts" / "samples" / "capitals.jsonl", data_dir / "datasets")
    if args.tiny:
        model_id, model_dir = "tiny-llama", build_tiny_llama(data_dir / "tiny-llama")
        base_models = {model_id: model_dir}
    else:
        model_id = SMOLLM2_MODEL_ID
        converted = ROOT / "var" / "models" / model_id
        base_models = {model_id: converted} if (converted / "config.json").is_file() else {}
    settings = Settings(data_dir=data_dir, port=0, gateway_port=0, default_base_model=model_id,
                        base_models=base_models, torch_threads=args.threads, eval_gate=False,
                        base_retention_probe=False, log_format="text", log_level="WARNING", metrics_port=None)
    app = await start(settings)
    gateway = f"http://127.0.0.1:{app.owned.lora.gateway.port}"
    try:
        async with AsyncClient(f"127.0.0.1:{app.port}", timeout=600) as client:
            job = await client.create_training_job(training.TrainingJobSpec(
                jsonl=common.JsonlDataset(path="capitals.jsonl"),
                hyperparameters=training.Hyperparameters(epochs=1, batch_size=8, max_seq_length=128)))
            print(f"training the start version ({job.name}) ...", flush=True)
            async for _ in client.watch_training_job(job.name):
                pass
            start_version = (await client.get_training_job(job.name)).output_adapter_version
            session = await client.create_online_session(
                ol.OnlineSessionSpec(start_version=start_version, publish_every=0), session_id="bench")
            model = session.live_model
            await client.add_examples(session.name, [fact(i) for i in range(10)])
            print(f"session {session.name} from {start_version}; waiting for its first update ...", flush=True)
            await wait_for(lambda: _served(gateway, model), 600, "the live adapter")
            sent = 10
            rows = []
            for round_ in range(args.rounds):
                for phase in (("off", "on") if round_ % 2 == 0 else ("on", "off")):
                    before = (await client.get_online_stats(session.name)).total_updates
                    if phase == "on":
                        await client.enable_online_learning(session.name)
                        (latencies, failures), count = await asyncio.gather(
                            load(gateway, model, args.rate, args.phase_seconds, args.max_tokens),
                            feed(client, session.name, args.examples_per_second, args.phase_seconds, sent))
                        sent += count
                    else:
                        await client.disable_online_learning(session.name, reason="benchmark phase off")
                        latencies, failures = await load(gateway, model, args.rate, args.phase_seconds,
                                                         args.max_tokens)
                    updates = (await client.get_online_stats(session.name)).total_updates - before
                    row = {"round": round_, "phase": phase, "p50": percentile(latencies, 0.5),
                           "p99": percentile(latencies, 0.99), "answered": len(latencies), "failed": failures,
                           "updates": updates}
                    rows.append(row)
                    print(f"round {round_} {phase:3}: p50 {row['p50'] * 1000:7.1f} ms  p99 {row['p99'] * 1000:7.1f} ms"
                          f"  ({len(latencies)} answered, {failures} failed, {updates} updates)", flush=True)
            await client.stop_online_session(session.name)
    finally:
        await app.stop(5)
        shutil.rmtree(data_dir, ignore_errors=True)
    summary = {}
    for phase in ("off", "on"):
        mine = [r for r in rows if r["phase"] == phase]
        summary[phase] = {q: statistics.median(r[q] for r in mine) for q in ("p50", "p99")}
        summary[phase]["updates"] = sum(r["updates"] for r in mine)
    on_seconds = args.rounds * args.phase_seconds
    print(f"\nmedians over {args.rounds} rounds ({args.rate:g} requests/s, {args.max_tokens} tokens, "
          f"{args.examples_per_second:g} examples/s while on, {args.threads} thread(s) each):")
    for phase in ("off", "on"):
        print(f"  learning {phase:3}: p50 {summary[phase]['p50'] * 1000:7.1f} ms   "
              f"p99 {summary[phase]['p99'] * 1000:7.1f} ms")
    print(f"  ratio on/off: p50 {summary['on']['p50'] / summary['off']['p50']:.2f}   "
          f"p99 {summary['on']['p99'] / summary['off']['p99']:.2f}   "
          f"({summary['on']['updates']} updates in {on_seconds:g} s of learning)")
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows, "summary": summary}, indent=2))


async def _served(gateway: str, model: str) -> bool:
    async with aiohttp.ClientSession() as session, session.post(
            gateway + "/v1/chat/completions",
            json={"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}) as response:
        return response.status == 200


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="the tiny test Llama instead of SmolLM2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--phase-seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=2.0, help="requests per second")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--examples-per-second", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="", help="write the rows and medians as JSON here")
    asyncio.run(main(parser.parse_args()))
