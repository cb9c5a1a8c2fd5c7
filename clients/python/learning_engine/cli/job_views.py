"""What every job command (training, Fisher and evaluation jobs, pipelines, preparations) shares: the list and
watch options, state names and filters, the job table, the exit code of a job's outcome, and the
answer to Ctrl-C while watching."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import typer
from rich.table import Column, Table

from learning.v1 import common_pb2 as common
from learning_engine.cli.common import UINT64_MAX, Options, emit, err, interrupted, options, out, print_table, run, when


def short_state(state: int) -> str:
    return common.JobState.Name(state).removeprefix("JOB_STATE_")


def guard_interrupt(ctx: typer.Context, call,
                    going_on: str = "the job keeps running (learning-engine jobs watch NAME)") -> int:
    """``call``'s exit code; Ctrl-C stops the watch only, saying so (``going_on``: what goes on, and how to watch
    it again)."""
    try:
        return run(ctx, call)
    except KeyboardInterrupt:
        interrupted(f"stopped watching; {going_on}")


def outcome_code(state: int, error_code: int) -> int:
    """The exit code of a watch that ended with the job in ``state``: 0 succeeded, 1 (CANCELLED) cancelled,
    10 (ABORTED) paused (stopped before its end: resume it and watch again), else the code of the job's error."""
    if state == common.JOB_STATE_SUCCEEDED:
        return 0
    if state == common.JOB_STATE_CANCELLED:
        return grpc.StatusCode.CANCELLED.value[0]
    if state == common.JOB_STATE_PAUSED:
        return grpc.StatusCode.ABORTED.value[0]
    return error_code or grpc.StatusCode.UNKNOWN.value[0]


# Options every job list and watch takes.
STATE_FILTER = typer.Option(None, "--state", help="Only jobs in this state (queued, running, ...); repeatable.")
PAGE_SIZE = typer.Option(20, "--page-size", min=0, max=1000)
PAGE_TOKEN = typer.Option("", "--page-token", help="The next page, as a previous list printed it.")
AFTER = typer.Option(0, "--after", min=0, max=UINT64_MAX, help="Resume after this event's sequence number.")
WIDE = typer.Option(False, "--wide", help="Also show when each job was created and ended.")


def parse_states(values: list[str] | None) -> list[int]:
    states = []
    for value in values or []:
        key = f"JOB_STATE_{value.upper()}"
        if key not in common.JobState.keys()[1:]:
            names = " | ".join(n.removeprefix("JOB_STATE_").lower() for n in common.JobState.keys()[1:])
            raise typer.BadParameter(f"unknown state {value!r}; one of {names}", param_hint="--state")
        states.append(common.JobState.Value(key))
    return states


def _job_table(jobs, wide: bool, result: tuple[str, Callable[[Any], str]], worker: bool = False) -> Table:
    """Jobs, newest first, their whole names first (to paste into the next command); ``--wide`` adds the rest.
    ``result`` is the header and the reading of the job's result column (its adapter, snapshot, verdict)."""
    header, result_of = result
    columns = [Column("name", no_wrap=True), "state", "progress", Column(header, no_wrap=True)]
    if wide:
        columns += ["created", "ended"] + (["worker"] if worker else [])
    table = Table(*columns, box=None, header_style="bold")
    for job in jobs:
        row = [job.name, short_state(job.state), f"{job.progress.fraction:.0%}", result_of(job) or "-"]
        if wide:
            row += [when(job.create_time), when(job.end_time)] + ([job.worker or "-"] if worker else [])
        table.add_row(*row)
    return table


def listed(opts: Options, response, jobs, wide: bool, result: tuple[str, Callable[[Any], str]],
            worker: bool = False) -> None:
    def render() -> None:
        print_table(_job_table(jobs, wide, result, worker))
        if response.next_page_token:
            err.print(f"more: --page-token {response.next_page_token}", highlight=False)

    emit(opts, response, render)


def steered(ctx: typer.Context, job) -> None:
    emit(options(ctx), job, lambda: out.print(f"{job.name} {short_state(job.state)}", highlight=False))
