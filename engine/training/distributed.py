"""Training one adapter on several devices: one process per device, started by accelerate's launcher.

A job that trains on more than one device (``Hyperparameters.num_devices``) is still run by one worker: its
thread (:func:`train`) writes the run to a directory and starts ``accelerate launch`` (which starts one
process per device through torch's elastic launcher, and stops them all when one fails). Each process
(``python -m engine.training.distributed RUN_DIR``) loads the base model and the job's adapter on its device,
and runs the same recipe (engine.training.recipe) with a :class:`RankGroup` as the run's ``parallel``: every
optimiser step, each process takes its share of the step's examples, and their gradients are averaged,
weighted by what each share's loss averages over, so a step is the step one process would take on all of them
(the same losses, to rounding; a checkpoint resumes on any number of devices). The main process (rank 0)
reports, checkpoints and saves; its reports reach the worker through files:

* ``run.pt``: the run (without its checkpoint callback) and the device plan, written by the worker;
* ``events.jsonl``: the main process's progress events, a JSON object a line, forwarded to the job's sink;
* ``outbox/step-N``: a checkpoint the main process took, stored by the worker (then removed);
* ``stop``: written by the worker with the reason when the job is cancelled, paused or its worker stops;
  the processes agree on it at the start of each step, so all stop at the same one;
* ``result.pt`` / ``error-<rank>.pt``: how each ended.

Why not torch's DistributedDataParallel wrapper: only the LoRA parameters train, so one all-reduce per step of
their gradients (a few MB) is all the communication a step needs, and the PEFT model stays unwrapped: KTO's
reference (the adapter disabled), the EWC penalty (a second backward pass, which DDP's hooks refuse) and
saving work unchanged.

A base that does not fit one device is sharded (``Hyperparameters.sharding`` FSDP): the launch adds
accelerate's FSDP2 flags, the first process loads the model on the host (the others build it empty) and each
shards it onto its device (engine.training.sharding: torch's ``fully_shard`` per decoder layer, through
accelerate, which sends every process its shards of the first one's weights), and its group is a
:class:`ShardedGroup`: FSDP's own reduce-scatter combines the gradients, every process runs the same forward
and backward passes (zero-weight fillers where a micro-batch has fewer examples than processes), and every
process takes part in what needs the whole model (evaluations, gathering a checkpoint's or the adapter's
weights); the main process still reports and writes. Steps, checkpoints and the adapter are those of one
device (tests/engine/test_distributed.py runs it on two CPU processes over gloo).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from engine.errors import Cancelled, EngineError, Unavailable
from engine.jobs.codec import EventCodec
from engine.jobs.core import Noticed, Warned
from engine.jobs.ports import CancelToken, LeaseLost, ProgressSink, StopReason
from engine.training.base_kl import check_shardable
from engine.training.batching import StepBatch
from engine.training.datasets import EncodedExample
from engine.training.kto import KtoObjective
from engine.training.loading import HOST, LoadedModel, load_for_training, release
from engine.training.models import DevicePlan
from engine.training.recipe import run_training, task_objective
from engine.training.run import TrainingResult, TrainingRun
from engine.training.run_state import Checkpointing, CheckpointSave, RngState, checkpoint_failed, own_rng_state
from engine.training.sharding import FSDP_LAUNCH_ARGUMENTS, shard_model, sharding_summary
from engine.training.spec import EvalReported, Sharding, StepMetrics

log = logging.getLogger(__name__)

REPORTS = EventCodec((StepMetrics, EvalReported, Noticed, Warned))
POLL_SECONDS = 0.2
LOG_TAIL_CHARS = 2000


@dataclass(frozen=True)
class Launch:
    """What the worker hands every process: the run and where it trains."""

    run: TrainingRun  # its checkpointing without the save callback (see ``checkpoint_every``)
    plan: DevicePlan  # the device kind and precision; each process takes the device of its local rank
    checkpoint_every: tuple[int, float]  # (steps, seconds), as the job's Checkpointing
    resume_from: Path | None


# ---- the worker's side ----------------------------------------------------------------


def train(run: TrainingRun, sink: ProgressSink, cancel: CancelToken,
          loaded: LoadedModel | None = None) -> TrainingResult:
    """The training runner's train function: in this thread on one device, through accelerate on several."""
    if loaded is None or loaded.devices == 1:
        return run_training(run, sink, cancel, loaded)
    plan, devices = loaded.training_plan, loaded.devices
    release(loaded)  # the processes load their own copies; the device of rank 0 is this one's
    _warn_kto_shares(run, devices, sink)
    return run_distributed(run, sink, cancel, plan=plan, processes=devices)


