"""train, fisher and jobs: create jobs and follow them with a live progress bar."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import typer
from google.protobuf import duration_pb2, timestamp_pb2
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TaskID, TextColumn
from rich.text import Text

from learning.v1 import common_pb2 as common
from learning.v1 import fisher_pb2 as fisher
from learning.v1 import training_pb2 as training
from learning.v1.error_reason_pb2 import ERROR_REASON_NO_STEPS_YET, ERROR_REASON_USAGE
from learning_engine.cli.common import as_dict, emit, err, fail, interrupted, labels, options, out, run
from learning_engine.client import AsyncClient

jobs_app = typer.Typer(help="Training jobs: list, get, watch, plot, cancel.", no_args_is_help=True)

_STATE = common.JobState.Name


def _short(state: int) -> str:
    return _STATE(state).removeprefix("JOB_STATE_")


def _eta(value: duration_pb2.Duration) -> str:
    seconds = int(value.seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


_SPACES = " | ".join(n.removeprefix("FISHER_SPACE_").lower() for n in common.FisherSpace.keys()[1:])


def _space(value: str, hint: str) -> int:
    """A FisherSpace from its short name ("lora_product"); empty is unspecified (the server's default)."""
    if not value:
        return common.FISHER_SPACE_UNSPECIFIED
    key = f"FISHER_SPACE_{value.upper()}"
    if key not in common.FisherSpace.keys()[1:]:
        raise typer.BadParameter(f"unknown space {value!r}; one of {_SPACES}", param_hint=hint)
    return common.FisherSpace.Value(key)


def train(
    ctx: typer.Context,
    data: str = typer.Option(
        None, "--data", "-d", help="JSONL dataset path, relative to the server's datasets dir."
    ),
    from_feedback: int = typer.Option(
        0, "--from-feedback", help="Train on the last N days of feedback instead."
    ),
    min_samples: int = typer.Option(
        0, "--min-samples", help="With --from-feedback: fewest examples to train on."
    ),
    base_model: str = typer.Option("", "--base-model", help="Base model id (server default if empty)."),
    parent: str = typer.Option("", "--parent", help="Continue from this adapter version (EWC applies)."),
    epochs: int = typer.Option(0, "--epochs"),
    learning_rate: float = typer.Option(0.0, "--learning-rate", "--lr"),
    batch_size: int = typer.Option(0, "--batch-size"),
    max_seq_length: int = typer.Option(0, "--max-seq-length"),
    max_steps: int = typer.Option(0, "--max-steps"),
    seed: int = typer.Option(None, "--seed"),
    rank: int = typer.Option(0, "--rank", help="LoRA rank."),
    alpha: float = typer.Option(0.0, "--alpha", help="LoRA alpha."),
    ewc_lambda: float = typer.Option(None, "--ewc-lambda", help="EWC strength (server default if unset)."),
    ewc_gamma: float = typer.Option(None, "--ewc-gamma", help="Decay of earlier versions' importance (1.0)."),
    fisher_space: str = typer.Option(
        "", "--fisher-space", help=f"What the EWC penalty is over: {_SPACES} (server default if empty)."
    ),
    replay_fraction: float = typer.Option(
        0.0, "--replay-fraction", help="Share of the data replayed from earlier versions' datasets (0..0.9)."
    ),
    no_ewc: bool = typer.Option(False, "--no-ewc", help="Disable EWC for a continued adapter."),
    fisher_snapshot: str = typer.Option("", "--fisher-snapshot"),
    major: bool = typer.Option(False, "--major", help="Publish as a new major version."),
    label: list[str] = typer.Option(None, "--label", help="KEY=VALUE, repeatable."),
    request_id: str = typer.Option(
        "", "--request-id", help="Idempotency key: the same id returns the same job."
    ),
    validate_only: bool = typer.Option(False, "--validate-only", help="Check the request; create nothing."),
    watch: bool = typer.Option(False, "--watch", "-w", help="Follow the job with a live progress bar."),
) -> None:
    """Create a training job from a JSONL dataset or from collected feedback."""
    opts = options(ctx)
    if bool(data) == bool(from_feedback):
        fail(
            opts,
            grpc.StatusCode.INVALID_ARGUMENT,
            "name exactly one of --data or --from-feedback",
            reason=ERROR_REASON_USAGE,
        )
    spec = training.TrainingJobSpec(
        base_model=base_model,
        lora=common.LoraConfig(rank=rank, alpha=alpha),
        hyperparameters=training.Hyperparameters(
            epochs=epochs,
            learning_rate=learning_rate,
            batch_size=batch_size,
            max_seq_length=max_seq_length,
            max_steps=max_steps,
            seed=seed,
        ),
        parent_adapter_version=parent,
        ewc=training.EwcConfig(
            ewc_lambda=ewc_lambda,
            gamma=ewc_gamma,
            fisher_snapshot=fisher_snapshot,
            fisher_space=_space(fisher_space, "--fisher-space"),
            replay_fraction=replay_fraction,
            disabled=no_ewc,
        ),
        major_version_bump=major,
        labels=labels(label),
    )
    if data:
        spec.jsonl.path = data
    else:
        spec.feedback.CopyFrom(common.FeedbackDataset(days=from_feedback, min_samples=min_samples))

    async def call(client: AsyncClient) -> int:
        job = await client.create_training_job(spec, request_id=request_id, validate_only=validate_only)
        if not watch or validate_only:
            emit(opts, job, lambda: out.print(f"created {job.name} ({_short(job.state)})"))
            return 0
        if not opts.json:
            err.print(f"created {job.name}")
        return await follow_training(client, opts.json, job.name)

    raise typer.Exit(_guard_interrupt(ctx, call))


def _guard_interrupt(ctx: typer.Context, call) -> int:
    try:
        return run(ctx, call)
    except KeyboardInterrupt:
        interrupted("stopped watching; the job keeps running (learning-engine jobs watch NAME)")


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
        self.progress.update(self.steps, description=_short(job.state).lower(), since=_seconds(job.start_time),
                             until=_seconds(job.end_time))

    def event(self, event: training.TrainingJobEvent) -> None:
        at = _seconds(event.time)
        kind = event.WhichOneof("kind")
        if kind == "step_metrics":
            m = event.step_metrics
            self.progress.update(self.steps, total=m.total_steps, completed=m.step, info=_step_info(m))
        elif kind == "state_change":
            state = event.state_change.state
            fields: dict = {"description": _short(state).lower()}
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
            if event.HasField("state_change") and not as_json:
                progress.console.print(
                    f"{_short(event.state_change.state)}: {event.state_change.message}", highlight=False
                )
            elif event.HasField("warning") and not as_json:
                progress.console.print(f"[yellow]warning[/] {event.warning.code}: {event.warning.message}")
    final = await client.get_training_job(name)
    if not as_json:
        summary = f"{final.name} {_short(final.state)}"
        if final.output_adapter_version:
            summary += f" -> adapter {final.output_adapter_version}"
        if final.HasField("latest_metrics"):
            summary += f" (final loss {final.latest_metrics.loss:.4f})"
        out.print(summary, highlight=False)
        if final.HasField("error") and final.error.code:
            err.print(f"[red]{final.error.message}[/]", highlight=False)
    return _outcome_code(final.state, final.error.code if final.HasField("error") else 0)


def _outcome_code(state: int, error_code: int) -> int:
    if state == common.JOB_STATE_SUCCEEDED:
        return 0
    if state == common.JOB_STATE_CANCELLED:
        return grpc.StatusCode.CANCELLED.value[0]
    return error_code or grpc.StatusCode.UNKNOWN.value[0]


def fisher_cmd(
    ctx: typer.Context,
    data: str = typer.Option(None, "--data", "-d", help="JSONL dataset path on the server."),
    from_feedback: int = typer.Option(
        0, "--from-feedback", help="Measure the wanted answers of the last N days of feedback instead."
    ),
    min_samples: int = typer.Option(0, "--min-samples", help="With --from-feedback: fewest examples to accept."),
    adapter_version: str = typer.Option("", "--adapter-version", help="Adapter the Fisher is computed for."),
    base_model: str = typer.Option("", "--base-model"),
    samples: int = typer.Option(None, "--samples", help="Examples to use (unset: the server's 1000)."),
    estimator: str = typer.Option(
        "empirical", "--estimator", help="empirical | sampled | batch_mean_squared"
    ),
    space: str = typer.Option("", "--space", help=f"{_SPACES} (server default if empty)."),
    request_id: str = typer.Option("", "--request-id"),
    watch: bool = typer.Option(False, "--watch", "-w"),
) -> None:
    """Estimate a diagonal Fisher snapshot (for EWC) from a dataset or from collected feedback."""
    opts = options(ctx)
    if bool(data) == bool(from_feedback):
        fail(
            opts,
            grpc.StatusCode.INVALID_ARGUMENT,
            "name exactly one of --data or --from-feedback",
            reason=ERROR_REASON_USAGE,
        )
    key = f"FISHER_ESTIMATOR_{estimator.upper()}"
    if key not in fisher.FisherEstimator.keys():
        raise typer.BadParameter(f"unknown estimator {estimator!r}", param_hint="--estimator")
    spec = fisher.FisherJobSpec(
        base_model=base_model,
        adapter_version=adapter_version,
        num_samples=samples,
        estimator=fisher.FisherEstimator.Value(key),
        space=_space(space, "--space"),
    )
    if data:
        spec.jsonl.path = data
    else:
        spec.feedback.CopyFrom(common.FeedbackDataset(days=from_feedback, min_samples=min_samples))

    async def call(client: AsyncClient) -> int:
        job = await client.create_fisher_job(spec, request_id=request_id)
        if not watch:
            emit(opts, job, lambda: out.print(f"created {job.name} ({_short(job.state)})"))
            return 0
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=err,
            disable=opts.json,
        ) as progress:
            bar = progress.add_task("fisher", total=None)
            async for message in client.watch_fisher_job(job.name):
                if opts.json:
                    print(json.dumps(as_dict(message)), flush=True)
                if message.HasField("event") and message.event.HasField("progress"):
                    p = message.event.progress
                    progress.update(bar, total=p.samples_total, completed=p.samples_done)
        done = await client.get_fisher_job(job.name)
        if not opts.json:
            out.print(f"{done.name} {_short(done.state)} {done.output_snapshot}", highlight=False)
        return _outcome_code(done.state, done.error.code if done.HasField("error") else 0)

    raise typer.Exit(_guard_interrupt(ctx, call))


