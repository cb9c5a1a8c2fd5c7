"""One round of each method of bench/train_throughput.py, run in a fresh process (its docstring says what is
measured and how).

``child_round`` runs a method's round in the (spawned) process it is called in: ``run_baseline`` (the seed method,
transformers' Trainer on a PEFT model, padded batches), ``run_ours`` (the project's recipe) and ``run_compiled``
(the recipe under ``torch.compile``). Each returns a ``Round``: times, losses, the held-out eval loss and the
resident set's start and peak, which ``Memory`` reads from /proc/self/status.
"""

from __future__ import annotations

import gc
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.domain import Example  # noqa: E402
from engine.jobs.ports import CancelToken  # noqa: E402
from engine.training.datasets import IGNORE_INDEX, encode_dataset, pad_token_id  # noqa: E402
from engine.training.loading import load_for_training, lora_config, seed_everything  # noqa: E402
from engine.training.models import load_base_model, select_device  # noqa: E402
from engine.training.recipe import evaluate_loss, run_training  # noqa: E402
from engine.training.run import TrainingRun  # noqa: E402
from engine.training.spec import StepMetrics, TrainingJobSpec  # noqa: E402

# ---- memory ------------------------------------------------------------------------------------------------


class Memory:
    """The resident set of this process, from /proc/self/status, with the high-water mark reset at ``start``."""

    def __init__(self) -> None:
        self.reset = False
        self.start_kib = 0
        self.peak_kib = 0

    @staticmethod
    def read(field_name: str) -> int:
        with open("/proc/self/status") as status:
            match = re.search(rf"^{field_name}:\s+(\d+) kB", status.read(), re.M)
        return int(match.group(1)) if match else 0

    def begin(self) -> None:
        gc.collect()
        try:
            with open("/proc/self/clear_refs", "w") as refs:
                refs.write("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
            self.reset = True
        except OSError:
            self.reset = False
        self.start_kib = self.read("VmRSS")

    def step(self) -> None:
        self.peak_kib = self.read("VmHWM")


# ---- one round of each method --------------------------------------------------------------------------------


@dataclass
class Round:
    seconds: float  # tokenising + set-up + every step (see the module docstring)
    first_step: float  # from the start to the end of the first step
    step_times: list[float]  # each step after the first
    losses: list[float]  # each step's training loss, as the method defines it
    heldout_loss: float  # the trained adapter's loss on the held-out examples, by the recipe's evaluate_loss
    start_mib: float  # RSS when the round started (model loaded)
    peak_mib: float  # the high-water mark of the RSS at the end of the last step
    peak_reset: bool  # whether the high-water mark was reset at the start (else it includes loading)
    threads: int  # torch's intra-op threads at the end of the round
    computed_tokens: int = 0  # positions the model ran on, padding included (baseline only)
    reports: list[str] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return len(self.step_times) + 1


def _round(started: float, ends: list[float], losses: list[float], heldout: float, memory: Memory,
           **extra: Any) -> Round:
    return Round(ends[-1] - started, ends[0] - started, [b - a for a, b in zip(ends, ends[1:], strict=False)],
                 losses, heldout, memory.start_kib / 1024, memory.peak_kib / 1024, memory.reset,
                 torch.get_num_threads(), **extra)


def run_baseline(model_dir: Path, examples: list[Example], heldout: list[Example], spec: TrainingJobSpec,
                 tmp: Path) -> Round:
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
    memory = Memory()

    class Clock(TrainerCallback):
        """The end of each step, once its loss is logged (logging reads it back: on CUDA, after the step ran)."""

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
                   **kwargs: Any) -> None:
            if logs and "loss" in logs:
                step_ends.append(time.perf_counter())
                memory.step()
                losses.append(float(logs["loss"]))

    memory.begin()
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
    heldout_loss = evaluate_held_out(model, tokenizer, heldout, spec, plan)
    return _round(started, step_ends, losses, heldout_loss, memory, computed_tokens=computed[0])


