"""Base retention along a chain of versions: what the base model knew, kept (or not) by each protection.

A chain of three versions on SmolLM2-135M-Instruct, each a continuation of the one before, each task invented
facts of a different kind (so the base model cannot know them):
  A "What is the capital of <invented country>?", B "Who founded <invented> Industries?",
  C "What does the word '<invented word>' mean?".
After each version: its accuracy on every task so far (R, exact match of the greedy answer, as
bench/forgetting.py), and its *base retention*: the share of the shipped general questions the base model
answers right that the version still answers right (engine.continual.base_knowledge, the service's own probe).

Methods (the same at every step, A included; a continuation starts from its parent's adapter):
  plain            sequential LoRA, nothing else;
  ewc              EWC on the LoRA entries with the Fisher of each parent on its task, accumulated online
                   (gamma 1), the service's default lambda and normalisation;
  ewc_replay       that, plus replay of all earlier tasks (``--replay-fraction``);
  rehearsal        self-rehearsal: the base model's own answers to the shipped general prompts mixed in
                   (``--rehearsal-fraction``; engine.continual.rehearsal, as a job does);
  all              ewc_replay and rehearsal together;
  kl               BASE_KL: the same answers of the base model mixed in, trained only by ``--kl-weight`` *
                   KL(base || adapted) on them (engine.training.base_kl), no NLL;
  rehearsal_kl     self-rehearsal with that KL term on the rehearsed answers as well as their NLL;
  ewc_kl, ewc_replay_kl   ewc and ewc_replay with BASE_KL (ewc_kl: a continuation at the service's defaults);
  replay_kl        replay of all earlier tasks with BASE_KL, no EWC (a job's ``ewc: {disabled: true,
                   replay_fraction: ...}``): the earlier tasks held by their data, not by the parent's weights;
  ewc_base         EWC_BASE, EWC against the base model (engine.continual.base_ewc, as a job does):
                   ``--base-ewc-lambda / 2 * sum tr(G (B @ A) X (B @ A)^T)`` over the LoRA pairs, ``G`` and ``X``
                   the Kronecker factors of the base model's Fisher of each adapted weight on its own answers to the
                   rehearsal prompts (before, a diagonal Fisher: the runs of docs/continual-learning.md that name
                   this method ran with it); no rehearsed rows are trained;
  ewc_kl_base      ewc_kl with the EWC_BASE penalty added (no job can ask for both yet: one method a job); with
                   ``--base-ewc-at-parent`` a continuation's is anchored at its parent's products and a first
                   version has none.

Prints, per method and medians over seeds: base retention after A, B and C, the chain's ACC and BWT (over the
three tasks), each new task's accuracy right after it was learnt, and the training time per version; writes
JSON under bench/results/.

``--scales 0.8 0.6`` also looks at each version moved back toward its parent (the base model for A) after it was
trained: every LoRA factor at ``parent + scale * (own - parent)`` (for A, the B factors alone: the update times
``scale`` exactly), scored as the version is (R and base retention, under ``scaled`` in the report). The chain
goes on from the version as trained: what shrinking the update would buy, not a chain of shrunk versions.

``--disturbed-share 0.5`` gives a continuation the rehearsed answers its parent disturbs most instead of the whole
pool: before it trains, the parent's KL(base || parent) at each rehearsed answer (token mean, against the base
model's references) is measured, and the continuation's pool is the given share of the answers with the largest,
so the same epochs go through each of them more often (a first version, whose parent is the base model, takes the
whole pool).

``--extra-prompts FILE`` rehearses more general prompts (one a line) beside the shipped ones: a larger pool, the same
answers an epoch.

``--bare-rehearsal`` rehearses each answer under an empty system prompt instead of the chat template's default one
(15 tokens fewer of a row's 52): the base model's references are taken in that context too.

    .venv/bin/python bench/base_retention.py --seeds 0 --threads 2     # about 40 min a seed on 2 cores
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from forgetting import LORA, MAX_SEQ_LENGTH, SYLLABLES, NullSink, accuracy, make_tasks, train  # noqa: E402

from engine.continual.base_ewc import BaseEwc, KfacPenalty  # noqa: E402
from engine.continual.base_knowledge import BaseKnowledgeProbe  # noqa: E402
from engine.continual.ewc import accumulate, mix_replay, replay_count  # noqa: E402
from engine.continual.fisher import FisherEstimator  # noqa: E402
from engine.continual.fisher_run import (  # noqa: E402
    ADAPTER_WEIGHTS,
    FisherRun,
    load_adapter_model,
    load_adapter_weights,
    run_fisher,
)
from engine.continual.planner import make_penalty  # noqa: E402
from engine.continual.rehearsal import MAX_NEW_TOKENS as REHEARSAL_TOKENS  # noqa: E402
from engine.continual.rehearsal import SelfRehearsal, shipped_prompts  # noqa: E402
from engine.domain import (  # noqa: E402
    BaseProtection,
    BaseProtectionMethod,
    ChatMessage,
    Example,
    FisherSpace,
    JsonlSource,
)
from engine.jobs.ports import CancelToken  # noqa: E402
from engine.training.base_kl import Reference, per_example_kl, rehearsal_objective  # noqa: E402
from engine.training.batching import Rotation  # noqa: E402
from engine.training.datasets import encode_dataset, pad_token_id  # noqa: E402
from engine.training.loading import load_for_training  # noqa: E402
from engine.training.models import SMOLLM2_MODEL_ID, resolve_base_model, select_device  # noqa: E402
from engine.training.packing import PaddedForward, TargetLogits  # noqa: E402
from engine.training.run import AddedPenalties, TrainingRun  # noqa: E402
from engine.training.spec import Precision, TrainingJobSpec  # noqa: E402
from server.settings import Settings  # noqa: E402

METHODS = {  # name: (EWC against the parent, replay of the earlier tasks, what protects the base model)
    "plain": (False, False, None), "ewc": (True, False, None), "ewc_replay": (True, True, None),
    "rehearsal": (False, False, "rehearsal"), "all": (True, True, "rehearsal"), "kl": (False, False, "kl"),
    "rehearsal_kl": (False, False, "rehearsal_kl"), "ewc_kl": (True, False, "kl"), "ewc_replay_kl": (True, True, "kl"),
    "replay_kl": (False, True, "kl"),
    "ewc_base": (False, False, "ewc_base"), "ewc_kl_base": (True, False, "kl+ewc_base"),
}
MEANINGS = ["a small red bird", "a cold wind from the north", "a kind of bread", "a wooden boat", "a quiet song",
            "a tall tree", "a heavy stone", "a bright star", "a narrow street", "a sweet fruit", "an old coin",
            "a deep lake", "a yellow flower", "a soft blanket", "a fast horse", "a round table", "a silver ring",
            "a long river", "a green hill", "a warm coat"]


def word_task(n: int, seed: int) -> list[Example]:
    rng = random.Random(20_000 + seed)
    words: list[str] = []
    while len(words) < n:
        word = "".join(rng.choice(SYLLABLES) for _ in range(3))
        if word not in words:
            words.append(word)
    meanings = rng.sample(MEANINGS, n) if n <= len(MEANINGS) else [rng.choice(MEANINGS) for _ in range(n)]
    return [Example(messages=(ChatMessage("user", f"What does the word '{w}' mean?"),
                              ChatMessage("assistant", f"'{w.capitalize()}' means {m}.")))
            for w, m in zip(words, meanings, strict=True)]


def base_retention(probe: BaseKnowledgeProbe, base_dir: Path, adapter_dir: Path) -> tuple[float, list[str]]:
    """The share of the base model's right answers the version keeps, and the prompts it lost (the probe records
    the first LOST_SHOWN, engine.continual.base_knowledge)."""
    model, tokenizer = load_adapter_model(base_dir, adapter_dir)
    kept = probe.measure(model, tokenizer, select_device(Precision.FP32), base_model_dir=base_dir,
                         quantization="NONE", step=0, sink=NullSink(), cancel=CancelToken())
    del model
    if kept is None:
        raise SystemExit("the base model answers too few general questions right to measure retention")
    return kept.retention, list(kept.lost)


def rehearsal_pool(base_dir: Path, models_dir: Path, work: Path, answer_tokens: int = REHEARSAL_TOKENS,
                   group: int = 1, extra: Path | None = None, bare: bool = False) -> tuple[list[Example], list]:
    """The base model's answers (at most ``answer_tokens`` each) to the shipped prompts and their base references,
    as a job's self-rehearsal builds them (cached under ``models_dir`` once built; the first build's time is
    printed)."""
    loaded = load_for_training(TrainingRun(TrainingJobSpec(SMOLLM2_MODEL_ID, JsonlSource("x")), base_dir, [],
                                           work / "unused"))
    prompts = [*shipped_prompts(), *(line.strip() for line in extra.read_text().splitlines() if line.strip())] \
        if extra is not None else None
    rehearsal = SelfRehearsal(models_dir, prompts, max_new_tokens=answer_tokens)
    pool = rehearsal.pairs(loaded.model, loaded.tokenizer, loaded.plan, base_dir, "NONE", CancelToken())
    if bare:  # an empty system prompt in place of the chat template's default one: shorter rows
        pool = [replace(e, messages=(ChatMessage("system", ""), *e.messages)) for e in pool]
    if group > 1:  # conversations of ``group`` question-answer turns under one system prompt, weighed as that many
        pool = [Example(messages=tuple(m for e in pool[i : i + group] for m in e.messages),
                        weight=len(pool[i : i + group])) for i in range(0, len(pool), group)]
    built = time.monotonic()
    references = rehearsal.references(pool, loaded.model, loaded.tokenizer, loaded.plan, base_dir, "NONE",
                                      MAX_SEQ_LENGTH, CancelToken())
    print(f"the base model's references of {len(pool)} answers: {time.monotonic() - built:.1f} s", flush=True)
    return pool, references


def base_penalty(base_dir: Path, models_dir: Path, work: Path, ewc_lambda: float) -> KfacPenalty:
    """``ewc_base``'s penalty, as a job's EWC_BASE builds it (engine.continual.base_ewc; its Fisher cached under
    ``models_dir`` once measured; the first measurement's time is printed)."""
    loaded = load_for_training(TrainingRun(TrainingJobSpec(SMOLLM2_MODEL_ID, JsonlSource("x"), lora=LORA), base_dir,
                                           [], work / "unused"))
    started = time.monotonic()
    penalty, answers = BaseEwc(models_dir, SelfRehearsal(models_dir)).penalty(
        ewc_lambda, model=loaded.model, tokenizer=loaded.tokenizer, plan=loaded.plan, base_model_dir=base_dir,
        quantization="NONE", max_seq_length=MAX_SEQ_LENGTH, cancel=CancelToken())
    print(f"the base model's K-FAC factors on {answers} answers: {time.monotonic() - started:.1f} s",
          flush=True)
    return penalty


def scaled_adapter(adapter: Path, parent: Path | None, scale: float, out: Path) -> Path:
    """A copy of ``adapter`` moved back toward ``parent`` by ``scale`` (see the module docstring)."""
    shutil.copytree(adapter, out, dirs_exist_ok=True)
    own = load_file(adapter / ADAPTER_WEIGHTS)
    before = load_file(parent / ADAPTER_WEIGHTS) if parent is not None else None
    moved = {}
    for name, tensor in own.items():
        if before is not None:
            moved[name] = before[name] + scale * (tensor - before[name])
        else:
            moved[name] = tensor * scale if "lora_B" in name else tensor
    save_file(moved, out / ADAPTER_WEIGHTS)
    return out


def parent_logits(pool: list[Example], base_dir: Path, parent: Path) -> Iterator[tuple[int, TargetLogits]]:
    """``parent``'s target logits at ``pool``'s answers, eight at a time, each with the index of its first."""
    model, tokenizer = load_adapter_model(base_dir, parent)
    forward = PaddedForward(pad_token_id(tokenizer), select_device(Precision.FP32))
    encoded = encode_dataset(tokenizer, pool, MAX_SEQ_LENGTH)
    with torch.no_grad():
        for start in range(0, len(encoded), 8):
            yield start, forward.target_logits(model, encoded[start : start + 8])


def disturbed(pool: list[Example], references: list, base_dir: Path, parent: Path, share: float) -> list[int]:
    """The indices of the ``share`` of ``pool`` whose answers ``parent`` moves furthest from the base model (its
    token-mean KL(base || parent) against ``references``), most disturbed first."""
    scores: list[float] = []
    for start, adapted in parent_logits(pool, base_dir, parent):
        sums, counts = per_example_kl(adapted, references[start : start + adapted.count])
        scores.extend((sums / counts.clamp(min=1)).tolist())
    ranked = sorted(range(len(pool)), key=lambda i: -scores[i])
    return ranked[: max(1, round(share * len(pool)))]


def parent_references(pool: list[Example], base_dir: Path, parent: Path) -> list:
    """``parent``'s references at ``pool``'s answers (its distribution there, as the base model's are taken): a
    continuation's KL held to what its parent gives instead of to the base model."""
    return [r for _, adapted in parent_logits(pool, base_dir, parent) for r in Reference.per_example(adapted)]


def one_variation_args(parser: argparse.ArgumentParser) -> None:
    """The arguments every one-variation script (bench/base_kfac.py, bench/base_null_space.py) shares."""
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models-dir", type=Path, default=ROOT / "var" / "models")
    parser.add_argument("--out", type=Path, required=True)


def one_variation_start(args: argparse.Namespace) -> tuple[Path, BaseKnowledgeProbe, dict]:
    """The forgetting benchmark's rate and batch on ``args``, its threads set, and SmolLM2's directory, the probe and
    an empty report of the run's config."""
    args.lr, args.batch_size = 1e-3, 8
    torch.set_num_threads(args.threads)
    base_dir = resolve_base_model(SMOLLM2_MODEL_ID, models={}, cache_dir=args.models_dir)
    return base_dir, BaseKnowledgeProbe(args.models_dir), {"config": {k: str(v) for k, v in vars(args).items()},
                                                           "versions": []}


def with_base_kl(examples: list[Example], pool: list[Example], references: list,
                 fraction: float) -> tuple[list[Example], object, Rotation]:
    """``examples`` with BASE_KL at ``fraction`` and weight 2 (the defaults' weight), as a job's runner mixes it in:
    the pool after the examples, its objective and the epochs' rotation through the pool."""
    objective = rehearsal_objective(None, BaseProtection(BaseProtectionMethod.BASE_KL, fraction, 2.0),
                                    len(examples), len(pool), references)
    return [*examples, *pool], objective, Rotation(len(pool), rehearsed_rows(len(examples), fraction, len(pool), 1))


def report_written(report: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


def version_scored(report: dict, label: str, probe: BaseKnowledgeProbe, base_dir: Path, out: Path,
                   tasks: list[list[Example]], seconds: float) -> None:
    """A trained version's accuracy on every task so far and its base retention, appended to ``report["versions"]``
    and printed after ``label`` (the one-variation scripts' way: bench/base_kfac.py, bench/base_null_space.py)."""
    r = [accuracy(base_dir, out, t) for t in tasks]
    kept, lost = base_retention(probe, base_dir, out)
    report["versions"].append({"R": r, "base_retention": kept, "base_lost": lost, "seconds": seconds})
    print(f"{label}: R={[round(x, 3) for x in r]} base retention {kept:.3f} ({seconds:.0f}s)", flush=True)


def fisher_accumulated(fisher: dict | None, base_dir: Path, out: Path, task: list[Example], seed: int) -> dict:
    """The version's Fisher on its task (LoRA entries, empirical), accumulated online onto ``fisher`` (gamma 1)."""
    new = run_fisher(FisherRun(base_dir, out, task, FisherEstimator.EMPIRICAL, MAX_SEQ_LENGTH, 8, seed,
                               FisherSpace.LORA_PARAMETERS)).diagonal
    return new if fisher is None else accumulate(fisher, new, 1.0)


def rehearsed_rows(own: int, fraction: float, rows: int, group: int) -> int:
    """Rows of the pool an epoch trains: as many answers as a job mixes in (replay_count), ``group`` a row."""
    return min(rows, -(-replay_count(own, fraction, rows * group) // group))


def run_chain(method: str, tasks: list[list[Example]], seed: int, base_dir: Path, args, work: Path,
              probe: BaseKnowledgeProbe, pool: list[Example], references: list,
              base_ewc: KfacPenalty | None) -> dict:
    ewc, replay, base = METHODS[method]
    rehearse = base in ("rehearsal", "kl", "rehearsal_kl", "kl+ewc_base")
    kl_only = base in ("kl", "kl+ewc_base")
    def protection(step: int) -> BaseProtection:
        weight = args.kl_weight if step == 0 or args.continuation_kl_weight is None else args.continuation_kl_weight
        return BaseProtection(BaseProtectionMethod.BASE_KL if kl_only else BaseProtectionMethod.SELF_REHEARSAL,
                              args.rehearsal_fraction, weight if kl_only or base == "rehearsal_kl" else 0.0,
                              prompt_kl_weight=args.prompt_kl_weight)

    parent: Path | None = None
    fisher = None
    r: list[list[float]] = []
    retention: list[float] = []
    lost: list[list[str]] = []
    seconds: list[float] = []
    scaled: dict[str, dict[str, list]] = {f"{x:g}": {"R": [], "base_retention": []} for x in args.scales}
    for step, task in enumerate(tasks):
        examples = list(task)
        penalty = None
        if replay and parent is not None:
            earlier = [e for t in tasks[:step] for e in t]
            examples, _ = mix_replay(examples, earlier, args.replay_fraction, seed)
        if ewc and parent is not None:
            penalty = make_penalty(args.fisher_space, fisher, load_adapter_weights(parent), args.ewc_lambda)
        if base == "ewc_base":
            penalty = base_ewc
        if base == "kl+ewc_base":
            held = base_ewc
            if args.base_ewc_at_parent:  # the base model's Fisher, anchored at the parent's products
                held = KfacPenalty(base_ewc.factors, base_ewc.ewc_lambda, load_adapter_weights(parent)) \
                    if parent is not None else None
            if held is not None:
                penalty = AddedPenalties(penalty, held) if penalty is not None else held
        objective, rotation = None, None
        if rehearse:  # as a job's runner does: the pool after the examples, a fraction of each epoch in rotation
            rows, refs = pool, references
            if args.disturbed_share < 1 and parent is not None:
                chosen = disturbed(pool, references, base_dir, parent, args.disturbed_share)
                rows, refs = [pool[i] for i in chosen], [references[i] for i in chosen]
            if args.parent_reference and parent is not None:
                refs = parent_references(rows, base_dir, parent)
            per_epoch = rehearsed_rows(len(examples), args.rehearsal_fraction, len(rows), args.group)
            objective = rehearsal_objective(None, protection(step), len(examples), len(rows), refs)
            examples, rotation = [*examples, *rows], Rotation(len(rows), per_epoch)
        out = work / f"s{seed}-{method}-{'ABC'[step]}"
        seconds.append(train(base_dir, examples, out, args, parent=parent, penalty=penalty, seed=seed,
                             objective=objective, rotation=rotation,
                             lora=replace(LORA, rank=args.lora_rank, alpha=LORA.alpha * args.lora_rank / LORA.rank)))
        r.append([accuracy(base_dir, out, t) for t in tasks])
        kept, lost_now = base_retention(probe, base_dir, out)
        retention.append(kept)
        lost.append(lost_now)
        for x in args.scales:
            moved = scaled_adapter(out, parent, x, work / f"{out.name}-x{x:g}")
            scaled[f"{x:g}"]["R"].append([accuracy(base_dir, moved, t) for t in tasks])
            scaled[f"{x:g}"]["base_retention"].append(base_retention(probe, base_dir, moved)[0])
            print(f"seed {seed} {method:10s} after {'ABC'[step]} x{x:g}: "
                  f"R={[round(v, 3) for v in scaled[f'{x:g}']['R'][-1]]} "
                  f"base retention {scaled[f'{x:g}']['base_retention'][-1]:.3f}", flush=True)
        if ewc:  # the new version's Fisher on its task, accumulated online (the service's gamma 1)
            measured = [*task, *pool] if args.fisher_rehearsal else task
            new = run_fisher(FisherRun(base_dir, out, measured, FisherEstimator.EMPIRICAL, MAX_SEQ_LENGTH, 8,
                                       seed, args.fisher_space)).diagonal
            fisher = new if fisher is None else accumulate(fisher, new, 1.0)
        parent = out
        print(f"seed {seed} {method:10s} after {'ABC'[step]}: R={[round(x, 3) for x in r[-1]]} "
              f"base retention {retention[-1]:.3f} ({seconds[-1]:.0f}s)", flush=True)
    n = len(tasks)
    acc = statistics.fmean(r[-1])
    bwt = statistics.fmean(r[-1][i] - r[i][i] for i in range(n - 1)) if n > 1 else 0.0
    return {"R": r, "base_retention": retention, "base_lost": lost, "ACC": acc, "BWT": bwt, "train_seconds": seconds,
            "learnt": [r[i][i] for i in range(n)], "scaled": scaled}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--facts", type=int, default=12, help="facts per task")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--warmup-steps", type=int, default=0,
                        help="steps of linear warm-up before the linear decay (a job's warmup_steps; 0, the default)")
    parser.add_argument("--ewc-lambda", type=float, default=Settings.model_fields["ewc_lambda_default"].default)
    parser.add_argument("--replay-fraction", type=float, default=0.2)
    parser.add_argument("--rehearsal-fraction", type=float,
                        default=Settings.model_fields["base_rehearsal_fraction"].default)
    parser.add_argument("--answer-tokens", type=int, default=REHEARSAL_TOKENS,
                        help="the longest rehearsed answer of the base model, in tokens")
    parser.add_argument("--group", type=int, default=1,
                        help="rehearsed answers a row (one conversation of that many turns)")
    parser.add_argument("--kl-weight", type=float, default=Settings.model_fields["base_kl_weight"].default,
                        help="kl, rehearsal_kl: the weight of KL(base || adapted) on the rehearsed answers")
    parser.add_argument("--continuation-kl-weight", type=float, default=None,
                        help="the KL weight of the versions after the first (default: --kl-weight)")
    parser.add_argument("--prompt-kl-weight", type=float, default=0.0,
                        help="the weight of KL(base || adapted) at the prompt positions of the job's own rows")
    parser.add_argument("--lora-rank", type=int, default=LORA.rank,
                        help="every version's LoRA rank (alpha scaled with it, so alpha / rank stays the same)")
    parser.add_argument("--fisher-rehearsal", action="store_true",
                        help="ewc*: each version's Fisher on its task and on the base model's rehearsed answers, so "
                        "a continuation's EWC also holds what keeps the parent's general answers")
    parser.add_argument("--base-ewc-at-parent", action="store_true",
                        help="ewc_kl_base: a continuation's penalty of the base model's Fisher is anchored at its "
                        "parent's products B @ A instead of at 0 (holding what the parent still gives of the base "
                        "model's answers, not pulling it back to the base model); a first version has none")
    parser.add_argument("--fisher-space", type=FisherSpace, default=FisherSpace.LORA_PARAMETERS,
                        choices=list(FisherSpace),
                        help="ewc*: what a continuation's EWC holds, the LoRA entries or each pair's product B @ A "
                        "(the service's ewc.fisher_space)")
    parser.add_argument("--base-ewc-lambda", type=float, default=Settings.model_fields["base_ewc_lambda"].default,
                        help="ewc_base: the weight of the penalty on B @ A (lambda times the estimated mean KL "
                        "per answer token)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--versions", type=int, default=3, choices=(1, 2, 3),
                        help="train only the first versions of the chain (a quicker look at a setting)")
    parser.add_argument("--extra-prompts", type=Path, default=None,
                        help="a file of more general prompts, one a line, rehearsed beside the shipped ones")
    parser.add_argument("--bare-rehearsal", action="store_true",
                        help="rehearsed rows under an empty system prompt instead of the template's default one")
    parser.add_argument("--parent-reference", action="store_true",
                        help="a continuation's KL term held to its parent's distribution at the rehearsed answers "
                             "instead of the base model's")
    parser.add_argument("--disturbed-share", type=float, default=1.0,
                        help="a continuation rehearses only this share of the answers its parent disturbs most")
    parser.add_argument("--scales", type=float, nargs="*", default=[],
                        help="also score each version moved back toward its parent by these factors")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models-dir", type=Path, default=ROOT / "var" / "models")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "base-retention.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch threads {torch.get_num_threads()}; facts/task {args.facts}; epochs {args.epochs}; lr {args.lr}; "
          f"EWC lambda {args.ewc_lambda}, replay {args.replay_fraction}; rehearsal {args.rehearsal_fraction}; "
          f"KL weight {args.kl_weight}",
          flush=True)
    base_dir = resolve_base_model(SMOLLM2_MODEL_ID, models={}, cache_dir=args.models_dir)
    probe = BaseKnowledgeProbe(args.models_dir)
    started = time.monotonic()
    results: dict[str, list[dict]] = {m: [] for m in args.methods}
    with tempfile.TemporaryDirectory(prefix="le-base-retention-") as tmp:
        work = Path(tmp)
        pool, references = rehearsal_pool(base_dir, args.models_dir, work, args.answer_tokens,
                                           args.group, args.extra_prompts, args.bare_rehearsal)
        base_ewc = base_penalty(base_dir, args.models_dir, work, args.base_ewc_lambda) \
            if any(METHODS[m][2] in ("ewc_base", "kl+ewc_base") for m in args.methods) else None
        for seed in args.seeds:
            task_a, task_b = make_tasks(args.facts, seed)
            tasks = [task_a, task_b, word_task(args.facts, seed)][:args.versions]
            for method in args.methods:
                results[method].append(run_chain(method, tasks, seed, base_dir, args, work, probe, pool,
                                                  references, base_ewc))
    summary = {}
    print(f"\nmedians over seeds {args.seeds} ({torch.get_num_threads()} threads)")
    print("method      retention A   B     C      ACC    BWT     learnt (A B C)       s/version")
    for method, runs in results.items():
        def med(values: list[float]) -> float:
            return statistics.median(values)

        n = args.versions
        row = {"base_retention": [med([x["base_retention"][i] for x in runs]) for i in range(n)],
               "ACC": med([x["ACC"] for x in runs]), "BWT": med([x["BWT"] for x in runs]),
               "learnt": [med([x["learnt"][i] for x in runs]) for i in range(n)],
               "seconds": med([statistics.fmean(x["train_seconds"]) for x in runs])}
        summary[method] = row
        print(f"{method:10s}  {' '.join(f'{x:.3f}' for x in row['base_retention']):17s}  {row['ACC']:.3f}  "
              f"{row['BWT']:+.3f}  "
              f"{' '.join(f'{x:.2f}' for x in row['learnt'])}     {row['seconds']:.0f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"config": {k: str(v) for k, v in vars(args).items()},
                                    "rehearsal_pool": {"answers": len(pool), "first": pool[0].messages[0].content},
                                    "threads": torch.get_num_threads(), "seconds": time.monotonic() - started,
                                    "runs": results, "summary": summary}, indent=2))
    print(f"wrote {args.out} in {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
