"""Combine reports of ``bench/base_retention.py`` runs into one table and one plot: base retention after each
version of the chain, per method and setting, medians over the seeds every report gives.

A method is labelled by its settings (``kl`` by its rehearsal fraction and KL weight, EWC by its lambda); a
seed's later report replaces an earlier one's. Reports of the first versions only (``--versions 1``,
validation looks) are left out. Reports since ``--answer-tokens`` name their answers' length; the seeds 3-6
reports ``*-ride.json`` say the commit whose answers rode in the job's own steps (reverted since).

Reports that record the probe's lost questions per version (``base_lost``, since the ``replay_kl`` runs) also get
a second table: of the questions a chain lost after A, how many it still lost after C, and how many it lost after
C that it had kept after A (per seed, then summed): whether what the first version broke stays broken.

    .venv/bin/python bench/base_retention_compare.py bench/results/base-retention-s[3-6]-kl015-w8.json \
        --out bench/results/base-retention-compare.json --plot bench/results/base-retention.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from engine.continual.base_knowledge import LOST_SHOWN  # noqa: E402 - the lost questions a version records

VERSIONS = 3


LONG_FORM_POOL = 79  # the rehearsal pool before the short questions: reports from then do not name their pool


def label(method: str, report: dict) -> str:
    config = report["config"]
    fraction, weight = float(config["rehearsal_fraction"]), f"{float(config['kl_weight']):g}"
    if config.get("continuation_kl_weight", "None") != "None":  # the versions after the first at another weight
        weight += f" (continuations {float(config['continuation_kl_weight']):g})"
    ewc = f"EWC {float(config['ewc_lambda']):g}"  # the lambda tells the defaults of different times apart
    pool = (f"{report['rehearsal_pool']['answers']} short questions" if "rehearsal_pool" in report
            else f"{LONG_FORM_POOL} long-form prompts")
    if "answer_tokens" in config:
        pool += f", {config['answer_tokens']}-token answers"
    if "answers_ride" in report:  # the engine of one commit, whose answers rode in the job's steps (reverted)
        pool += f", riding ({report['answers_ride']['commit']})"
    if method == "ewc_base":  # its lambda is in the reports that have the method
        name = f"EWC on the base, lambda {float(config['base_ewc_lambda']):g}"
    elif method == "ewc_kl_base":
        name = (f"{ewc} + BASE_KL {fraction:g} / {weight} + EWC on the base, lambda "
                f"{float(config['base_ewc_lambda']):g}")
    else:
        name = {"plain": "plain LoRA", "kl": f"BASE_KL {fraction:g} / {weight}",
                "rehearsal": f"self-rehearsal {fraction:g}",
                "rehearsal_kl": f"self-rehearsal {fraction:g} + KL {weight}",
                "ewc": ewc, "ewc_replay": f"{ewc} + replay", "all": f"{ewc} + replay + self-rehearsal {fraction:g}",
                "ewc_kl": f"{ewc} + BASE_KL {fraction:g} / {weight}",
                "ewc_replay_kl": f"{ewc} + replay + BASE_KL {fraction:g} / {weight}",
                "replay_kl": f"replay + BASE_KL {fraction:g} / {weight}, no EWC"}[method]
    return name if method in ("plain", "ewc", "ewc_replay") else f"{name}, {pool}"


def collect(paths: list[Path]) -> dict[str, dict[int, dict]]:
    """label -> seed -> that seed's chain (base retention, learnt, ACC, BWT, seconds)."""
    runs: dict[str, dict[int, dict]] = {}
    for path in paths:
        report = json.loads(path.read_text())
        config = report["config"]
        if int(config.get("versions", VERSIONS)) != VERSIONS:
            continue
        seeds = json.loads(config["seeds"]) if config["seeds"].startswith("[") else [int(config["seeds"])]
        for method, chains in report["runs"].items():
            for seed, chain in zip(seeds, chains, strict=True):
                runs.setdefault(label(method, report), {})[seed] = chain
    return runs


