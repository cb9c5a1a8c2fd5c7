"""feedback: import JSONL events, their stats, forget a user."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NoReturn

import grpc
import typer
from google.protobuf import json_format

from learning.v1 import feedback_pb2 as feedback
from learning.v1.error_reason_pb2 import (
    ERROR_REASON_FEEDBACK_LINE_INVALID,
    ERROR_REASON_USAGE,
)
from learning_engine.cli.common import (
    Options,
    emit,
    fail,
    grid,
    local_text,
    options,
    out,
    print_table,
    run,
    window_days,
)
from learning_engine.client import AsyncClient
from learning_engine.errors import LearningEngineError

feedback_app = typer.Typer(help="Feedback: import JSONL events, stats, forget a user.", no_args_is_help=True)
# GetFeedbackStats has no longest window; past ten years (the longest a dataset's feedback window may be,
# FeedbackDataset.days) is a typo, and past a point a date before the year 1
STATS_MAX_DAYS = 3650
_EVENT = re.compile(r"events\[(\d+)\]")  # the server names a batch's events from 0: "events[2].rating"


@feedback_app.command("import")
def feedback_import(
    ctx: typer.Context,
    path: Path = typer.Argument(
        ..., help="JSONL, one FeedbackEvent (proto JSON) a line."
    ),
    batch: int = typer.Option(500, "--batch", min=1, max=10_000, help="Events per call (per message with --stream)."),
    stream: bool = typer.Option(
        False, "--stream", help="Send the batches on one stream (StreamFeedback) instead of a call each."
    ),
) -> None:
    """Submit feedback events from a JSONL file, in batches, in order. Every line is read as JSON here first (one
    that is no FeedbackEvent stops the import before anything is sent); the server checks each batch when it gets
    it and stores it whole or not at all. A refused batch stops the import: the batches before it are stored, and
    the error says how many events that was and names each bad event by its line. Importing the file again is safe
    (an event id stored already is not stored twice)."""
    opts = options(ctx)
    events: list[feedback.FeedbackEvent] = []
    numbers: list[int] = []  # the file's line of each event
    for number, line in enumerate(local_text(opts, path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            events.append(json_format.Parse(line, feedback.FeedbackEvent()))
        except json_format.ParseError as exc:
            fail(
                opts,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{path}:{number}: {exc}",
                reason=ERROR_REASON_FEEDBACK_LINE_INVALID,
                violations=[(f"line[{number}]", str(exc))],
            )
        numbers.append(number)

    batches = [events[start : start + batch] for start in range(0, len(events), batch)]
    totals = {"events": len(events), "stored": 0, "duplicates": 0, "forgotten": 0}

    def add(response: feedback.SubmitFeedbackResponse | feedback.StreamFeedbackResponse) -> None:
        totals["stored"] += response.stored
        totals["duplicates"] += response.duplicates
        totals["forgotten"] += response.forgotten

    async def call(client: AsyncClient) -> tuple[LearningEngineError, int | None] | None:
        """None once every batch is stored; else the error and the index of the batch it stopped at (None: not
        known, a stream whose error did not say what it committed)."""
        if stream:
            try:
                add(await client.stream_feedback(batches))
            except LearningEngineError as exc:
                committed = exc.metadata.get("committed_messages", "")
                if not committed.isdigit():
                    return exc, None
                totals["stored"] = int(exc.metadata.get("stored", "0") or 0)
                totals["duplicates"] = int(exc.metadata.get("duplicates", "0") or 0)
                return exc, int(committed)
            return None
        for index, events_of_batch in enumerate(batches):
            try:
                add(await client.submit_feedback(events_of_batch))
            except LearningEngineError as exc:
                return exc, index
        return None

    stopped = run(ctx, call)
    if stopped is not None:
        _stopped(opts, path, stopped[0], stopped[1], batches, numbers, totals)
    emit(
        opts,
        totals,
        lambda: out.print(
            f"{totals['events']} events: {totals['stored']} stored, {totals['duplicates']} duplicates"
            + (f", {totals['forgotten']} of forgotten users refused" if totals["forgotten"] else "")
        ),
    )


def _stopped(opts: Options, path: Path, exc: LearningEngineError, index: int | None,
             batches: list[list[feedback.FeedbackEvent]], numbers: list[int], totals: dict[str, int]) -> NoReturn:
    """Fail with the error a batch of ``feedback import`` met, its ``events[i]`` named by the file's lines
    (``line[3].rating``), and what was stored before it; exit with the error's code."""
    size = len(batches[0]) if batches else 0
    lines: list[int] = []
    if index is not None and index < len(batches):
        lines = numbers[index * size : index * size + len(batches[index])]

    def on_lines(text: str) -> str:
        return _EVENT.sub(lambda m: f"line[{lines[int(m[1])]}]" if int(m[1]) < len(lines) else m[0], text)

    metadata = dict(exc.metadata)
    if index is None:
        where = f"{path}: the stream failed, and the server did not say what it had stored"
    elif not lines:
        where = f"{path}: the stream failed after all {len(batches)} batches were stored ({totals['stored']} events" \
                f" stored, {totals['duplicates']} duplicates)"
    else:
        before = (f"the {index} batch(es) before it (lines {numbers[0]}-{lines[0] - 1}) were stored: "
                  f"{totals['stored']} events stored, {totals['duplicates']} duplicates"
                  + (f", {totals['forgotten']} of forgotten users refused" if totals["forgotten"] else "")
                  if index else "nothing before it was stored")
        later = "; the batches after it were not stored" if index + 1 < len(batches) else ""
        where = f"{path}: batch {index + 1} of {len(batches)} (lines {lines[0]}-{lines[-1]}) failed, {before}{later}"
        for key, value in (("committed_messages", index), ("stored", totals["stored"]),
                           ("duplicates", totals["duplicates"])):
            metadata.setdefault(key, str(value))  # a stream's error says so itself; say the same of calls
        metadata["failed_lines"] = f"{lines[0]}-{lines[-1]}"
        for key, mapped in (("first_invalid_index", "first_invalid_line"), ("invalid_events", "invalid_lines")):
            found = [int(i) for i in metadata.get(key, "").split(",") if i.isdigit()]
            if found and all(i < len(lines) for i in found):
                metadata[mapped] = ",".join(str(lines[i]) for i in found)
    fail(opts, exc.code, f"{where}. {on_lines(exc.message)}", reason=exc.reason, metadata=metadata,
         violations=[(on_lines(v.field), v.description) for v in exc.violations])


