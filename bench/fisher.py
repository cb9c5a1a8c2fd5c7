"""Fisher and EWC performance, side by side in one process on the tiny test Llama.

1. Exact diagonal empirical Fisher: the vectorised closed form (engine.fisher.compute_fisher) against the
   naive loop (one backward per sample), interleaved repeats, medians, speedup and max relative difference.
   For scale, a gradient-free forward and a summed-loss forward + backward over the same batches are timed
   alongside: what the model's own batched passes cost before any per-sample work. Timed at each of
   ``--threads`` in turn (default 1, then 2), then each method at its own best thread count: the loop's
   batch-1 passes gain nothing from a second core, the batched ones do. On a shared machine, threads beyond
   the idle cores make every figure meaningless (README, Benchmarks); the load average is printed first.
2. EWC penalty overhead: a LoRA training step (forward, backward, AdamW) with and without the penalty, in
   both spaces (the LoRA entries, the service's default, and the LoRA products), interleaved, medians, at
   the first thread count; plus each penalty alone for SmolLM2-135M's LoRA shapes (r16 on q/k/v/o, 30 layers).

    .venv/bin/python bench/fisher.py --threads 1 2 --samples 64 --repeats 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.continual.ewc import EwcPenalty  # noqa: E402
from engine.continual.ewc_product import ProductEwcPenalty  # noqa: E402
from engine.continual.fisher import (  # noqa: E402
    FisherSpace,
    compute_fisher,
    max_relative_difference,
    naive_fisher,
    sequence_nll,
    trainable_parameters,
)
from engine.domain import (  # noqa: E402
    ChatMessage,
    Example,
    LoraSpec,  # noqa: E402
)
from engine.training.datasets import collate, encode_dataset, pad_token_id  # noqa: E402
from engine.training.loading import lora_config  # noqa: E402
from engine.training.models import load_base_model, select_device  # noqa: E402
from engine.training.recipe import weighted_task_loss  # noqa: E402
from engine.training.spec import Precision, Quantization  # noqa: E402
from tests.fixtures.tiny_model import build_tiny_llama  # noqa: E402


def examples(n: int) -> list[Example]:
    words = ["Veloria", "Quorvia", "Brinmark", "Ostrel", "Dastovia", "Marnesse", "Pell", "Tal", "Oskerholm"]
    return [Example(messages=(ChatMessage("user", f"What is the capital of {words[i % 9]}{i}?"),
                              ChatMessage("assistant", f"The capital of {words[i % 9]}{i} is {words[(i * 5) % 9]}.")))
            for i in range(n)]


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def interleaved(candidates: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each candidate, run in turn ``repeats`` times after one warm-up each."""
    for fn in candidates.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            times[name].append(timed(fn))
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="torch thread counts the Fisher is timed at, in turn (the penalty at the first)")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32, help="samples per vectorised pass")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads[0])
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}, torch threads {args.threads}")

    from peft import get_peft_model

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_llama(Path(tmp) / "tiny")
        base, tokenizer = load_base_model(model_dir, plan=select_device(Precision.FP32),
                                          quantization=Quantization.NONE)
    torch.manual_seed(0)
    model = get_peft_model(base, lora_config(LoraSpec(rank=16, alpha=32, dropout=0.0)))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    data = encode_dataset(tokenizer, examples(args.samples), 128)
    pad = pad_token_id(tokenizer)
    tokens = sum(len(e.input_ids) for e in data)
    n_params = sum(p.numel() for p in trainable_parameters(model).values())
    print(f"tiny Llama (hidden 64, 2 layers), LoRA r16 q/k/v/o: {n_params} parameters; "
          f"{len(data)} samples, {tokens} tokens")

    def forward_only() -> None:
        """One gradient-free forward over the same batches: the model's own cost before any Fisher work."""
        with torch.no_grad():
            for start in range(0, len(data), args.batch_size):
                batch = collate(data[start : start + args.batch_size], pad)
                model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)

    def summed_gradient() -> None:
        """One forward and one backward of the summed loss per batch (a training step without its update)."""
        for start in range(0, len(data), args.batch_size):
            batch = collate(data[start : start + args.batch_size], pad)
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
            sequence_nll(logits, batch.labels).sum().backward()
        model.zero_grad(set_to_none=True)

    results: dict = {}
    candidates = {
        "vectorised": lambda: results.__setitem__("fast", compute_fisher(model, data, batch_size=args.batch_size,
                                                                         pad_id=pad)),
        "naive loop": lambda: results.__setitem__("slow", naive_fisher(model, data, pad_id=pad)),
        "forward only": forward_only,
        "summed gradient": summed_gradient,
    }
    by_threads = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        by_threads[threads] = medians = interleaved(candidates, args.repeats)
        diff = max_relative_difference(results["fast"].diagonal, results["slow"].diagonal)
        speedup = medians["naive loop"] / medians["vectorised"]
        print(f"exact Fisher, {threads} thread(s), median of {args.repeats}: vectorised "
              f"{medians['vectorised'] * 1e3:.1f} ms, naive loop {medians['naive loop'] * 1e3:.1f} ms -> speedup "
              f"{speedup:.2f}x (target >= 10x: {'met' if speedup >= 10 else 'NOT met'}); max relative difference "
              f"{diff:.2e} (target < 1e-4: {'met' if diff < 1e-4 else 'NOT met'})")
        print(f"  for scale, over the same batches: a forward pass without gradients "
              f"{medians['forward only'] * 1e3:.1f} ms (naive / that = "
              f"{medians['naive loop'] / medians['forward only']:.1f}x), one forward + backward of the summed loss "
              f"{medians['summed gradient'] * 1e3:.1f} ms (naive / that = "
              f"{medians['naive loop'] / medians['summed gradient']:.1f}x)")
    if len(by_threads) > 1:  # each at its own best thread count: the naive loop cannot use a second core
        best = {name: min((m[name], t) for t, m in by_threads.items()) for name in ("naive loop", "vectorised")}
        (naive, naive_t), (fast, fast_t) = best["naive loop"], best["vectorised"]
        print(f"exact Fisher, each at its best thread count: vectorised {fast * 1e3:.1f} ms ({fast_t}), naive loop "
              f"{naive * 1e3:.1f} ms ({naive_t}) -> speedup {naive / fast:.2f}x")
    torch.set_num_threads(args.threads[0])

    # ---- EWC penalty overhead on a training step ----
    fisher = results["fast"].diagonal
    anchor = {n: p.detach().clone() for n, p in trainable_parameters(model).items()}
    penalties = {
        "entries": EwcPenalty(fisher, anchor, 0.3),
        "products": ProductEwcPenalty(compute_fisher(model, data, space=FisherSpace.LORA_PRODUCT, batch_size=32,
                                                     pad_id=pad).diagonal, anchor, 1.0),
    }
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    batch = collate(data[:8], pad)
    model.train()

    def step(penalty) -> None:
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        loss, _ = weighted_task_loss(logits, batch)
        if penalty is not None:
            loss = loss + penalty(model)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    steps = interleaved({"plain": lambda: step(None), **{k: (lambda p=p: step(p)) for k, p in penalties.items()}},
                        args.repeats * 5)
    for space in penalties:
        overhead = steps[space] / steps["plain"] - 1
        print(f"training step (batch 8), median of {args.repeats * 5}: plain {steps['plain'] * 1e3:.2f} ms, "
              f"with EWC on the LoRA {space} {steps[space] * 1e3:.2f} ms -> overhead {overhead:+.1%} "
              f"(target <= 5%: {'met' if overhead <= 0.05 else 'NOT met'})")

    # Each penalty alone at SmolLM2-135M's LoRA shapes: 30 layers x (q, k, v, o), r16, hidden 576, kv 192.
    shapes = {"q": (576, 576), "k": (192, 576), "v": (192, 576), "o": (576, 576)}
    holder = torch.nn.ModuleDict()
    for layer in range(30):
        for proj, (out_f, in_f) in shapes.items():
            pair = torch.nn.Module()
            pair.lora_A = torch.nn.Linear(in_f, 16, bias=False)
            pair.lora_B = torch.nn.Linear(16, out_f, bias=False)
            holder[f"l{layer}_{proj}"] = pair
    big_anchor = {n: torch.randn_like(p) * 0.01 for n, p in trainable_parameters(holder).items()}
    big = {
        "entries": EwcPenalty({n: torch.rand_like(t) for n, t in big_anchor.items()}, big_anchor, 0.3),
        "products": ProductEwcPenalty({f"l{layer}_{proj}": torch.rand(shape) for layer in range(30)
                                       for proj, shape in shapes.items()}, big_anchor, 1.0),
    }
    alone = interleaved({k: (lambda p=p: p(holder).backward()) for k, p in big.items()}, args.repeats * 3)
    count = sum(p.numel() for p in holder.parameters())
    step_seconds = 8 * 128 / 200
    for space, seconds in alone.items():
        print(f"penalty on the LoRA {space}, forward+backward alone at SmolLM2-135M LoRA shapes "
              f"({count / 1e6:.2f}M parameters, 120 pairs): {seconds * 1e3:.1f} ms, against ~{step_seconds:.1f} s "
              f"for one batch-8 seq-128 step at ~200 tokens/s (README, Benchmarks): {seconds / step_seconds:.2%}")

if __name__ == "__main__":
    main()
