"""Operations: health, adapters, deploy/rollback/enable/disable/status/evaluate, metrics, feedback."""

from __future__ import annotations

import functools
import json
import os
import secrets
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import typer
from google.protobuf import json_format
from rich.table import Column, Table

from learning.v1 import adapter_pb2
from learning.v1 import feedback_pb2 as feedback
from learning.v1 import lora_control_pb2 as lora
from learning.v1.error_reason_pb2 import (
    ERROR_REASON_FEEDBACK_LINE_INVALID,
    ERROR_REASON_METRICS_UNREACHABLE,
    ERROR_REASON_USAGE,
)
from learning_engine.cli.common import (
    as_dict,
    emit,
    fail,
    interrupted,
    labels,
    options,
    out,
    print_table,
    run,
    when,
)
from learning_engine.cli.datasets import dataset_name, local_file, upload_suite
from learning_engine.cli.rollout import render_split
from learning_engine.client import AsyncClient

adapters_app = typer.Typer(
    help="The adapter registry: list, info, lineage, download, import, delete, prune.", no_args_is_help=True
)
feedback_app = typer.Typer(help="Feedback: import JSONL events, stats, forget a user.", no_args_is_help=True)

SERVICES = (
    "learning.v1.TrainingService",
    "learning.v1.FisherService",
    "learning.v1.AdapterService",
    "learning.v1.LoraControlService",
    "learning.v1.EvaluationService",
    "learning.v1.DatasetService",
    "learning.v1.FeedbackService",
    "learning.v1.DriftService",
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


def _table(headers: list[str | Column], rows) -> Table:
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
    emit(options(ctx), response, lambda: print_table(_table(headers, rows)))


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
            f"{a.train_loss:.4f}" if a.train_loss else "-",
            "deleted " + when(a.delete_time) if a.HasField("delete_time") else when(a.create_time),
        )
        for a in lineage
    ]
    headers = ["version", "source", Column("training job", no_wrap=True), "train loss", "created"]
    emit(options(ctx), {"adapters": [as_dict(a) for a in lineage]}, lambda: print_table(_table(headers, rows)))


@adapters_app.command("download")
def adapters_download(
    ctx: typer.Context,
    version: str,
    out_dir: Path = typer.Option(Path("."), "--out", "-o", help="Directory to write the archive into."),
    base_model: str = typer.Option("", "--base-model"),
    force: bool = typer.Option(False, "--force", help="Overwrite the version's archive if the directory holds it."),
) -> None:
    """Download an adapter archive as <base model>-<version>.tar.gz (sha256 verified)."""
    opts = options(ctx)
    try:
        adapter, path = run(ctx, lambda c: c.download_adapter(version, out_dir, base_model=base_model,
                                                              overwrite=force))
    except FileExistsError as exc:
        fail(opts, grpc.StatusCode.INVALID_ARGUMENT, f"{exc.filename} exists; --force overwrites it",
             reason=ERROR_REASON_USAGE, metadata={"path": str(exc.filename)})
    emit(
        opts,
        {"adapter": as_dict(adapter), "path": str(path)},
        lambda: out.print(f"{adapter.version} -> {path}", highlight=False),
    )


