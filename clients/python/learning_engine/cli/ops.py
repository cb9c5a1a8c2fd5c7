"""Operations: health, adapters, deploy/rollback/enable/disable/status, metrics, feedback import."""

from __future__ import annotations

import json
import os
import secrets
import sys
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import typer
from google.protobuf import json_format
from rich.table import Table

from learning.v1 import feedback_pb2 as feedback
from learning.v1 import lora_control_pb2 as lora
from learning.v1.error_reason_pb2 import ERROR_REASON_FEEDBACK_LINE_INVALID, ERROR_REASON_METRICS_UNREACHABLE
from learning_engine.cli.common import as_dict, emit, fail, labels, options, out, run
from learning_engine.client import AsyncClient

adapters_app = typer.Typer(help="The adapter registry: list, info, download, import.", no_args_is_help=True)
feedback_app = typer.Typer(help="Feedback: import JSONL events.", no_args_is_help=True)

SERVICES = (
    "learning.v1.TrainingService",
    "learning.v1.FisherService",
    "learning.v1.AdapterService",
    "learning.v1.LoraControlService",
    "learning.v1.FeedbackService",
)


def health(ctx: typer.Context) -> None:
    """Serving status of the server and each service (open: needs no token)."""
    opts = options(ctx)

    async def call(client: AsyncClient) -> dict[str, str]:
        return {name or "server": await client.health(name) for name in ("", *SERVICES)}

    statuses = run(ctx, call)
    emit(opts, statuses, lambda: out.print(_table(["service", "status"], statuses.items())))
    if any(status != "SERVING" for status in statuses.values()):
        raise typer.Exit(grpc.StatusCode.UNAVAILABLE.value[0])


def _table(headers: list[str], rows) -> Table:
    table = Table(*headers)
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    return table


# ---- adapters ------------------------------------------------------------------------


@adapters_app.command("list")
def adapters_list(
    ctx: typer.Context,
    base_model: str = typer.Option("", "--base-model"),
    label: list[str] = typer.Option(None, "--label", help="KEY=VALUE filter, repeatable."),
    page_size: int = typer.Option(50, "--page-size"),
) -> None:
    """Published adapter versions."""
    response = run(
        ctx, lambda c: c.list_adapters(base_model=base_model, labels=labels(label), page_size=page_size)
    )
    rows = [
        (
            a.base_model,
            a.version,
            a.parent_version or "-",
            f"{a.train_loss:.4f}",
            f"{a.size_bytes:,}",
            a.create_time.ToDatetime().isoformat(timespec="seconds"),
        )
        for a in response.adapters
    ]
    headers = ["base model", "version", "parent", "train loss", "bytes", "created"]
    emit(options(ctx), response, lambda: out.print(_table(headers, rows)))


@adapters_app.command("info")
def adapters_info(
    ctx: typer.Context, version: str, base_model: str = typer.Option("", "--base-model")
) -> None:
    """One adapter version with its lineage and evaluation."""
    emit(options(ctx), run(ctx, lambda c: c.get_adapter(version, base_model=base_model)))


@adapters_app.command("download")
def adapters_download(
    ctx: typer.Context,
    version: str,
    out_dir: Path = typer.Option(Path("."), "--out", "-o", help="Directory to write the archive into."),
    base_model: str = typer.Option("", "--base-model"),
) -> None:
    """Download an adapter archive (sha256 verified)."""
    adapter, path = run(ctx, lambda c: c.download_adapter(version, out_dir, base_model=base_model))
    emit(
        options(ctx),
        {"adapter": as_dict(adapter), "path": str(path)},
        lambda: out.print(f"{adapter.version} -> {path}", highlight=False),
    )


@adapters_app.command("import")
def adapters_import(
    ctx: typer.Context,
    archive: Path = typer.Argument(..., exists=True, dir_okay=False, help="Adapter archive to upload."),
    base_model: str = typer.Option("", "--base-model"),
    parent: str = typer.Option("", "--parent"),
    major: bool = typer.Option(False, "--major"),
    label: list[str] = typer.Option(None, "--label"),
    request_id: str = typer.Option("", "--request-id"),
) -> None:
    """Import an externally trained PEFT adapter as a new version."""
    adapter = run(
        ctx,
        lambda c: c.import_adapter(
            archive,
            base_model=base_model,
            parent_version=parent,
            major_version_bump=major,
            labels=labels(label),
            request_id=request_id,
        ),
    )
    emit(options(ctx), adapter, lambda: out.print(f"imported {adapter.base_model} {adapter.version}"))


# ---- LoRA control --------------------------------------------------------------------


def _status_render(status: lora.LoraStatus):
    def render() -> None:
        rows = [
            ("target", status.target),
            ("base model", status.base_model),
            ("LoRA enabled", status.enabled),
            ("active", status.active_version or "-"),
            ("previous", status.previous_version or "-"),
            ("known good", status.known_good_version or "-"),
            ("loaded", ", ".join(f"{a.lora_name}={a.version}" for a in status.loaded) or "-"),
        ]
        if status.HasField("last_operation"):
            op = status.last_operation
            rows.append(
                ("last operation", f"{lora.LoraOperationKind.Name(op.kind)} {op.version} by {op.actor}")
            )
        out.print(_table(["", ""], rows))

    return render