def _warn_kto_shares(run: TrainingRun, processes: int, sink: ProgressSink) -> None:
    """KTO estimates its reference point z0 on each process's share of a step (engine.training.kto): a share of one
    example has no other's answer to pair with and uses z0 = 0, so a step of fewer than two examples a process
    loses KTO's estimate, as a job of one example a step would (refused when created)."""
    hp = run.spec.hyperparameters
    step = hp.examples_per_step
    if isinstance(task_objective(run.objective), KtoObjective) and step < 2 * processes:
        sink.emit(Warned("KTO_SHARES_OF_ONE", (
            f"a step of {step} examples shared out over {processes} processes leaves some a share of one, whose "
            f"KTO reference point is 0 (no other answer to pair with): give each process two or more (batch_size "
            f"x gradient_accumulation_steps of {2 * processes} or more)")))


def launch_arguments(*, processes: int, device: str, port: int, threads_per_process: int = 1,
                     sharding: Sharding = Sharding.NONE) -> list[str]:
    """``accelerate launch`` arguments for one machine's ``processes`` (GPUs, or CPU processes over gloo);
    with ``sharding`` FSDP, accelerate's FSDP2 flags too (engine.training.sharding)."""
    # accelerate takes one mode: FSDP's launches the same processes as multi-GPU's, with FSDP's environment
    mode = FSDP_LAUNCH_ARGUMENTS if sharding is Sharding.FSDP else ["--multi_gpu"]
    arguments = [*mode, "--num_processes", str(processes), "--num_machines", "1", "--machine_rank", "0",
                 "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no"]
    if device == "cpu":
        arguments += ["--num_cpu_threads_per_process", str(threads_per_process)]
    return [*arguments, "--module", "engine.training.distributed"]


def run_distributed(run: TrainingRun, sink: ProgressSink, cancel: CancelToken, *, plan: DevicePlan,
                    processes: int) -> TrainingResult:
    """Train ``run`` on ``processes`` devices of ``plan``'s kind and wait for it, forwarding reports, storing
    checkpoints and passing on a stop; the main process's result, or the error the run failed with."""
    if run.spec.hyperparameters.sharding is Sharding.FSDP:
        check_shardable(run.objective)
    ckpt = run.checkpointing
    scratch = run.output_dir.parent
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ranks-", dir=scratch) as tmp:
        run_dir = Path(tmp)
        (run_dir / "outbox").mkdir()
        launch = Launch(run=replace(run, checkpointing=None), plan=plan,
                        checkpoint_every=(ckpt.every_steps, ckpt.every_seconds) if ckpt else (0, 0.0),
                        resume_from=ckpt.resume_from if ckpt else None)
        torch.save(launch, run_dir / "run.pt")
        threads = max(1, (os.cpu_count() or 1) // processes)
        command = [sys.executable, "-m", "engine.training.distributed", "launch",
                   *launch_arguments(processes=processes, device=plan.device, port=_free_port(),
                                     threads_per_process=threads, sharding=run.spec.hyperparameters.sharding),
                   str(run_dir)]
        reports = _Reports(run_dir, sink, ckpt.save if ckpt else None)
        with (run_dir / "launch.log").open("wb") as output:
            process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=_child_env())
            try:
                _follow(process, run_dir, reports, cancel)
            finally:
                if process.poll() is None:  # this thread is leaving early (an error): leave nothing running
                    process.terminate()
                    process.wait()
        return _outcome(process.returncode, run_dir)


