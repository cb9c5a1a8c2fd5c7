"""Durable jobs across processes: an API server with no worker of its own, and worker processes
(`learning-engine-server worker`), all on one PostgreSQL and one artifact folder.

Covered with real processes and signals: a worker killed with SIGKILL mid-job after a checkpoint (another takes
the job over and resumes from that checkpoint, the watch on the API server follows it, one version is published);
a worker frozen with SIGSTOP (a zombie: another takes over, and once it thaws it writes nothing); a job paused on
one worker and resumed on another from the pause's checkpoint. Waits are on the job's own events (watch
streams), never on sleeps.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from learning.v1 import adapter_pb2, adapter_pb2_grpc
from learning.v1 import common_pb2 as common
from learning.v1 import training_pb2 as pb
from tests.fixtures.server_settings import server_env, write_config
from tests.server.conftest import spec

ROOT = Path(__file__).resolve().parents[2]
HEARTBEAT, STALLED = 0.5, 2.0
pytestmark = pytest.mark.full_stack


class Workers:
    """Worker processes sharing the test's database, datasets and artifacts."""

    def __init__(self, root: Path, database_url: str, tiny_model_dir: Path, shared: dict[str, object]) -> None:
        self._root = root
        self._url = database_url
        self._tiny_model_dir = tiny_model_dir
        self._shared = shared
        self.procs: dict[int, subprocess.Popen[str]] = {}
        self._started = 0

    async def start(self) -> subprocess.Popen[str]:
        n, self._started = self._started, self._started + 1  # before the wait: starts may overlap
        data_dir = self._root / f"worker-{n}"
        data_dir.mkdir(parents=True)
        config = write_config(data_dir / "config.yaml", self._tiny_model_dir, **self._shared)
        proc = subprocess.Popen(
            [sys.executable, "-m", "server", "worker", "--data-dir", str(data_dir), "--config", str(config)],
            cwd=ROOT, env=server_env(DATABASE_URL=self._url), stdout=subprocess.PIPE,
            stderr=(data_dir / "log").open("w"), text=True,
        )
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 120)
        assert "running" in line, f"worker did not start: {line!r} {(data_dir / 'log').read_text()[-2000:]}"
        self.procs[proc.pid] = proc
        return proc

    def of(self, job: pb.TrainingJob) -> subprocess.Popen[str]:
        """The process holding ``job`` (its worker id is "<host>-<pid>")."""
        return self.procs[int(job.worker.rsplit("-", 1)[1])]

    def stop(self) -> None:
        for log in sorted(self._root.glob("worker-*/log")):  # shown by pytest when the test failed
            lines = [ln for ln in log.read_text().splitlines() if "Loading weights" not in ln]
            print(f"== {log}", *lines[-40:], sep="\n")
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
async def cluster(make_server, database_url: str, tmp_path: Path, tiny_model_dir: Path, data_dir: Path):
    shared = {
        "artifacts_path": str(tmp_path / "artifacts"), "datasets_path": str(data_dir / "datasets"),
        "worker_heartbeat_seconds": HEARTBEAT, "worker_stalled_seconds": STALLED,
    }
    api = await make_server(embedded_worker=False, artifacts_path=tmp_path / "artifacts",
                            worker_heartbeat_seconds=HEARTBEAT, worker_stalled_seconds=STALLED)
    workers = Workers(tmp_path / "workers", database_url, tiny_model_dir, shared)
    yield api, workers
    workers.stop()


async def _job(api, name: str) -> pb.TrainingJob:
    return (await api.training.GetTrainingJob(pb.GetTrainingJobRequest(name=name))).training_job


async def _until(stream, predicate) -> list[pb.TrainingJobEvent]:
    """Events from a watch stream up to (and including) the first that satisfies ``predicate``."""
    seen = []
    async for message in stream:
        if message.HasField("event"):
            seen.append(message.event)
            if predicate(message.event):
                return seen
    raise AssertionError(f"the stream ended first: {seen[-3:]}")


# Long enough that each job is still running when it is killed, frozen or paused after its first checkpoint or
# step, with a margin for a loaded machine (nothing counts the steps): 180 steps of 6 an epoch. 60 epochs took
# twice as long.
EPOCHS = 30


def _checkpointed() -> pb.TrainingJobSpec:
    job_spec = spec(epochs=EPOCHS)  # 180 steps
    job_spec.checkpoints.CopyFrom(pb.CheckpointPolicy(every_steps=10, every_minutes=0))
    return job_spec