def lost_after_a(runs: dict[str, dict[int, dict]]) -> dict[str, dict[str, int]]:
    """Per label whose chains record their lost questions: of those lost after A, how many are still lost after
    C and how many came back; and how many were lost after C that A had kept. Printed as a table."""
    table: dict[str, dict[str, int]] = {}
    for name, seeds in runs.items():
        # the probe records a version's first LOST_SHOWN lost questions: a chain that lost more is left out
        chains = [c for c in seeds.values() if len(c.get("base_lost", ())) == VERSIONS
                  and all(len(lost) < LOST_SHOWN for lost in c["base_lost"])]
        if not chains:
            continue
        row = {"seeds": len(chains), "lost_after_a": 0, "still_lost_after_c": 0, "back_by_c": 0, "newly_lost_by_c": 0}
        for chain in chains:
            after_a, after_c = set(chain["base_lost"][0]), set(chain["base_lost"][-1])
            row["lost_after_a"] += len(after_a)
            row["still_lost_after_c"] += len(after_a & after_c)
            row["back_by_c"] += len(after_a - after_c)
            row["newly_lost_by_c"] += len(after_c - after_a)
        table[name] = row
    if table:
        print("\n| method | seeds | lost after A | of those, still lost after C | back by C "
              "| lost after C, kept after A |\n|---|---|---|---|---|---|")
        for name, row in table.items():
            print(f"| {name} | {row['seeds']} | {row['lost_after_a']} | {row['still_lost_after_c']} | "
                  f"{row['back_by_c']} | {row['newly_lost_by_c']} |")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", type=Path, nargs="+")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    runs = collect(args.reports)
    table = {}
    print("| method | seeds | base retention after A | after B | after C | ACC | BWT | new task learnt | s / version |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, seeds in runs.items():
        chains = list(seeds.values())

        def med(values: list[float]) -> float:
            return statistics.median(values)

        row = {"seeds": sorted(seeds),
               "base_retention": [med([c["base_retention"][i] for c in chains]) for i in range(VERSIONS)],
               "ACC": med([c["ACC"] for c in chains]), "BWT": med([c["BWT"] for c in chains]),
               "learnt": [med([c["learnt"][i] for c in chains]) for i in range(VERSIONS)],
               "seconds": med([statistics.fmean(c["train_seconds"]) for c in chains])}
        table[name] = row
        seed_list = ", ".join(str(s) for s in row["seeds"])
        print(f"| {name} | {seed_list} | " + " | ".join(f"{x:.3f}" for x in row["base_retention"])
              + f" | {row['ACC']:.3f} | {row['BWT']:+.3f} | " + " ".join(f"{x:.2f}" for x in row["learnt"])
              + f" | {row['seconds']:.0f} |")
    lost = lost_after_a(runs)
    if args.out:
        args.out.write_text(json.dumps({"reports": [str(p) for p in args.reports], "table": table,
                                        "lost_after_a": lost}, indent=2))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 4.0 + 0.2 * len(runs)))  # the legend goes below the axes
        palette = plt.get_cmap("tab20")
        for n, (name, seeds) in enumerate(runs.items()):
            # ten dark hues, then their light shades with square markers and dashes: no two rows look alike
            second = (n // 10) % 2
            colour, style = palette((2 * n) % 20 + second), ("--", "s") if second else ("-", "o")
            for chain in seeds.values():
                ax.plot(range(1, VERSIONS + 1), chain["base_retention"], color=colour, alpha=0.25, linewidth=1)
            ax.plot(range(1, VERSIONS + 1), table[name]["base_retention"], color=colour, linewidth=2.5,
                    linestyle=style[0], marker=style[1], label=f"{name} (median of {len(seeds)} seeds)")
        ax.axhline(0.9, color="grey", linestyle="--", linewidth=1, label="target 0.9")
        ax.set_xticks(range(1, VERSIONS + 1), ["after A", "after B", "after C"])
        ax.set_ylim(0, 1)
        ax.set_ylabel("base retention")
        ax.set_title("SmolLM2-135M-Instruct, a chain of three versions", fontsize=10)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1))
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