def deploy(
    ctx: typer.Context,
    version: str,
    reason: str = typer.Option("", "--reason"),
    force: bool = typer.Option(False, "--force", help="Activate even if the evaluation gate fails."),
    known_good: bool = typer.Option(False, "--known-good", help="Mark as the rollback target."),
) -> None:
    """Activate an adapter version in the serving engine (hot swap)."""
    response = run(
        ctx, lambda c: c.activate_adapter(version, reason=reason, force=force, mark_known_good=known_good)
    )
    emit(options(ctx), response, _status_render(response.status))


def rollback(ctx: typer.Context, reason: str = typer.Option("", "--reason")) -> None:
    """Switch back to the previous (known-good) adapter."""
    status = run(ctx, lambda c: c.rollback_adapter(reason=reason))
    emit(options(ctx), status, _status_render(status))


def enable(ctx: typer.Context, reason: str = typer.Option("", "--reason")) -> None:
    """Serve traffic with the active adapter."""
    status = run(ctx, lambda c: c.enable_lora(reason=reason))
    emit(options(ctx), status, _status_render(status))


def disable(ctx: typer.Context, reason: str = typer.Option("", "--reason")) -> None:
    """Serve the base model only (the kill switch)."""
    status = run(ctx, lambda c: c.disable_lora(reason=reason))
    emit(options(ctx), status, _status_render(status))


def status(ctx: typer.Context) -> None:
    """What the serving engine runs now."""
    current = run(ctx, lambda c: c.get_lora_status())
    emit(options(ctx), current, _status_render(current))


# ---- metrics and feedback ---------------------------------------------------------


def metrics(
    ctx: typer.Context,
    url: str = typer.Option(
        os.environ.get("LEARNING_ENGINE_METRICS_URL", "http://127.0.0.1:9464/metrics"),
        "--url",
        help="The server's Prometheus endpoint (settings: metrics_port).",
    ),
    all_metrics: bool = typer.Option(False, "--all", help="Include process/python metrics."),
) -> None:
    """Show the server's Prometheus metrics (learning_engine_* by default)."""
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    opts = options(ctx)
    try:
        with urllib.request.urlopen(url, timeout=opts.timeout) as response:  # noqa: S310 - operator-given URL
            text = response.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        fail(opts, grpc.StatusCode.UNAVAILABLE, f"cannot read {url}: {exc}", reason=ERROR_REASON_METRICS_UNREACHABLE)
    samples = [
        {"name": s.name, "labels": s.labels, "value": s.value}
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if all_metrics or s.name.startswith("learning_engine_")
    ]
    emit(
        opts,
        {"samples": samples},
        lambda: out.print(
            _table(
                ["metric", "labels", "value"],
                (
                    (s["name"], ",".join(f"{k}={v}" for k, v in s["labels"].items()), f"{s['value']:g}")
                    for s in samples
                ),
            )
        ),
    )


@feedback_app.command("import")
def feedback_import(
    ctx: typer.Context,
    path: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="JSONL, one FeedbackEvent (proto JSON) a line."
    ),
    batch: int = typer.Option(500, "--batch", min=1, max=10_000),
) -> None:
    """Submit feedback events from a JSONL file, in batches; the whole file is checked first."""
    opts = options(ctx)
    events: list[feedback.FeedbackEvent] = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
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

    async def call(client: AsyncClient) -> dict[str, int]:
        totals = {"events": len(events), "stored": 0, "duplicates": 0}
        for start in range(0, len(events), batch):
            response = await client.submit_feedback(events[start : start + batch])
            totals["stored"] += response.stored
            totals["duplicates"] += response.duplicates
        return totals

    totals = run(ctx, call)
    emit(
        opts,
        totals,
        lambda: out.print(
            f"{totals['events']} events: {totals['stored']} stored, {totals['duplicates']} duplicates"
        ),
    )


# ---- tokens ---------------------------------------------------------------------------


def hash_token(
    ctx: typer.Context,
    name: str = typer.Option(..., "--name", help="Who holds the token."),
    role: str = typer.Option(..., "--role", help="reader | feedback | trainer | operator"),
    token: str = typer.Option(
        None, "--token", help="Hash this token instead of generating one ('-': stdin)."
    ),
) -> None:
    """Make a bearer token and the auth_tokens entry (its sha256) to put in the server settings."""
    import hashlib  # noqa: PLC0415

    if role not in ("reader", "feedback", "trainer", "operator"):
        raise typer.BadParameter("reader | feedback | trainer | operator", param_hint="--role")
    secret = sys.stdin.readline().strip() if token == "-" else token or secrets.token_urlsafe(32)
    entry = {"name": name, "role": role, "sha256": hashlib.sha256(secret.encode()).hexdigest()}
    emit(
        options(ctx),
        {"token": secret if token is None else "", "auth_token": entry},
        lambda: (
            out.print(
                f"token (give to {name}; shown once): {secret}" if token is None else "", highlight=False
            ),
            out.print(f"settings entry: {json.dumps(entry)}", highlight=False),
        ),
    )
