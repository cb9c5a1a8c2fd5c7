"""Base retention with each LoRA A held off the base model's busiest input directions (measured, not kept).

The idea (gradient projection memory, InfLoRA, AlphaEdit's null space): an update ``B @ A`` changes a layer's output
on an input ``x`` by ``B @ (A @ x)``. If every row of ``A`` is orthogonal to the directions the base model's inputs
to that layer take on general text, the update is near 0 on such text, whatever ``B`` learns, at no cost per step
(no rehearsed rows). Here, for each adapted projection (q, k, v, o), the inputs it receives from the base model on
its own answers to the shipped rehearsal prompts (engine.continual.rehearsal's pool) are collected, and ``A`` is
kept in the span of the ``--free`` eigenvectors of their second moment with the *smallest* eigenvalues (576 in all
for SmolLM2-135M; ``--free 576`` is plain LoRA, with ``--frozen`` LoRA with A frozen).

How it is applied, for the measurement: the projection rides the run's penalty call, which the training loop makes
after each step's backward and before the optimiser's step (engine.training.recipe). On its first call it projects
each A (rescaled to its norm) and, with ``--frozen``, freezes it; otherwise every call projects A's gradient and
puts A back in the span (AdamW's update leaves it by one step between calls). With ``--ewc`` a continuation also has
EWC against its parent (lambda 0.1, the service's default), with ``--kl`` BASE_KL at the defaults (fraction 0.3,
weight 2), as bench/base_retention.py builds them.

    .venv/bin/python bench/base_null_space.py --seed 1 --free 552 --out bench/results/base-null-space-s1-f552.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import base_retention as br  # noqa: E402
from forgetting import LORA, MAX_SEQ_LENGTH, make_tasks, train  # noqa: E402

from engine.continual.fisher_run import load_adapter_weights  # noqa: E402
from engine.continual.planner import make_penalty  # noqa: E402
from engine.domain import Example, FisherSpace, JsonlSource  # noqa: E402
from engine.training.datasets import encode_dataset  # noqa: E402
from engine.training.loading import load_for_training  # noqa: E402
from engine.training.models import SMOLLM2_MODEL_ID  # noqa: E402
from engine.training.run import TrainingRun  # noqa: E402
from engine.training.spec import TrainingJobSpec  # noqa: E402

LORA_A = ".lora_A.default"


def second_moments(base_dir: Path, pool: list[Example], work: Path) -> dict[str, torch.Tensor]:
    """Per adapted module, the sum of ``x x^T`` over every position of the base model's inputs to it on ``pool``."""
    loaded = load_for_training(TrainingRun(TrainingJobSpec(SMOLLM2_MODEL_ID, JsonlSource("x"), lora=LORA), base_dir,
                                           [], work / "unused"))
    model = loaded.model
    model.eval()  # LoRA B is 0 at initialisation: the base model's inputs; no dropout
    sums: dict[str, torch.Tensor] = {}
    hooks = []
    for name, module in model.named_modules():
        if name.endswith(LORA_A):
            def hook(_module: Any, inputs: tuple[torch.Tensor, ...], key: str = name.removesuffix(LORA_A)) -> None:
                x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).double()
                sums[key] = sums.get(key, torch.zeros(())) + x.T @ x
            hooks.append(module.register_forward_pre_hook(hook))
    with torch.no_grad():
        for e in encode_dataset(loaded.tokenizer, pool, MAX_SEQ_LENGTH):
            model(input_ids=torch.tensor([e.input_ids]))
    for h in hooks:
        h.remove()
    return sums


def projectors(moments: dict[str, torch.Tensor], free: int) -> dict[str, torch.Tensor]:
    """Per module, the projector onto the ``free`` eigenvectors of its second moment with the smallest eigenvalues."""
    out = {}
    for key, moment in moments.items():
        low = torch.linalg.eigh(moment).eigenvectors[:, :free]  # eigh: ascending eigenvalues
        out[key] = (low @ low.T).float()
    return out


class HeldA:
    """Called as the run's penalty (see the module docstring): holds every LoRA A in its projector's span."""

    def __init__(self, projector: dict[str, torch.Tensor], inner: Any = None, frozen: bool = False) -> None:
        self.projector, self.inner, self.frozen = projector, inner, frozen
        self.model: Any = None

    def __call__(self, model: torch.nn.Module) -> torch.Tensor:
        first = self.model is not model
        for name, module in model.named_modules():
            if not name.endswith(LORA_A):
                continue
            p = self.projector[name.removesuffix(LORA_A)]
            w = module.weight
            with torch.no_grad():
                if first:
                    w.copy_((w @ p) * (w.norm() / (w @ p).norm().clamp(min=1e-12)))
                    if self.frozen:
                        w.requires_grad_(False)
                        w.grad = None
                elif not self.frozen:
                    w.copy_(w @ p)
                if w.grad is not None:
                    w.grad.copy_(w.grad @ p)
        self.model = model
        return self.inner(model) if self.inner is not None else torch.zeros(())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--free", type=int, default=552, help="directions left to A, of the module's input's")
    parser.add_argument("--frozen", action="store_true", help="A projected once and frozen (only B trains)")
    parser.add_argument("--versions", type=int, default=1, choices=(1, 2, 3))
    parser.add_argument("--ewc", action="store_true", help="a continuation's EWC against its parent (lambda 0.1)")
    parser.add_argument("--kl", action="store_true", help="BASE_KL at the defaults (fraction 0.3, weight 2)")
    br.one_variation_args(parser)
    args = parser.parse_args()
    base_dir, probe, report = br.one_variation_start(args)
    with tempfile.TemporaryDirectory(prefix="le-null-space-") as tmp:
        work = Path(tmp)
        pool, references = br.rehearsal_pool(base_dir, args.models_dir, work)
        projector = projectors(second_moments(base_dir, pool, work), args.free)
        task_a, task_b = make_tasks(12, args.seed)
        tasks = [task_a, task_b, br.word_task(12, args.seed)][: args.versions]
        parent: Path | None = None
        fisher = None
        for step, task in enumerate(tasks):
            examples = list(task)
            inner = make_penalty(FisherSpace.LORA_PARAMETERS, fisher, load_adapter_weights(parent), 0.1) \
                if args.ewc and parent is not None else None
            objective = rotation = None
            if args.kl:
                examples, objective, rotation = br.with_base_kl(examples, pool, references, 0.3)
            out = work / f"v{step}"
            seconds = train(base_dir, examples, out, args, parent=parent, penalty=HeldA(projector, inner, args.frozen),
                            seed=args.seed, objective=objective, rotation=rotation)
            br.version_scored(report, f"seed {args.seed} free {args.free} after {'ABC'[step]}",
                              probe, base_dir, out, tasks, seconds)
            if args.ewc:
                fisher = br.fisher_accumulated(fisher, base_dir, out, task, args.seed)
            parent = out
    br.report_written(report, args.out)


if __name__ == "__main__":
    main()