class _Reports:
    """The main process's reports, read as they are written: progress to the sink, checkpoints to storage."""

    def __init__(self, run_dir: Path, sink: ProgressSink, save: CheckpointSave | None) -> None:
        self._path = run_dir / "events.jsonl"
        self._sink = sink
        self._save = save
        self._offset = 0

    def forward(self) -> None:
        if not self._path.exists():
            return
        with self._path.open("rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits for the next look
        self._offset += len(complete)
        for line in complete.splitlines():
            item = json.loads(line)
            if item["type"] == "checkpoint":
                eval_loss = item.get("eval_loss")
                self._store(int(item["step"]), Path(item["dir"]), float(item["loss"]),
                            None if eval_loss is None else float(eval_loss))
            else:
                self._sink.emit(REPORTS.decode(item["type"], json.dumps(item["payload"])))

    def _store(self, step: int, state_dir: Path, loss: float, eval_loss: float | None) -> None:
        try:
            if self._save is not None:
                self._save(step, state_dir, loss, eval_loss)
        except LeaseLost:
            raise
        except (OSError, EngineError) as exc:
            self._sink.emit(checkpoint_failed(step, exc))
        finally:
            shutil.rmtree(state_dir, ignore_errors=True)


def _follow(process: subprocess.Popen[bytes], run_dir: Path, reports: _Reports, cancel: CancelToken) -> None:
    stopping = False
    while True:
        ended = process.poll() is not None
        try:
            reports.forward()
        except LeaseLost:
            cancel.cancel(StopReason.LEASE_LOST)
            _ask_to_stop(run_dir, StopReason.LEASE_LOST)
            raise
        if cancel.cancelled and not stopping:
            _ask_to_stop(run_dir, cancel.reason or StopReason.CANCEL)
            stopping = True
        if ended:
            return
        time.sleep(POLL_SECONDS)


def _ask_to_stop(run_dir: Path, reason: StopReason) -> None:
    tmp = run_dir / "stop.tmp"
    tmp.write_text(reason.value)
    os.replace(tmp, run_dir / "stop")


def _outcome(returncode: int | None, run_dir: Path) -> TrainingResult:
    if returncode == 0 and (run_dir / "result.pt").exists():
        result: TrainingResult = torch.load(run_dir / "result.pt", weights_only=False)
        return result
    for path in sorted(run_dir.glob("error-*.pt")):  # rank 0's first: the one that reports
        error: EngineError = torch.load(path, weights_only=False)
        raise error
    output = (run_dir / "launch.log").read_text(errors="replace")[-LOG_TAIL_CHARS:]
    raise Unavailable("TRAINING_PROCESS_FAILED",
                         f"the training processes ended with exit code {returncode}: {output}",
                         metadata={"exit_code": str(returncode)})


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _child_env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[2])  # the processes import this tree's engine
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{path}" if path else root}


