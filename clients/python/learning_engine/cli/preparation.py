"""datasets prepare, and preparation-jobs: documents into question-answer pairs a served model writes, stored as a
dataset version (DataPreparationService)."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from learning.v1 import preparation_pb2 as preparation
from learning.v1.error_reason_pb2 import ERROR_REASON_USAGE
from learning_engine.cli.common import as_dict, emit, err, fail, local_bytes, options, out, run
from learning_engine.cli.datasets import _EVAL, _SEED, _TEST, _split, dataset_name, datasets_app
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
from learning_engine.client import AsyncClient

preparation_jobs_app = typer.Typer(help="Data preparation jobs (datasets prepare): list, get, watch, cancel.",
                                   no_args_is_help=True)


@datasets_app.command("prepare")
def datasets_prepare(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The dataset to store the pairs in: handbook or datasets/handbook."),
    files: list[Path] = typer.Argument(None,
                                       help="Local documents (.txt, .md, .markdown, .pdf), sent with the request."),
    server_path: list[str] = typer.Option(None, "--server-path", help="A document below the server's datasets dir; "
                                          "repeatable."),
    questions_per_chunk: int = typer.Option(3, "--questions-per-chunk", min=1, max=10,
                                            help="Pairs asked for about each chunk."),
    chunk_chars: int = typer.Option(1500, "--chunk-chars", min=200, max=8000, help="Longest chunk in characters."),
    generator_model: str = typer.Option("", "--generator-model", help="The model that writes the pairs (default: "
                                        "the server's prepare_generator_model, else the base model)."),
    eval_fraction: float = _EVAL,
    test_fraction: float = _TEST,
    seed: int = _SEED,
    request_id: str = typer.Option("", "--request-id"),
    watch: bool = typer.Option(False, "--watch", "-w", help="Follow it chunk by chunk, then show what was stored."),
) -> None:
    """Turn documents into question-answer pairs a served model writes about each chunk (kept only when the chunk
    supports the answer), stored as a new version of a dataset."""
    opts = options(ctx)
    documents = [preparation.PreparationDocument(name=f.name, content=local_bytes(opts, f)) for f in files or []]
    documents += [preparation.PreparationDocument(name=Path(p).name, server_path=p) for p in server_path or []]
    if not documents:
        fail(opts, grpc.StatusCode.INVALID_ARGUMENT, "name at least one document: FILE... or --server-path",
             reason=ERROR_REASON_USAGE)
    spec = preparation.PreparationJobSpec(
        dataset=dataset_name(name), documents=documents, questions_per_chunk=questions_per_chunk,
        chunk_chars=chunk_chars, generator_model=generator_model, split=_split(eval_fraction, test_fraction, seed))

    async def call(client: AsyncClient) -> int:
        job = await client.create_preparation_job(spec, request_id=request_id)
        if not watch:
            emit(opts, job, lambda: out.print(f"created {job.name} ({short_state(job.state)})", highlight=False))
            return 0
        return await follow_preparation(client, opts.json, job.name)

    raise typer.Exit(guard_interrupt(ctx, call))


def _summary(job: preparation.PreparationJob) -> str:
    r = job.result
    chunks = f"{r.chunks} chunk{'s' * (r.chunks != 1)}"
    return (f"{r.kept} kept of {r.generated} pairs from {chunks} ({r.unsupported} unsupported, "
            f"{r.duplicates} duplicate, {r.unparseable} unparseable)")


async def follow_preparation(client: AsyncClient, as_json: bool, name: str, after_sequence: int = 0) -> int:
    """Show a preparation job chunk by chunk until it ends, then what it stored; return the exit code of its
    outcome."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=err,
                  disable=as_json) as progress:
        bar = None
        async for message in client.watch_preparation_job(name, after_sequence=after_sequence):
            if as_json:
                print(json.dumps(as_dict(message)), flush=True)
            if message.HasField("event") and message.event.HasField("chunk"):
                c = message.event.chunk
                if bar is None:
                    bar = progress.add_task("chunks", total=c.total)
                progress.update(bar, total=c.total, completed=c.done,
                                description=f"{c.document} #{c.chunk}: {c.kept} kept")
    done = await client.get_preparation_job(name)
    if not as_json:
        out.print(f"{done.name} {short_state(done.state)}: {_summary(done)}", highlight=False)
        if done.result.dataset_version:
            out.print(f"{'stored' if done.result.created else 'exists'} {done.result.dataset_version} "
                      f"(train --dataset {done.spec.dataset.removeprefix('datasets/')})", highlight=False)
        if done.HasField("error") and done.error.code:
            err.print(f"[red]{done.error.message}[/]", highlight=False)
    return outcome_code(done.state, done.error.code if done.HasField("error") else 0)


def _kept(job: preparation.PreparationJob) -> str:
    return job.result.dataset_version or (f"{job.result.kept} kept" if job.result.chunks else "")


@preparation_jobs_app.command("list")
def preparation_jobs_list(
    ctx: typer.Context,
    state: list[str] = STATE_FILTER,
    page_size: int = PAGE_SIZE,
    page_token: str = PAGE_TOKEN,
    wide: bool = WIDE,
) -> None:
    """Recent preparation jobs, newest first, with the dataset version each stored."""
    states = parse_states(state)
    response = run(ctx, lambda c: c.list_preparation_jobs(states=states, page_size=page_size, page_token=page_token))
    listed(options(ctx), response, response.preparation_jobs, wide, ("dataset", _kept))


@preparation_jobs_app.command("get")
def preparation_jobs_get(ctx: typer.Context, name: str) -> None:
    """One preparation job: its documents, counts and, once it succeeded, the dataset version."""
    emit(options(ctx), run(ctx, lambda c: c.get_preparation_job(name)))


@preparation_jobs_app.command("watch")
def preparation_jobs_watch(ctx: typer.Context, name: str, after: int = AFTER) -> None:
    """Follow a preparation job to its end."""
    opts = options(ctx)
    raise typer.Exit(guard_interrupt(ctx, lambda c: follow_preparation(c, opts.json, name, after)))


@preparation_jobs_app.command("cancel")
def preparation_jobs_cancel(ctx: typer.Context, name: str) -> None:
    """Ask a preparation job to stop; it ends CANCELLED and stores nothing."""
    steered(ctx, run(ctx, lambda c: c.cancel_preparation_job(name)))