@jobs_app.command("list")
def jobs_list(ctx: typer.Context, page_size: int = typer.Option(20, "--page-size")) -> None:
    """Recent training jobs, newest first."""
    opts = options(ctx)
    response = run(ctx, lambda c: c.list_training_jobs(page_size=page_size))

    def render() -> None:
        from rich.table import Table  # noqa: PLC0415

        table = Table("name", "state", "progress", "adapter", "created")
        for job in response.training_jobs:
            table.add_row(
                job.name,
                _short(job.state),
                f"{job.progress.fraction:.0%}",
                job.output_adapter_version,
                job.create_time.ToDatetime().isoformat(timespec="seconds"),
            )
        out.print(table)

    emit(opts, response, render)


@jobs_app.command("get")
def jobs_get(ctx: typer.Context, name: str) -> None:
    """One training job."""
    emit(options(ctx), run(ctx, lambda c: c.get_training_job(name)))


@jobs_app.command("watch")
def jobs_watch(
    ctx: typer.Context, name: str, after: int = typer.Option(0, "--after", help="Resume after a sequence.")
):
    """Follow a job to its end (reconnecting if the connection drops)."""
    opts = options(ctx)
    raise typer.Exit(_guard_interrupt(ctx, lambda c: follow_training(c, opts.json, name, after)))


