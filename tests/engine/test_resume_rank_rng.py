"""Every process's RNG states in a checkpoint of a run on several processes (engine.training.run_state,
engine.training.distributed): their shares of a step differ (a process with an empty share runs no forward pass),
so each draws its own number of dropout masks and their generators drift apart; a resume on as many processes
gives each its own states back, and continues the uninterrupted run's trajectory with dropout on."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from engine.errors import Cancelled
from engine.jobs.ports import CancelToken
from engine.training.distributed import RankGroup, run_distributed
from engine.training.models import DevicePlan
from engine.training.run import TrainingRun
from engine.training.run_state import Checkpointing, own_rng_state, rng_to_restore, save_state
from tests.engine.test_distributed import PauseAfter, checkpointed, make_run, two_devices
from tests.engine.test_training import RecordingSink


def states(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return own_rng_state(cuda=False)


def test_a_resume_on_as_many_processes_gives_each_its_own_states_and_otherwise_the_main_ones() -> None:
    main, second = states(1), states(2)
    checkpoint = {"rng_cpu": main["cpu"], "rng_cuda": main["cuda"], "rng_ranks": [main, second]}
    assert torch.equal(rng_to_restore(checkpoint, 1, 2)["cpu"], second["cpu"])
    assert torch.equal(rng_to_restore(checkpoint, 0, 2)["cpu"], main["cpu"])
    # another number of processes: every one starts from the main process's, as a run starts from one seed
    assert all(torch.equal(rng_to_restore(checkpoint, rank, world)["cpu"], main["cpu"])
               for rank, world in ((0, 1), (0, 3), (1, 3), (2, 3)))
    # a checkpoint of one process, or one taken before every process's states were kept: the main one's for all
    older = {"rng_cpu": main["cpu"], "rng_cuda": torch.empty(0)}
    assert all(torch.equal(rng_to_restore(older, rank, world)["cpu"], main["cpu"]) for rank, world in ((0, 1), (1, 2)))


class _Model:
    def save_pretrained(self, path: Path, **kwargs) -> None:
        path.mkdir(parents=True)


def _saved(tmp_path: Path, rank_rng) -> dict:
    kept: dict = {}

    def save(step: int, state_dir: Path, loss: float, eval_loss: float | None) -> None:
        kept.update(torch.load(state_dir / "state.pt", weights_only=True))

    ckpt = Checkpointing(every_steps=1, every_seconds=0, scratch_dir=tmp_path, save=save, rank_rng=rank_rng)
    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([weight])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    torch.manual_seed(5)
    assert save_state(ckpt, _Model(), optimizer, scheduler, step=1, losses=(1.0, 1.0), eval_loss=None,
                      data_key={}, sink=RecordingSink())
    return kept


def test_a_checkpoint_keeps_every_processs_states_and_one_processs_its_format(tmp_path: Path) -> None:
    main, second = states(1), states(2)
    several = _saved(tmp_path / "several", lambda: [main, second])
    assert [torch.equal(s["cpu"], t["cpu"]) for s, t in zip(several["rng_ranks"], (main, second), strict=True)] \
        == [True, True]
    assert torch.equal(several["rng_cpu"], states(5)["cpu"])  # the main process's own, read when it saves
    one = _saved(tmp_path / "one", None)
    assert "rng_ranks" not in one and torch.equal(one["rng_cpu"], states(5)["cpu"])


def test_a_process_gathers_the_states_with_its_gradients_and_gives_its_own_as_they_are_at_the_checkpoint(
        tmp_path: Path) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        group = RankGroup(0, 1, "cpu", tmp_path / "stop")
        assert group.rank_rng() is None  # no step yet: nothing to checkpoint
        param = torch.nn.Parameter(torch.ones(3))
        param.grad = torch.ones(3)
        torch.manual_seed(3)
        group.sync_gradients([param], 1.0, 0.5)
        after_step = own_rng_state(cuda=False)
        torch.rand(4)  # this process draws after the step (the others' states are those of the step)
        states = group.rank_rng()
        assert states is not None and len(states) == 1 and states[0]["cuda"].numel() == 0
        assert torch.equal(states[0]["cpu"], own_rng_state(cuda=False)["cpu"])
        assert torch.equal(group._rng[0]["cpu"], after_step["cpu"])  # type: ignore[index]
    finally:
        dist.destroy_process_group()


# Five examples, batches of 4: the second step of each epoch has one example, so only the first process runs a
# forward pass in it (the second's share is empty) and the two processes' dropout generators drift apart. 24 steps:
# the pause travels from the relayed step report to a stop file the processes read each step, so on a loaded
# machine they take a few more steps before it lands.
SETTINGS = {"epochs": 12, "batch_size": 4, "learning_rate": 2e-2}


def with_dropout(run: TrainingRun) -> TrainingRun:
    return replace(run, spec=replace(run.spec, lora=replace(run.spec.lora, dropout=0.3)))


def rng_ranks(checkpoint: Path) -> list[dict[str, torch.Tensor]]:
    """Every process's RNG states in ``checkpoint``: its CPU generator's, and its device's (empty on CPUs)."""
    return torch.load(checkpoint / "state.pt", weights_only=True)["rng_ranks"]


def dropout_generators(checkpoint: Path, plan: DevicePlan) -> list[torch.Tensor]:
    """Every process's state of the generator its dropout masks are drawn from: that of the device the plan trains
    on (on GPUs the CUDA generator's; the CPU generator then draws no dropout mask)."""
    return [s["cuda" if plan.device == "cuda" else "cpu"] for s in rng_ranks(checkpoint)]


@pytest.mark.slow
@pytest.mark.model
def test_two_processes_with_dropout_resumed_on_two_continue_the_uninterrupted_trajectory(
        tiny_model_dir: Path, tmp_path: Path) -> None:
    # The uninterrupted run checkpoints at the end of every step. A run resumed from its checkpoint of step 3 (the
    # processes' generators apart by then) continues its losses, dropout masks and all, and is paused: the
    # checkpoint a pause takes (at the start of the next step) holds the states the uninterrupted run had then.
    whole, periodic, plan = RecordingSink(), {}, two_devices()
    run_distributed(checkpointed(with_dropout(make_run(tiny_model_dir, tmp_path / "whole" / "adapter", **SETTINGS)),
                                 periodic, tmp_path / "whole", every_steps=1),
                    whole, CancelToken(), plan=plan, processes=2)
    assert len(whole.steps) == 24 and list(periodic) == list(range(1, 24))

    cancel, paused_at = CancelToken(), {}
    resumed = PauseAfter(cancel, step=4)
    run = checkpointed(with_dropout(make_run(tiny_model_dir, tmp_path / "resumed" / "adapter", **SETTINGS)),
                       paused_at, tmp_path / "resumed", resume_from=periodic[3])
    with pytest.raises(Cancelled):
        run_distributed(run, resumed, cancel, plan=plan, processes=2)
    at = [s.step for s in resumed.steps][-1]
    assert [s.step for s in resumed.steps] == list(range(4, at + 1)) and at < len(whole.steps)
    assert [s.loss for s in resumed.steps] == pytest.approx([s.loss for s in whole.steps[3:at]], abs=1e-6)
    assert list(paused_at) == [at]
    main, second = dropout_generators(periodic[3], plan)
    assert main.numel() and not torch.equal(main, second), (
        "the processes drew as many dropout masks: this test shows nothing")
    assert all(torch.equal(mine[generator], theirs[generator])
               for mine, theirs in zip(rng_ranks(paused_at[at]), rng_ranks(periodic[at]), strict=True)
               for generator in ("cpu", "cuda"))
