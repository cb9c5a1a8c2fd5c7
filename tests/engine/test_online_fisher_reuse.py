"""An online session measures its start version's Fisher once: handed back to the queue (a store unreachable for a
moment) and prepared again, it loads the snapshot its earlier run stored (OnlineOutput.fisher_snapshot), as a
resumed training job does, instead of measuring and storing another one each time; its EWC penalty is the same.
A snapshot gone since is measured again, with a notice (review finding). On the tiny model, the stores faked."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

import engine.online.interruptions as interruptions
from engine.continual.planner import EwcPlanner
from engine.continual.spec import snapshot_id_from_name
from engine.domain import LoraSpec
from engine.errors import Cancelled
from engine.jobs.ports import CancelToken, StopReason
from engine.online.runner import OnlineRunner, training_spec
from engine.online.spec import OnlineOutput
from engine.stores.memory import InMemoryFisherSnapshots
from engine.training.loading import save_adapter
from engine.training.ports import PlanRequest
from engine.training.spec import CheckpointRecord
from tests.engine.test_online_learner import loaded, rows, session
from tests.engine.test_online_publication import _Controls
from tests.engine.test_online_transient_takeover import _ctx, _Unreachable


@pytest.fixture(autouse=True)
def _short_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(interruptions, "INTERRUPTION_WAIT_SECONDS", 0.05)
    monkeypatch.setattr(interruptions, "INTERRUPTION_WAIT_CAP_SECONDS", 0.1)
    monkeypatch.setattr(interruptions, "STOP_POLL_SECONDS", 0.01)


def _start() -> SimpleNamespace:
    """The start version as the planner reads it: trained on known data, with no Fisher of its own."""
    return SimpleNamespace(version="v1.0", base_model="tiny", ewc_fisher_space=None, fisher_snapshot="", dataset=None,
                           lora=LoraSpec(rank=4, alpha=8, dropout=0.0))


class _Versions:
    """The start version's own training data (engine.continual.version_data.VersionDatasets)."""

    async def of(self, record: Any) -> SimpleNamespace:
        return SimpleNamespace(note="", examples=[r.example() for r in rows(6)])


class _Registry:
    async def get(self, *args: Any, **kwargs: Any) -> SimpleNamespace:
        return _start()


class _Preparer:
    def __init__(self, model_dir: Path, start_dir: Path) -> None:
        self.model, self.start = model_dir, start_dir

    async def fetch_parent(self, parent: Any, dest: Path) -> Path:
        return self.start

    async def model_dir(self, base_model: str) -> Path:
        return self.model