@adapters_app.command("import")
def adapters_import(
    ctx: typer.Context,
    source: Path = typer.Argument(
        ..., exists=True, help="A PEFT adapter directory (adapter_config.json + adapter_model.safetensors), "
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
    keep: int = typer.Option(0, "--keep", min=0, help="Keep this many newest versions (0: the server's setting)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be deleted; delete nothing."),
    base_model: str = typer.Option("", "--base-model"),
) -> None:
    """Apply the retention policy now (the active and known-good versions are always kept)."""
    response = run(ctx, lambda c: c.prune_adapters(base_model=base_model, keep=keep, dry_run=dry_run))
    deleted = ", ".join(response.deleted_versions) or "nothing"
    emit(options(ctx), response, lambda: out.print(
        f"{'would delete' if dry_run else 'deleted'} {deleted}; kept {', '.join(response.kept_versions) or '-'}",
        highlight=False))


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
        render_split(status)

    return render


def deploy(
    ctx: typer.Context,
    version: str,
    reason: str = typer.Option("", "--reason"),
    force: bool = typer.Option(False, "--force", help="Activate even if the evaluation gate fails."),
    known_good: bool = typer.Option(False, "--known-good", help="Mark as the rollback target."),
    base_model: str = typer.Option("", "--base-model", help="The version's base model (the serving target's)."),
) -> None:
    """Activate an adapter version in the serving engine (hot swap)."""
    response = run(
        ctx, lambda c: c.activate_adapter(version, reason=reason, force=force, mark_known_good=known_good,
                                          base_model=base_model)
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


def status(
    ctx: typer.Context,
    watch: bool = typer.Option(False, "--watch", "-w", help="Then one line for each change, until Ctrl-C."),
) -> None:
    """What the serving engine runs now."""
    opts = options(ctx)
    if not watch:
        current = run(ctx, lambda c: c.get_lora_status())
        emit(opts, current, _status_render(current))
        return

    async def follow(client: AsyncClient) -> None:
        async for changed in client.watch_lora_status():
            line = _status_line(changed)
            emit(opts, changed, functools.partial(out.print, line, highlight=False))

    try:
        run(ctx, follow)
    except KeyboardInterrupt:
        interrupted("stopped watching")


def _status_line(status: lora.LoraStatus) -> str:
    line = (f"active {status.active_version or '-'} ({'enabled' if status.enabled else 'disabled'}), "
            f"known good {status.known_good_version or '-'}, "
            f"loaded {', '.join(a.version for a in status.loaded) or '-'}")
    if status.HasField("traffic_split"):
        line += f"; {status.traffic_split.share:.1%} to {status.traffic_split.candidate_version}"
    if status.HasField("last_operation"):
        op = status.last_operation
        kind = lora.LoraOperationKind.Name(op.kind).removeprefix("LORA_OPERATION_KIND_").lower()
        line += f"; last: {kind} {op.version}" + (" failed" if op.HasField("error") and op.error.code else "")
    return line


# --check: a FAILED verdict exits 9, FAILED_PRECONDITION, as the activation it would refuse (for scripts and CI)
GATE_FAILED = grpc.StatusCode.FAILED_PRECONDITION.value[0]
CHECK = typer.Option(False, "--check", help="Exit 9 (FAILED_PRECONDITION) when the gate's verdict is FAILED.")


SUITE_HELP = ("A golden suite. A JSONL file on this machine is uploaded first as the stored dataset named after it, "
              "without a split rule, and evaluated whole: as golden cases when its first line has \"expected\", "
              "\"references\" or \"reference\" (the golden-suite format: answer spans and sources kept), else as "
              "training examples (messages, or prompt and completion); the kind chosen is printed. Otherwise a "
              "golden suite JSONL below the server's datasets dir.")
SUITE_DATASET_HELP = ("A stored dataset as a golden suite, its test split (all of it without a split rule): "
                      "capitals, or datasets/capitals/versions/2. Repeatable.")
VERSION_ARGUMENT = typer.Argument("", help="The version evaluated, e.g. v1.2 (none with --base-model-itself).")
BASE_MODEL_ITSELF = typer.Option(False, "--base-model-itself", help="Evaluate the base model itself (no adapter) "
                                 "instead of a version: on the golden suites only (it has no training data of its "
                                 "own), against the active version (itself when none is).")


def candidate_name(version: str) -> str:
    """The candidate as the CLI shows it: the version, or "the base model" (--base-model-itself)."""
    return version or "the base model"


def golden_suites(values: list[str]) -> tuple[list[str], list[Path]]:
    """--suite values: the paths below the server's datasets dir, and the files of this machine to upload."""
    local = [file for file in map(local_file, values) if file is not None]
    return [v for v in values if local_file(v) is None], local


def evaluate(
    ctx: typer.Context,
    version: str = VERSION_ARGUMENT,
    baseline: str = typer.Option("", "--baseline", help="Version to compare with (default: the active one)."),
    suite: str = typer.Option("", "--suite", help=SUITE_HELP + " Default, with no --suite-dataset either: the "
                              "configured suite."),
    suite_dataset: list[str] = typer.Option(None, "--suite-dataset", help=SUITE_DATASET_HELP),
    base_model: str = typer.Option("", "--base-model"),
    base_model_itself: bool = BASE_MODEL_ITSELF,
    check: bool = CHECK,
) -> None:
    """Run the eval gate's suites on a version (or the golden suites on the base model itself) against a baseline,
    without activating anything."""
    opts = options(ctx)
    local = local_file(suite)

    async def call(client: AsyncClient) -> adapter_pb2.AdapterEvalSummary:
        uploaded = [await upload_suite(client, local, quiet=opts.json)] if local is not None else []
        return await client.evaluate_adapter(
            version, baseline_version=baseline, suite_path="" if local is not None else suite, base_model=base_model,
            suite_datasets=[*uploaded, *(dataset_name(d) for d in suite_dataset or [])],
            base_model_itself=base_model_itself)

    summary = run(ctx, call)
    emit(opts, summary, lambda: render_eval(candidate_name(version), summary))
    if check and not summary.passed:
        raise typer.Exit(GATE_FAILED)


def render_eval(version: str, summary: adapter_pb2.AdapterEvalSummary) -> None:
    """An evaluation's decision, a row per suite, and where its reports are."""
    verdict = "passed" if summary.passed else "FAILED"
    out.print(f"{version} vs {summary.baseline_version or 'the base model'}: {verdict}", highlight=False)
    rows = []
    for s in summary.suites:
        metrics = {m.name: m.value for m in s.metrics}
        # the base suite asks nothing itself: its score is each side's base retention, measured after training
        score = "base_retention" if s.kind == adapter_pb2.EVAL_SUITE_KIND_BASE else "pass_rate"
        rate, base_rate = metrics.get(score), metrics.get(f"baseline_{score}")
        rows.append((
            s.name, str(s.cases) if s.cases else "-", "-" if rate is None else f"{rate:.3f}",
            "-" if base_rate is None else f"{base_rate:.3f}", str(s.regressions),
            "yes" if s.passed else "no", "; ".join(s.failed_checks) or s.note or "-",
        ))
    print_table(_table(["suite", "cases", "score", "baseline", "regressions", "passed", "checks"], rows))
    for uri in summary.report_uris:
        out.print(f"report: {uri}", highlight=False)


_FORMATS = {"html": lora.REPORT_FORMAT_HTML, "json": lora.REPORT_FORMAT_JSON,
            "markdown": lora.REPORT_FORMAT_MARKDOWN, "png": lora.REPORT_FORMAT_PNG,
            "lineage-png": lora.REPORT_FORMAT_LINEAGE_PNG}  # lineage-png: the learning curve across the lineage


def report(
    ctx: typer.Context,
    version: str = typer.Argument("", help="The version evaluated (none with --base-model-itself)."),
    evaluation: str = typer.Option("", "--evaluation", help="The evaluation's id (the version's latest if empty)."),
    fmt: str = typer.Option("html", "--format", help=" | ".join(_FORMATS)),
    out_path: Path = typer.Option(None, "--out", "-o", help="Write it here (needed for png and lineage-png); else "
                                  "to stdout."),
    base_model: str = typer.Option("", "--base-model"),
    base_model_itself: bool = typer.Option(False, "--base-model-itself",
                                           help="A report of an evaluation of the base model itself."),
) -> None:
    """A stored evaluation report of a version (gate or evaluate), or of the base model itself: HTML page, JSON,
    Markdown or its chart."""
    opts = options(ctx)
    if fmt not in _FORMATS:
        raise typer.BadParameter(f"unknown format {fmt!r}; one of {' | '.join(_FORMATS)}", param_hint="--format")
    if out_path is None and fmt.endswith("png"):
        fail(opts, grpc.StatusCode.INVALID_ARGUMENT, f"a {fmt} report needs --out FILE", reason=ERROR_REASON_USAGE)
    response = run(ctx, lambda c: c.get_evaluation_report(version, evaluation_id=evaluation, format=_FORMATS[fmt],
                                                          base_model=base_model, base_model_itself=base_model_itself))
    if out_path is None:
        sys.stdout.buffer.write(response.content)
        sys.stdout.flush()
        return
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(response.content)
    written = {"version": version, "evaluation_id": response.eval.evaluation_id, "content_type": response.content_type,
               "uri": response.uri, "path": str(out_path)}
    emit(opts, written, lambda: out.print(
        f"{candidate_name(version)} evaluation {response.eval.evaluation_id} ({fmt}) -> {out_path}", highlight=False))


# ---- metrics and feedback ---------------------------------------------------------


def metrics(
    ctx: typer.Context,
    url: str = typer.Option(
        os.environ.get("LEARNING_ENGINE_METRICS_URL", "http://127.0.0.1:9464/metrics"),
        "--url",
        help="The server's Prometheus endpoint (settings: metrics_port); sends --token, which needs the reader role.",
    ),
    all_metrics: bool = typer.Option(False, "--all", help="Include process/python metrics."),
) -> None:
    """Show the server's Prometheus metrics (learning_engine_* by default)."""
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    opts = options(ctx)
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {opts.token}"} if opts.token else {})
    try:
        with urllib.request.urlopen(request, timeout=opts.timeout) as response:  # noqa: S310 - operator-given URL
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
    stream: bool = typer.Option(
        False, "--stream", help="Send the batches on one stream (StreamFeedback) instead of a call each."
    ),
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
            print_table(_table(["kind", "events"], kinds))
        versions = [(a.adapter_version or "(base model)", str(a.positive), str(a.negative), f"{a.positive_ratio:.2f}")
                    for a in stats.by_adapter]
        if versions:
            print_table(_table(["adapter", "positive", "negative", "positive ratio"], versions))

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


# ---- tokens ---------------------------------------------------------------------------


def hash_token(
    ctx: typer.Context,
    name: str = typer.Option(..., "--name", help="Who holds the token."),
    role: str = typer.Option(..., "--role", help="reader | feedback | trainer | operator | inference"),
    token: str = typer.Option(
        None, "--token", help="Hash this token instead of generating one ('-': stdin)."
    ),
) -> None:
    """Make a bearer token and the auth_tokens entry (its sha256) to put in the server settings."""
    import hashlib  # noqa: PLC0415

    if role not in ("reader", "feedback", "trainer", "operator", "inference"):
        raise typer.BadParameter("reader | feedback | trainer | operator | inference", param_hint="--role")
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
