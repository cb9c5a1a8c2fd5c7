"""An online session's publications on the tiny model, with the job and the stores faked: each publication claims
the examples trained on since the previous one, also when the session resumed from a checkpoint older than its
last publication (it came back to that publication's update having trained again on its examples, maybe not
update for update)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from engine.domain import OnlineExamples
from engine.online.learner import OnlineLearner
from engine.online.runner import OnlineConfig, _Parts, _Session
from engine.online.spec import OnlineOutput, StoredExample
from engine.registry import PublishRequest
from tests.engine.test_online_learner import loaded, rows, session


class _Ctx:
    """The job context of a session as _Session uses it to publish."""

    def __init__(self, work_dir: Path, output: OnlineOutput) -> None:
        self.job = SimpleNamespace(id="s1", name="onlineSessions/s1", spec=session(replay_fraction=0.0),
                                   output=output)
        self.work_dir = work_dir
        self.lease_token = "t" * 24

    def set_output(self, output: OnlineOutput) -> None:
        self.job.output = output

    def record(self, payload: object) -> None:
        pass

    async def persist(self) -> None:
        pass

    async def in_worker(self, fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)


class _Registry:
    def __init__(self) -> None:
        self.published: list[PublishRequest] = []

    async def publish(self, request: PublishRequest) -> SimpleNamespace:
        self.published.append(request)
        return SimpleNamespace(version=f"v1.0.{len(self.published)}")

    async def get(self, base_model: str, version: str, **_: Any) -> SimpleNamespace:
        return SimpleNamespace(version=version)


class _Store:
    async def window(self, session_id: str, first: int, last: int) -> OnlineExamples:
        return OnlineExamples([r.example() for r in rows(max(0, last - first + 1), first)])


def _session(learner: OnlineLearner, work_dir: Path, output: OnlineOutput, registry: _Registry) -> _Session:
    parts = _Parts(store=_Store(), registry=registry, artifacts=None, config=OnlineConfig(),  # type: ignore[arg-type]
                   feedback=None, rates=None)
    return _Session(parts, _Ctx(work_dir, output), learner, SimpleNamespace(version="v1.0"))  # type: ignore[arg-type]


def _windows(registry: _Registry) -> list[tuple[int, int]]:
    return [(r.dataset.source.first, r.dataset.source.last) for r in registry.published]  # type: ignore[union-attr]


def _by_seq(all_rows: list[StoredExample], seqs: list[int]) -> list[StoredExample]:
    return [r for r in all_rows if r.seq in seqs]


async def _crash_after_publishing(tiny_model_dir: Path, tmp_path: Path, *, forced_second: bool):
    """A session trains update 1 on examples 1..4 (checkpoint), update 2 on the next ones (all of 5..8, or only
    5..6 on a forced update), publishes at update 2 and dies before its next checkpoint. Another worker resumes
    from the checkpoint of update 1 with examples 5..12 waiting: the resumed learner and the publications."""
    sent = rows(12)
    before = OnlineLearner(loaded(tiny_model_dir, tmp_path), session(replay_fraction=0.0))
    before.add(sent[:4])
    before.update(1e-2)
    checkpoint = before.state()
    before.add(sent[4:6] if forced_second else sent[4:8])
    before.update(1e-2)
    registry = _Registry()
    dead = _session(before, tmp_path / "one", OnlineOutput(), registry)
    await dead._publish()
    publications = dead.ctx.job.output.publications
    assert _windows(registry) == [(1, 6 if forced_second else 8)]

    resumed = OnlineLearner(loaded(tiny_model_dir, tmp_path), session(replay_fraction=0.0))
    resumed.restore(checkpoint, _by_seq(sent, checkpoint["buffer"]), _by_seq(sent, checkpoint["pending"]))
    resumed.add(sent[4:12])
    return resumed, publications


async def test_a_publication_after_a_resume_claims_only_what_its_parent_publication_did_not(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    learner, publications = await _crash_after_publishing(tiny_model_dir, tmp_path, forced_second=False)
    registry = _Registry()
    resumed = _session(learner, tmp_path / "two", OnlineOutput(publications=publications), registry)
    learner.update(1e-2)  # update 2 again, on 5..8
    await resumed._publish()  # published already: nothing to publish
    assert registry.published == []
    learner.update(1e-2)  # update 3, on 9..12
    await resumed._publish()
    assert _windows(registry) == [(9, 12)]  # 1..8 are the first publication's
    assert registry.published[0].dataset.example_count == 4  # type: ignore[union-attr]


async def test_a_publication_after_a_resume_claims_what_the_repeated_update_trained_on_past_its_parent(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    learner, publications = await _crash_after_publishing(tiny_model_dir, tmp_path, forced_second=True)
    registry = _Registry()
    resumed = _session(learner, tmp_path / "two", OnlineOutput(publications=publications), registry)
    learner.update(1e-2)  # update 2 again, now on 5..8 (the forced one before the crash took 5..6)
    await resumed._publish()
    assert registry.published == []
    learner.update(1e-2)  # update 3, on 9..12
    await resumed._publish()
    assert _windows(registry) == [(7, 12)]  # 7 and 8 are in no publication's window otherwise
