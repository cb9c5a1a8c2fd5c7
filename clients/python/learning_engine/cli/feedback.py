"""feedback: import JSONL events, their stats, forget a user."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import typer
from google.protobuf import json_format

from learning.v1 import feedback_pb2 as feedback
from learning.v1.error_reason_pb2 import (
    ERROR_REASON_FEEDBACK_LINE_INVALID,
    ERROR_REASON_USAGE,
)
from learning_engine.cli.common import (
    emit,
    fail,
    grid,
    local_text,
    options,
    out,
    print_table,
    run,
)
from learning_engine.client import AsyncClient

feedback_app = typer.Typer(help="Feedback: import JSONL events, stats, forget a user.", no_args_is_help=True)


@feedback_app.command("import")
def feedback_import(
    ctx: typer.Context,
    path: Path = typer.Argument(
        ..., help="JSONL, one FeedbackEvent (proto JSON) a line."
    ),
    batch: int = typer.Option(500, "--batch", min=1, max=10_000),
    stream: bool = typer.Option(
        False, "--stream", help="Send the batches on one stream (StreamFeedback) instead of a call each."
    ),
) -> None:
    """Submit feedback events from a JSONL file, in batches; the whole file is checked first."""
    opts = options(ctx)
    events: list[feedback.FeedbackEvent] = []
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

    batches = [events[start : start + batch] for start in range(0, len(events), batch)]

    async def call(client: AsyncClient) -> dict[str, int]:
        totals = {"events": len(events), "stored": 0, "duplicates": 0, "forgotten": 0}
        responses = [await client.stream_feedback(batches)] if stream else [
            await client.submit_feedback(b) for b in batches]
        for response in responses:
            totals["stored"] += response.stored
            totals["duplicates"] += response.duplicates
            totals["forgotten"] += response.forgotten
        return totals

    totals = run(ctx, call)
    emit(
        opts,
        totals,
        lambda: out.print(
            f"{totals['events']} events: {totals['stored']} stored, {totals['duplicates']} duplicates"
            + (f", {totals['forgotten']} of forgotten users refused" if totals["forgotten"] else "")
        ),
    )


@feedback_app.command("stats")
def feedback_stats(
    ctx: typer.Context,
    days: float = typer.Option(7.0, "--days", min=0, help="The window: this many days before --until."),
    until: datetime = typer.Option(None, "--until", help="End of the window (ISO date/time, UTC; default: now)."),
    adapter_version: str = typer.Option("", "--adapter-version", help="Only events on this version."),
    tenant: str = typer.Option("", "--tenant", help="Only this tenant's events."),
    base_model: str = typer.Option(
        "", "--base-model", help="Only events on this base model (and those stored before events recorded one)."
    ),
) -> None:
    """Feedback counts in a window, by kind and by adapter version (positive: thumbs up, ratings 4-5)."""
    end = until.replace(tzinfo=until.tzinfo or UTC) if until is not None else datetime.now(UTC)
    stats = run(ctx, lambda c: c.get_feedback_stats(
        start_time=end - timedelta(days=days), end_time=end, adapter_version=adapter_version, tenant_id=tenant,
        base_model=base_model))

    def render() -> None:
        start, stop = (t.ToDatetime().isoformat(timespec="seconds") for t in (stats.start_time, stats.end_time))
        out.print(f"{stats.total} events from {start} to {stop} (UTC)", highlight=False)
        kinds = [(feedback.FeedbackKind.Name(k.kind).removeprefix("FEEDBACK_KIND_").lower(), str(k.count))
                 for k in stats.by_kind]
        if kinds:
            print_table(grid(["kind", "events"], kinds))
        versions = [(a.adapter_version or "(base model)", str(a.positive), str(a.negative), f"{a.positive_ratio:.2f}")
                    for a in stats.by_adapter]
        if versions:
            print_table(grid(["adapter", "positive", "negative", "positive ratio"], versions))

    emit(options(ctx), stats, render)


@feedback_app.command("forget-user")
def feedback_forget_user(
    ctx: typer.Context, user_id: str = typer.Argument(..., help="The user_id their events carry.")
) -> None:
    """Right to be forgotten: delete a user's events; any of theirs timed before now is refused from then on."""
    opts = options(ctx)
    if not user_id.strip():
        fail(opts, grpc.StatusCode.INVALID_ARGUMENT, "name the user whose feedback to delete",
             reason=ERROR_REASON_USAGE)
    deleted = run(ctx, lambda c: c.delete_user_feedback(user_id))
    emit(opts, {"user_id": user_id, "deleted": deleted},
         lambda: out.print(f"forgot {user_id}: {deleted} events deleted", highlight=False))


__all__ = ["feedback_app"]
