"""Forgetting under online learning on SmolLM2-135M-Instruct: does a session learning new facts keep its start
version's?

A start version learns task A (invented capitals) by ordinary training, as bench/forgetting.py does. Then an
online session (engine.online.learner, the arithmetic the service's sessions run) learns task B (invented
founders) from a stream: each B fact ``--passes`` times in shuffled order, an update every ``--update-every``
examples. Two sessions from the same start version:

* ``plain``: no EWC, no replay;
* ``protected``: the service's online defaults: EWC against the start version (its Fisher measured on task A,
  the start version's own data, as a session's worker measures it) at ``online_ewc_lambda``, and replay
  ``online_replay_fraction`` of each update from the buffer and task A.

It prints what each session keeps of A and what it learnt of B (greedy answers equal to the taught ones), and
the seconds the updates took.

    .venv/bin/python bench/online_forgetting.py --seeds 0 --threads 1
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from forgetting import accuracy, make_tasks, train  # noqa: E402

from engine.continual.ewc import DEFAULT_PENALTY_NORMALIZATION, EwcPenalty  # noqa: E402
from engine.continual.fisher import FisherEstimator  # noqa: E402
from engine.continual.fisher_run import FisherRun, load_adapter_weights, run_fisher  # noqa: E402
from engine.domain import Example, JsonlSource, LoraSpec  # noqa: E402
from engine.online.learner import OnlineLearner  # noqa: E402
from engine.online.spec import OnlineSessionSpec, StoredExample  # noqa: E402
from engine.training.loading import load_for_training, save_adapter  # noqa: E402
from engine.training.models import SMOLLM2_MODEL_ID, resolve_base_model  # noqa: E402
from engine.training.run import TrainingRun  # noqa: E402
from engine.training.spec import Hyperparameters, TrainingJobSpec  # noqa: E402
from server.settings import Settings  # noqa: E402

DEFAULTS = Settings.model_fields


def stream(task: list[Example], passes: int, seed: int) -> list[StoredExample]:
    """Each fact ``passes`` times, each pass in its own shuffled order, numbered as the database would."""
    rng, rows = random.Random(seed), []
    for _ in range(passes):
        order = list(task)
        rng.shuffle(order)
        rows.extend(order)
    return [StoredExample(seq=i + 1, prompt=e.messages[0].content, target=e.messages[1].content, weight=1.0)
            for i, e in enumerate(rows)]


def session(base_dir: Path, start_dir: Path, task_a: list[Example], rows: list[StoredExample], out: Path, args,
            *, protected: bool, seed: int) -> tuple[float, int]:
    """Run one session over ``rows``; save its adapter to ``out``; (seconds of updates, updates)."""
    spec = OnlineSessionSpec(
        base_model=SMOLLM2_MODEL_ID, start_version="v1.0", update_every=args.update_every,
        learning_rate=args.lr, ewc_lambda=args.ewc_lambda if protected else 0.0,
        replay_fraction=args.replay_fraction if protected else 0.0, max_seq_length=128, seed=seed,
        loss_spike_factor=0.0,
    )
    training = TrainingJobSpec(base_model=SMOLLM2_MODEL_ID, dataset=JsonlSource("-"),
                               lora=LoraSpec(rank=16, alpha=32, dropout=0.05),
                               hyperparameters=Hyperparameters(max_seq_length=128, seed=seed))
    loaded = load_for_training(TrainingRun(training, base_dir, [], out, parent_adapter_dir=start_dir))
    penalty = None
    if protected:
        fisher = run_fisher(FisherRun(base_dir, start_dir, task_a, FisherEstimator.EMPIRICAL, 128, 8, seed))
        penalty = EwcPenalty(fisher.diagonal, load_adapter_weights(start_dir), args.ewc_lambda,
                             DEFAULT_PENALTY_NORMALIZATION)
    learner = OnlineLearner(loaded, spec, penalty=penalty, earlier=list(task_a) if protected else [])
    started = time.monotonic()
    for start in range(0, len(rows), args.update_every):
        learner.add(rows[start:start + args.update_every])
        while learner.due(forced=True):
            learner.update(args.lr)
    seconds = time.monotonic() - started
    save_adapter(loaded.model, out)
    return seconds, learner.updates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--facts", type=int, default=12, help="facts per task")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=24, help="task A's training epochs")
    parser.add_argument("--lr", type=float, default=1e-3, help="task A's and the sessions' learning rate")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--passes", type=int, default=20, help="times each task-B fact arrives")
    parser.add_argument("--update-every", type=int, default=10)
    parser.add_argument("--ewc-lambda", type=float, default=DEFAULTS["online_ewc_lambda"].default)
    parser.add_argument("--replay-fraction", type=float, default=DEFAULTS["online_replay_fraction"].default)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models-dir", type=Path, default=ROOT / "var" / "models")
    parser.add_argument("--work", type=Path, default=Path("/tmp/le-bench-online-forgetting"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "online-forgetting.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base_dir = resolve_base_model(SMOLLM2_MODEL_ID, models={}, cache_dir=args.models_dir)
    results = []
    for seed in args.seeds:
        task_a, task_b = make_tasks(args.facts, seed)
        start_dir = args.work / f"s{seed}-start"
        if not (start_dir / "adapter_config.json").is_file():
            train(base_dir, task_a, start_dir, args, seed=seed)
        row = {"seed": seed, "start": {"A": accuracy(base_dir, start_dir, task_a),
                                       "B": accuracy(base_dir, start_dir, task_b)}}
        print(f"seed {seed} start version: A {row['start']['A']:.3f}  B {row['start']['B']:.3f}", flush=True)
        rows = stream(task_b, args.passes, seed)
        for name, protected in (("plain", False), ("protected", True)):
            out = args.work / f"s{seed}-{name}"
            shutil.rmtree(out, ignore_errors=True)
            seconds, updates = session(base_dir, start_dir, task_a, rows, out, args, protected=protected,
                                       seed=seed)
            row[name] = {"A": accuracy(base_dir, out, task_a), "B": accuracy(base_dir, out, task_b),
                         "seconds": seconds, "updates": updates}
            print(f"seed {seed} {name:9}: keeps A {row[name]['A']:.3f}  learnt B {row[name]['B']:.3f}  "
                  f"({updates} updates in {seconds:.0f} s)", flush=True)
        results.append(row)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "seeds": results},
                                   indent=2))


if __name__ == "__main__":
    main()
