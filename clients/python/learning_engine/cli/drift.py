"""``drift report``: is what users ask still what the served version was trained on?"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import typer
from rich.table import Table

from learning.v1 import drift_pb2 as drift
from learning_engine.cli.common import emit, options, out, print_table, run, when, window_days

drift_app = typer.Typer(help="Drift: the incoming prompts against the active version's training data.",
                        no_args_is_help=True)


DRIFT_MAX_DAYS = 366  # the longest window the server's drift detector takes (engine.drift DriftConfig.max_window)


def _table(headers: list[str], rows: list[tuple[str, ...]]) -> Table:
    table = Table(*headers, box=None, header_style="bold")
    for row in rows:
        table.add_row(*row)
    return table


@drift_app.command("report")
def drift_report(
    ctx: typer.Context,
    base_model: str = typer.Option("", "--base-model", help="Base model id (default: the server's)."),
    days: float = typer.Option(None, "--days", callback=window_days(DRIFT_MAX_DAYS),
                               help=f"The window: this many days before --until, more than 0 and at most "
                                    f"{DRIFT_MAX_DAYS} (default: the server's drift_window_days).", show_default=False),
    until: datetime = typer.Option(None, "--until", help="End of the window (ISO date/time, UTC; default: now)."),
) -> None:
    """The drift report: the statistic against its threshold, the prompts that moved most, the negative-feedback
    rate and the evaluation scores over the window. Exits 0 whether or not it drifted (see outcome in --json)."""
    end = until.replace(tzinfo=until.tzinfo or UTC) if until is not None else None
    window = timedelta(days=days) if days is not None else None
    report = run(ctx, lambda c: c.get_drift_report(base_model=base_model, window=window, end_time=end))

    def render() -> None:
        outcome = drift.DriftOutcome.Name(report.outcome).removeprefix("DRIFT_OUTCOME_").replace("_", " ").lower()
        out.print(f"{report.base_model}: {outcome} ({when(report.window_start_time)} to "
                  f"{when(report.window_end_time)} UTC)", highlight=False)
        if report.reference_version:  # with no reference to compare with, the note below says why
            trained = "" if report.outcome == drift.DRIFT_OUTCOME_NO_REFERENCE else \
                f", trained on {report.reference_total} prompts"
            out.print(f"reference: {report.reference_version}{trained}", highlight=False)
        if report.permutations:
            out.print(f"{report.statistic_name} {report.statistic:.5f} against threshold {report.threshold:.5f} "
                      f"(p = {report.p_value:.4f}, significance {report.significance}, {report.permutations} "
                      f"permutations; {report.incoming_samples} incoming and {report.reference_samples} reference "
                      f"prompts)", highlight=False)
        out.print(f"{report.incoming_total} interactions in the window", highlight=False)
        if report.note:
            out.print(report.note, highlight=False)
        if report.moved:
            print_table(_table(["moved most", "distance", "nearest training prompt"],
                               [(m.prompt, f"{m.distance:.3f}", m.nearest_reference) for m in report.moved]))
        print_table(_table(["from", "to", "positive", "negative", "negative rate"],
                           [(when(b.start_time), when(b.end_time), str(b.positive), str(b.negative),
                             f"{b.negative_rate:.2f}") for b in report.negative_rate]))
        if report.eval_scores:
            print_table(_table(["evaluated", "version", "against", "passed", "metrics"],
                               [(when(e.time), e.version or "base", e.baseline_version or "base",
                                 "yes" if e.passed else "no",
                                 ", ".join(f"{m.name}={m.value:.3f}" for m in e.metrics if m.name.endswith(
                                     ("pass_rate", "mean_score"))))
                                for e in report.eval_scores]))

    emit(options(ctx), report, render)
