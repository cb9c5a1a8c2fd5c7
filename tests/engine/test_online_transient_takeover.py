"""A session handed back to the queue for a store's error (TRANSIENT_ERRORS) is taken by a worker that sets it up
again: the start version, the model, the controls, the checkpoint and the examples it names. The same outage there
hands it back again instead of failing it (the job manager would end an Unavailable FAILED), after a wait that
grows with the interruptions in a row (OnlineOutput.interruptions) and that a stop ends early. The
MAX_INTERRUPTIONS-th in a row with no update in between fails the session with the last error, so that an error
that does not go away (a bucket deleted, a read-only work dir) does not requeue it forever (review findings)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import engine.online.interruptions as interruptions
from engine.errors import Cancelled, Unavailable
from engine.jobs.context import JobSlots
from engine.jobs.core import JobState
from engine.jobs.manager import JobManager
from engine.jobs.ports import CancelToken, StopReason
from engine.online.learner import OnlineLearner, UpdateResult
from engine.online.runner import OnlineRunner
from engine.online.spec import OnlineOutput
from engine.stores.memory import InMemoryJobStore, InProcessQueue
from engine.training.spec import CheckpointRecord, LoraSpec
from tests.engine.test_online_learner import loaded, session
from tests.engine.test_online_publication import _Controls, _Ctx, _Registry, _session

START = SimpleNamespace(version="v1.0", ewc_fisher_space=None, lora=LoraSpec(rank=4, alpha=8, dropout=0.0))
DOWN = Unavailable("DATABASE_UNAVAILABLE", "PostgreSQL is unavailable (ConnectionRefusedError)")


@pytest.fixture(autouse=True)
def _short_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The waits before a hand-back, in hundredths of what they are (the code that waits still runs)."""
    monkeypatch.setattr(interruptions, "INTERRUPTION_WAIT_SECONDS", 0.05)
    monkeypatch.setattr(interruptions, "INTERRUPTION_WAIT_CAP_SECONDS", 1.2)
    monkeypatch.setattr(interruptions, "STOP_POLL_SECONDS", 0.01)


class _StillDown(_Controls):
    async def controls(self, session_id: str):
        raise DOWN


class _Registry1:
    async def get(self, *args: Any, **kwargs: Any) -> SimpleNamespace:
        return START


class _Preparer:
    def __init__(self, model_dir: Path, error: BaseException | None = None) -> None:
        self.model = model_dir
        self.error = error
        self.fetches = 0

    async def fetch_parent(self, parent: Any, dest: Path) -> Path:
        self.fetches += 1
        if self.error is not None:
            raise self.error
        return dest

    async def model_dir(self, base_model: str) -> Path:
        return self.model


def _runner(tiny_model_dir: Path, tmp_path: Path, store: Any, preparer: _Preparer | None = None,
            artifacts: Any = None) -> OnlineRunner:
    return OnlineRunner(store=store, registry=_Registry1(), preparer=preparer or _Preparer(tiny_model_dir),  # type: ignore[arg-type]
                        planner=None, artifacts=artifacts,
                        load=lambda run: loaded(tiny_model_dir, tmp_path))


def _ctx(tmp_path: Path, output: OnlineOutput | None = None) -> _Ctx:
    ctx = _Ctx(tmp_path, output or OnlineOutput())
    ctx.cancel = CancelToken()  # type: ignore[assignment]
    ctx.transition = lambda *a, **k: None  # type: ignore[attr-defined]
    ctx.started = lambda *a, **k: None  # type: ignore[attr-defined]
    ctx.sink = SimpleNamespace(emit=lambda p: None)  # type: ignore[attr-defined]
    return ctx


def _codes(ctx: _Ctx, code: str) -> list[str]:
    return [p.message for p in ctx.recorded if getattr(p, "code", "") == code]  # type: ignore[attr-defined]


