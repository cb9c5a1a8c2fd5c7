"""``pipelines``: the loop that runs unattended (create, update, list, get, run, watch, runs, get-run, decisions,
enable, disable, cancel, delete)."""

from __future__ import annotations

import json

import grpc
import typer
from google.rpc import error_details_pb2, status_pb2
from rich.table import Table

from learning.v1 import common_pb2 as common
from learning.v1 import pipeline_pb2 as pp
from learning_engine.cli.common import (
    UINT64_MAX,
    as_dict,
    emit,
    err,
    key_values,
    options,
    out,
    print_table,
    run,
    when,
)
from learning_engine.cli.datasets import (
    FEEDBACK_ADAPTER,
    FEEDBACK_LABELS,
    FORCE_BELOW_MIN,
    THUMBS_DOWN_WEIGHT,
    THUMBS_UP_WEIGHT,
)
from learning_engine.cli.job_views import guard_interrupt, outcome_code
from learning_engine.cli.pipeline_options import (
    BASE_EWC_LAMBDA,
    BASE_FRACTION,
    BASE_KL_WEIGHT,
    BASE_PROMPT_KL_WEIGHT,
    CANARY,
    CRON,
    DATA,
    DATASET,
    DESCRIPTION,
    DRIFT_THRESHOLD,
    EPOCHS,
    FROM_FEEDBACK,
    LEARNING_RATE,
    ON_DRIFT,
    ON_FEEDBACK,
    ON_NEGATIVE,
    PAGE_SIZE,
    PIPELINE_MIN_SAMPLES,
    PROTECTION,
    REPLAY,
    ROLLOUT,
    SUITE_DATASETS,
    SUITES,
    TIME_ZONE,
    UPDATE_FEEDBACK_LABELS,
    Given,
    changes,
    check,
    short,
    unset,
    usage,
)
from learning_engine.cli.rollout import canary_option
from learning_engine.client import AsyncClient

pipelines_app = typer.Typer(help="Pipelines: data -> train -> evaluate -> roll out, on a schedule or a trigger.",
                            no_args_is_help=True)


def pipeline_name(name: str) -> str:
    return name if name.startswith("pipelines/") else f"pipelines/{name}"


def run_name(name: str) -> str:
    return name if name.startswith("pipelineRuns/") else f"pipelineRuns/{name}"


def _trigger_text(t: pp.PipelineTrigger) -> str:
    which = t.WhichOneof("trigger")
    if which == "cron":
        return f"cron '{t.cron.expression}' {t.cron.time_zone}"
    if which == "feedback":
        return f"{t.feedback.count} {'negative ' if t.feedback.negative_only else ''}feedback events"
    return f"drift{f' >= {t.drift.threshold:g}' if t.drift.threshold else ''}"


def _summary(p: pp.Pipeline) -> str:
    """What fires the pipeline, and whether its triggers are off."""
    if not p.triggers:
        return "no triggers (pipelines run NAME)" + ("" if p.enabled else "; disabled")
    fires = ", ".join(map(_trigger_text, p.triggers))
    if p.enabled:
        return fires
    return f"{fires}; disabled: its triggers do not fire until `pipelines enable {p.name.removeprefix('pipelines/')}`"