def launcher_main(arguments: list[str]) -> None:
    """``accelerate launch`` (in this process), after asking Linux to stop it when the worker's thread that
    started it ends: a worker killed outright takes its training processes with it (torch's launcher stops
    its processes when it is stopped)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        log.warning("training processes will outlive a killed worker (no prctl here)")
    from accelerate.commands.launch import launch_command, launch_command_parser

    launch_command(launch_command_parser().parse_args(arguments))


# ---- each process's side ----------------------------------------------------------------


class RankGroup:
    """engine.training.run.DataParallel over torch.distributed's default group (set up by accelerate)."""

    def __init__(self, rank: int, world: int, device: str, stop_file: Path) -> None:
        self.rank = rank
        self.world = world
        self._device = device  # where collectives' tensors live (NCCL needs them on the GPU)
        self._cuda = torch.device(device).type == "cuda"  # whether a process's CUDA generator draws (dropout)
        self._stop_file = stop_file
        self._rng: list[RngState] | None = None  # every process's RNG states after the last step's backward passes

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, step: StepBatch) -> StepBatch:
        """Every ``world``-th example of each micro-batch from this rank's position: shares differ by at most one
        example per micro-batch (a rank may get none of a small step; it still takes part in the mean)."""
        picks = [i for micro in step.micro_batches for i in list(micro)[self.rank :: self.world]]
        return StepBatch([step.examples[i] for i in picks], [step.indices[i] for i in picks],
                         max(1, math.ceil(step.micro_size / self.world)))

    def agree_to_stop(self, cancel: CancelToken) -> None:
        import torch.distributed as dist

        flag = torch.tensor([1.0 if self._stop_file.exists() else 0.0], device=self._device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() and not cancel.cancelled:
            try:
                reason = StopReason(self._stop_file.read_text().strip())
            except (OSError, ValueError):
                reason = StopReason.CANCEL
            cancel.cancel(reason)

    def loss_scale(self, weight: float) -> float:
        return 1.0  # the gradients are combined by :meth:`sync_gradients`

    def agree(self, flag: bool) -> bool:
        import torch.distributed as dist

        value = torch.tensor([1.0 if flag else 0.0], device=self._device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def sync_gradients(self, params: Sequence[torch.nn.Parameter], weight: float, task_loss: float) -> float:
        import torch.distributed as dist

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        head = torch.tensor([weight, task_loss * weight], device=self._device)
        flat = torch.cat([head, *(g.reshape(-1).float().to(self._device) * weight for g in grads)])
        dist.all_reduce(flat)
        total = float(flat[0])
        scale = 1.0 / total if total > 0 else 0.0
        offset = 2
        for p in params:
            p.grad = (flat[offset : offset + p.numel()] * scale).view_as(p).to(device=p.device, dtype=p.dtype)
            offset += p.numel()
        self._rng = self._gather_rng()  # for a checkpoint of this step (see rank_rng)
        return float(flat[1]) * scale

    def rank_rng(self) -> list[RngState] | None:
        """Checkpointing.rank_rng: every process's RNG states at a checkpoint, which only the main process takes
        (the others go on without a collective), so they are those gathered with the step's gradients: a process
        draws nothing between its backward passes and the checkpoint at the step's end or at the next step's
        start (penalty, clipping, optimiser, and the eval split's loss in eval mode, draw none); this process's
        own are read now. None before a step of this run (no checkpoint is taken then)."""
        if self._rng is None:
            return None
        states = list(self._rng)
        states[self.rank] = own_rng_state(self._cuda)
        return states

    def _gather_rng(self) -> list[RngState]:
        """Every process's RNG states, in rank order (a collective: all processes call it). One all-gather of a
        few kB: the CPU generator's state (and the device's), the same size in every process."""
        import torch.distributed as dist

        own = own_rng_state(self._cuda)
        packed = torch.cat([own["cpu"], own["cuda"]]).to(self._device)
        parts = [torch.empty_like(packed) for _ in range(self.world)]
        dist.all_gather(parts, packed)
        cpu = own["cpu"].numel()
        return [{"cpu": part[:cpu].cpu().clone(), "cuda": part[cpu:].cpu().clone()} for part in parts]


class ShardedGroup(RankGroup):
    """The processes of a sharded (FSDP) run: FSDP's own hooks combine the gradients (each layer's
    reduce-scatter in the backward pass, an average over the processes), so each process's loss is scaled by
    its share's weight times their number before its backward pass, and the result divided by the step's
    total weight: the weighted mean, as :meth:`RankGroup.sync_gradients` takes it.

    Every process must run the same forward and backward passes (each is a collective per layer), so a share
    keeps one micro-batch per micro-batch of the step, each of ``ceil(n / world)`` examples: a process short of
    examples in one (fewer than processes) pads it with zero-weight copies, which add nothing to the loss."""

    def shard(self, step: StepBatch) -> StepBatch:
        examples: list[EncodedExample] = []
        indices: list[int] = []
        for micro in step.micro_batches:
            picks = list(micro)[self.rank :: self.world]
            examples += [step.examples[i] for i in picks]
            indices += [step.indices[i] for i in picks]
            fillers = math.ceil(len(micro) / self.world) - len(picks)
            examples += [replace(step.examples[micro.start], weight=0.0)] * fillers
            indices += [step.indices[micro.start]] * fillers
        return StepBatch(examples, indices, max(1, math.ceil(step.micro_size / self.world)))

    def loss_scale(self, weight: float) -> float:
        return weight * self.world  # FSDP averages over the processes: the sum of weight x gradient

    def sync_gradients(self, params: Sequence[torch.nn.Parameter], weight: float, task_loss: float) -> float:
        import torch.distributed as dist

        head = torch.tensor([weight, task_loss * weight], device=self._device)
        dist.all_reduce(head)
        total = float(head[0])
        scale = 1.0 / total if total > 0 else 0.0
        with torch.no_grad():
            for p in params:
                if p.grad is not None:
                    p.grad.mul_(scale)
        return float(head[1]) * scale

    def rank_rng(self) -> list[RngState] | None:
        """Every process takes part in a sharded run's checkpoint (engine.training.run_state.save_state calls this
        in each, before gathering the weights): the states are gathered then."""
        return self._gather_rng()


class _ReportFile:
    """The main process's ProgressSink, and the checkpoint hand-over, as lines of ``events.jsonl``."""

    def __init__(self, run_dir: Path) -> None:
        self._path = run_dir / "events.jsonl"
        self._outbox = run_dir / "outbox"

    def emit(self, payload: object) -> None:
        kind, data = REPORTS.encode(payload)
        self._write({"type": kind, "payload": json.loads(data)})

    def save_checkpoint(self, step: int, state_dir: Path, loss: float, eval_loss: float | None) -> None:
        """Checkpointing.save: hand the state directory to the worker, which stores it while training goes on."""
        handed = self._outbox / f"step-{step}"
        os.rename(state_dir, handed)
        self._write({"type": "checkpoint", "step": step, "dir": str(handed), "loss": loss, "eval_loss": eval_loss})

    def _write(self, item: dict[str, Any]) -> None:
        with self._path.open("a") as handle:
            handle.write(json.dumps(item) + "\n")


class _Silent:
    def emit(self, payload: object) -> None:
        pass


def rank_main(run_dir: Path) -> int:
    """One process of a distributed run (started by ``accelerate launch``); its exit code."""
    from accelerate import PartialState

    launch: Launch = torch.load(run_dir / "run.pt", weights_only=False, map_location="cpu")  # each to its device
    state = PartialState(cpu=launch.plan.device == "cpu")
    rank = state.process_index
    plan = launch.plan.on_device(state.local_process_index)
    if plan.device == "cuda":
        torch.cuda.set_device(plan.index)
    sharded = launch.run.spec.hyperparameters.sharding is Sharding.FSDP
    group = (ShardedGroup if sharded else RankGroup)(rank, state.num_processes, plan.torch_device, run_dir / "stop")
    report = _ReportFile(run_dir) if group.is_main else None
    every_steps, every_seconds = launch.checkpoint_every
    run = replace(launch.run, parallel=group, checkpointing=Checkpointing(
        every_steps=every_steps, every_seconds=every_seconds, scratch_dir=run_dir / f"scratch-{rank}",
        save=report.save_checkpoint if report else _never, resume_from=launch.resume_from, rank_rng=group.rank_rng,
    ))
    try:
        loaded = _load(run, plan, group)
        if report is not None and isinstance(group, ShardedGroup):
            report.emit(Noticed("SHARDED", sharding_summary(loaded.model, group.world)))
        result = run_training(run, report or _Silent(), CancelToken(), loaded)
    except EngineError as exc:
        torch.save(exc, run_dir / f"error-{rank}.pt")
        return 3 if isinstance(exc, Cancelled) else 1
    if group.is_main:
        shared = LoadedModel(None, None, plan, state.num_processes, launch.run.spec.hyperparameters.sharding)
        torch.save(replace(result, device=shared.description), run_dir / "result.pt")
    return 0


def _load(run: TrainingRun, plan: DevicePlan, group: RankGroup) -> LoadedModel:
    """This process's model: loaded on its device, or (sharded) loaded on the host by the first process, built
    empty by the others, and sharded onto each one's device."""
    if not isinstance(group, ShardedGroup):
        return load_for_training(run, plan)
    loaded = load_for_training(run, HOST, empty=not group.is_main)  # one copy of the weights on the host
    loaded.model = shard_model(loaded.model, plan.torch_device, is_main=group.is_main)
    loaded.plan = plan
    return loaded


def _never(step: int, state_dir: Path, loss: float, eval_loss: float | None) -> None:
    raise AssertionError("only the main process checkpoints")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    if sys.argv[1] == "launch":
        launcher_main(sys.argv[2:])
    else:
        sys.exit(rank_main(Path(sys.argv[1])))
