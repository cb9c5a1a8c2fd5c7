"""Takeover after ``kill -9``, the machinery of bench/checkpoint.py's part 2 (its docstring says what is measured).

``Cluster``: real ``python -m server`` processes (one API server with ``embedded_worker: false``, workers) on one
PostgreSQL and one artifact folder, as tests/e2e/test_workers.py sets them up; ``scratch_database`` and
``drop_database`` for a run on ``DATABASE_URL``; ``Watch``, a job's watch stream with each event's time of
receipt; ``takeover_rounds``: the job, and each round's kill of the worker holding it at a checkpoint, timed to
the first step on another worker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # scratch_database imports tests.conftest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """``python -m server`` processes (one API server, workers) on one database, datasets and artifact folder."""

    def __init__(self, root: Path, database_url: str, shared: dict[str, object]) -> None:
        self.root = root
        self.url = database_url
        self.shared = shared
        self.procs: dict[int, subprocess.Popen[str]] = {}
        self.started = 0

    async def _launch(self, name: str, command: list[str], settings: dict[str, object], ready: str,
                      ) -> subprocess.Popen[str]:
        data_dir = self.root / name
        data_dir.mkdir(parents=True)
        config = data_dir / "config.yaml"
        config.write_text(json.dumps(settings))  # YAML is a superset of JSON
        env = {k: v for k, v in os.environ.items() if not k.startswith("LEARNING_ENGINE_")}
        env["DATABASE_URL"] = self.url
        with (data_dir / "log").open("w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "server", *command, "--data-dir", str(data_dir), "--config", str(config)],
                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True,
            )
        self.procs[proc.pid] = proc
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 300)
        if ready not in line:
            raise RuntimeError(f"{name} did not start: {line!r}\n{(data_dir / 'log').read_text()[-3000:]}")
        return proc

    async def start_api(self, port: int) -> None:
        settings = {**self.shared, "embedded_worker": False, "gateway_port": free_port(),
                    "serving_url": f"http://127.0.0.1:{free_port()}"}  # no serving engine: not needed here
        await self._launch("api", ["serve", "--port", str(port)], settings, "listening on")

    async def start_worker(self) -> subprocess.Popen[str]:
        self.started += 1
        return await self._launch(f"worker-{self.started}", ["worker"], self.shared, "running")

    def holder(self, worker: str) -> subprocess.Popen[str]:
        """The process of a job's worker id, "<host>-<pid>"."""
        return self.procs[int(worker.rsplit("-", 1)[1])]

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def scratch_database(admin_url: str) -> str:
    """A new database on the server of ``admin_url`` (so these workers take no other job); returns its URL."""
    from tests.conftest import create_database

    return await create_database(admin_url, "bench_checkpoint")


async def drop_database(admin_url: str, url: str) -> None:
    import asyncpg

    name = url.partition("?")[0].rsplit("/", 1)[1]
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


class Watch:
    """A job's watch stream: events with the monotonic time each was received."""

    def __init__(self, stream: AsyncIterator, ended: set[int]) -> None:
        self._stream = stream
        self._ended = ended

    async def until(self, predicate: Callable, seen: list | None = None, timeout: float = 600) -> tuple:
        async def wait() -> tuple:
            async for message in self._stream:
                if message.HasField("event"):
                    event = message.event
                    received = time.monotonic()
                    if seen is not None:
                        seen.append((event, received))
                    if predicate(event):
                        return event, received
                    if event.HasField("error") or event.state_change.state in self._ended:
                        raise RuntimeError(f"the job ended first: {event}")
            raise RuntimeError("the watch stream ended")

        return await asyncio.wait_for(wait(), timeout)


def seconds(timestamp) -> float:
    return timestamp.seconds + timestamp.nanos / 1e9


async def takeover_rounds(cluster: Cluster, port: int, args: argparse.Namespace, dataset: str, max_seq: int,
                          stalled: float) -> list[dict]:
    import grpc

    from learning.v1 import common_pb2 as common
    from learning.v1 import training_pb2 as pb
    from learning.v1 import training_pb2_grpc as pb_grpc

    ended = {common.JOB_STATE_SUCCEEDED, common.JOB_STATE_FAILED, common.JOB_STATE_CANCELLED}
    budget = 3 * stalled + 600  # a round's wait, generous: model load and a loaded machine
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.TrainingServiceStub(channel)
        spec = pb.TrainingJobSpec(
            jsonl=common.JsonlDataset(path=dataset),
            hyperparameters=pb.Hyperparameters(epochs=1000, batch_size=args.batch_size, max_seq_length=max_seq,
                                               seed=7),
            checkpoints=pb.CheckpointPolicy(every_steps=args.takeover_every, every_minutes=0),
        )
        job = (await stub.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=spec))).training_job
        watch = Watch(stub.WatchTrainingJob(pb.WatchTrainingJobRequest(name=job.name)), ended)
        rounds = []
        try:
            for n in range(args.kills):
                if n:  # the killed worker's replacement: two workers alive at every kill
                    await cluster.start_worker()
                since = time.time()  # a checkpoint taken from now on, not one the stream still holds
                checkpoint, _ = await watch.until(
                    lambda e, since=since: e.HasField("checkpoint") and seconds(e.time) >= since, timeout=budget)
                holder = cluster.holder((await stub.GetTrainingJob(pb.GetTrainingJobRequest(name=job.name)))
                                        .training_job.worker)
                killed_wall, killed = time.time(), time.monotonic()
                holder.send_signal(signal.SIGKILL)
                holder.wait()
                seen: list = []
                taken, _ = await watch.until(lambda e: e.notice.code == "TAKEN_OVER", seen, timeout=budget)
                step, step_received = await watch.until(lambda e: e.HasField("step_metrics"), seen, timeout=budget)
                resumed = next((e for e, _ in seen if e.notice.code == "RESUMED"), None)
                result = {
                    "checkpoint_step": checkpoint.checkpoint.step, "killed_pid": holder.pid,
                    "detected": seconds(taken.time) - killed_wall,
                    "resumed": seconds(resumed.time) - killed_wall if resumed is not None else None,
                    "resumed_from": resumed.notice.message if resumed is not None else "(no RESUMED notice)",
                    "first_step": step.step_metrics.step,
                    "training": seconds(step.time) - killed_wall,
                    "on_receipt": step_received - killed,
                }
                rounds.append(result)
                if args.verbose:
                    for event, _ in (item for item in seen if seconds(item[0].time) >= killed_wall):
                        kind = event.WhichOneof("kind")
                        print(f"      +{seconds(event.time) - killed_wall:6.2f} s  #{event.sequence} {kind}: "
                              f"{str(getattr(event, kind)).strip().replace(chr(10), '; ')[:150]}")
                resumed_at = f"{result['resumed']:.1f} s" if result["resumed"] is not None else "-"
                print(f"   kill {n + 1} (pid {holder.pid}, after the checkpoint of step {result['checkpoint_step']}):"
                      f" TAKEN_OVER +{result['detected']:.1f} s, RESUMED +{resumed_at}, first step "
                      f"({result['first_step']}) +{result['training']:.1f} s; on receipt +{result['on_receipt']:.1f} s"
                      f"  [{result['resumed_from']}]", flush=True)
        finally:
            with contextlib.suppress(grpc.RpcError):  # the processes are stopped next in any case
                await stub.CancelTrainingJob(pb.CancelTrainingJobRequest(name=job.name))
    return rounds