@pipelines_app.command("create")
def pipelines_create(
    ctx: typer.Context,
    pipeline_id: str = typer.Argument(..., help="Its id: lowercase letters, digits and '-'."),
    base_model: str = typer.Option("", "--base-model", show_default=False,
                                   help="Its base model (the server's default if empty); it never changes."),
    from_feedback: int | None = FROM_FEEDBACK,
    min_samples: int = PIPELINE_MIN_SAMPLES,
    force: bool = FORCE_BELOW_MIN,
    thumbs_up_weight: float | None = THUMBS_UP_WEIGHT,
    thumbs_down_weight: float | None = THUMBS_DOWN_WEIGHT,
    feedback_label: list[str] | None = FEEDBACK_LABELS,
    feedback_adapter: str = FEEDBACK_ADAPTER,
    data: str | None = DATA,
    dataset: str | None = DATASET,
    cron: str | None = CRON,
    time_zone: str | None = TIME_ZONE,
    on_feedback: int | None = ON_FEEDBACK,
    on_negative: int | None = ON_NEGATIVE,
    on_drift: bool = ON_DRIFT,
    drift_threshold: float | None = DRIFT_THRESHOLD,
    rollout: str | None = ROLLOUT,
    canary_share: float | None = canary_option("share", CANARY),
    canary_min_requests: int | None = canary_option("min_requests", CANARY),
    canary_min_feedback: int | None = canary_option("min_feedback", CANARY),
    canary_feedback_margin: float | None = canary_option("feedback_margin", CANARY),
    canary_error_margin: float | None = canary_option("error_margin", CANARY),
    canary_error_spike: float | None = canary_option("error_spike", CANARY),
    canary_error_spike_min_requests: int | None = canary_option("error_spike_min_requests", CANARY),
    canary_duration: str | None = canary_option("duration", CANARY),
    canary_max_duration: str | None = canary_option("max_duration", CANARY),
    canary_check_interval: str | None = canary_option("check_interval", CANARY),
    suite: list[str] | None = SUITES,
    suite_dataset: list[str] | None = SUITE_DATASETS,
    epochs: int | None = EPOCHS,
    learning_rate: float | None = LEARNING_RATE,
    replay: float | None = REPLAY,
    protection: str | None = PROTECTION,
    base_fraction: float | None = BASE_FRACTION,
    base_kl_weight: float | None = BASE_KL_WEIGHT,
    base_ewc_lambda: float | None = BASE_EWC_LAMBDA,
    base_prompt_kl_weight: float | None = BASE_PROMPT_KL_WEIGHT,
    disabled: bool = typer.Option(False, "--disabled", help="Create it with its triggers off."),
    description: str | None = DESCRIPTION,
) -> None:
    """Create a pipeline; each run continues the active version with EWC (and --replay), gates it and rolls out.
    The --canary-* options (with --rollout canary) are the policy `canary start` takes; one left out takes the
    server's default (in brackets)."""
    opts = options(ctx)
    given = Given.of(locals(), enabled=not disabled)
    check(opts, given, creating=True)
    pipeline, _ = changes(opts, given, pp.Pipeline(), creating=True)
    pipeline.base_model = base_model
    made = run(ctx, lambda c: c.create_pipeline(pipeline_id, pipeline))
    emit(opts, made, lambda: out.print(f"created {made.name}: {_summary(made)}", highlight=False))