@pytest.fixture
def start_dir(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """The start version's adapter (the tiny model's fresh LoRA)."""
    return save_adapter(loaded(tiny_model_dir, tmp_path / "made").model, tmp_path / "start")


def _notices(ctx: Any, code: str) -> list[str]:
    return [p.message for p in ctx.recorded if getattr(p, "code", "") == code]


def _ewc_ctx(tmp_path: Path, output: OnlineOutput | None = None) -> Any:
    ctx = _ctx(tmp_path, output)
    ctx.job.spec = session(replay_fraction=0.0, ewc_lambda=0.3)
    return ctx


async def test_a_session_handed_back_while_preparing_stores_its_fisher_once(
        tiny_model_dir: Path, tmp_path: Path, start_dir: Path) -> None:
    """The reviewer's case: a store unreachable after the EWC plan (the checkpoint cannot be fetched) hands the
    session back; each worker taking it prepares it again."""
    snapshots = InMemoryFisherSnapshots()
    runner = OnlineRunner(
        store=_Controls(), registry=_Registry(),  # type: ignore[arg-type]
        preparer=_Preparer(tiny_model_dir, start_dir),  # type: ignore[arg-type]
        planner=EwcPlanner(registry=None, snapshots=snapshots, versions=_Versions()),  # type: ignore[arg-type]
        artifacts=_Unreachable(), load=lambda run: loaded(tiny_model_dir, tmp_path / "w"))
    checkpoint = CheckpointRecord(step=3, key="online/checkpoints/s1/3", uri="", sha256="0" * 64, size_bytes=10,
                                  loss=0.5, eval_loss=None, create_time=datetime.now(UTC))
    output = OnlineOutput(checkpoints=(checkpoint,))
    for attempt in range(1, 4):
        ctx = _ewc_ctx(tmp_path / f"run{attempt}", output)
        with pytest.raises(Cancelled):
            await runner.run(ctx)
        assert ctx.cancel.reason is StopReason.SHUTDOWN and ctx.job.output.interruptions == attempt
        output = ctx.job.output  # what the job store keeps for the next worker
        assert output.fisher_snapshot, "the session records the snapshot its EWC penalty was measured as"
        assert len(snapshots.snapshots) == 1, (
            f"prepared {attempt} times, the session stored {len(snapshots.snapshots)} Fisher snapshots of its "
            "start version: it measured it again on every hand-back")
        if attempt > 1:
            assert _notices(ctx, "FISHER_OF_EARLIER_RUN"), ctx.recorded
    assert list(snapshots.snapshots) == [snapshot_id_from_name(output.fisher_snapshot)]


def _request(tiny_model_dir: Path, start_dir: Path, ctx: Any, model: Any) -> PlanRequest:
    start = _start()
    return PlanRequest(spec=training_spec(ctx.job.spec, start, 4), parent=start,  # type: ignore[arg-type]
                       parent_dir=start_dir,
                       model_dir=tiny_model_dir, examples=[], model=model, in_worker=ctx.in_worker, sink=ctx.sink,
                       cancel=CancelToken())


async def test_the_penalty_of_a_session_prepared_again_is_the_same_and_a_gone_snapshot_is_measured_again(
        tiny_model_dir: Path, tmp_path: Path, start_dir: Path) -> None:
    snapshots = InMemoryFisherSnapshots()
    runner = OnlineRunner(store=None, registry=None, preparer=None,  # type: ignore[arg-type]
                          planner=EwcPlanner(registry=None, snapshots=snapshots,  # type: ignore[arg-type]
                                             versions=_Versions()), artifacts=None)  # type: ignore[arg-type]
    model = loaded(tiny_model_dir, tmp_path / "w")
    first_ctx = _ewc_ctx(tmp_path / "first")
    first = await runner._prepare(first_ctx, _request(tiny_model_dir, start_dir, first_ctx, model))
    stored = first_ctx.job.output.fisher_snapshot
    assert stored and len(snapshots.snapshots) == 1

    again_ctx = _ewc_ctx(tmp_path / "again", first_ctx.job.output)  # a worker taking the session over
    again = await runner._prepare(again_ctx, _request(tiny_model_dir, start_dir, again_ctx, model))
    assert len(snapshots.snapshots) == 1 and again_ctx.job.output.fisher_snapshot == stored
    assert _notices(again_ctx, "FISHER_OF_EARLIER_RUN") and not _notices(again_ctx, "FISHER_MEASURED_AGAIN")

    del snapshots.snapshots[snapshot_id_from_name(stored)]  # deleted meanwhile (DeleteFisherSnapshot)
    gone_ctx = _ewc_ctx(tmp_path / "gone", first_ctx.job.output)
    measured = await runner._prepare(gone_ctx, _request(tiny_model_dir, start_dir, gone_ctx, model))
    said = _notices(gone_ctx, "FISHER_MEASURED_AGAIN")
    assert len(said) == 1 and stored in said[0], gone_ctx.recorded
    remeasured = gone_ctx.job.output.fisher_snapshot
    assert remeasured and remeasured != stored and list(snapshots.snapshots) == [snapshot_id_from_name(remeasured)]

    with torch.no_grad():  # away from the start version, where every penalty is 0
        for n, p in enumerate(first.params):
            p.add_(0.01 * (1 + n % 3))
    values = [float(learner.penalty(model.model).detach()) for learner in (first, again, measured)]  # type: ignore[misc]
    assert values[0] > 0
    assert values[1] == pytest.approx(values[0], rel=1e-6) and values[2] == pytest.approx(values[0], rel=1e-6)
