"""Forgetting benchmark: task A then task B on the default base model, three ways, several seeds.

Methods, all starting task B from the same task-A adapter:
  plain   sequential LoRA (warm start, no penalty);
  ewc     EWC with the diagonal Fisher of the task-A adapter on task A (empirical by default,
          ``--estimator``; per-sequence log-likelihood, as the service computes it) over the LoRA entries or
          products (``--penalty-space``; default: the service's), the service's penalty normalisation
          (F / mean F by default, ``--normalization``) and the service's default lambda for that space;
  replay  the same EWC plus replay of task-A examples (``--replay-fraction`` of the task-B set).

Tasks are invented facts (so the base model cannot know them) in two relations: A "capital of a country",
B "founder of a company". Accuracy is exact match of the greedy completion. Reports R(i,j), ACC and BWT as
defined in the README (Continual learning), writes JSON and a PNG under bench/results/.

    .venv/bin/python bench/forgetting.py --facts 30 --seeds 0 1 2
    # or one process per seed, then: bench/forgetting.py --merge s0.json s1.json
    # runs of different spaces, lambdas or estimators: bench/forgetting_compare.py a.json b.json ...
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.continual.ewc import (  # noqa: E402
    DEFAULT_PENALTY_NORMALIZATION,
    EwcPenalty,
    PenaltyNormalization,
    diagonal_stats,
    mix_replay,
)
from engine.continual.ewc_product import ProductEwcPenalty  # noqa: E402
from engine.continual.fisher import FisherEstimator, FisherSpace  # noqa: E402
from engine.continual.fisher_run import FisherRun, load_adapter_model, load_adapter_weights, run_fisher  # noqa: E402
from engine.domain import ChatMessage, Example, JsonlSource, LoraSpec  # noqa: E402  # noqa: E402
from engine.jobs.ports import CancelToken  # noqa: E402
from engine.training.models import SMOLLM2_MODEL_ID, resolve_base_model  # noqa: E402
from engine.training.recipe import run_training  # noqa: E402
from engine.training.run import TrainingRun  # noqa: E402
from engine.training.spec import Hyperparameters, TrainingJobSpec  # noqa: E402
from server.settings import Settings  # noqa: E402

SPACES = {"product": FisherSpace.LORA_PRODUCT, "lora": FisherSpace.LORA_PARAMETERS}
DEFAULT_SPACE = next(k for k, v in SPACES.items() if v == Settings.model_fields["ewc_fisher_space"].default)
DEFAULT_LAMBDAS = {"lora": Settings.model_fields["ewc_lambda_default"].default,
                   "product": Settings.model_fields["ewc_product_lambda_default"].default}

SYLLABLES = ["ka", "lo", "ver", "mi", "dra", "sen", "tor", "qua", "bel", "zin", "oru", "fen", "tal", "gri",
             "mon", "sha", "vex", "lun", "pra", "dok", "ely", "nar", "cus", "hib"]
METHODS = ("plain", "ewc", "replay")
# Distinct two-syllable names a pair of tasks can take: n capitals and 2n founders' names of len(SYLLABLES)**2; a
# fifth of them left free, so the last draws do not take long.
MAX_FACTS = len(SYLLABLES) ** 2 * 4 // 5 // 3


def invented(rng: random.Random, parts: int) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(parts)).capitalize()


def make_tasks(n: int, seed: int) -> tuple[list[Example], list[Example]]:
    """Task A (``n`` capitals of invented countries) and task B (``n`` founders of invented companies), every
    invented name distinct: capitals and founders' names are two syllables, so at most ``MAX_FACTS`` facts a task
    (ValueError beyond; drawing distinct names from a space too small never ends)."""
    if not 1 <= n <= MAX_FACTS:
        raise ValueError(f"{n} facts a task: between 1 and {MAX_FACTS} (the two-syllable names they take: "
                         f"{len(SYLLABLES)}**2)")
    rng = random.Random(10_000 + seed)
    names: set[str] = set()

    def fresh(parts: int) -> str:
        while True:
            name = invented(rng, parts)
            if name not in names:
                names.add(name)
                return name

    def fact(question: str, answer: str) -> Example:
        return Example(messages=(ChatMessage("user", question), ChatMessage("assistant", answer)))

    task_a = [fact(f"What is the capital of {c}?", f"The capital of {c} is {fresh(2)}.")
              for c in (fresh(3) for _ in range(n))]
    task_b = [fact(f"Who founded {c} Industries?", f"{c} Industries was founded by {fresh(2)} {fresh(2)}.")
              for c in (fresh(3) for _ in range(n))]
    return task_a, task_b


LORA = LoraSpec(rank=16, alpha=32, dropout=0.05)  # every version's adapter
MAX_SEQ_LENGTH = 128  # every job's, and what its Fisher and any count of its tokens encode at


class NullSink:
    def emit(self, payload) -> None:
        pass


def train(base_dir: Path, examples: list[Example], out: Path, args, *, parent: Path | None = None,
          penalty=None, seed: int = 0, objective=None, rotation=None, lora: LoraSpec = LORA) -> float:
    spec = TrainingJobSpec(
        base_model=SMOLLM2_MODEL_ID, dataset=JsonlSource("bench.jsonl"),
        lora=lora,
        hyperparameters=Hyperparameters(epochs=args.epochs, learning_rate=args.lr, batch_size=args.batch_size,
                                        max_seq_length=MAX_SEQ_LENGTH, seed=seed,
                                        warmup_steps=getattr(args, "warmup_steps", 0)),
    )
    started = time.monotonic()
    run_training(TrainingRun(spec, base_dir, examples, out, parent_adapter_dir=parent, penalty=penalty,
                             objective=objective, rotation=rotation), NullSink(), CancelToken())
    return time.monotonic() - started


@torch.no_grad()
def accuracy(base_dir: Path, adapter_dir: Path, examples: list[Example], batch_size: int = 16) -> float:
    model, tokenizer = load_adapter_model(base_dir, adapter_dir)
    tokenizer.padding_side = "left"
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    correct = 0
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": e.messages[0].content}],
                                                 tokenize=False, add_generation_prompt=True) for e in chunk]
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        out = model.generate(**enc, max_new_tokens=32, do_sample=False, eos_token_id=end,
                             pad_token_id=tokenizer.pad_token_id)
        for example, row in zip(chunk, out[:, enc["input_ids"].shape[1]:], strict=True):
            text = tokenizer.decode(row, skip_special_tokens=True).strip()
            correct += text == example.messages[1].content
    return correct / len(examples)


def drift(adapter_dir: Path, anchor: dict, weights: dict, product_fisher_raw: dict) -> dict:
    """Drift from the task-A adapter: RMS of the LoRA parameters, the same weighted by the (LoRA-space)
    penalty weights, and the drift of the products D = B @ A weighted by their own mean-normalised Fisher."""
    after = load_adapter_weights(adapter_dir)
    squared = {n: (after[n].float() - anchor[n].float()) ** 2 for n in anchor}
    count = sum(t.numel() for t in squared.values())
    plain = sum(float(t.sum()) for t in squared.values())
    weighted = sum(float((weights[n] * squared[n]).sum()) for n in squared)
    product = float(ProductEwcPenalty(product_fisher_raw, anchor, 1.0).weighted_sum(after))
    return {"rms": (plain / count) ** 0.5, "sum_sq": plain, "weighted_sum_sq": weighted,
            "product_weighted_sum_sq": product, "parameters": count}


def metrics(r: list[list[float]]) -> dict:
    """R[i][j]: accuracy on task j after training through task i (0-based here, 2 tasks)."""
    tasks = len(r)
    acc = sum(r[-1]) / tasks
    bwt = sum(r[-1][j] - r[j][j] for j in range(tasks - 1)) / (tasks - 1)
    return {"R": r, "ACC": acc, "BWT": bwt}


def run_seed(seed: int, base_dir: Path, args, work: Path) -> dict:
    task_a, task_b = make_tasks(args.facts, seed)
    a_dir = work / f"s{seed}-A"
    t_a = train(base_dir, task_a, a_dir, args, seed=seed)
    r_a = [accuracy(base_dir, a_dir, task_a), accuracy(base_dir, a_dir, task_b)]
    started = time.monotonic()
    estimator = FisherEstimator(args.estimator)
    fisher = run_fisher(FisherRun(base_dir, a_dir, task_a, estimator, MAX_SEQ_LENGTH, 8, seed))
    t_fisher = time.monotonic() - started
    anchor = load_adapter_weights(a_dir)
    product_raw = run_fisher(FisherRun(base_dir, a_dir, task_a, estimator, MAX_SEQ_LENGTH, 8, seed,
                                       space=FisherSpace.LORA_PRODUCT)).diagonal
    stats = diagonal_stats(fisher.diagonal)
    weights = EwcPenalty(fisher.diagonal, anchor, args.ewc_lambda, args.normalization).fisher
    w_stats = diagonal_stats(weights)
    print(f"seed {seed}: task A trained in {t_a:.0f}s, R(A)={r_a}, Fisher sum {stats.sum:.4g} "
          f"max {stats.max:.4g} in {t_fisher:.0f}s; penalty weights ({args.normalization}) max {w_stats.max:.4g} "
          f"quantiles {w_stats.quantiles}", flush=True)
    result = {"seed": seed, "fisher": {"sum": stats.sum, "max": stats.max, "seconds": t_fisher,
                                       "weights_max": w_stats.max, "weights_quantiles": w_stats.quantiles},
              "methods": {}}
    for key, method, ewc_lambda in runs_of(args):
        examples, penalty = list(task_b), None
        if method in ("ewc", "replay") and args.penalty_space == "product":
            penalty = ProductEwcPenalty(product_raw, anchor, ewc_lambda)
        elif method in ("ewc", "replay"):
            penalty = EwcPenalty(fisher.diagonal, anchor, ewc_lambda, args.normalization)
        if method == "replay":
            examples, _ = mix_replay(task_b, task_a, args.replay_fraction, seed)
        out = work / f"s{seed}-{key}"
        seconds = train(base_dir, examples, out, args, parent=a_dir, penalty=penalty, seed=seed)
        r_b = [accuracy(base_dir, out, task_a), accuracy(base_dir, out, task_b)]
        moved = drift(out, anchor, weights, product_raw)
        result["methods"][key] = {**metrics([r_a, r_b]), "train_seconds": seconds, "drift": moved}
        print(f"seed {seed} {key:8s}: R(B,A)={r_b[0]:.3f} R(B,B)={r_b[1]:.3f} "
              f"BWT={result['methods'][key]['BWT']:+.3f} ({seconds:.0f}s); drift rms {moved['rms']:.3g}, "
              f"weighted sum w d^2: LoRA entries {moved['weighted_sum_sq']:.4g}, products "
              f"{moved['product_weighted_sum_sq']:.4g}",
              flush=True)
    return result


def runs_of(args) -> list[tuple[str, str, float]]:
    """(result key, method, lambda) of each task-B run: the chosen methods, or plain plus EWC per swept lambda."""
    if args.sweep:
        return [("plain", "plain", 0.0)] + [(f"ewc@{lam:g}", "ewc", lam) for lam in args.sweep]
    return [(m, m, args.ewc_lambda) for m in METHODS if m in args.methods]


def select_lambda(results: list[dict], tolerance: float = 0.10) -> dict:
    """The rule fixed before the sweep ran: the largest swept lambda whose mean task-B accuracy stays within
    ``tolerance`` of plain sequential LoRA (the issue's task-B target), i.e. the strongest protection of task A
    that still lets task B be learnt. Returns per-lambda means and the choice (None if no lambda qualifies)."""
    plain_b = statistics.fmean(r["methods"]["plain"]["R"][1][1] for r in results)
    plain_bwt = statistics.fmean(r["methods"]["plain"]["BWT"] for r in results)
    table, chosen = {}, None
    for key in (k for k in results[0]["methods"] if k.startswith("ewc@")):
        lam = float(key.split("@")[1])
        task_b = statistics.fmean(r["methods"][key]["R"][1][1] for r in results)
        bwt = statistics.fmean(r["methods"][key]["BWT"] for r in results)
        table[key] = {"lambda": lam, "task_b_change": task_b - plain_b, "BWT": bwt,
                      "bwt_reduction": 1 - abs(bwt) / abs(plain_bwt) if plain_bwt else float("nan")}
        if task_b - plain_b >= -tolerance and (chosen is None or lam > chosen):
            chosen = lam
    return {"plain_task_b": plain_b, "plain_BWT": plain_bwt, "lambdas": table, "chosen": chosen}


def summarise(results: list[dict]) -> dict:
    summary = {}
    for method in METHODS:
        rows = [r["methods"][method] for r in results if method in r["methods"]]
        if not rows:
            continue

        def stat(values: list[float]) -> dict:
            return {"mean": statistics.fmean(values), "std": statistics.pstdev(values) if len(values) > 1 else 0.0}

        summary[method] = {
            "R_A_after_A": stat([r["R"][0][0] for r in rows]),
            "R_A_after_B": stat([r["R"][1][0] for r in rows]),
            "R_B_after_B": stat([r["R"][1][1] for r in rows]),
            "ACC": stat([r["ACC"] for r in rows]),
            "BWT": stat([r["BWT"] for r in rows]),
        }
    if "plain" in summary and "ewc" in summary:
        plain, ewc = summary["plain"], summary["ewc"]
        cut = 1 - abs(ewc["BWT"]["mean"]) / abs(plain["BWT"]["mean"]) if plain["BWT"]["mean"] else float("nan")
        keep = ewc["R_B_after_B"]["mean"] - plain["R_B_after_B"]["mean"]
        summary["targets"] = {
            "bwt_reduction": cut, "bwt_target_met": cut >= 0.5,
            "task_b_change": keep, "task_b_target_met": keep >= -0.10,
        }
    return summary


def plot(summary: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in METHODS if m in summary]
    bars = [("task A after A", "R_A_after_A"), ("task A after B", "R_A_after_B"), ("task B after B", "R_B_after_B")]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / len(bars)
    for k, (label, key) in enumerate(bars):
        xs = [i + (k - 1) * width for i in range(len(methods))]
        ax.bar(xs, [summary[m][key]["mean"] for m in methods], width,
               yerr=[summary[m][key]["std"] for m in methods], label=label, capsize=3)
    ax.set_xticks(range(len(methods)), [f"{m}\nBWT {summary[m]['BWT']['mean']:+.2f}" for m in methods])
    ax.set_ylabel("exact-match accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--facts", type=int, default=30, help="facts per task")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--ewc-lambda", type=float, help="default: the service's default for the penalty space")
    parser.add_argument("--normalization", default=DEFAULT_PENALTY_NORMALIZATION.value,
                        choices=[n.value for n in PenaltyNormalization], help="penalty weights from F")
    parser.add_argument("--replay-fraction", type=float, default=0.2)
    parser.add_argument("--penalty-space", choices=tuple(SPACES), default=DEFAULT_SPACE,
                        help="EWC on each LoRA pair's product B @ A (engine.ewc_product) or on the entries of A and "
                             "B (engine.ewc); default: the service's")
    parser.add_argument("--estimator", default=FisherEstimator.EMPIRICAL.value,
                        choices=[FisherEstimator.EMPIRICAL.value, FisherEstimator.SAMPLED.value],
                        help="the Fisher behind the penalty (the service measures parents with EMPIRICAL)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--sweep", type=float, nargs="+", metavar="LAMBDA",
                        help="validation mode: plain and EWC at each lambda (use seeds other than the test seeds); "
                             "prints the lambda chosen by select_lambda's rule")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models-dir", type=Path, default=ROOT / "var" / "models")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "forgetting.json")
    parser.add_argument("--plot", type=Path, default=ROOT / "bench" / "results" / "forgetting.png")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="JSON",
                        help="instead of running: combine the seeds of earlier reports (e.g. one process per seed)")
    args = parser.parse_args()
    if args.ewc_lambda is None:
        args.ewc_lambda = DEFAULT_LAMBDAS[args.penalty_space]
    if args.merge:
        reports = [json.loads(path.read_text()) for path in args.merge]
        results = [seed for r in reports for seed in r["seeds"]]
        if any(k.startswith("ewc@") for k in results[0]["methods"]):
            return print_sweep({"seeds": results, "selection": select_lambda(results)})
        config = {**reports[0]["config"], "seeds": [r["seed"] for r in results], "merged": [str(p) for p in args.merge]}
        report = {"config": config, "threads": reports[0]["threads"],
                  "seconds": max(r["seconds"] for r in reports), "seeds": results, "summary": summarise(results)}
        return write_report(report, argparse.Namespace(**{**vars(args), **{k: config[k] for k in (
            "facts", "seeds", "ewc_lambda", "normalization", "replay_fraction")}}))

    torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}; facts/task {args.facts}; seeds {args.seeds}; "
          f"epochs {args.epochs}; lr {args.lr}; lambda {args.ewc_lambda} ({args.normalization}-normalised F, "
          f"on the {args.penalty_space} space); "
          f"replay {args.replay_fraction}", flush=True)
    base_dir = resolve_base_model(SMOLLM2_MODEL_ID, models={}, cache_dir=args.models_dir)
    started = time.monotonic()
    results = []
    with tempfile.TemporaryDirectory(prefix="le-forgetting-") as tmp:
        for seed in args.seeds:
            results.append(run_seed(seed, base_dir, args, Path(tmp)))
    report = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "threads": torch.get_num_threads(), "seconds": time.monotonic() - started, "seeds": results}
    if args.sweep:
        report["selection"] = select_lambda(results)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
        return print_sweep(report)
    report["summary"] = summarise(results)
    write_report(report, args)


def print_sweep(report: dict) -> None:
    selection = report["selection"]
    print(f"\nvalidation sweep over seeds {[r['seed'] for r in report['seeds']]}: plain task B "
          f"{selection['plain_task_b']:.3f}, BWT {selection['plain_BWT']:+.3f}")
    print("lambda   task B change   BWT     |BWT| cut")
    for row in selection["lambdas"].values():
        print(f"{row['lambda']:<8g} {row['task_b_change']:+.3f}          {row['BWT']:+.3f}  {row['bwt_reduction']:.0%}")
    print(f"chosen (largest lambda with task B within 0.10 of plain): {selection['chosen']}")


def write_report(report: dict, args: argparse.Namespace) -> None:
    summary = report["summary"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print("\nmethod  R(A|A)  R(A|B)  R(B|B)   ACC     BWT")
    for method in METHODS:
        if method in summary:
            s = summary[method]
            print(f"{method:6s}  {s['R_A_after_A']['mean']:.3f}   {s['R_A_after_B']['mean']:.3f}   "
                  f"{s['R_B_after_B']['mean']:.3f}   {s['ACC']['mean']:.3f}  {s['BWT']['mean']:+.3f}"
                  f" (+-{s['BWT']['std']:.3f})")
    if "targets" in summary:
        t = summary["targets"]
        met = "met" if t["bwt_target_met"] else "NOT met"
        print(f"EWC cuts |BWT| by {t['bwt_reduction']:.0%} (target >= 50%: {met});"
              f" task B change {t['task_b_change']:+.3f} (target >= -0.10: "
              f"{'met' if t['task_b_target_met'] else 'NOT met'})")
    plot(summary, args.plot, f"SmolLM2-135M LoRA r16, {args.facts} facts/task, {len(args.seeds)} seeds, "
         f"lambda {args.ewc_lambda:g} ({args.normalization} F), replay {args.replay_fraction:g}")
    print(f"wrote {args.out} and {args.plot} in {report['seconds']:.0f}s")

if __name__ == "__main__":
    main()