@pipelines_app.command("update")
def pipelines_update(
    ctx: typer.Context,
    name: str,
    from_feedback: int | None = FROM_FEEDBACK,
    min_samples: int | None = unset(PIPELINE_MIN_SAMPLES),
    force: bool | None = unset(FORCE_BELOW_MIN, "--force/--no-force"),
    thumbs_up_weight: float | None = THUMBS_UP_WEIGHT,
    thumbs_down_weight: float | None = THUMBS_DOWN_WEIGHT,
    feedback_label: list[str] | None = UPDATE_FEEDBACK_LABELS,
    feedback_adapter: str | None = unset(FEEDBACK_ADAPTER),
    data: str | None = DATA,
    dataset: str | None = DATASET,
    cron: str | None = CRON,
    time_zone: str | None = TIME_ZONE,
    on_feedback: int | None = ON_FEEDBACK,
    on_negative: int | None = ON_NEGATIVE,
    on_drift: bool | None = unset(ON_DRIFT, "--on-drift/--no-drift"),
    drift_threshold: float | None = DRIFT_THRESHOLD,
    rollout: str | None = ROLLOUT,
    canary_share: float | None = canary_option("share", CANARY),
    canary_min_requests: int | None = canary_option("min_requests", CANARY),
    canary_min_feedback: int | None = canary_option("min_feedback", CANARY),
    canary_feedback_margin: float | None = canary_option("feedback_margin", CANARY),
    canary_error_margin: float | None = canary_option("error_margin", CANARY),
    canary_error_spike: float | None = canary_option("error_spike", CANARY),
    canary_error_spike_min_requests: int | None = canary_option("error_spike_min_requests", CANARY),
    canary_duration: str | None = canary_option("duration", CANARY),
    canary_max_duration: str | None = canary_option("max_duration", CANARY),
    canary_check_interval: str | None = canary_option("check_interval", CANARY),
    suite: list[str] | None = SUITES,
    suite_dataset: list[str] | None = SUITE_DATASETS,
    epochs: int | None = EPOCHS,
    learning_rate: float | None = LEARNING_RATE,
    replay: float | None = REPLAY,
    protection: str | None = PROTECTION,
    base_fraction: float | None = BASE_FRACTION,
    base_kl_weight: float | None = BASE_KL_WEIGHT,
    base_ewc_lambda: float | None = BASE_EWC_LAMBDA,
    base_prompt_kl_weight: float | None = BASE_PROMPT_KL_WEIGHT,
    enabled: bool | None = typer.Option(None, "--enabled/--disabled", show_default=False,
                                        help="Turn its triggers on or off."),
    description: str | None = DESCRIPTION,
    etag: str = typer.Option("", "--etag", help="Only if the pipeline is still as `pipelines get` showed it (its "
                             "etag); else ABORTED."),
) -> None:
    """Change a pipeline in place (its runs and its feedback watermark stay): only what the options name
    changes. The training options change the training template as it stands (--min-samples 20 keeps its source
    and the rest); a trigger option replaces the triggers of its kind (--cron '', --on-feedback 0, --on-negative 0
    and --no-drift remove them); --suite and --suite-dataset replace the list (--suite '' empties it). The base
    model never changes. Changing the training template or the rollout reads the pipeline first and fails ABORTED
    if it changed meanwhile."""
    opts = options(ctx)
    given = Given.of(locals(), enabled=enabled)
    check(opts, given, creating=False)
    target = pipeline_name(name)
    if not (given.trains() or given.triggers() or given.rolls_out() or given.suite is not None
            or given.suite_dataset is not None or given.enabled is not None or given.description is not None):
        usage(opts, "name what to change: the options are those of pipelines create (see --help)")

    async def call(client: AsyncClient) -> tuple[pp.Pipeline, list[str]]:
        reads = given.trains() or given.triggers() or given.rolls_out()  # merged into the pipeline as it stands
        current = await client.get_pipeline(target) if reads else pp.Pipeline()
        changed, paths = changes(opts, given, current, creating=False)
        changed.name, changed.etag = target, etag or current.etag
        return await client.update_pipeline(changed, paths), paths

    done, paths = run(ctx, call)
    emit(opts, done, lambda: out.print(f"updated {done.name} ({', '.join(paths)}): {_summary(done)}",
                                       highlight=False))


@pipelines_app.command("list")
def pipelines_list(ctx: typer.Context, page_size: int = PAGE_SIZE,
                   page_token: str = typer.Option("", "--page-token")) -> None:
    """Pipelines, newest first."""
    response = run(ctx, lambda c: c.list_pipelines(page_size=page_size, page_token=page_token))

    def render() -> None:
        table = Table("name", "enabled", "base model", "rollout", "triggers", box=None, header_style="bold")
        for p in response.pipelines:
            table.add_row(p.name, "yes" if p.enabled else "no", p.base_model,
                          short(p.rollout.mode, pp.RolloutMode, "ROLLOUT_MODE_"),
                          "; ".join(map(_trigger_text, p.triggers)))
        print_table(table)

    emit(options(ctx), response, render)


@pipelines_app.command("get")
def pipelines_get(ctx: typer.Context, name: str) -> None:
    """One pipeline, as stored."""
    emit(options(ctx), run(ctx, lambda c: c.get_pipeline(pipeline_name(name))))


def _set_enabled(ctx: typer.Context, name: str, enabled: bool) -> None:
    pipeline = pp.Pipeline(name=pipeline_name(name), enabled=enabled)
    done = run(ctx, lambda c: c.update_pipeline(pipeline, ["enabled"]))
    emit(options(ctx), done, lambda: out.print(f"{done.name} {'enabled' if enabled else 'disabled'}",
                                               highlight=False))


@pipelines_app.command("enable")
def pipelines_enable(ctx: typer.Context, name: str) -> None:
    """Let its triggers fire."""
    _set_enabled(ctx, name, True)


