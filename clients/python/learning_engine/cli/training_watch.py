"""Following a training job (train --watch, jobs watch): live bars of its steps and of a parent's Fisher pre-pass,
its events as they come, and a closing summary with its final loss."""

from __future__ import annotations

import json
import time

from google.protobuf import duration_pb2, timestamp_pb2
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TaskID, TextColumn
from rich.text import Text

from learning.v1 import common_pb2 as common
from learning.v1 import training_pb2 as training
from learning_engine.cli.common import as_dict, err, out
from learning_engine.cli.job_views import outcome_code, short_state
from learning_engine.client import AsyncClient
from learning_engine.errors import LearningEngineError


def _eta(value: duration_pb2.Duration) -> str:
    seconds = int(value.seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class _Elapsed(ProgressColumn):
    """How long the task's work has run: from its ``since`` field (POSIX seconds) to ``until``, or to now."""

    def render(self, task: Task) -> Text:
        since, until = task.fields.get("since"), task.fields.get("until")
        if since is None:
            return Text("-:--:--", style="progress.elapsed")
        seconds = max(0, int((until if until is not None else time.time()) - since))
        return Text(f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}", style="progress.elapsed")


def _step_info(m: training.TrainingStepMetrics) -> str:
    return (
        f"loss {m.loss:.4f} (task {m.task_loss:.4f} + ewc {m.ewc_penalty:.3g}) lr {m.learning_rate:.2e} "
        f"{m.tokens_per_second:,.0f} tok/s ETA {_eta(m.eta)}"
    )


def _seconds(ts: timestamp_pb2.Timestamp) -> float | None:
    return ts.seconds + ts.nanos / 1e9 if ts.seconds or ts.nanos else None


class _Bars:
    """The live bars of a training job: its steps (elapsed time, loss, task loss, EWC penalty, learning rate,
    tokens/s, ETA) and, for a continuation that measures its parent's Fisher first, that pre-pass."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.steps = progress.add_task("queued", total=None, info="", since=None, until=None)
        self.fisher: TaskID | None = None

    def snapshot(self, job: training.TrainingJob) -> None:
        self.progress.update(self.steps, description=short_state(job.state).lower(), since=_seconds(job.start_time),
                             until=_seconds(job.end_time))

    def event(self, event: training.TrainingJobEvent) -> None:
        at = _seconds(event.time)
        kind = event.WhichOneof("kind")
        if kind == "step_metrics":
            m = event.step_metrics
            self.progress.update(self.steps, total=m.total_steps, completed=m.step, info=_step_info(m))
        elif kind == "state_change":
            state = event.state_change.state
            fields: dict = {"description": short_state(state).lower()}
            if state == common.JOB_STATE_RUNNING and self.progress.tasks[self.steps].fields["since"] is None:
                fields["since"] = at
            if state in _ENDED:
                fields["until"] = at
            self.progress.update(self.steps, **fields)
        elif kind == "notice" and event.notice.code == "FISHER_COMPUTED_AUTOMATICALLY":
            self._fisher(since=at)
        elif kind == "parent_fisher_progress":
            p = event.parent_fisher_progress
            self.progress.update(self._fisher(since=at), total=p.samples_total, completed=p.samples_done,
                                 info=f"{p.samples_per_second:,.1f} samples/s")
        elif kind == "notice" and event.notice.code == "FISHER_SNAPSHOT_STORED" and self.fisher is not None:
            task = self.progress.tasks[self.fisher]
            self.progress.update(self.fisher, completed=task.total or 1, total=task.total or 1, until=at)

    def _fisher(self, since: float | None) -> TaskID:
        if self.fisher is None:
            self.fisher = self.progress.add_task("parent fisher", total=None, info="", since=since, until=None)
        return self.fisher


def _train_end_loss(event: training.TrainingJobEvent, seen: float | None) -> float | None:
    """The loss of a "train_end" evaluation event (the training set's loss after the last step), else ``seen``."""
    if event.WhichOneof("kind") == "eval_result" and event.eval_result.split == "train_end":
        return next((m.value for m in event.eval_result.metrics if m.name == "loss"), seen)
    return seen


async def _loss_summary(client: AsyncClient, job: training.TrainingJob, train_end: float | None) -> str:
    """" (final loss X)": the job's train loss, the loss on its training set after the last step (its
    "train_end" evaluation, which the version it published records as its train loss); a job that has none (it
    did not get that far) shows its last optimiser step's loss as such, the loss of that one batch."""
    if train_end is None and job.output_adapter_version:  # its evaluation came before the events watched
        try:
            published = await client.get_adapter(job.output_adapter_version, base_model=job.spec.base_model)
            train_end = published.train_loss or None
        except LearningEngineError:  # e.g. deleted since: the summary goes without it
            pass
    if train_end is not None:
        return f" (final loss {train_end:.4f})"
    if job.HasField("latest_metrics") and job.latest_metrics.step:
        return f" (last step loss {job.latest_metrics.loss:.4f})"
    return ""


_ENDED = (common.JOB_STATE_SUCCEEDED, common.JOB_STATE_FAILED, common.JOB_STATE_CANCELLED, common.JOB_STATE_PAUSED)


async def follow_training(client: AsyncClient, as_json: bool, name: str, after_sequence: int = 0) -> int:
    """Print every update until the job ends; return the exit code its outcome maps to."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _Elapsed(),
        TextColumn("{task.fields[info]}"),
    )
    final: training.TrainingJob | None = None
    train_end: float | None = None  # the job's train loss, from its "train_end" evaluation, once seen
    with Progress(*columns, console=err, transient=False, disable=as_json) as progress:
        bars = _Bars(progress)
        async for message in client.watch_training_job(name, after_sequence=after_sequence):
            if as_json:
                print(json.dumps(as_dict(message)), flush=True)
            if message.HasField("snapshot"):
                final = message.snapshot
                bars.snapshot(final)
                continue
            event = message.event
            bars.event(event)
            train_end = _train_end_loss(event, train_end)
            if event.HasField("state_change") and not as_json:
                progress.console.print(
                    f"{short_state(event.state_change.state)}: {event.state_change.message}", highlight=False
                )
            elif event.HasField("warning") and not as_json:
                progress.console.print(f"[yellow]warning[/] {event.warning.code}: {event.warning.message}")
    final = await client.get_training_job(name)
    if not as_json:
        summary = f"{final.name} {short_state(final.state)}"
        if final.output_adapter_version:
            summary += f" -> adapter {final.output_adapter_version}"
        summary += await _loss_summary(client, final, train_end)
        out.print(summary, highlight=False)
        if final.HasField("error") and final.error.code:
            err.print(f"[red]{final.error.message}[/]", highlight=False)
        if final.state == common.JOB_STATE_PAUSED:
            err.print(f"paused: learning-engine jobs resume {final.name}, then jobs watch {final.name}",
                      highlight=False)
    return outcome_code(final.state, final.error.code if final.HasField("error") else 0)


__all__ = ["follow_training"]
