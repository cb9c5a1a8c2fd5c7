"""Combine reports of ``bench/forgetting.py`` runs into one table: each EWC variant against plain LoRA.

A run's EWC methods are labelled by the run's penalty space and lambda (reports written before spaces
existed were on the LoRA entries). Every variant is compared with plain sequential LoRA on the same seeds,
taking a seed's plain run from whichever report holds it; seeds with no plain run are left out and named.
Validation sweeps (``--sweep``) are not mixed in.

    .venv/bin/python bench/forgetting_compare.py bench/results/forgetting.json runs/*.json \
        --out bench/results/forgetting-compare.json --plot bench/results/forgetting.png
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

SPACES = {"lora": "entries", "product": "products"}


def label(method: str, config: dict) -> str:
    if method == "plain":
        return "plain"
    space = SPACES[config.get("penalty_space", "lora")]
    estimator = config.get("estimator", "EMPIRICAL")  # earlier reports: the empirical Fisher
    fisher = "" if estimator == "EMPIRICAL" else f", {estimator.lower()} Fisher"
    return (f"{'EWC' if method == 'ewc' else 'EWC + replay'} on the LoRA {space}, lambda {config['ewc_lambda']:g}"
            f"{fisher}")


def collect(paths: list[Path]) -> dict[str, dict[int, dict]]:
    """label -> seed -> that seed's result (R, ACC, BWT); a later report's seed replaces an earlier one's."""
    runs: dict[str, dict[int, dict]] = {}
    for path in paths:
        report = json.loads(path.read_text())
        for seed in report["seeds"]:
            for method, result in seed["methods"].items():
                if "@" not in method:  # "ewc@0.3" keys are a validation sweep's
                    runs.setdefault(label(method, report["config"]), {})[seed["seed"]] = result
    return runs


def compare(runs: dict[str, dict[int, dict]]) -> list[dict]:
    plain = runs.get("plain", {})
    rows = []
    for name, by_seed in runs.items():
        seeds = sorted(s for s in by_seed if s in plain)
        if not seeds:
            continue
        mean = statistics.fmean
        bwt = [by_seed[s]["BWT"] for s in seeds]
        plain_bwt = mean(abs(plain[s]["BWT"]) for s in seeds)
        task_b = mean(by_seed[s]["R"][1][1] for s in seeds)
        rows.append({
            "method": name, "seeds": seeds, "without_plain": sorted(set(by_seed) - set(seeds)),
            "R_A_after_A": mean(by_seed[s]["R"][0][0] for s in seeds),
            "R_A_after_B": mean(by_seed[s]["R"][1][0] for s in seeds),
            "R_A_after_B_per_seed": [by_seed[s]["R"][1][0] for s in seeds],
            "R_B_after_B": task_b, "ACC": mean(by_seed[s]["ACC"] for s in seeds),
            "BWT": mean(bwt), "BWT_std": statistics.pstdev(bwt) if len(bwt) > 1 else 0.0,
            "bwt_reduction": 1 - abs(mean(bwt)) / plain_bwt if plain_bwt else float("nan"),
            "task_b_change": task_b - mean(plain[s]["R"][1][1] for s in seeds),
        })
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.8))
    bars = [("task A after A", "R_A_after_A"), ("task A after B", "R_A_after_B"), ("task B after B", "R_B_after_B")]
    width = 0.8 / len(bars)
    for k, (name, key) in enumerate(bars):
        ax.bar([i + (k - 1) * width for i in range(len(rows))], [r[key] for r in rows], width, label=name)
    ticks = ["\n".join([r["method"].replace(" on the", "\non the").replace(", lambda", ",\nlambda"),
                        f"{len(r['seeds'])} seeds, BWT {r['BWT']:+.2f}"]) for r in rows]
    ax.set_xticks(range(len(rows)), ticks, fontsize=7)
    ax.set_ylabel("exact-match accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_title("SmolLM2-135M, LoRA r16 q/k/v/o: task A, then task B (means over test seeds)", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, help="write the table as JSON")
    parser.add_argument("--plot", type=Path, help="write a PNG")
    args = parser.parse_args()
    rows = compare(collect(args.reports))
    print(f"{'method':52s} seeds  R(A|B)  R(B|B)  ACC    BWT            |BWT| cut  task B change")
    for r in rows:
        print(f"{r['method']:52s} {len(r['seeds']):5d}  {r['R_A_after_B']:.3f}   {r['R_B_after_B']:.3f}   "
              f"{r['ACC']:.3f}  {r['BWT']:+.3f} +- {r['BWT_std']:.3f}  {r['bwt_reduction']:8.0%}   "
              f"{r['task_b_change']:+.3f}")
        if r["without_plain"]:
            print(f"    left out (no plain run): seeds {r['without_plain']}")
    if args.out:
        args.out.write_text(json.dumps({"reports": [str(p) for p in args.reports], "rows": rows}, indent=2))
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
