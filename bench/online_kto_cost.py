"""What an online update by KTO costs next to one by SFT, on SmolLM2-135M-Instruct (engine.online.learner, the
arithmetic the service's sessions run).

Two learners from the same fresh adapter receive the same stream: invented facts (bench/forgetting.py's task B),
each once with its answer (labelled desirable) and once with another fact's answer (undesirable). The SFT learner
takes both as answers to imitate, as an SFT session takes every example it accepts; the KTO learner learns from the
labels. Updates of ``--update-every`` new examples with the default replay share alternate between the two (SFT,
KTO, SFT, ...), so both see the same load on the machine. The first update of each has nothing to replay and is
left out of the timing.

    .venv/bin/python bench/online_kto_cost.py --updates 5 --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from forgetting import make_tasks  # noqa: E402

from engine.domain import JsonlSource, LoraSpec, Objective  # noqa: E402
from engine.online.learner import OnlineLearner  # noqa: E402
from engine.online.spec import OnlineSessionSpec, StoredExample  # noqa: E402
from engine.training.loading import load_for_training  # noqa: E402
from engine.training.models import SMOLLM2_MODEL_ID, resolve_base_model  # noqa: E402
from engine.training.run import TrainingRun  # noqa: E402
from engine.training.spec import Hyperparameters, TrainingJobSpec  # noqa: E402
from server.settings import Settings  # noqa: E402

DEFAULTS = Settings.model_fields


def labelled_stream(facts: int, seed: int) -> list[StoredExample]:
    """Each fact with its answer (desirable), then with the next fact's answer (undesirable)."""
    _, task = make_tasks(facts, seed)
    rows = []
    for i, example in enumerate(task):
        question, answer = example.messages[0].content, example.messages[1].content
        wrong = task[(i + 1) % len(task)].messages[1].content
        rows += [(question, answer, True), (question, wrong, False)]
    return [StoredExample(seq=n + 1, prompt=q, target=a, weight=1.0, desirable=d) for n, (q, a, d) in enumerate(rows)]


def learner(base_dir: Path, work: Path, loss: Objective, args) -> OnlineLearner:
    spec = OnlineSessionSpec(base_model=SMOLLM2_MODEL_ID, start_version="v1.0", update_every=args.update_every,
                             learning_rate=args.lr, replay_fraction=args.replay_fraction, max_seq_length=128,
                             loss_spike_factor=0.0, loss=loss)
    training = TrainingJobSpec(base_model=SMOLLM2_MODEL_ID, dataset=JsonlSource("-"),
                               lora=LoraSpec(rank=16, alpha=32, dropout=0.05),
                               hyperparameters=Hyperparameters(max_seq_length=128, seed=0))
    return OnlineLearner(load_for_training(TrainingRun(training, base_dir, [], work / loss.value)), spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=5, help="updates of each learner (the first is not timed)")
    parser.add_argument("--update-every", type=int, default=10)
    parser.add_argument("--replay-fraction", type=float, default=DEFAULTS["online_replay_fraction"].default)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models-dir", type=Path, default=ROOT / "var" / "models")
    parser.add_argument("--base-dir", type=Path, help="an HF directory of the model (instead of --models-dir's)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/le-bench-online-kto"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "online-kto-cost.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base_dir = args.base_dir or resolve_base_model(SMOLLM2_MODEL_ID, models={}, cache_dir=args.models_dir)
    rows = labelled_stream(args.updates * args.update_every // 2, seed=0)
    learners = {loss: learner(base_dir, args.work, loss, args) for loss in (Objective.SFT, Objective.KTO)}
    for each in learners.values():
        each.add(rows)
    seconds: dict[Objective, list[float]] = {loss: [] for loss in learners}
    losses: dict[Objective, list[float]] = {loss: [] for loss in learners}
    for update in range(args.updates):
        for loss, each in learners.items():
            started = time.monotonic()
            result = each.update(args.lr)
            took = time.monotonic() - started
            losses[loss].append(result.loss)
            if update:
                seconds[loss].append(took)
            print(f"update {update + 1} {loss.value}: {result.examples} new + {result.replayed} replayed, loss "
                  f"{result.loss:.4f}, {took:.1f} s", flush=True)
    medians = {loss.value: statistics.median(s) for loss, s in seconds.items()}
    ratio = medians["KTO"] / medians["SFT"]
    print(f"median update: SFT {medians['SFT']:.1f} s, KTO {medians['KTO']:.1f} s, ratio {ratio:.2f}", flush=True)
    args.out.write_text(json.dumps({
        "args": {k: str(v) for k, v in vars(args).items()},
        "seconds": {loss.value: s for loss, s in seconds.items()},
        "losses": {loss.value: v for loss, v in losses.items()},
        "median_seconds": medians, "ratio": ratio,
    }, indent=2))


if __name__ == "__main__":
    main()