@pipelines_app.command("disable")
def pipelines_disable(ctx: typer.Context, name: str) -> None:
    """Stop its triggers firing (runs on request still work)."""
    _set_enabled(ctx, name, False)


@pipelines_app.command("delete")
def pipelines_delete(ctx: typer.Context, name: str) -> None:
    """Delete a pipeline between runs; its runs stay readable."""
    run(ctx, lambda c: c.delete_pipeline(pipeline_name(name)))
    emit(options(ctx), {"deleted": pipeline_name(name)}, lambda: out.print(f"deleted {pipeline_name(name)}"))


@pipelines_app.command("run")
def pipelines_run(
    ctx: typer.Context, name: str,
    reason: str = typer.Option("", "--reason", help="Recorded as why it ran."),
    request_id: str = typer.Option("", "--request-id", help="Retrying with it returns the same run."),
    watch: bool = typer.Option(False, "--watch", "-w", help="Follow it to its end; exit with its outcome."),
) -> None:
    """Start a run now."""
    opts = options(ctx)

    async def call(client: AsyncClient) -> int:
        started = await client.run_pipeline(pipeline_name(name), reason=reason, request_id=request_id)
        if not watch:
            emit(opts, started, lambda: out.print(f"started {started.name}", highlight=False))
            return 0
        return await follow_run(client, opts.json, started.name)

    raise typer.Exit(guard_interrupt(ctx, call))


@pipelines_app.command("watch")
def pipelines_watch(ctx: typer.Context, run_: str = typer.Argument(..., metavar="RUN"),
                    after: int = typer.Option(0, "--after", min=0, max=UINT64_MAX,
                                              help="Only events after this sequence.")) -> None:
    """Follow a run stage by stage to its end; exit 0 when it succeeded, 1 when cancelled, else its error code."""
    opts = options(ctx)
    raise typer.Exit(guard_interrupt(ctx, lambda c: follow_run(c, opts.json, run_name(run_), after)))


async def follow_run(client: AsyncClient, as_json: bool, name: str, after_sequence: int = 0) -> int:
    async for message in client.watch_pipeline_run(name, after_sequence=after_sequence):
        if as_json:
            print(json.dumps(as_dict(message)), flush=True)
            continue
        if not message.HasField("event"):
            continue
        event = message.event
        kind = event.WhichOneof("kind")
        if kind == "stage_started":
            out.print(f"{short(event.stage_started.stage, pp.PipelineStage, 'PIPELINE_STAGE_')}: started",
                      highlight=False)
        elif kind == "stage_ended":
            s = event.stage_ended
            out.print(f"{short(s.stage, pp.PipelineStage, 'PIPELINE_STAGE_')}: "
                      f"{short(s.state, pp.StageState, 'STAGE_STATE_')}: {s.message}", highlight=False)
        elif kind == "stage_progress" and event.stage_progress.total:
            p = event.stage_progress
            what = (f"{p.message}: answer" if p.stage == pp.PIPELINE_STAGE_EVALUATE else "training step")
            err.print(f"  {what} {p.completed}/{p.total}", highlight=False)
    done = await client.get_pipeline_run(name)
    if not as_json:
        out.print(f"{done.name} {short(done.state, common.JobState, 'JOB_STATE_')}"
                  + (f": {done.version}" if done.version else "")
                  + (f" {done.rollout.lower()}" if done.rollout else ""), highlight=False)
        if done.HasField("error") and done.error.code:
            err.print(f"[red]{done.error.message}[/]", highlight=False)
    return outcome_code(done.state, done.error.code if done.HasField("error") else 0)


def _error(status: status_pb2.Status, *, width: int = 0) -> str:
    """A run's error: its code, its reason (its ErrorInfo's) and its message; with ``width``, the reason (else the
    code) and the message's first line cut to ``width`` characters ("" for none)."""
    if not status.code:
        return ""
    code = next((c.name for c in grpc.StatusCode if c.value[0] == status.code), str(status.code))
    reason = ""
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
    if not width:
        return code + (f" ({reason})" if reason and reason != code else "") + f": {status.message}"
    line = status.message.splitlines()[0] if status.message else ""
    return f"{reason or code}: " + (line if len(line) <= width else line[:width - 1].rstrip() + "…")