def _assert_resumed(events: list[pb.TrainingJobEvent]) -> None:
    """The job continued from its newest checkpoint: the first step after the RESUMED notice follows it."""
    at = next(i for i, e in enumerate(events) if e.notice.code == "RESUMED")
    saved = [e.checkpoint.step for e in events[:at] if e.HasField("checkpoint")]
    first = next(e.step_metrics.step for e in events[at:] if e.HasField("step_metrics"))
    assert saved and first - 1 == saved[-1] and f"step {saved[-1]} " in events[at].notice.message, (saved, first)


def _is_step(event: pb.TrainingJobEvent) -> bool:
    return event.HasField("step_metrics")


def _ended(event: pb.TrainingJobEvent) -> bool:
    return event.state_change.state in (common.JOB_STATE_SUCCEEDED, common.JOB_STATE_FAILED,
                                         common.JOB_STATE_CANCELLED)


async def _versions(api) -> list[str]:
    stub = adapter_pb2_grpc.AdapterServiceStub(api.channel)
    return [a.version for a in (await stub.ListAdapters(adapter_pb2.ListAdaptersRequest())).adapters]


@pytest.mark.slow
async def test_jobs_outlive_their_workers(cluster):
    api, workers = cluster
    first, second = await asyncio.gather(workers.start(), workers.start())  # (each loads torch: together)

    # A worker killed mid-job, after a checkpoint: the other takes it over and resumes from that checkpoint;
    # the watch on the API server follows it to the end.
    created = (await api.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=_checkpointed()))).training_job
    stream = api.training.WatchTrainingJob(pb.WatchTrainingJobRequest(name=created.name))
    events = await _until(stream, lambda e: e.HasField("checkpoint"))
    victim = workers.of(await _job(api, created.name))
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    events += await _until(stream, _ended)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1)), "a gap or a repeat in the log"
    assert events[-1].state_change.state == common.JOB_STATE_SUCCEEDED
    taken = [e.notice for e in events if e.notice.code == "TAKEN_OVER"]
    assert len(taken) == 1 and str(victim.pid) in taken[0].message
    _assert_resumed(events)
    done = await _job(api, created.name)
    survivor = workers.of(done)
    assert survivor.pid != victim.pid and done.output_adapter_version == "v1.0"
    assert await _versions(api) == ["v1.0"]

    # A frozen worker (a zombie) is taken over; once thawed it writes nothing, and one version is published.
    third = await workers.start()
    created = (await api.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=spec(epochs=EPOCHS)))).training_job
    stream = api.training.WatchTrainingJob(pb.WatchTrainingJobRequest(name=created.name))
    events = await _until(stream, _is_step)
    zombie = workers.of(await _job(api, created.name))
    zombie.send_signal(signal.SIGSTOP)
    events += await _until(stream, lambda e: e.notice.code == "TAKEN_OVER")
    zombie.send_signal(signal.SIGCONT)
    events += await _until(stream, _ended)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert events[-1].state_change.state == common.JOB_STATE_SUCCEEDED
    stored = [m.event for m in [m async for m in api.training.WatchTrainingJob(
        pb.WatchTrainingJobRequest(name=created.name))] if m.HasField("event")]
    assert stored == events, "the stored log differs from what was streamed"
    assert workers.of(await _job(api, created.name)).pid != zombie.pid
    assert sorted(await _versions(api)) == ["v1.0", "v2.0"]  # one version of this job, not two

    # Paused on one worker, resumed on another from the pause's checkpoint.
    created = (await api.training.CreateTrainingJob(pb.CreateTrainingJobRequest(spec=_checkpointed()))).training_job
    stream = api.training.WatchTrainingJob(pb.WatchTrainingJobRequest(name=created.name))
    await _until(stream, _is_step)
    holder = workers.of(await _job(api, created.name))
    paused = (await api.training.PauseTrainingJob(pb.PauseTrainingJobRequest(name=created.name))).training_job
    assert paused.state in (common.JOB_STATE_PAUSING, common.JOB_STATE_PAUSED)
    await _until(stream, lambda e: e.state_change.state == common.JOB_STATE_PAUSED)
    holder.terminate()  # that worker leaves: the job must continue elsewhere
    holder.wait(30)
    resumed = (await api.training.ResumeTrainingJob(pb.ResumeTrainingJobRequest(name=created.name))).training_job
    assert resumed.state == common.JOB_STATE_QUEUED
    stream = api.training.WatchTrainingJob(pb.WatchTrainingJobRequest(name=created.name))
    _assert_resumed(await _until(stream, _ended))
    done = await _job(api, created.name)
    assert done.state == common.JOB_STATE_SUCCEEDED and workers.of(done).pid != holder.pid
    assert {first.pid, second.pid, third.pid} >= {victim.pid, zombie.pid, holder.pid}