@jobs_app.command("plot")
def jobs_plot(
    ctx: typer.Context,
    name: str,
    png: Path = typer.Option(Path("loss.png"), "--out", "-o", help="Where to write the loss curve (PNG)."),
    csv_path: Path = typer.Option(None, "--csv", help="Also write the metrics table (CSV) here."),
) -> None:
    """Write a job's loss curve, and its metrics as CSV, as the server has them now (running or ended)."""
    opts = options(ctx)
    metrics = run(ctx, lambda c: c.get_training_metrics(name))
    state = _short(metrics.state)
    if not metrics.rows:  # nothing is written: a loss.png left from before must not pass for this job's
        fail(opts, grpc.StatusCode.FAILED_PRECONDITION, f"{name} has no steps yet ({state}): no loss curve to write",
             reason=ERROR_REASON_NO_STEPS_YET, metadata={"name": name, "state": state})
    png.parent.mkdir(parents=True, exist_ok=True)
    png.write_bytes(metrics.png)
    if csv_path is not None:
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        csv_path.write_bytes(metrics.csv)
    last = metrics.rows[-1]
    written = {"name": name, "state": state, "rows": len(metrics.rows), "png": str(png),
               "csv": str(csv_path) if csv_path is not None else None}
    emit(opts, written, lambda: out.print(
        f"{name} ({state}, step {last.step} of {last.total_steps}) -> {png}"
        + (f", {csv_path}" if csv_path is not None else ""), highlight=False))


@jobs_app.command("cancel")
def jobs_cancel(ctx: typer.Context, name: str) -> None:
    """Ask a job to stop; it ends CANCELLED."""
    job = run(ctx, lambda c: c.cancel_training_job(name))
    emit(options(ctx), job, lambda: out.print(f"{job.name} {_short(job.state)}"))


__all__ = ["train", "fisher_cmd", "jobs_app", "follow_training"]
