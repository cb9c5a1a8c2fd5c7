"""What the default base protection costs a whole job, as a user of the service pays it: jobs through the API.

bench/base_protection_cost.py times the training loop alone on the forgetting benchmark's stress setting (12 facts,
lr 1e-3, 24 epochs). This one times jobs as `learning-engine train --data samples/capitals.jsonl` runs them: a real
server process (``learning-engine-server`` on an embedded PostgreSQL in a scratch data folder, SmolLM2-135M-Instruct
from the models folder ``make model`` prepared, linked in), the sample dataset, the server's default
hyperparameters, each job a first version (no parent). Jobs without protection (``base_protection: NONE``) and with
the server's default (BASE_KL at its default fraction and weight) alternate, ``--repeats`` of each, so both see the
same load on a shared machine. One job with the protection runs first, untimed: the first job on a base model
builds the base model's answers to the rehearsal prompts, their references and the probe's suite, which a machine
then keeps (their cost once per base model is printed).

Each job's time is split by its own event timestamps (the worker's clock): ``setup`` from the job's start to its
first step's metrics (dataset, model, the rehearsed answers and references read from the cache, the first step),
``training`` from the first step's metrics to the last's, and ``after`` from the last step to the job's end (the
adapter saved and published, base retention measured). Prints each part's median per protection, the whole job's,
and the ratios. The server runs ``--threads`` torch threads.

    make model && .venv/bin/python bench/job_protection_cost.py --threads 1 --repeats 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "clients" / "python"))

from takeover import free_port  # noqa: E402

from learning.v1 import common_pb2 as common  # noqa: E402
from learning.v1 import training_pb2 as training  # noqa: E402
from learning_engine import AsyncClient  # noqa: E402

PROTECTIONS = {"none": common.BASE_PROTECTION_METHOD_NONE, "default": None}


def seconds(timestamp) -> float:  # noqa: ANN001 - a protobuf Timestamp
    return timestamp.seconds + timestamp.nanos / 1e9


def spec(dataset: str, protection: str, epochs: int) -> training.TrainingJobSpec:
    s = training.TrainingJobSpec()
    s.jsonl.CopyFrom(common.JsonlDataset(path=dataset))
    if epochs:
        s.hyperparameters.epochs = epochs
    method = PROTECTIONS[protection]
    if method is not None:
        s.base_protection.method = method
    return s


async def run_job(client: AsyncClient, job_spec: training.TrainingJobSpec) -> dict[str, object]:
    handle = await client.start_training_job(job_spec)
    job = await handle.wait()
    steps = [seconds(e.time) async for e in handle.events() if e.WhichOneof("kind") == "step_metrics"]
    start, end = seconds(job.start_time), seconds(job.end_time)
    retention = round(job.base_retention.retention, 3) if job.HasField("base_retention") else None
    return {"job": job.name, "version": job.output_adapter_version, "steps": len(steps),
            "whole": end - start, "setup": steps[0] - start, "training": steps[-1] - steps[0],
            "after": end - steps[-1], "base_retention": retention,
            "protection": str(job.spec.base_protection).replace("\n", " ").strip()}


def start_server(data_dir: Path, models: Path, port: int, threads: int, log: Path) -> subprocess.Popen[bytes]:
    (data_dir / "datasets" / "samples").mkdir(parents=True)
    for sample in (ROOT / "scripts" / "samples").glob("*.jsonl"):
        shutil.copy(sample, data_dir / "datasets" / "samples" / sample.name)
    (data_dir / "models").symlink_to(models.resolve(), target_is_directory=True)
    env = {**os.environ, "LEARNING_ENGINE_TORCH_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    return subprocess.Popen(  # noqa: S603 - our own server
        [str(ROOT / ".venv" / "bin" / "learning-engine-server"), "--host", "127.0.0.1", "--port", str(port),
         "--data-dir", str(data_dir)], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


async def wait_serving(client: AsyncClient, server: subprocess.Popen[bytes], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited ({server.returncode}); see its log")
        try:
            if await client.health() == "SERVING":
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        await asyncio.sleep(1)
    raise SystemExit("the server did not start in time")


async def measure(args: argparse.Namespace, port: int) -> dict[str, object]:
    async with AsyncClient(f"127.0.0.1:{port}") as client:
        await wait_serving(client, args.server)
        first = await run_job(client, spec(args.dataset, "default", args.epochs))
        print(f"first protected job (builds the base model's answers, references and suite once): "
              f"{first['whole']:.1f} s", flush=True)
        runs: dict[str, list[dict[str, object]]] = {name: [] for name in PROTECTIONS}
        for repeat in range(args.repeats):
            for name in PROTECTIONS:
                record = await run_job(client, spec(args.dataset, name, args.epochs))
                runs[name].append(record)
                print(f"repeat {repeat + 1} {name:8s} whole {record['whole']:6.1f} s  setup {record['setup']:5.1f}"
                      f"  training {record['training']:6.1f} ({record['steps']} steps)  after {record['after']:5.1f}"
                      f"  base retention {record['base_retention']}", flush=True)
    return {"first": first, "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=0, help="0: the server's default")
    parser.add_argument("--dataset", default="samples/capitals.jsonl")
    parser.add_argument("--models", type=Path, default=ROOT / "var" / "models",
                        help="the models folder `make model` prepared (SmolLM2 converted, caches)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not (args.models / "SmolLM2-135M-Instruct").is_dir():
        raise SystemExit(f"no converted SmolLM2 under {args.models}: run `make model` first")
    with tempfile.TemporaryDirectory(prefix="job-cost-") as tmp:
        port = free_port()
        args.server = start_server(Path(tmp) / "data", args.models, port, args.threads, Path(tmp) / "server.log")
        try:
            result = asyncio.run(measure(args, port))
        except BaseException:
            print((Path(tmp) / "server.log").read_text()[-4000:], file=sys.stderr)
            raise
        finally:
            args.server.terminate()
            args.server.wait(timeout=60)
    runs = result["runs"]
    medians = {name: {part: statistics.median(r[part] for r in records)
                      for part in ("whole", "setup", "training", "after")} for name, records in runs.items()}
    print(f"\nmedians of {args.repeats}, {args.threads} thread(s), {args.dataset}, epochs "
          f"{args.epochs or 'the server default'}:")
    for part in ("whole", "setup", "training", "after"):
        plain, protected = medians["none"][part], medians["default"][part]
        print(f"  {part:8s} none {plain:7.1f} s   default {protected:7.1f} s   ratio {protected / plain:.3f}")
    if args.out:
        args.out.write_text(json.dumps({"command": sys.argv, "threads": args.threads, "repeats": args.repeats,
                                        "medians": medians, **result}, indent=2, default=str))


if __name__ == "__main__":
    main()