@pipelines_app.command("runs")
def pipelines_runs(ctx: typer.Context, name: str, page_size: int = PAGE_SIZE,
                   page_token: str = typer.Option("", "--page-token")) -> None:
    """A pipeline's runs, newest first, a failed one's error in short (pipelines get-run RUN: all of it)."""
    response = run(ctx, lambda c: c.list_pipeline_runs(pipeline_name(name), page_size=page_size,
                                                       page_token=page_token))

    def render() -> None:
        table = Table("run", "state", "trigger", "created", "version", "rollout", "error", box=None,
                      header_style="bold")
        for r in response.runs:
            table.add_row(r.name, short(r.state, common.JobState, "JOB_STATE_"),
                          short(r.trigger, pp.TriggerKind, "TRIGGER_KIND_"), when(r.create_time), r.version,
                          r.rollout.lower(), _error(r.error, width=60))
        print_table(table)
        if response.next_page_token:
            err.print(f"more: --page-token {response.next_page_token}", highlight=False)

    emit(options(ctx), response, render)


@pipelines_app.command("get-run")
def pipelines_get_run(ctx: typer.Context, run_: str = typer.Argument(..., metavar="RUN")) -> None:
    """One run: why it started, what it made, each stage's result, the rollout and its error."""
    done = run(ctx, lambda c: c.get_pipeline_run(run_name(run_)))

    def render() -> None:
        trigger = short(done.trigger, pp.TriggerKind, "TRIGGER_KIND_")
        out.print(f"{done.name} {short(done.state, common.JobState, 'JOB_STATE_')}: {done.pipeline}, {trigger}"
                  + (f" ({done.reason})" if done.reason else ""), highlight=False)
        facts = {"created": when(done.create_time), "started": when(done.start_time), "ended": when(done.end_time),
                 "dataset": done.dataset, "training job": done.training_job,
                 "version": done.version + (f" (continues {done.parent_version})" if done.parent_version else ""),
                 "evaluation": done.evaluation_id, "suite datasets": ", ".join(done.suite_datasets),
                 "rollout": done.rollout.lower(), "request id": done.request_id}
        out.print(key_values({k: v for k, v in facts.items() if v and v != "-"}))
        if done.stages:
            table = Table("stage", "state", "resource", "message", box=None, header_style="bold")
            for stage in done.stages:
                table.add_row(short(stage.stage, pp.PipelineStage, "PIPELINE_STAGE_"),
                              short(stage.state, pp.StageState, "STAGE_STATE_"), stage.resource or "-", stage.message)
            print_table(table)
        if done.HasField("error") and done.error.code:
            out.print(f"error: {_error(done.error)}", highlight=False)

    emit(options(ctx), done, render)


@pipelines_app.command("decisions")
def pipelines_decisions(ctx: typer.Context, name: str,
                        limit: int = typer.Option(50, "--limit", min=1, max=500, help="Decisions a page."),
                        page_token: str = typer.Option("", "--page-token", help="The next page, as the last one "
                                                                                "printed it.")) -> None:
    """Why each trigger fired or was skipped, newest first, a page at a time."""
    response = run(ctx, lambda c: c.list_trigger_decisions(pipeline_name(name), page_size=limit,
                                                           page_token=page_token))

    def render() -> None:
        table = Table("time", "trigger", "fired", "run", "why", box=None, header_style="bold")
        for d in response.decisions:
            table.add_row(when(d.time), short(d.kind, pp.TriggerKind, "TRIGGER_KIND_"), "yes" if d.fired else "no",
                          d.run, d.reason)
        print_table(table)
        if response.next_page_token:
            err.print(f"more: --page-token {response.next_page_token}", highlight=False)

    emit(options(ctx), response, render)


@pipelines_app.command("cancel")
def pipelines_cancel(ctx: typer.Context, run_: str = typer.Argument(..., metavar="RUN")) -> None:
    """Cancel a run (and its training job, if it is training)."""
    done = run(ctx, lambda c: c.cancel_pipeline_run(run_name(run_)))
    emit(options(ctx), done, lambda: out.print(f"{done.name} {short(done.state, common.JobState, 'JOB_STATE_')}",
                                               highlight=False))
