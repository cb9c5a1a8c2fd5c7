"""Hot-swap latency on the reference backend: activation (request to serving) and rollback, medians.

Runs the real LoraController, ServingClient, gateway router and reference backend (the tiny
test Llama on CPU, in-process) with an in-memory state store and a directory-backed fetcher,
so it measures the swap path itself: load, smoke request, switch. The replaced version's retirement (its unload
after a follow period and the drain timeout, engine/lora/retirement.py) happens in a later follow, not in the call,
so the versions stay loaded through the run. Traffic runs through the gateway during every swap and must see zero
failures.

    .venv/bin/python bench/swap.py [--rounds 10] [--threads 1] [--clients 4]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.lora.controller import ControlConfig, LoraController  # noqa: E402
from engine.lora.state import EvalSummary, FetchedAdapter, OperationRecord, Retirement, TargetState  # noqa: E402
from engine.serving.alias_router import AliasRouter  # noqa: E402
from engine.serving.client import ServingClient, ServingConfig  # noqa: E402
from engine.serving.gateway import Gateway  # noqa: E402
from engine.serving.reference_backend import create_app, start_site  # noqa: E402
from engine.serving.reference_model import ReferenceModel  # noqa: E402
from engine.stores.artifacts_local import LocalArtifactStore  # noqa: E402
from tests.fixtures.serving import make_adapter  # noqa: E402
from tests.fixtures.tiny_model import build_tiny_llama  # noqa: E402

BASE = "tiny-llama"


class MemoryStore:
    """LoraStateStore in memory (one process, so the cross-process lock is a no-op)."""

    def __init__(self) -> None:
        self.state: TargetState | None = None
        self.ops: list[OperationRecord] = []
        self.due: dict[str, datetime] = {}  # retired version -> when its retirement is due

    async def load(self, target: str, base_model: str) -> TargetState:
        return self.state or TargetState(target=target, base_model=base_model)

    async def save(self, state: TargetState) -> None:
        self.state = state

    async def record(self, target: str, op: OperationRecord) -> None:
        self.ops.append(op)

    async def last_operation(self, target: str) -> OperationRecord | None:
        return self.ops[-1] if self.ops else None

    async def history(self, target: str, limit: int) -> list[OperationRecord]:
        return self.ops[::-1][:limit]

    async def save_eval(self, base_model: str, summary: EvalSummary) -> None:
        pass

    async def latest_eval(self, base_model: str, version: str, evaluation: str = "") -> EvalSummary | None:
        return None

    async def evaluations(self, base_model: str, versions, *, per_version: int) -> list[EvalSummary]:
        return []

    async def running_split(self, target: str) -> None:
        return None  # this benchmark runs no canary

    async def canary_outcome(self, target: str, version: str = "") -> None:
        return None

    @contextlib.asynccontextmanager
    async def serialised(self, target: str):
        yield

    async def retire(self, target: str, version: str, grace_seconds: float) -> None:
        self.due[version] = datetime.now(UTC) + timedelta(seconds=grace_seconds)

    async def postpone(self, target: str, versions, grace_seconds: float) -> None:
        later = datetime.now(UTC) + timedelta(seconds=grace_seconds)
        for version in versions:
            if version in self.due:
                self.due[version] = max(self.due[version], later)

    async def retirements(self, target: str) -> list[Retirement]:
        now = datetime.now(UTC)
        return [Retirement(version=v, due_time=t, due=t <= now) for v, t in sorted(self.due.items())]

    async def retired(self, target: str, version: str) -> None:
        self.due.pop(version, None)


class DirFetcher:
    def __init__(self, dirs: dict[str, Path]) -> None:
        self.dirs = dirs

    async def fetch(self, base_model: str, version: str, *, field_path: str = "version") -> FetchedAdapter:
        return FetchedAdapter(base_model, version, self.dirs[version])

    async def record_eval(self, base_model: str, summary: EvalSummary) -> None:
        pass

    async def lineage(self, base_model: str, version: str) -> list[str]:
        return [version]


async def traffic(url: str, stop: asyncio.Event, statuses: Counter) -> None:
    async with aiohttp.ClientSession() as s:
        while not stop.is_set():
            async with s.post(url + "/v1/completions", json={"model": "active", "prompt": "Hi", "max_tokens": 2}) as r:
                await r.read()
                statuses[r.status] += 1


def phase(op: OperationRecord, name: str) -> float:
    return dict(op.phases)[name]


async def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="swap-bench-"))
    model_dir = build_tiny_llama(root / "tiny")
    versions = [f"v1.{i}" for i in range(args.rounds + 1)]
    dirs = {v: make_adapter(model_dir, root / v, seed=i) for i, v in enumerate(versions)}
    runner, port = await start_site(create_app(ReferenceModel(model_dir, BASE), enable_lora=True), "127.0.0.1", 0)
    engine_url = f"http://127.0.0.1:{port}"
    router = AliasRouter("active", BASE)
    gateway = Gateway(router, engine_url)
    gw_port = await gateway.start("127.0.0.1", 0)
    store = MemoryStore()
    client = ServingClient(ServingConfig(base_url=engine_url))
    reports = LocalArtifactStore(root / "reports")  # where evaluation reports would go (the gate is off here)
    control = LoraController(ControlConfig(base_model=BASE, alias="active", drain_timeout_seconds=30), client,
                             router, store, DirFetcher(dirs), reports)
    await control.start()
    stop, statuses = asyncio.Event(), Counter()
    workers = [asyncio.create_task(traffic(f"http://127.0.0.1:{gw_port}", stop, statuses))
               for _ in range(args.clients)]
    swap_rpc, swap_serving, rollback_rpc, rollback_serving = [], [], [], []
    try:
        await control.activate(versions[0], actor="bench", reason="seed", mark_known_good=True)
        for v in versions[1:]:
            began = time.perf_counter()
            await control.activate(v, actor="bench", reason="swap")
            swap_rpc.append(time.perf_counter() - began)
            swap_serving.append(phase(store.ops[-1], "to_serving"))
            began = time.perf_counter()
            await control.rollback(actor="bench", reason="rollback")
            rollback_rpc.append(time.perf_counter() - began)
            rollback_serving.append(phase(store.ops[-1], "to_serving"))
    finally:
        stop.set()
        await asyncio.gather(*workers)
        await control.close()
        await gateway.stop()
        await client.close()
        await runner.cleanup()

    def ms(xs: list[float]) -> str:
        return f"median {statistics.median(xs) * 1000:8.1f} ms  (min {min(xs) * 1000:.1f}, max {max(xs) * 1000:.1f})"

    print(f"hot-swap on the reference backend (tiny Llama, CPU, torch threads {args.threads}), "
          f"{args.rounds} rounds, {args.clients} concurrent clients through the gateway")
    print(f"  activate: request -> new adapter serving  {ms(swap_serving)}")
    print(f"  activate: whole call                      {ms(swap_rpc)}")
    print(f"  rollback: request -> known-good serving   {ms(rollback_serving)}")
    print(f"  rollback: whole call                      {ms(rollback_rpc)}")
    failed = sum(n for s, n in statuses.items() if s != 200)
    print(f"  gateway requests during swaps: {sum(statuses.values())}, failed: {failed}")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clients", type=int, default=4)
    asyncio.run(main(parser.parse_args()))
