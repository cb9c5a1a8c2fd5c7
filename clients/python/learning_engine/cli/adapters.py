"""adapters: the adapter registry (list, info, lineage, download, import, delete, prune)."""

from __future__ import annotations

from pathlib import Path

import grpc
import typer
from rich.table import Column

from learning.v1 import adapter_pb2
from learning.v1.error_reason_pb2 import (
    ERROR_REASON_USAGE,
)
from learning_engine.cli.common import (
    as_dict,
    emit,
    err,
    fail,
    grid,
    labels,
    local_path,
    options,
    out,
    print_table,
    run,
    unwritable,
    when,
)


def _train_loss(adapter: adapter_pb2.Adapter) -> str:
    """The "train loss" column: "-" for a version without one (an imported adapter's is 0, unset)."""
    return f"{adapter.train_loss:.4f}" if adapter.train_loss else "-"


adapters_app = typer.Typer(
    help="The adapter registry: list, info, lineage, download, import, delete, prune.", no_args_is_help=True
)


@adapters_app.command("list")
def adapters_list(
    ctx: typer.Context,
    base_model: str = typer.Option("", "--base-model"),
    label: list[str] = typer.Option(None, "--label", help="KEY=VALUE filter, repeatable."),
    page_size: int = typer.Option(50, "--page-size", min=0, max=1000),
    page_token: str = typer.Option("", "--page-token", help="The next page, as the last one printed it."),
) -> None:
    """Published adapter versions, a page at a time."""
    response = run(
        ctx, lambda c: c.list_adapters(base_model=base_model, labels=labels(label), page_size=page_size,
                                       page_token=page_token)
    )
    rows = [
        (
            a.base_model,
            a.version,
            a.parent_version or "-",
            _train_loss(a),
            f"{a.size_bytes:,}",
            a.create_time.ToDatetime().isoformat(timespec="seconds"),
        )
        for a in response.adapters
    ]
    headers = ["base model", "version", "parent", "train loss", "bytes", "created"]

    def render() -> None:
        print_table(grid(headers, rows))
        if response.next_page_token:
            err.print(f"more: --page-token {response.next_page_token}", highlight=False)

    emit(options(ctx), response, render)


@adapters_app.command("info")
def adapters_info(
    ctx: typer.Context, version: str, base_model: str = typer.Option("", "--base-model")
) -> None:
    """One adapter version with its lineage and evaluation."""
    emit(options(ctx), run(ctx, lambda c: c.get_adapter(version, base_model=base_model)))


@adapters_app.command("lineage")
def adapters_lineage(ctx: typer.Context, version: str, base_model: str = typer.Option("", "--base-model")) -> None:
    """A version and its parents back to the first (deleted ones included)."""
    lineage = run(ctx, lambda c: c.get_lineage(version, base_model=base_model))
    rows = [
        (
            a.version,
            adapter_pb2.AdapterSource.Name(a.source).removeprefix("ADAPTER_SOURCE_").lower(),
            a.training_job or "-",
            _train_loss(a),
            "deleted " + when(a.delete_time) if a.HasField("delete_time") else when(a.create_time),
        )
        for a in lineage
    ]
    headers = ["version", "source", Column("training job", no_wrap=True), "train loss", "created"]
    emit(options(ctx), {"adapters": [as_dict(a) for a in lineage]}, lambda: print_table(grid(headers, rows)))


@adapters_app.command("download")
def adapters_download(
    ctx: typer.Context,
    version: str,
    out_dir: Path = typer.Option(Path("."), "--out", "-o", help="Directory to write the archive into (made if "
                                 "missing)."),
    base_model: str = typer.Option("", "--base-model"),
    force: bool = typer.Option(False, "--force", help="Overwrite the version's archive if the directory holds it."),
) -> None:
    """Download an adapter archive as <base model>-<version>.tar.gz (sha256 verified)."""
    opts = options(ctx)
    try:
        adapter, path = run(ctx, lambda c: c.download_adapter(version, out_dir, base_model=base_model,
                                                              overwrite=force))
    except NotADirectoryError as exc:  # --out (or a parent of it) is a file: --force would not help
        fail(opts, grpc.StatusCode.INVALID_ARGUMENT, f"--out must be a directory: {exc.filename} is not one",
             reason=ERROR_REASON_USAGE, metadata={"path": str(exc.filename)})
    except FileExistsError as exc:  # the version's archive is in the directory already
        fail(opts, grpc.StatusCode.INVALID_ARGUMENT, f"{exc.filename} exists; --force overwrites it",
             reason=ERROR_REASON_USAGE, metadata={"path": str(exc.filename)})
    except OSError as exc:  # the directory or the archive in it cannot be written (not allowed, no space left)
        unwritable(opts, out_dir, exc, "--out")
    emit(
        opts,
        {"adapter": as_dict(adapter), "path": str(path)},
        lambda: out.print(f"{adapter.version} -> {path}", highlight=False),
    )


@adapters_app.command("import")
def adapters_import(
    ctx: typer.Context,
    source: Path = typer.Argument(
        ..., help="A PEFT adapter directory (adapter_config.json + adapter_model.safetensors), "
        "as PEFT, Axolotl or LLaMA-Factory write it, or a tar.gz of one."
    ),
    base_model: str = typer.Option("", "--base-model"),
    parent: str = typer.Option("", "--parent"),
    major: bool = typer.Option(False, "--major"),
    label: list[str] = typer.Option(None, "--label"),
    request_id: str = typer.Option("", "--request-id"),
) -> None:
    """Import an externally trained PEFT adapter as a new version (a directory is packed here first)."""
    opts = options(ctx)
    local_path(opts, source, directory_ok=True)
    try:
        adapter = run(
            ctx,
            lambda c: c.import_adapter(
                source,
                base_model=base_model,
                parent_version=parent,
                major_version_bump=major,
                labels=labels(label),
                request_id=request_id,
            ),
        )
    except FileNotFoundError as exc:  # a directory without the adapter's files
        fail(opts, grpc.StatusCode.INVALID_ARGUMENT, str(exc), reason=ERROR_REASON_USAGE)
    emit(opts, adapter, lambda: out.print(f"imported {adapter.base_model} {adapter.version}"))


@adapters_app.command("delete")
def adapters_delete(ctx: typer.Context, version: str, base_model: str = typer.Option("", "--base-model")) -> None:
    """Delete a version's archive (refused while it is active or the known-good one); it stays in lineages."""
    run(ctx, lambda c: c.delete_adapter(version, base_model=base_model))
    emit(options(ctx), {"deleted": version}, lambda: out.print(f"deleted {version}", highlight=False))


@adapters_app.command("prune")
def adapters_prune(
    ctx: typer.Context,
    keep: int = typer.Option(0, "--keep", min=0, max=1_000_000,
                             help="Keep this many newest versions (0: the server's setting)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be deleted; delete nothing."),
    base_model: str = typer.Option("", "--base-model"),
) -> None:
    """Apply the retention policy now (the active and known-good versions are always kept)."""
    response = run(ctx, lambda c: c.prune_adapters(base_model=base_model, keep=keep, dry_run=dry_run))
    deleted = ", ".join(response.deleted_versions) or "nothing"
    emit(options(ctx), response, lambda: out.print(
        f"{'would delete' if dry_run else 'deleted'} {deleted}; kept {', '.join(response.kept_versions) or '-'}",
        highlight=False))


__all__ = ["adapters_app"]
