"""Base retention with EWC against the base model under its K-FAC Fisher (EWC_BASE), alone or beside a
continuation's EWC and BASE_KL (measured).

BASE_KL holds the adapter to the base model's next-token distribution at a few of its own answers an epoch, and pays
for them in tokens (a job's time over plain LoRA's is its rehearsed tokens, docs/continual-learning.md). EWC_BASE
holds it at no token cost with the second-order expansion of the same KL at the base model, over *every* answer of
the pool, every step: ``lambda / 2 * sum_layers tr(G dW X dW^T)``, ``G`` and ``X`` the Kronecker factors of each
adapted weight's Fisher (engine.continual.base_ewc, whose ``kfac_factors`` and ``KfacPenalty`` this uses; its
module docstring gives the math). Its diagonal form of before kept much less.

What this adds to bench/base_retention.py's ``ewc_base``: the factors' sampling seed and sample count
(``--samples``; the runs of docs/continual-learning.md drew with the chain's seed, a job draws with 0), a
continuation's penalty anchored at its parent (``--at-parent``: ``dW = B A - B* A*``, held where the parent left the
base model's answers) instead of at the base model, and beside it a continuation's EWC against its parent
(``--ewc``, ``--ewc-lambda``, the service's default 0.1) and BASE_KL at ``--kl-fraction`` / weight 2 (``--kl``), as
bench/base_retention.py builds them. The factors are kept under ``--models-dir`` per seed and sample count.

``--task-kfac-lambda`` holds a continuation's earlier tasks with the same K-FAC form in place of EWC's diagonal one:
each version's factors measured at its own weights on its own task's examples (the Fisher of its answers under its
own distribution), and a continuation penalised by each earlier task's penalty anchored at its parent (online, as
the service's EWC anchors at the parent). ``--first-cached`` keeps a first version under ``--models-dir`` by what
it depends on (seed, lambda, samples, epochs, BASE_KL), so the variations of a continuation train it once.

``--hybrid`` trains a first version under EWC_BASE alone (no rehearsed rows: about what plain LoRA costs) and its
continuations at a continuation's defaults (EWC against the parent and BASE_KL, no EWC_BASE): the chain a default of
EWC_BASE for first versions and BASE_KL for continuations would train. ``--factor-seed`` draws the factors' labels
with another seed than the chain's (0: a job's).

    .venv/bin/python bench/base_kfac.py --seed 1 --kfac-lambda 256 --out bench/results/base-kfac-validation-s1-l256.json
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import base_retention as br  # noqa: E402
from forgetting import LORA, MAX_SEQ_LENGTH, make_tasks, train  # noqa: E402

from engine.continual.base_ewc import Factors, KfacPenalty, kfac_factors  # noqa: E402
from engine.continual.fisher_run import load_adapter_weights  # noqa: E402
from engine.continual.planner import make_penalty  # noqa: E402
from engine.domain import Example, FisherSpace, JsonlSource  # noqa: E402
from engine.training.datasets import encode_dataset  # noqa: E402
from engine.training.loading import load_for_training  # noqa: E402
from engine.training.models import SMOLLM2_MODEL_ID  # noqa: E402
from engine.training.run import AddedPenalties, TrainingRun  # noqa: E402
from engine.training.spec import TrainingJobSpec  # noqa: E402


def factors_of(base_dir: Path, rows: list[Example], work: Path, samples: int, seed: int,
               version: Path | None = None) -> Factors:
    """K-FAC factors over ``rows`` (engine.continual.base_ewc.kfac_factors, a job's EWC_BASE's), with ``samples``
    labels a row drawn with ``seed`` (a job's: 4 and 0; the runs of docs/continual-learning.md drew with the chain's
    seed): the base model's (a fresh adapter, every B at 0) on the rehearsal pool, or with ``version`` that version's
    at its own weights on its own task (answers sampled from its own distribution), what a continuation holding
    that task is penalised with."""
    loaded = load_for_training(TrainingRun(TrainingJobSpec(SMOLLM2_MODEL_ID, JsonlSource("x"), lora=LORA), base_dir,
                                           [], work / "unused", parent_adapter_dir=version))
    return kfac_factors(loaded.model, encode_dataset(loaded.tokenizer, rows, MAX_SEQ_LENGTH), loaded.plan,
                        samples=samples, seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kfac-lambda", type=float, default=4.0)
    parser.add_argument("--samples", type=int, default=4, help="sampled answers per pool example for G")
    parser.add_argument("--at-parent", action="store_true", help="a continuation's penalty anchored at its parent")
    parser.add_argument("--versions", type=int, default=1, choices=(1, 2, 3))
    parser.add_argument("--ewc", action="store_true", help="a continuation's EWC against its parent")
    parser.add_argument("--ewc-lambda", type=float, default=0.1, help="its lambda (the service's default 0.1)")
    parser.add_argument("--kl", action="store_true", help="BASE_KL beside it, weight 2, at --kl-fraction")
    parser.add_argument("--kl-fraction", type=float, default=0.3)
    parser.add_argument("--task-kfac-lambda", type=float, default=0.0,
                        help="a continuation's K-FAC penalty on each earlier task (0: none)")
    parser.add_argument("--first-cached", action="store_true", help="train the first version once per config")
    parser.add_argument("--hybrid", action="store_true",
                        help="EWC_BASE on the first version only, a continuation's defaults (EWC + BASE_KL) after")
    parser.add_argument("--factor-seed", type=int, default=None, help="the factors' sampling seed (the chain's)")
    br.one_variation_args(parser)
    args = parser.parse_args()
    if args.hybrid:
        args.ewc = args.kl = True
    factor_seed = args.seed if args.factor_seed is None else args.factor_seed
    base_dir, probe, report = br.one_variation_start(args)
    with tempfile.TemporaryDirectory(prefix="le-kfac-") as tmp:
        work = Path(tmp)
        pool, references = br.rehearsal_pool(base_dir, args.models_dir, work)
        started = time.monotonic()
        cached = args.models_dir / f"bench-kfac-factors-s{factor_seed}-k{args.samples}.pt"  # the bench's own cache
        if cached.is_file():
            factors = torch.load(cached)
        else:
            factors = factors_of(base_dir, pool, work, args.samples, factor_seed)
            torch.save(factors, cached.with_suffix(".tmp"))
            cached.with_suffix(".tmp").replace(cached)
        print(f"K-FAC factors of {len(factors)} modules on {len(pool)} answers: {time.monotonic() - started:.1f} s",
              flush=True)
        task_a, task_b = make_tasks(12, args.seed)
        tasks = [task_a, task_b, br.word_task(12, args.seed)][: args.versions]
        parent: Path | None = None
        fisher = None
        task_factors: list[Factors] = []
        for step, task in enumerate(tasks):
            examples = list(task)
            held = load_adapter_weights(parent) if parent is not None else None
            parts: list[Any] = []  # the step's penalties, added up
            if args.ewc and held is not None:
                parts.append(make_penalty(FisherSpace.LORA_PARAMETERS, fisher, held, args.ewc_lambda))
            if not (args.hybrid and held is not None):  # a hybrid chain's continuation: no EWC_BASE
                parts.append(KfacPenalty(factors, args.kfac_lambda, held if args.at_parent else None))
            if held is not None:
                parts += [KfacPenalty(f, args.task_kfac_lambda, held) for f in task_factors]
            penalty = AddedPenalties(*parts) if len(parts) > 1 else parts[0]
            objective = rotation = None
            if args.kl and not (args.hybrid and held is None):  # a hybrid chain's first version rehearses nothing
                examples, objective, rotation = br.with_base_kl(examples, pool, references, args.kl_fraction)
            out = work / f"v{step}"
            first = (args.models_dir / f"bench-kfac-first-s{args.seed}-l{args.kfac_lambda:g}-k{args.samples}"
                     f"{f'-f{factor_seed}' if factor_seed != args.seed else ''}-e{args.epochs}"
                     f"{f'-kl{args.kl_fraction:g}' if args.kl and not args.hybrid else ''}")
            if step == 0 and args.first_cached and (first / "adapter_config.json").is_file():
                out, seconds = first, float("nan")
            else:
                seconds = train(base_dir, examples, out, args, parent=parent, penalty=penalty, seed=args.seed,
                                objective=objective, rotation=rotation)
                if step == 0 and args.first_cached:
                    partial = first.with_name(f"{first.name}.partial")  # whole or absent under its own name
                    shutil.copytree(out, partial, dirs_exist_ok=True)
                    partial.replace(first)
            br.version_scored(report, f"seed {args.seed} kfac {args.kfac_lambda:g} after {'ABC'[step]}",
                              probe, base_dir, out, tasks, seconds)
            if args.ewc:
                fisher = br.fisher_accumulated(fisher, base_dir, out, task, args.seed)
            if args.task_kfac_lambda and step < len(tasks) - 1:
                task_factors.append(factors_of(base_dir, task, work, args.samples, args.seed, version=out))
            parent = out
    br.report_written(report, args.out)


if __name__ == "__main__":
    main()
