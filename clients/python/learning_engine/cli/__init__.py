"""``learning-engine``: the command line for a Learning Engine server.

Exit codes follow the gRPC status of the failed call (0 OK, 3 INVALID_ARGUMENT,
5 NOT_FOUND, 7 PERMISSION_DENIED, 12 UNIMPLEMENTED, 14 UNAVAILABLE,
16 UNAUTHENTICATED, ...). ``train --watch`` exits with the job's outcome:
0 succeeded, 1 cancelled, 10 (ABORTED) paused, else the code of the job's error (``online watch``: 0 once
the session was stopped, else its error's code).
A command line refused before calling exits 3 (USAGE). Interrupted: 130.
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import typer

from learning.v1.error_reason_pb2 import ERROR_REASON_USAGE
from learning_engine.calls import check_timeout
from learning_engine.cli import (
    adapters,
    datasets,
    drift,
    evaluation,
    feedback,
    fisher,
    jobs,
    online,
    ops,
    pipelines,
    preparation,
    rollout,
    snapshots,
)
from learning_engine.cli.common import Options, fail, tls_from
from learning_engine.connection import DEFAULT_TARGET, actor_name, bearer_token

app = typer.Typer(
    name="learning-engine",
    help="Train, inspect and deploy LoRA adapters on a Learning Engine server.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def connection(
    ctx: typer.Context,
    target: str = typer.Option(
        DEFAULT_TARGET, "--target", "-t", envvar="LEARNING_ENGINE_TARGET", help="Server address host:port."
    ),
    token: str = typer.Option(
        None, "--token", envvar="LEARNING_ENGINE_TOKEN", help="Bearer token.", show_default=False
    ),
    actor: str = typer.Option(
        None, "--actor", envvar="LEARNING_ENGINE_ACTOR", show_default=False,
        help="Who asks, recorded on serving operations (deploy, rollback, canaries, splits) by a server without auth "
        "(with auth, the token's principal is; without either, the connection's address).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable JSON on stdout."),
    timeout: float = typer.Option(30.0, "--timeout", help="Deadline in seconds (above 0) for each unary call but the "
        "serving operations (deploy, rollback, evaluate, canary, split), which wait as long as the gate and the swap "
        "take; an upload or a download has a second more per MiB."),
    tls_ca: Path = typer.Option(
        None, "--tls-ca", envvar="LEARNING_ENGINE_TLS_CA", help="CA bundle; enables TLS."
    ),
    tls_cert: Path = typer.Option(
        None, "--tls-cert", envvar="LEARNING_ENGINE_TLS_CERT", help="Client cert (mTLS)."
    ),
    tls_key: Path = typer.Option(
        None, "--tls-key", envvar="LEARNING_ENGINE_TLS_KEY", help="Client key (mTLS)."
    ),
    tls_server_name: str = typer.Option(
        None, "--tls-server-name", help="Expected server name in its certificate."
    ),
) -> None:
    opts = ctx.obj = Options(target, None, as_json, timeout, None)  # errors in the options (a token no header can
    try:  # carry, a timeout no call can have, TLS files that cannot be read) are reported as --json asks
        opts.token = bearer_token(token)  # stripped: a token read from a file ends with a newline
    except ValueError as exc:
        fail(opts, grpc.StatusCode.INVALID_ARGUMENT, f"--token (or LEARNING_ENGINE_TOKEN): {exc}",
             reason=ERROR_REASON_USAGE)
    try:
        opts.actor = actor_name(actor)
    except ValueError as exc:
        fail(opts, grpc.StatusCode.INVALID_ARGUMENT, f"--actor (or LEARNING_ENGINE_ACTOR): {exc}",
             reason=ERROR_REASON_USAGE)
    try:
        check_timeout(timeout, "--timeout")
    except ValueError as exc:
        fail(opts, grpc.StatusCode.INVALID_ARGUMENT, str(exc), reason=ERROR_REASON_USAGE)
    opts.tls = tls_from(opts, tls_ca, tls_cert, tls_key, tls_server_name)


app.command("health")(ops.health)
app.command("train")(jobs.train)
app.add_typer(datasets.datasets_app, name="datasets")
app.command("fisher")(fisher.fisher_cmd)
app.add_typer(fisher.fisher_jobs_app, name="fisher-jobs")
app.add_typer(snapshots.snapshots_app, name="snapshots")
app.add_typer(jobs.jobs_app, name="jobs")
app.add_typer(adapters.adapters_app, name="adapters")
app.command("deploy")(ops.deploy)
app.command("rollback")(ops.rollback)
app.command("enable")(ops.enable)
app.command("disable")(ops.disable)
app.command("status")(ops.status)
app.add_typer(rollout.canary_app, name="canary")
app.add_typer(rollout.traffic_app, name="traffic")
app.command("evaluate")(ops.evaluate)
app.command("report")(ops.report)
app.add_typer(evaluation.evaluation_jobs_app, name="evaluation-jobs")
app.add_typer(preparation.preparation_jobs_app, name="preparation-jobs")
app.command("metrics")(ops.metrics)
app.add_typer(feedback.feedback_app, name="feedback")
app.command("hash-token")(ops.hash_token)
app.add_typer(drift.drift_app, name="drift")
app.add_typer(pipelines.pipelines_app, name="pipelines")
app.add_typer(online.online_app, name="online")


def main() -> None:
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # keep gRPC's C-core chatter out of the output
    app()
