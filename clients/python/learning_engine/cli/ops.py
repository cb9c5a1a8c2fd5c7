"""Operations: health, deploy/rollback/enable/disable/status/evaluate/report, metrics, hash-token."""

from __future__ import annotations

import functools
import importlib
import json
import os
import pkgutil
import secrets
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import typer

from learning.v1 import adapter_pb2
from learning.v1 import lora_control_pb2 as lora
from learning.v1.error_reason_pb2 import (
    ERROR_REASON_METRICS_UNREACHABLE,
    ERROR_REASON_USAGE,
)
from learning_engine.cli.common import (
    Options,
    emit,
    fail,
    grid,
    interrupted,
    local_write,
    options,
    out,
    print_table,
    run,
)
from learning_engine.cli.datasets import dataset_name, local_file, upload_suite
from learning_engine.cli.rollout import render_split
from learning_engine.client import AsyncClient
from learning_engine.connection import bearer_token


def proto_services() -> tuple[str, ...]:
    """Every service the learning.v1 protos define ("learning.v1.TrainingService", ...), from their generated
    modules, by file name: the server serves each and reports the health of each under that name."""
    package = importlib.import_module("learning.v1")
    modules = sorted(m.name for m in pkgutil.iter_modules(package.__path__) if m.name.endswith("_pb2"))
    return tuple(service.full_name for module in modules
                 for service in importlib.import_module(f"learning.v1.{module}").DESCRIPTOR.services_by_name.values())


SERVICES = proto_services()


def health(ctx: typer.Context) -> None:
    """Serving status of the server and each service (open: needs no token)."""
    opts = options(ctx)

    async def call(client: AsyncClient) -> dict[str, str]:
        return {name or "server": await client.health(name) for name in ("", *SERVICES)}

    statuses = run(ctx, call)
    emit(opts, statuses, lambda: out.print(grid(["service", "status"], statuses.items())))
    if any(status != "SERVING" for status in statuses.values()):
        raise typer.Exit(grpc.StatusCode.UNAVAILABLE.value[0])


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
            ("gateway", status.gateway_url or "-"),
        ]
        if status.HasField("last_operation"):
            op = status.last_operation
            failed = f" (failed: {op.error.message})" if op.HasField("error") and op.error.code else ""
            rows.append(
                ("last operation", f"{lora.LoraOperationKind.Name(op.kind)} {op.version} by {op.actor}{failed}")
            )
        out.print(grid(["", ""], rows))
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
    print_table(grid(["suite", "cases", "score", "baseline", "regressions", "passed", "checks"], rows))
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
    local_write(opts, out_path, response.content, "--out")
    written = {"version": version, "evaluation_id": response.eval.evaluation_id, "content_type": response.content_type,
               "uri": response.uri, "path": str(out_path)}
    emit(opts, written, lambda: out.print(
        f"{candidate_name(version)} evaluation {response.eval.evaluation_id} ({fmt}) -> {out_path}", highlight=False))


# ---- metrics ---------------------------------------------------------------------

_METRICS_SCHEMES = ("http", "https", "file")  # what urllib reads a Prometheus page from


def _unreadable(url: str, exc: Exception) -> str:
    """Why ``url`` could not be read. A refused connection says its usual cause as well: the server serves
    /metrics only when it runs with metrics_port set, which is unset by default, so a first try finds nothing
    listening."""
    cause = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if not isinstance(cause, ConnectionRefusedError):
        return f"cannot read {url}: {exc}"
    return (f"cannot read {url}: {exc}; nothing listens there: the server serves metrics only when it runs with "
            "metrics_port set (LEARNING_ENGINE_METRICS_PORT=9464; unset by default)")


# What the metrics endpoint's refusals are, as the gRPC doors say them (exit codes 16 and 7).
_HTTP_REFUSALS = {401: grpc.StatusCode.UNAUTHENTICATED, 403: grpc.StatusCode.PERMISSION_DENIED}


