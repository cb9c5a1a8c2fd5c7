"""evaluation-jobs: evaluate a version against a baseline as a job, and follow evaluation jobs to their decision."""

from __future__ import annotations

import json

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from learning.v1 import evaluation_pb2 as evaluation
from learning_engine.cli.common import (
    as_dict,
    emit,
    err,
    options,
    out,
    run,
)
from learning_engine.cli.datasets import dataset_name, upload_suite
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
from learning_engine.cli.ops import (
    BASE_MODEL_ITSELF,
    CHECK,
    GATE_FAILED,
    SUITE_DATASET_HELP,
    SUITE_HELP,
    VERSION_ARGUMENT,
    candidate_name,
    golden_suites,
    render_eval,
)
from learning_engine.client import AsyncClient

evaluation_jobs_app = typer.Typer(help="Evaluation jobs: create, list, get, watch, cancel.", no_args_is_help=True)


@evaluation_jobs_app.command("create")
def evaluation_jobs_create(
    ctx: typer.Context,
    version: str = VERSION_ARGUMENT,
    baseline: str = typer.Option("", "--baseline", help="Version to compare with (default: the active one then)."),
    suite: list[str] = typer.Option(None, "--suite", help=SUITE_HELP + " Repeatable."),
    suite_dataset: list[str] = typer.Option(None, "--suite-dataset", help=SUITE_DATASET_HELP),
    base_model: str = typer.Option("", "--base-model"),
    request_id: str = typer.Option("", "--request-id"),
    watch: bool = typer.Option(False, "--watch", "-w", help="Follow it, then show the decision."),
    check: bool = CHECK,
    judge: bool | None = typer.Option(None, "--judge/--no-judge", help="A served model grades every answer "
                                      "(LLM-as-judge); default: as the server is configured (eval_judge)."),
    judge_model: str = typer.Option("", "--judge-model", help="The judge's model id (with --judge; default: the "
                                    "server's eval_judge_model, else the base model)."),
    base_model_itself: bool = BASE_MODEL_ITSELF,
) -> None:
    """Evaluate a version against a baseline as a job (the gate's suites, --suite and --suite-dataset ones), or the
    base model itself (--base-model-itself: the golden suites only); activates nothing."""
    opts = options(ctx)
    choice = {None: evaluation.EVALUATION_JUDGE_UNSPECIFIED, True: evaluation.EVALUATION_JUDGE_ON,
              False: evaluation.EVALUATION_JUDGE_OFF}[judge]
    paths, local = golden_suites(suite or [])
    spec = evaluation.EvaluationJobSpec(version=version, baseline_version=baseline, suite_paths=paths,
                                        base_model=base_model, judge=choice, judge_model=judge_model,
                                        base_model_itself=base_model_itself)

    async def call(client: AsyncClient) -> int:
        uploaded = [await upload_suite(client, file, quiet=opts.json) for file in local]
        spec.suite_datasets.extend([*uploaded, *(dataset_name(d) for d in suite_dataset or [])])
        job = await client.create_evaluation_job(spec, request_id=request_id)
        if not watch:
            emit(opts, job, lambda: out.print(f"created {job.name} ({short_state(job.state)})", highlight=False))
            return 0
        code = await follow_evaluation(client, opts.json, job.name)
        if code == 0 and check and not (await client.get_evaluation_job(job.name)).eval.passed:
            return GATE_FAILED
        return code

    raise typer.Exit(guard_interrupt(ctx, call))


async def follow_evaluation(client: AsyncClient, as_json: bool, name: str, after_sequence: int = 0) -> int:
    """Show an evaluation job's answers suite by suite until it ends, then its decision; return the exit code of
    its outcome (a version that fails the gate is a job that succeeded: 0)."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err,
                  disable=as_json) as progress:
        bars: dict[str, TaskID] = {}
        async for message in client.watch_evaluation_job(name, after_sequence=after_sequence):
            if as_json:
                print(json.dumps(as_dict(message)), flush=True)
            if message.HasField("event") and message.event.HasField("progress"):
                p = message.event.progress
                bar = bars.setdefault(p.suite, progress.add_task(p.suite, total=p.total))
                progress.update(bar, total=p.total, completed=p.answered)
    done = await client.get_evaluation_job(name)
    if not as_json:
        out.print(f"{done.name} {short_state(done.state)}", highlight=False)
        if done.HasField("eval"):
            render_eval(candidate_name(done.spec.version), done.eval)
        if done.HasField("error") and done.error.code:
            err.print(f"[red]{done.error.message}[/]", highlight=False)
    return outcome_code(done.state, done.error.code if done.HasField("error") else 0)


def _verdict(job: evaluation.EvaluationJob) -> str:
    return ("passed" if job.eval.passed else "failed") if job.HasField("eval") else ""


@evaluation_jobs_app.command("list")
def evaluation_jobs_list(
    ctx: typer.Context,
    state: list[str] = STATE_FILTER,
    page_size: int = PAGE_SIZE,
    page_token: str = PAGE_TOKEN,
    wide: bool = WIDE,
) -> None:
    """Recent evaluation jobs, newest first, with their verdicts (whole names, at any terminal width)."""
    states = parse_states(state)
    response = run(ctx, lambda c: c.list_evaluation_jobs(states=states, page_size=page_size, page_token=page_token))
    listed(options(ctx), response, response.evaluation_jobs, wide, ("verdict", _verdict))


@evaluation_jobs_app.command("get")
def evaluation_jobs_get(ctx: typer.Context, name: str) -> None:
    """One evaluation job, with its decision once it ended."""
    emit(options(ctx), run(ctx, lambda c: c.get_evaluation_job(name)))


@evaluation_jobs_app.command("watch")
def evaluation_jobs_watch(
    ctx: typer.Context, name: str, after: int = AFTER
) -> None:
    """Follow an evaluation job to its end and show its decision."""
    opts = options(ctx)
    raise typer.Exit(guard_interrupt(ctx, lambda c: follow_evaluation(c, opts.json, name, after)))


@evaluation_jobs_app.command("cancel")
def evaluation_jobs_cancel(ctx: typer.Context, name: str) -> None:
    """Ask an evaluation job to stop; it ends CANCELLED."""
    steered(ctx, run(ctx, lambda c: c.cancel_evaluation_job(name)))


__all__ = ["evaluation_jobs_app", "follow_evaluation"]