class Recorder:
    """The recipe's ProgressSink: step times, losses and memory; anything else it reports, as text."""

    def __init__(self, memory: Memory) -> None:
        self.memory = memory
        self.step_ends: list[float] = []
        self.losses: list[float] = []
        self.other: list[str] = []

    def emit(self, payload: object) -> None:
        if isinstance(payload, StepMetrics):
            self.step_ends.append(time.perf_counter())
            self.memory.step()
            self.losses.append(payload.task_loss)
        elif type(payload).__name__ != "EvalReported":
            self.other.append(f"{type(payload).__name__}: {getattr(payload, 'message', payload)}")


def compile_model(model: Any) -> None:
    """``torch.compile`` the model in place (``nn.Module.compile``), dynamic shapes: the packed rows change
    length every step. The graph breaks at each layer's packed attention (its segments are read from the
    position ids); on the tiny model, compiling each decoder layer instead took longer to compile and ran no
    faster."""
    model.compile(dynamic=True)


def run_ours(model_dir: Path, examples: list[Example], heldout: list[Example], spec: TrainingJobSpec, tmp: Path,
             compiled: bool = False) -> Round:
    """The project's recipe, as a training job runs it (the model loaded first, as a job that measures its
    parent's Fisher does)."""
    # No checkpointing (TrainingRun's default): the baseline saves nothing during training either.
    run = TrainingRun(spec=spec, base_model_dir=model_dir, examples=examples, output_dir=tmp / "adapter")
    loaded = load_for_training(run)
    model, tokenizer, plan = loaded.model, loaded.tokenizer, loaded.plan  # run_training releases ``loaded``
    memory = Memory()
    sink = Recorder(memory)
    memory.begin()
    started = time.perf_counter()
    if compiled:
        compile_model(model)  # timed: a job would pay it
    run_training(run, sink, CancelToken(), loaded=loaded)  # evaluates on the data and saves after the last step
    if compiled:
        sink.other.append(compile_counters())
    with torch.compiler.set_stance("force_eager"):  # the held-out evaluation as the other methods run it
        heldout_loss = evaluate_held_out(model, tokenizer, heldout, spec, plan)
    return _round(started, sink.step_ends, sink.losses, heldout_loss, memory, reports=sink.other)


def compile_counters() -> str:
    """What torch.compile did in this process: graphs compiled, frames recompiled, graph breaks and why."""
    from torch._dynamo.utils import counters

    breaks = counters["graph_break"]
    reasons = "; ".join(f"{n}x {reason.splitlines()[0][:90]}" for reason, n in breaks.most_common(2))
    return (f"torch.compile: {counters['stats']['unique_graphs']} graphs compiled, "
            f"{sum(counters['recompiles'].values())} recompiles, {sum(breaks.values())} graph breaks ({reasons})")


def run_compiled(model_dir: Path, examples: list[Example], heldout: list[Example], spec: TrainingJobSpec,
                 tmp: Path) -> Round:
    return run_ours(model_dir, examples, heldout, spec, tmp, compiled=True)


def evaluate_held_out(model: Any, tokenizer: Any, heldout: list[Example], spec: TrainingJobSpec, plan: Any) -> float:
    hp = spec.hyperparameters
    data = encode_dataset(tokenizer, heldout, hp.max_seq_length)
    return evaluate_loss(model, data, batch_size=hp.batch_size, pad_id=pad_token_id(tokenizer), plan=plan,
                         cancel=CancelToken(), packing=False)


METHODS = {"baseline": run_baseline, "ours": run_ours, "compiled": run_compiled}


def preload() -> None:
    """What any method imports lazily, imported before a round starts (the first round in a process would
    otherwise pay for it)."""
    import peft  # noqa: F401
    import transformers.optimization  # noqa: F401
    import transformers.trainer_pt_utils  # noqa: F401
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments  # noqa: F401


def child_round(method: str, threads: int, model_dir: Path, examples: list[Example], heldout: list[Example],
                spec: TrainingJobSpec, tmp: Path) -> Round:
    """One method's round in this (fresh) process."""
    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' deprecations, every round
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # loading and saving bars
    hf_logging.set_verbosity_error()
    preload()
    return METHODS[method](model_dir, examples, heldout, spec, tmp)