def _metrics_tls(opts: Options) -> ssl.SSLContext | None:
    """The TLS of the global options (--tls-ca, and --tls-cert with --tls-key, loaded from their files: the server's
    metrics port has the gRPC port's certificate and client CA) for an https metrics URL, whose host the certificate
    must name (urllib has no --tls-server-name); None: urllib's default. A key under a passphrase is a usage error,
    not a prompt."""
    tls = opts.tls
    if tls is None:
        return None
    context = ssl.create_default_context(cadata=tls.root_certificates.decode() if tls.root_certificates else None)
    if opts.client_pair is not None:
        cert, key = opts.client_pair
        try:
            context.load_cert_chain(cert, key, password=lambda: b"")
        except OSError as exc:
            fail(opts, grpc.StatusCode.INVALID_ARGUMENT, f"--tls-cert {cert} and --tls-key {key}: not a PEM "
                 f"certificate and its key without a passphrase ({getattr(exc, 'reason', None) or exc})",
                 reason=ERROR_REASON_USAGE)
    return context


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
    if urllib.parse.urlsplit(url).scheme.lower() not in _METRICS_SCHEMES:
        fail(opts, grpc.StatusCode.INVALID_ARGUMENT,
             f"--url {url}: not an http(s) URL such as http://127.0.0.1:9464/metrics", reason=ERROR_REASON_USAGE)
    request = urllib.request.Request(url)
    if opts.token:  # unredirected: a redirect (to any host) must not take the token along, as urllib's headers do
        request.add_unredirected_header("Authorization", f"Bearer {opts.token}")
    try:
        context = _metrics_tls(opts) if urllib.parse.urlsplit(url).scheme.lower() == "https" else None
        with urllib.request.urlopen(request, timeout=opts.timeout,  # noqa: S310 - operator-given URL
                                    context=context) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        code = _HTTP_REFUSALS.get(exc.code, grpc.StatusCode.UNAVAILABLE)
        fail(opts, code, _unreadable(url, exc), reason=ERROR_REASON_METRICS_UNREACHABLE)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        fail(opts, grpc.StatusCode.UNAVAILABLE, _unreadable(url, exc), reason=ERROR_REASON_METRICS_UNREACHABLE)
    try:
        samples = [
            {"name": s.name, "labels": s.labels, "value": s.value}
            for family in text_string_to_metric_families(body.decode("utf-8"))
            for s in family.samples
            if all_metrics or s.name.startswith("learning_engine_")
        ]
    except ValueError as exc:  # UnicodeDecodeError too: not text at all
        fail(opts, grpc.StatusCode.UNAVAILABLE, f"{url} answered with something that is not Prometheus text "
             f"({str(exc)[:120]}): is it the server's metrics endpoint?", reason=ERROR_REASON_METRICS_UNREACHABLE)
    emit(
        opts,
        {"samples": samples},
        lambda: out.print(
            grid(
                ["metric", "labels", "value"],
                (
                    (s["name"], ",".join(f"{k}={v}" for k, v in s["labels"].items()), f"{s['value']:g}")
                    for s in samples
                ),
            )
        ),
    )


# ---- tokens ---------------------------------------------------------------------------


# The server keeps a token's sha256, unsalted (it must find the token by it at every call): a short or guessable one
# is found again from its hash. A generated one is 43 characters.
MIN_TOKEN_CHARS = 24


def _own_token(given: str) -> str:
    """A token given to hash-token, as the authorization header carries it; a usage error for one that is too short
    to keep secret behind an unsalted hash, or that no header can carry."""
    try:
        token = bearer_token(given) or ""
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--token") from None
    if len(token) < MIN_TOKEN_CHARS:
        raise typer.BadParameter(
            f"a token of {len(token)} characters; at least {MIN_TOKEN_CHARS}: the server keeps its sha256, from which "
            "a short one is found again (leave --token out for a generated one)", param_hint="--token")
    return token


def hash_token(
    ctx: typer.Context,
    name: str = typer.Option(..., "--name", help="Who holds the token."),
    role: str = typer.Option(..., "--role", help="reader | feedback | trainer | operator | inference"),
    token: str = typer.Option(
        None, "--token", help=f"Hash this token instead of generating one ('-': stdin); at least {MIN_TOKEN_CHARS} "
        "printable ASCII characters."
    ),
) -> None:
    """Make a bearer token and the auth_tokens entry (its sha256) to put in the server settings."""
    import hashlib  # noqa: PLC0415

    if role not in ("reader", "feedback", "trainer", "operator", "inference"):
        raise typer.BadParameter("reader | feedback | trainer | operator | inference", param_hint="--role")
    secret = secrets.token_urlsafe(32) if token is None else _own_token(
        sys.stdin.readline() if token == "-" else token)
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
