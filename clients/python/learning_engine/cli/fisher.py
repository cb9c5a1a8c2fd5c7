"""fisher and fisher-jobs: estimate a diagonal Fisher snapshot (for EWC) as a job, and follow Fisher jobs."""

from __future__ import annotations

import json

import grpc
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from learning.v1 import fisher_pb2 as fisher
from learning.v1.error_reason_pb2 import ERROR_REASON_USAGE
from learning_engine.cli.common import (
    UINT32_MAX,
    as_dict,
    emit,
    err,
    fail,
    options,
    out,
    run,
)
from learning_engine.cli.datasets import (
    FEEDBACK_ADAPTER,
    FEEDBACK_LABELS,
    FORCE_BELOW_MIN,
    MIN_SAMPLES,
    THUMBS_DOWN_WEIGHT,
    THUMBS_UP_WEIGHT,
    feedback_dataset,
)
from learning_engine.cli.job_views import (
    AFTER,
    PAGE_SIZE,
    PAGE_TOKEN,
    STATE_FILTER,
    WIDE,
    guard_interrupt,
    listed,
    outcome_code,
    parse_states,
    short_state,
    steered,
)
from learning_engine.cli.jobs import SPACES, parse_fisher_space
from learning_engine.client import AsyncClient

fisher_jobs_app = typer.Typer(help="Fisher jobs: list, get, watch, cancel.", no_args_is_help=True)


def fisher_cmd(
    ctx: typer.Context,
    data: str = typer.Option(None, "--data", "-d", help="JSONL dataset path on the server."),
    from_feedback: int = typer.Option(
        0, "--from-feedback", min=0, max=3650, help="Measure the wanted answers of the last N days of feedback instead."
    ),
    min_samples: int = MIN_SAMPLES,
    force: bool = FORCE_BELOW_MIN,
    thumbs_up_weight: float = THUMBS_UP_WEIGHT,
    thumbs_down_weight: float = THUMBS_DOWN_WEIGHT,
    feedback_label: list[str] = FEEDBACK_LABELS,
    feedback_adapter: str = FEEDBACK_ADAPTER,
    adapter_version: str = typer.Option("", "--adapter-version", help="Adapter the Fisher is computed for."),
    base_model: str = typer.Option("", "--base-model"),
    samples: int = typer.Option(None, "--samples", min=0, max=UINT32_MAX,
                                help="Examples to use (unset: the server's 1000)."),
    estimator: str = typer.Option(
        "empirical", "--estimator", help="empirical | sampled | batch_mean_squared"
    ),
    space: str = typer.Option("", "--space", help=f"{SPACES} (server default if empty)."),
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
    feedback = feedback_dataset(opts, from_feedback, min_samples, force, thumbs_up_weight=thumbs_up_weight,
                                thumbs_down_weight=thumbs_down_weight, labels=feedback_label,
                                adapter_version=feedback_adapter)
    key = f"FISHER_ESTIMATOR_{estimator.upper()}"
    if key not in fisher.FisherEstimator.keys():
        raise typer.BadParameter(f"unknown estimator {estimator!r}", param_hint="--estimator")
    spec = fisher.FisherJobSpec(
        base_model=base_model,
        adapter_version=adapter_version,
        num_samples=samples,
        estimator=fisher.FisherEstimator.Value(key),
        space=parse_fisher_space(space, "--space"),
    )
    if data:
        spec.jsonl.path = data
    elif feedback is not None:
        spec.feedback.CopyFrom(feedback)

    async def call(client: AsyncClient) -> int:
        job = await client.create_fisher_job(spec, request_id=request_id)
        if not watch:
            emit(opts, job, lambda: out.print(f"created {job.name} ({short_state(job.state)})"))
            return 0
        return await follow_fisher(client, opts.json, job.name)

    raise typer.Exit(guard_interrupt(ctx, call))


async def follow_fisher(client: AsyncClient, as_json: bool, name: str, after_sequence: int = 0) -> int:
    """Show a Fisher job's progress until it ends; return the exit code its outcome maps to."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err,
        disable=as_json,
    ) as progress:
        bar = progress.add_task("fisher", total=None)
        async for message in client.watch_fisher_job(name, after_sequence=after_sequence):
            if as_json:
                print(json.dumps(as_dict(message)), flush=True)
            if message.HasField("event") and message.event.HasField("progress"):
                p = message.event.progress
                progress.update(bar, total=p.samples_total, completed=p.samples_done)
    done = await client.get_fisher_job(name)
    if not as_json:
        out.print(f"{done.name} {short_state(done.state)} {done.output_snapshot}", highlight=False)
    return outcome_code(done.state, done.error.code if done.HasField("error") else 0)


# ---- Fisher jobs ---------------------------------------------------------------------


@fisher_jobs_app.command("list")
def fisher_jobs_list(
    ctx: typer.Context,
    state: list[str] = STATE_FILTER,
    page_size: int = PAGE_SIZE,
    page_token: str = PAGE_TOKEN,
    wide: bool = WIDE,
) -> None:
    """Recent Fisher jobs, newest first (whole names, at any terminal width)."""
    states = parse_states(state)
    response = run(ctx, lambda c: c.list_fisher_jobs(states=states, page_size=page_size, page_token=page_token))
    listed(options(ctx), response, response.fisher_jobs, wide, ("snapshot", lambda j: j.output_snapshot))


@fisher_jobs_app.command("get")
def fisher_jobs_get(ctx: typer.Context, name: str) -> None:
    """One Fisher job."""
    emit(options(ctx), run(ctx, lambda c: c.get_fisher_job(name)))


@fisher_jobs_app.command("watch")
def fisher_jobs_watch(
    ctx: typer.Context, name: str, after: int = AFTER
) -> None:
    """Follow a Fisher job to its end (reconnecting if the connection drops)."""
    opts = options(ctx)
    raise typer.Exit(guard_interrupt(ctx, lambda c: follow_fisher(c, opts.json, name, after)))


@fisher_jobs_app.command("cancel")
def fisher_jobs_cancel(ctx: typer.Context, name: str) -> None:
    """Ask a Fisher job to stop; it ends CANCELLED."""
    steered(ctx, run(ctx, lambda c: c.cancel_fisher_job(name)))


__all__ = ["fisher_cmd", "fisher_jobs_app", "follow_fisher"]
