"""Training on several devices (engine.training.distributed): the launcher's arguments, the shares of a step,
and a real run of two processes through accelerate's launcher (CPU processes over gloo on a machine without
GPUs, the same code as on GPUs over NCCL): the same step losses as one process, a pause that stops both at one
step with a checkpoint, and that checkpoint resumed on one process continuing the uninterrupted trajectory."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from accelerate.commands.launch import launch_command_parser
from safetensors.torch import load_file

from engine.errors import Cancelled
from engine.jobs.ports import CancelToken, StopReason
from engine.training.batching import StepBatch
from engine.training.distributed import RankGroup, launch_arguments, run_distributed
from engine.training.models import DevicePlan, select_device
from engine.training.recipe import Checkpointing, TrainingRun, run_training
from engine.training.spec import Precision, StepMetrics
from tests.engine.test_training import RecordingSink, examples, make_run


def test_launch_arguments_are_accelerates_for_gpus() -> None:
    args = launch_command_parser().parse_args([*launch_arguments(processes=4, device="cuda", port=29500), "RUN"])
    assert (args.multi_gpu, args.num_processes, args.num_machines, args.main_process_port) == (True, 4, 1, 29500)
    assert (args.module, args.training_script, args.training_script_args) == (
        True, "engine.training.distributed", ["RUN"])
    assert args.mixed_precision == "no"  # the recipe's own autocast decides precision, as on one device


def test_launch_arguments_on_cpu_share_the_cores() -> None:
    args = launch_command_parser().parse_args(
        [*launch_arguments(processes=2, device="cpu", port=1234, threads_per_process=3), "RUN"])
    assert (args.num_processes, args.num_cpu_threads_per_process) == (2, 3)


def test_shares_split_each_micro_batch_and_cover_it_once() -> None:
    data = examples() * 3  # 15 examples
    step = StepBatch(data[:10], list(range(10)), micro_size=5)  # two micro-batches of 5
    shares = [RankGroup(rank, 3, "cpu", Path("/nonexistent")).shard(step) for rank in range(3)]
    assert sorted(i for share in shares for i in share.indices) == list(range(10))
    assert [list(share.indices) for share in shares] == [[0, 3, 5, 8], [1, 4, 6, 9], [2, 7]]
    assert all(share.micro_size == 2 for share in shares)
    tiny = StepBatch(data[:1], [0], micro_size=1)  # fewer examples than processes: a share may be empty
    assert [len(RankGroup(rank, 2, "cpu", Path("/x")).shard(tiny).examples) for rank in range(2)] == [1, 0]


class PauseAfter(RecordingSink):
    """Pauses the run (as PauseTrainingJob does) once it has reported ``step``."""

    def __init__(self, cancel: CancelToken, step: int) -> None:
        super().__init__()
        self.cancel, self.step = cancel, step

    def emit(self, payload) -> None:
        super().emit(payload)
        if isinstance(payload, StepMetrics) and payload.step >= self.step:
            self.cancel.cancel(StopReason.PAUSE)


def checkpointed(run: TrainingRun, kept: dict[int, Path], root: Path, resume_from: Path | None = None) -> TrainingRun:
    def save(step: int, state_dir: Path, loss: float, eval_loss: float | None) -> None:
        kept[step] = shutil.copytree(state_dir, root / f"kept-{step}")

    return replace(run, checkpointing=Checkpointing(every_steps=0, every_seconds=0, scratch_dir=root / "scratch",
                                                    save=save, resume_from=resume_from))


def two_devices() -> DevicePlan:
    """Two GPUs where the machine has them, else two CPU processes; like the one-process run it is compared to."""
    plan = select_device(Precision.FP32)
    if plan.device == "cuda" and torch.cuda.device_count() < 2:
        pytest.skip("one GPU: the one-process run is on it, two processes would be on the CPU (other rounding)")
    return plan


@pytest.mark.model
def test_two_processes_take_one_processs_steps_and_pause_into_a_checkpoint_one_process_resumes(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    # Five examples of unequal weights (one weighs 2), batches of 4: shares of unequal weight every step.
    settings = {"epochs": 30, "batch_size": 4, "learning_rate": 5e-3}
    alone = RecordingSink()
    run_training(make_run(tiny_model_dir, tmp_path / "alone" / "adapter", **settings), alone, CancelToken())

    cancel, kept = CancelToken(), {}
    together = PauseAfter(cancel, step=3)
    run = checkpointed(make_run(tiny_model_dir, tmp_path / "together" / "adapter", **settings), kept, tmp_path)
    with pytest.raises(Cancelled):
        run_distributed(run, together, cancel, plan=two_devices(), processes=2)
    paused = [s.step for s in together.steps]
    assert paused and paused[-1] < len(alone.steps), "the pause reached the processes only after the last step"
    assert list(kept) == [paused[-1]], "both processes stopped at one step, and its checkpoint was handed over"
    assert [s.loss for s in together.steps] == pytest.approx([s.loss for s in alone.steps[: len(paused)]], abs=1e-5)

    resumed = RecordingSink()
    rerun = checkpointed(make_run(tiny_model_dir, tmp_path / "resumed" / "adapter", **settings), {}, tmp_path,
                         resume_from=kept[paused[-1]])
    result = run_training(rerun, resumed, CancelToken())
    assert [s.step for s in resumed.steps] == list(range(paused[-1] + 1, len(alone.steps) + 1))
    assert [s.loss for s in resumed.steps] == pytest.approx([s.loss for s in alone.steps[len(paused) :]], abs=1e-5)
    single = load_file(str(tmp_path / "alone" / "adapter" / "adapter_model.safetensors"))
    weights = load_file(str(result.adapter_dir / "adapter_model.safetensors"))
    assert max(float((single[k] - weights[k]).abs().max()) for k in single) < 1e-5