@feedback_app.command("stats")
def feedback_stats(
    ctx: typer.Context,
    days: float = typer.Option(7.0, "--days", callback=window_days(STATS_MAX_DAYS),
                               help=f"The window: this many days before --until (more than 0, at most "
                                    f"{STATS_MAX_DAYS})."),
    until: datetime = typer.Option(None, "--until", help="End of the window (ISO date/time, UTC; default: now)."),
    adapter_version: str = typer.Option("", "--adapter-version", help="Only events on this version."),
    tenant: str = typer.Option("", "--tenant", help="Only this tenant's events."),
    base_model: str = typer.Option(
        "", "--base-model", help="Only events on this base model (and those stored before events recorded one)."
    ),
) -> None:
    """Feedback counts in a window, by kind and by adapter version (positive: thumbs up, ratings 4-5)."""
    opts = options(ctx)
    end = until.replace(tzinfo=until.tzinfo or UTC) if until is not None else datetime.now(UTC)
    try:
        start = end - timedelta(days=days)
    except OverflowError:
        fail(opts, grpc.StatusCode.INVALID_ARGUMENT, f"--days {days:g} before --until {end.date().isoformat()} would "
             "start before the year 1", reason=ERROR_REASON_USAGE)
    stats = run(ctx, lambda c: c.get_feedback_stats(
        start_time=start, end_time=end, adapter_version=adapter_version, tenant_id=tenant, base_model=base_model))

    def render() -> None:
        start, stop = (t.ToDatetime().isoformat(timespec="seconds") for t in (stats.start_time, stats.end_time))
        out.print(f"{stats.total} events from {start} to {stop} (UTC)", highlight=False)
        kinds = [(feedback.FeedbackKind.Name(k.kind).removeprefix("FEEDBACK_KIND_").lower(), str(k.count))
                 for k in stats.by_kind]
        if kinds:
            print_table(grid(["kind", "events"], kinds))
        versions = [(a.base_model or "-", a.adapter_version or "(base model)", str(a.positive), str(a.negative),
                     f"{a.positive_ratio:.2f}") for a in stats.by_adapter]
        if versions:
            print_table(grid(["base model", "adapter", "positive", "negative", "positive ratio"], versions))

    emit(opts, stats, render)


@feedback_app.command("forget-user")
def feedback_forget_user(
    ctx: typer.Context, user_id: str = typer.Argument(..., help="The user_id their events carry.")
) -> None:
    """Right to be forgotten: delete a user's events, and the examples online sessions made of them; any of theirs
    timed before now is refused from then on."""
    opts = options(ctx)
    if not user_id.strip():
        fail(opts, grpc.StatusCode.INVALID_ARGUMENT, "name the user whose feedback to delete",
             reason=ERROR_REASON_USAGE)
    erased = run(ctx, lambda c: c.forget_user(user_id))
    online = (f", {erased.online_examples_deleted} online examples deleted" if erased.online_examples_deleted
              else "")
    emit(opts, {"user_id": user_id, "deleted": erased.deleted,
                "online_examples_deleted": erased.online_examples_deleted},
         lambda: out.print(f"forgot {user_id}: {erased.deleted} events deleted{online}", highlight=False))


__all__ = ["feedback_app"]