async def test_a_worker_taking_over_during_the_outage_hands_the_session_back(tiny_model_dir: Path,
                                                                            tmp_path: Path) -> None:
    """The reviewer's case: the controls still unreachable when the next worker sets the session up."""
    runner = _runner(tiny_model_dir, tmp_path, _StillDown())
    ctx = _ctx(tmp_path)
    try:
        await runner.run(ctx)  # type: ignore[arg-type]
    except Unavailable as exc:
        pytest.fail(f"the worker taking the session over raised {exc.reason}: the job manager ends it FAILED, "
                    "not QUEUED as the running session's handling promises")
    except Cancelled as stopped:
        assert stopped.message == "stopped to continue later"
    else:
        pytest.fail("the session ran")
    assert ctx.cancel.reason is StopReason.SHUTDOWN, "the job manager queues it again, as at a shutdown"
    said = _codes(ctx, "SESSION_INTERRUPTED")
    assert len(said) == 1 and "PostgreSQL is unavailable" in said[0], said
    assert ctx.job.output.interruptions == 1


class _Unreachable:
    """The object store cut off: the checkpoint cannot be fetched."""

    async def get_file(self, key: str, dest: Path) -> None:
        raise ConnectionResetError(104, "Connection reset by peer")

    async def get_bytes(self, key: str) -> bytes:
        raise ConnectionResetError(104, "Connection reset by peer")


async def test_a_checkpoint_that_cannot_be_fetched_hands_the_session_back(tiny_model_dir: Path,
                                                                         tmp_path: Path) -> None:
    checkpoint = CheckpointRecord(step=3, key="online/checkpoints/s1/3", uri="", sha256="0" * 64, size_bytes=10,
                                  loss=0.5, eval_loss=None, create_time=datetime.now(UTC))
    runner = _runner(tiny_model_dir, tmp_path, _Controls(), artifacts=_Unreachable())
    ctx = _ctx(tmp_path, OnlineOutput(checkpoints=(checkpoint,), interruptions=2))
    started = time.monotonic()
    with pytest.raises(Cancelled):
        await runner.run(ctx)  # type: ignore[arg-type]
    assert ctx.cancel.reason is StopReason.SHUTDOWN
    assert ctx.job.output.interruptions == 3
    assert time.monotonic() - started >= 0.1, "the third in a row waits (0.05 s doubled, here) before"
    said = _codes(ctx, "SESSION_INTERRUPTED")
    assert len(said) == 1 and "ConnectionResetError" in said[0] and "3 interruptions in a row" in said[0], said


