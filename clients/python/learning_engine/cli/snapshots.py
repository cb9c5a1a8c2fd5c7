"""snapshots: list, show and delete stored Fisher snapshots (what EWC jobs anchor to)."""

from __future__ import annotations

import typer
from rich.table import Column, Table

from learning.v1 import common_pb2 as common
from learning.v1 import fisher_pb2 as fisher
from learning_engine.cli.common import emit, options, out, run

snapshots_app = typer.Typer(help="Fisher snapshots: list, info, delete.", no_args_is_help=True)


def _short(enum, prefix: str, value: int) -> str:
    return enum.Name(value).removeprefix(prefix).lower()


@snapshots_app.command("list")
def snapshots_list(
    ctx: typer.Context,
    adapter_version: str = typer.Option("", "--adapter-version", help="Only this adapter version's snapshots."),
    base_model: str = typer.Option("", "--base-model"),
    page_size: int = typer.Option(50, "--page-size", min=0, max=1000),
) -> None:
    """Stored Fisher snapshots, newest first."""
    response = run(ctx, lambda c: c.list_fisher_snapshots(
        base_model=base_model, adapter_version=adapter_version, page_size=page_size))

    def render() -> None:
        name = Column("name", no_wrap=True, min_width=48)  # whole, to paste into info and delete
        table = Table(name, "adapter", "space", "estimator", "samples", "sum")  # newest first; info has the time
        for s in response.fisher_snapshots:
            table.add_row(
                s.name, s.adapter_version, _short(common.FisherSpace, "FISHER_SPACE_", s.space),
                _short(fisher.FisherEstimator, "FISHER_ESTIMATOR_", s.estimator), str(s.sample_count),
                f"{s.stats.sum:.4g}",
            )
        out.print(table)

    emit(options(ctx), response, render)


@snapshots_app.command("info")
def snapshots_info(ctx: typer.Context, name: str = typer.Argument(..., help="fisherSnapshots/<id>")) -> None:
    """One snapshot: what it measured, with its statistics and digest."""
    emit(options(ctx), run(ctx, lambda c: c.get_fisher_snapshot(name)))


@snapshots_app.command("delete")
def snapshots_delete(ctx: typer.Context, name: str = typer.Argument(..., help="fisherSnapshots/<id>")) -> None:
    """Delete a snapshot and its file."""
    run(ctx, lambda c: c.delete_fisher_snapshot(name))
    emit(options(ctx), {"deleted": name}, lambda: out.print(f"deleted {name}", highlight=False))
