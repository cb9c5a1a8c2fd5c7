"""An online session's publications on the tiny model, with the job and the stores faked: each publication claims
the examples trained on since the previous one, also when the session resumed from a checkpoint older than its
last publication (it came back to that publication's update having trained again on its examples, maybe not
update for update)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from engine.domain import OnlineExamples
from engine.online.learner import OnlineLearner
from engine.online.session import RunningSession
from engine.online.session_state import OnlineConfig, SessionParts
from engine.online.spec import AliasState, Controls, GateVerdict, OnlineOutput, StoredExample
from engine.registry import PublishRequest
from engine.training.spec import CheckpointRecord
from tests.engine.test_online_learner import loaded, rows, session, weights


class _Ctx:
    """The job context of a session as RunningSession uses it to publish."""

    def __init__(self, work_dir: Path, output: OnlineOutput) -> None:
        self.job = SimpleNamespace(id="s1", name="onlineSessions/s1", spec=session(replay_fraction=0.0),
                                   output=output, create_time=datetime.now(UTC) - timedelta(hours=1))
        self.work_dir = work_dir
        self.lease_token = "t" * 24
        self.cancel = SimpleNamespace(cancelled=False, reason=None)
        self.recorded: list[object] = []

    def set_output(self, output: OnlineOutput) -> None:
        self.job.output = output

    def record(self, payload: object) -> None:
        self.recorded.append(payload)

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
    """The session's examples: every window holds its examples; ``unread`` are stored after what was read."""

    def __init__(self, unread: int = 0) -> None:
        self.unread = unread

    async def window(self, session_id: str, first: int, last: int) -> OnlineExamples:
        return OnlineExamples([r.example() for r in rows(max(0, last - first + 1), first)])

    async def count_after(self, session_id: str, seq: int) -> int:
        return self.unread


class _Controls(_Store):
    """The session's examples (as a _Store), and its controls as engine.stores.online_store keeps them, for the
    runner and the serving side: a gate verdict is recorded once (a later one on the same version changes nothing)
    and moves the alias, in the same write, when it passes; ``set``'s verdicts go on the versions not judged yet.
    ``judging`` runs as a serving process records a verdict, before the write (what another process does
    meanwhile)."""

    def __init__(self, **fields: Any) -> None:
        super().__init__()
        self.c = Controls(**{"session_id": "s1", "enabled": True, "learning_rate": 1e-4, "base_model": "tiny",
                             "start_version": "v1.0", "live_alias": "notes-live",
                             "alias_state": AliasState.FOLLOWING, **fields})
        self.judging: Callable[[], Awaitable[None]] | None = None

    async def controls(self, session_id: str) -> Controls:
        return self.c

    async def claim_gate(self, session_id: str, version: str, owner: str, lease_seconds: float) -> bool:
        return self.c.gate(version) is None

    async def record_gate(self, session_id: str, version: str, verdict: GateVerdict) -> Controls:
        if self.judging is not None:
            await self.judging()
        if self.c.gate(version) is None:
            self.c = replace(self.c, gates=(*self.c.gates, (version, verdict)),
                             alias_version=version if verdict.passed else self.c.alias_version)
        return self.c

    async def set(self, session_id: str, *, verdicts: dict[str, GateVerdict] | None = None,
                  **changes: Any) -> Controls:
        new = tuple((v, g) for v, g in (verdicts or {}).items() if self.c.gate(v) is None)
        self.c = replace(self.c, gates=(*self.c.gates, *new), **changes)
        return self.c


class _Archive:
    """A checkpoint archive that keeps, per checkpoint, the weights the learner had when it was stored."""

    def __init__(self, learner: OnlineLearner) -> None:
        self.learner = learner
        self.saved: list[list[torch.Tensor]] = []

    async def save(self, job_id: str, step: int, token: str, folder: Path, **_: Any) -> CheckpointRecord:
        self.saved.append(weights(self.learner))
        return CheckpointRecord(step=step, key=f"k{len(self.saved)}", uri="", sha256="", size_bytes=0, loss=0.0,
                                eval_loss=None, create_time=datetime.now(UTC))

    async def delete(self, records: list[CheckpointRecord]) -> None:
        pass


class _Rates:
    """Ratings that make a negative-feedback spike: 25 of the live model's last 30 negative, the start version's
    10%."""

    async def named(self, since: datetime, *names: str, base_model: str = "") -> SimpleNamespace:
        return SimpleNamespace(total=30, negative=25, negative_rate=25 / 30)

    async def counts(self, base_model: str, version: str, since: datetime) -> SimpleNamespace:
        return SimpleNamespace(total=100, negative_rate=0.1)


def _session(learner: OnlineLearner, work_dir: Path, output: OnlineOutput, registry: _Registry, *,
             store: Any = None, rates: Any = None) -> RunningSession:
    """A running session on ``learner`` (its stores faked: ``store`` by default a _Store; ``rates`` the feedback's
    ratings), whose checkpoints go to an _Archive."""
    parts = SessionParts(store=store or _Store(), registry=registry, artifacts=None,  # type: ignore[arg-type]
                   config=OnlineConfig(), feedback=None, rates=rates)
    running = RunningSession(parts, _Ctx(work_dir, output), learner, SimpleNamespace(version="v1.0"))  # type: ignore[arg-type]
    running.checkpoint_archive = _Archive(learner)  # type: ignore[assignment]
    return running


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
