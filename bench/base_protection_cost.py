"""What a base protection costs in training time: the same job trained plain and protected, interleaved.

One job of invented facts (bench/forgetting.py's task A) on SmolLM2-135M-Instruct, LoRA r16 as the forgetting
benchmarks, trained ``--repeats`` times with each protection in turn (plain, BASE_KL, plain, BASE_KL, ...), so both
see the same load on a shared machine. Each protected job starts from nothing as a job does: its base references are
given, as a job's self-rehearsal gives them: the base model's answers to the shipped prompts and their base
references are built once before the timing (that one-off cost per base model is printed), and a job finds them
cached. Prints each
method's median seconds per job, and the ratio to plain; and beside it the tokens each job trains (the job's own
rows every epoch, and the rehearsed rows an epoch takes at the pool's mean length), and their ratio: on a CPU a
forward and backward pass costs about in proportion to its tokens, so the two ratios should be close.

    .venv/bin/python bench/base_protection_cost.py --threads 1 --epochs 6 --repeats 3

``--base-ewc-lambdas 64`` also times EWC_BASE (no rehearsed rows: its penalty each step).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from transformers import AutoTokenizer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from base_retention import REHEARSAL_TOKENS, base_penalty, rehearsal_pool, rehearsed_rows  # noqa: E402
from forgetting import MAX_SEQ_LENGTH, make_tasks, train  # noqa: E402

from engine.domain import BaseProtection, BaseProtectionMethod  # noqa: E402
from engine.training.base_kl import rehearsal_objective  # noqa: E402
from engine.training.batching import Rotation  # noqa: E402
from engine.training.datasets import encode_dataset  # noqa: E402
from engine.training.models import SMOLLM2_MODEL_ID, resolve_base_model  # noqa: E402
from server.settings import Settings  # noqa: E402

DEFAULTS = Settings.model_fields


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--facts", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fractions", type=float, nargs="+",
                        default=[DEFAULTS["base_rehearsal_fraction"].default])
    parser.add_argument("--answer-tokens", type=int, nargs="+", default=[REHEARSAL_TOKENS],
                        help="the longest rehearsed answer, in tokens (several: each fraction with each)")
    parser.add_argument("--group", type=int, nargs="+", default=[1],
                        help="rehearsed answers a row (several: each with each)")
    parser.add_argument("--kl-weight", type=float, default=DEFAULTS["base_kl_weight"].default)
    parser.add_argument("--prompt-kl-weights", type=float, nargs="+",
                        default=[DEFAULTS["base_prompt_kl_weight"].default],
                        help="the KL weight at the job's own rows' prompt positions (several: each with each)")
    parser.add_argument("--base-ewc-lambdas", type=float, nargs="*", default=[],
                        help="also EWC_BASE at these lambdas (no rehearsed rows; its K-FAC factors measured once, "
                        "before the timing, as a job finds them cached)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models-dir", type=Path, default=ROOT / "var" / "models")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "base-protection-cost.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch threads {torch.get_num_threads()}; facts {args.facts}; epochs {args.epochs}; "
          f"BASE_KL fractions {args.fractions}, weight {args.kl_weight}; {args.repeats} repeats", flush=True)
    base_dir = resolve_base_model(SMOLLM2_MODEL_ID, models={}, cache_dir=args.models_dir)
    task, _ = make_tasks(args.facts, 0)
    variants = {f"BASE_KL {f:g} {t}t g{g}" + (f" prompt {w:g}" if w else ""): (f, t, g, w) for f in args.fractions
                for t in args.answer_tokens for g in args.group for w in args.prompt_kl_weights}
    held = {f"EWC_BASE {x:g}": x for x in args.base_ewc_lambdas}
    seconds: dict[str, list[float]] = {"plain": [], **{name: [] for name in [*variants, *held]}}
    tokenizer = AutoTokenizer.from_pretrained(base_dir)

    def tokens_of(examples: list) -> list[int]:
        return [len(e.input_ids) for e in encode_dataset(tokenizer, examples, MAX_SEQ_LENGTH)]

    own_tokens = sum(tokens_of(task))
    trained_tokens: dict[str, float] = {"plain": float(own_tokens * args.epochs),
                                        **{name: float(own_tokens * args.epochs) for name in held}}
    with tempfile.TemporaryDirectory(prefix="le-base-cost-") as tmp:
        work = Path(tmp)
        pools = {(t, g): rehearsal_pool(base_dir, args.models_dir, work, t, g) for t in args.answer_tokens
                 for g in args.group}
        for name, (fraction, answer_tokens, group, _) in variants.items():
            pool, _ = pools[answer_tokens, group]
            rows = tokens_of(pool)
            per_epoch = rehearsed_rows(len(task), fraction, len(pool), group)
            trained_tokens[name] = (own_tokens + per_epoch * statistics.mean(rows)) * args.epochs
            print(f"{name}: {per_epoch} rehearsed rows an epoch of {statistics.mean(rows):.1f} tokens on average, "
                  f"beside {len(task)} rows of {own_tokens} tokens", flush=True)
        penalties = {name: base_penalty(base_dir, args.models_dir, work, x) for name, x in held.items()}
        for repeat in range(args.repeats):
            for name in seconds:
                examples, objective, rotation, penalty = list(task), None, None, None
                if name in held:
                    penalty = penalties[name]
                elif name != "plain":
                    fraction, tokens, group, prompt_weight = variants[name]
                    pool, references = pools[tokens, group]
                    protection = BaseProtection(BaseProtectionMethod.BASE_KL, fraction, args.kl_weight,
                                                prompt_kl_weight=prompt_weight)
                    objective = rehearsal_objective(None, protection, len(task), len(pool), references)
                    examples = [*task, *pool]
                    rotation = Rotation(len(pool), rehearsed_rows(len(task), fraction, len(pool), group))
                taken = train(base_dir, examples, work / f"{repeat}-{name}", args, objective=objective,
                              rotation=rotation, penalty=penalty)
                seconds[name].append(taken)
                print(f"repeat {repeat} {name:20s} {taken:6.1f} s", flush=True)
    plain = statistics.median(seconds["plain"])
    summary = {}
    print(f"\nmedians of {args.repeats} ({torch.get_num_threads()} threads)")
    for name, values in seconds.items():
        median = statistics.median(values)
        token_ratio = trained_tokens[name] / trained_tokens["plain"]
        summary[name] = {"median_seconds": median, "ratio_to_plain": median / plain, "tokens": trained_tokens[name],
                         "token_ratio_to_plain": token_ratio}
        print(f"{name:20s} {median:6.1f} s per job   x{median / plain:.3f} of plain   "
              f"{trained_tokens[name]:8.0f} tokens   x{token_ratio:.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"config": {k: str(v) for k, v in vars(args).items()},
                                    "threads": torch.get_num_threads(), "seconds": seconds, "summary": summary},
                                   indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