async def test_a_stop_during_the_wait_ends_it(tiny_model_dir: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(interruptions, "INTERRUPTION_WAIT_SECONDS", 60.0)
    monkeypatch.setattr(interruptions, "INTERRUPTION_WAIT_CAP_SECONDS", 60.0)
    preparer = _Preparer(tiny_model_dir, DOWN)
    runner = _runner(tiny_model_dir, tmp_path, _Controls(), preparer)
    ctx = _ctx(tmp_path, OnlineOutput(interruptions=4))
    asyncio.get_running_loop().call_later(0.2, ctx.cancel.cancel, StopReason.CANCEL)  # StopOnlineSession
    started = time.monotonic()
    with pytest.raises(Cancelled) as stopped:
        await runner.run(ctx)  # type: ignore[arg-type]
    assert time.monotonic() - started < 10, "the client's stop ended the wait"
    assert ctx.cancel.reason is StopReason.CANCEL and stopped.value.message == "stopped before learning started"
    assert not _codes(ctx, "SESSION_INTERRUPTED")


async def test_the_limit_fails_the_session_with_the_last_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    limit = interruptions.MAX_INTERRUPTIONS
    error = PermissionError(13, "Permission denied", "/work/jobs/s1/start")  # a read-only work dir
    runner = _runner(tiny_model_dir, tmp_path, _Controls(), _Preparer(tiny_model_dir, error))
    ctx = _ctx(tmp_path, OnlineOutput(interruptions=limit - 1))
    with pytest.raises(Unavailable) as failed:
        await runner.run(ctx)  # type: ignore[arg-type]
    assert failed.value.reason == "ARTIFACT_STORE_UNAVAILABLE" and "PermissionError" in failed.value.message
    assert f"{limit} times in a row" in failed.value.message
    assert ctx.job.output.interruptions == limit and not ctx.cancel.cancelled


async def test_the_running_loop_counts_too_and_a_steady_run_starts_again(tiny_model_dir: Path,
                                                                         tmp_path: Path) -> None:
    limit = interruptions.MAX_INTERRUPTIONS
    learner = OnlineLearner(loaded(tiny_model_dir, tmp_path), session(replay_fraction=0.0))
    running = _session(learner, tmp_path, OnlineOutput(interruptions=limit - 1), _Registry(), store=_Controls())
    running.ctx.cancel = CancelToken()  # type: ignore[assignment]
    running.ran_since = time.monotonic()  # type: ignore[attr-defined]
    with pytest.raises(Unavailable) as failed:
        await running._interrupted(DOWN)
    assert failed.value.reason == "DATABASE_UNAVAILABLE" and f"{limit} times in a row" in failed.value.message

    running.ctx.set_output(OnlineOutput(interruptions=limit - 1))
    running.ran_since = time.monotonic() - interruptions.STEADY_SECONDS - 1
    with pytest.raises(Cancelled):
        await running._interrupted(DOWN)
    assert running.ctx.job.output.interruptions == 1, "a run of STEADY_SECONDS starts counting again"


async def test_an_update_starts_the_count_again(tiny_model_dir: Path, tmp_path: Path) -> None:
    learner = OnlineLearner(loaded(tiny_model_dir, tmp_path), session(replay_fraction=0.0))
    running = _session(learner, tmp_path, OnlineOutput(interruptions=7), _Registry(), store=_Controls())

    async def no_live(update: int) -> None:
        pass

    running._refresh_live = no_live  # type: ignore[method-assign]

    def update(learning_rate: float) -> UpdateResult:
        learner.updates += 1
        return UpdateResult(learner.updates, 1.0, 4, 0, 0.0)

    learner.update = update  # type: ignore[method-assign]
    await running._update(1e-4)
    assert running.ctx.job.output.interruptions == 0


async def test_a_session_whose_store_stays_down_ends_failed_not_requeued_forever(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the job manager: every worker that takes the session finds the object store gone (fetching the
    start version fails); it is queued again MAX_INTERRUPTIONS - 1 times, then ends FAILED with the error."""
    monkeypatch.setattr(interruptions, "INTERRUPTION_WAIT_CAP_SECONDS", 0.05)
    limit = interruptions.MAX_INTERRUPTIONS
    preparer = _Preparer(tiny_model_dir, Unavailable("ARTIFACT_STORE_UNAVAILABLE", "the bucket does not exist"))
    runner = _runner(tiny_model_dir, tmp_path, _Controls(), preparer)
    slots, queue = JobSlots(1), InProcessQueue()
    mgr = JobManager(runner=runner, store=InMemoryJobStore(), queue=queue, work_dir=tmp_path / "jobs",  # type: ignore[arg-type]
                     slots=slots, control_poll_seconds=0.01, watch_poll_seconds=0.05)
    queue.start_worker({runner.kind.name: lambda kind, job_id: mgr.execute(job_id)}, concurrency=1, name="test")
    try:
        job = await mgr.submit(mgr.new_job(session(replay_fraction=0.0), OnlineOutput()))
        async with asyncio.timeout(120):
            while not (ended := await mgr.get(job.id)).state.terminal:
                await asyncio.sleep(0.05)
        assert ended.state is JobState.FAILED, ended.state
        assert ended.failure is not None and ended.failure.reason == "ARTIFACT_STORE_UNAVAILABLE", ended.failure
        assert f"{limit} times in a row" in ended.failure.message
        assert preparer.fetches == limit, f"taken {preparer.fetches} times"
        assert ended.output.interruptions == limit
    finally:
        await asyncio.gather(mgr.shutdown(), queue.stop_worker())
        slots.shutdown()
