"""``pipelines``: the loop that runs unattended (create, list, get, run, watch, runs, decisions, enable, disable,
cancel, delete)."""

from __future__ import annotations

import json

import grpc
import typer
from rich.table import Table

from learning.v1 import common_pb2 as common
from learning.v1 import pipeline_pb2 as pp
from learning.v1 import training_pb2 as training
from learning.v1.error_reason_pb2 import ERROR_REASON_USAGE
from learning_engine.cli.common import as_dict, emit, err, fail, options, out, print_table, run, when
from learning_engine.cli.datasets import (
    FEEDBACK_ADAPTER,
    FEEDBACK_LABELS,
    FORCE_BELOW_MIN,
    MIN_SAMPLES,
    THUMBS_DOWN_WEIGHT,
    THUMBS_UP_WEIGHT,
    dataset_name,
    feedback_dataset,
)
from learning_engine.cli.job_views import guard_interrupt, outcome_code
from learning_engine.cli.jobs import base_protection
from learning_engine.cli.rollout import canary_policy
from learning_engine.client import AsyncClient

pipelines_app = typer.Typer(help="Pipelines: data -> train -> evaluate -> roll out, on a schedule or a trigger.",
                            no_args_is_help=True)
_MODES = {"activate": pp.ROLLOUT_MODE_ACTIVATE, "canary": pp.ROLLOUT_MODE_CANARY, "none": pp.ROLLOUT_MODE_NONE}


def pipeline_name(name: str) -> str:
    return name if name.startswith("pipelines/") else f"pipelines/{name}"


def run_name(name: str) -> str:
    return name if name.startswith("pipelineRuns/") else f"pipelineRuns/{name}"


def _short(value: int, enum: type, prefix: str) -> str:
    return enum.Name(value).removeprefix(prefix).lower()  # type: ignore[attr-defined]


def _trigger_text(t: pp.PipelineTrigger) -> str:
    which = t.WhichOneof("trigger")
    if which == "cron":
        return f"cron '{t.cron.expression}' {t.cron.time_zone}"
    if which == "feedback":
        return f"{t.feedback.count} {'negative ' if t.feedback.negative_only else ''}feedback events"
    return f"drift{f' >= {t.drift.threshold:g}' if t.drift.threshold else ''}"


@pipelines_app.command("create")
def pipelines_create(
    ctx: typer.Context,
    pipeline_id: str = typer.Argument(..., help="Its id: lowercase letters, digits and '-'."),
    from_feedback: int = typer.Option(0, "--from-feedback", help="Train on the last N days of feedback."),
    min_samples: int = MIN_SAMPLES,
    force: bool = FORCE_BELOW_MIN,
    thumbs_up_weight: float = THUMBS_UP_WEIGHT,
    thumbs_down_weight: float = THUMBS_DOWN_WEIGHT,
    feedback_label: list[str] = FEEDBACK_LABELS,
    feedback_adapter: str = FEEDBACK_ADAPTER,
    data: str = typer.Option("", "--data", help="Or a JSONL file below the server's datasets dir."),
    dataset: str = typer.Option("", "--dataset", help="Or a stored dataset (datasets/NAME, its newest version)."),
    cron: str = typer.Option("", "--cron", help="A schedule, e.g. '0 2 * * 1' (Mondays 02:00)."),
    time_zone: str = typer.Option("UTC", "--tz", help="The schedule's IANA time zone."),
    on_feedback: int = typer.Option(0, "--on-feedback", help="Run after N feedback events since the last run."),
    on_negative: int = typer.Option(0, "--on-negative", help="Run after N negative feedback events."),
    on_drift: bool = typer.Option(False, "--on-drift", help="Run when the drift detector finds drift."),
    rollout: str = typer.Option("activate", "--rollout", help="activate, canary or none (publish only)."),
    canary_share: float = typer.Option(None, "--canary-share", help="With --rollout canary: its share. [0.1]"),
    canary_min_requests: int = typer.Option(None, "--canary-min-requests",
                                            help="Candidate requests before a decision. [100]"),
    canary_min_feedback: int = typer.Option(None, "--canary-min-feedback",
                                            help="Ratings each side needs first. [20]"),
    canary_feedback_margin: float = typer.Option(None, "--canary-feedback-margin",
                                                 help="How much higher its negative-feedback rate may be. [0.05]"),
    canary_duration: str = typer.Option(None, "--canary-duration", help="Least time before a decision. [0]"),
    canary_max_duration: str = typer.Option(None, "--canary-max-duration",
                                            help="No evidence by then: rolled back; 0 = no limit. [24h]"),
    canary_check_interval: str = typer.Option(None, "--canary-check-interval",
                                              help="How often the policy is checked. [10s]"),
    suite: list[str] = typer.Option(None, "--suite", help="A golden suite JSONL for the gate (below the server's "
                                    "datasets dir); repeatable."),
    suite_dataset: list[str] = typer.Option(
        None, "--suite-dataset", help="A stored dataset as a golden suite for the gate, its test split: capitals "
        "(its newest version at each run) or datasets/capitals/versions/2; repeatable."),
    epochs: int = typer.Option(0, "--epochs", help="Training epochs (default: the server's)."),
    learning_rate: float = typer.Option(0.0, "--lr", help="Learning rate (default: the server's)."),
    replay: float = typer.Option(0.0, "--replay", help="Share of earlier versions' examples replayed."),
    protection: str = typer.Option("", "--base-protection", help="What keeps the base model's knowledge: none | "
                                   "self_rehearsal | base_kl | ewc_base (server default if empty)."),
    base_fraction: float = typer.Option(None, "--base-fraction",
                                        help="Share of the training set that is the base model's answers."),
    base_kl_weight: float = typer.Option(None, "--base-kl-weight",
                                         help="Weight of the KL term to the base model on those answers."),
    base_ewc_lambda: float = typer.Option(None, "--base-ewc-lambda",
                                          help="ewc_base: weight of the EWC penalty against the base model."),
    base_prompt_kl_weight: float = typer.Option(None, "--base-prompt-kl-weight",
                                                help="Weight of the KL term to the base model at the training "
                                                "examples' prompt positions."),
    disabled: bool = typer.Option(False, "--disabled", help="Create it with its triggers off."),
    description: str = typer.Option("", "--description"),
) -> None:
    """Create a pipeline; each run continues the active version with EWC (and --replay), gates it and rolls out."""
    opts = options(ctx)
    sources = [flag for flag, given in (("--from-feedback", from_feedback), ("--data", data),
                                        ("--dataset", dataset)) if given]
    if len(sources) != 1:
        fail(opts, grpc.StatusCode.INVALID_ARGUMENT, "name exactly one of --from-feedback, --data, --dataset",
             reason=ERROR_REASON_USAGE)
    feedback = feedback_dataset(opts, from_feedback, min_samples, force, thumbs_up_weight=thumbs_up_weight,
                                thumbs_down_weight=thumbs_down_weight, labels=feedback_label,
                                adapter_version=feedback_adapter)
    if rollout not in _MODES:
        fail(opts, grpc.StatusCode.INVALID_ARGUMENT, f"--rollout must be one of {', '.join(_MODES)}",
             reason=ERROR_REASON_USAGE)
    spec = training.TrainingJobSpec(hyperparameters=training.Hyperparameters(epochs=epochs,
                                                                             learning_rate=learning_rate),
                                    base_protection=base_protection(protection, base_fraction, base_kl_weight,
                                                                    base_ewc_lambda, base_prompt_kl_weight))
    if feedback is not None:
        spec.feedback.CopyFrom(feedback)
    elif data:
        spec.jsonl.CopyFrom(common.JsonlDataset(path=data))
    else:
        spec.dataset_name = dataset_name(dataset)
    if replay:
        spec.ewc.replay_fraction = replay
    triggers = []
    if cron:
        triggers.append(pp.PipelineTrigger(cron=pp.CronTrigger(expression=cron, time_zone=time_zone)))
    if on_feedback:
        triggers.append(pp.PipelineTrigger(feedback=pp.FeedbackCountTrigger(count=on_feedback)))
    if on_negative:
        triggers.append(pp.PipelineTrigger(feedback=pp.FeedbackCountTrigger(count=on_negative, negative_only=True)))
    if on_drift:
        triggers.append(pp.PipelineTrigger(drift=pp.DriftTrigger()))
    canary = canary_policy(
        {"share": canary_share, "min_requests": canary_min_requests, "min_feedback": canary_min_feedback,
         "feedback_margin": canary_feedback_margin},
        {"duration": canary_duration, "max_duration": canary_max_duration, "check_interval": canary_check_interval},
        flag_prefix="--canary-")
    pipeline = pp.Pipeline(training=spec, suite_paths=suite or [],
                           suite_datasets=[dataset_name(d) for d in suite_dataset or []],
                           triggers=triggers, enabled=not disabled,
                           description=description, rollout=pp.RolloutPolicy(
                               mode=_MODES[rollout], canary=canary if canary.ByteSize() else None))
    made = run(ctx, lambda c: c.create_pipeline(pipeline_id, pipeline))
    fires = ", ".join(map(_trigger_text, made.triggers)) or "no triggers (pipelines run NAME)"
    emit(opts, made, lambda: out.print(f"created {made.name}: {fires}", highlight=False))


@pipelines_app.command("list")
def pipelines_list(ctx: typer.Context, page_size: int = typer.Option(0, "--page-size"),
                   page_token: str = typer.Option("", "--page-token")) -> None:
    """Pipelines, newest first."""
    response = run(ctx, lambda c: c.list_pipelines(page_size=page_size, page_token=page_token))

    def render() -> None:
        table = Table("name", "enabled", "base model", "rollout", "triggers", box=None, header_style="bold")
        for p in response.pipelines:
            table.add_row(p.name, "yes" if p.enabled else "no", p.base_model,
                          _short(p.rollout.mode, pp.RolloutMode, "ROLLOUT_MODE_"),
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
                    after: int = typer.Option(0, "--after", help="Only events after this sequence.")) -> None:
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
            out.print(f"{_short(event.stage_started.stage, pp.PipelineStage, 'PIPELINE_STAGE_')}: started",
                      highlight=False)
        elif kind == "stage_ended":
            s = event.stage_ended
            out.print(f"{_short(s.stage, pp.PipelineStage, 'PIPELINE_STAGE_')}: "
                      f"{_short(s.state, pp.StageState, 'STAGE_STATE_')}: {s.message}", highlight=False)
        elif kind == "stage_progress" and event.stage_progress.total:
            p = event.stage_progress
            err.print(f"  training step {p.completed}/{p.total}", highlight=False)
    done = await client.get_pipeline_run(name)
    if not as_json:
        out.print(f"{done.name} {_short(done.state, common.JobState, 'JOB_STATE_')}"
                  + (f": {done.version}" if done.version else "")
                  + (f" {done.rollout.lower()}" if done.rollout else ""), highlight=False)
        if done.HasField("error") and done.error.code:
            err.print(f"[red]{done.error.message}[/]", highlight=False)
    return outcome_code(done.state, done.error.code if done.HasField("error") else 0)


@pipelines_app.command("runs")
def pipelines_runs(ctx: typer.Context, name: str, page_size: int = typer.Option(0, "--page-size"),
                   page_token: str = typer.Option("", "--page-token")) -> None:
    """A pipeline's runs, newest first."""
    response = run(ctx, lambda c: c.list_pipeline_runs(pipeline_name(name), page_size=page_size,
                                                       page_token=page_token))

    def render() -> None:
        table = Table("run", "state", "trigger", "created", "version", "rollout", box=None, header_style="bold")
        for r in response.runs:
            table.add_row(r.name, _short(r.state, common.JobState, "JOB_STATE_"),
                          _short(r.trigger, pp.TriggerKind, "TRIGGER_KIND_"), when(r.create_time), r.version,
                          r.rollout.lower())
        print_table(table)

    emit(options(ctx), response, render)


@pipelines_app.command("decisions")
def pipelines_decisions(ctx: typer.Context, name: str, limit: int = typer.Option(50, "--limit")) -> None:
    """Why each trigger fired or was skipped, newest first."""
    decisions = run(ctx, lambda c: c.list_trigger_decisions(pipeline_name(name), page_size=limit))

    def render() -> None:
        table = Table("time", "trigger", "fired", "run", "why", box=None, header_style="bold")
        for d in decisions:
            table.add_row(when(d.time), _short(d.kind, pp.TriggerKind, "TRIGGER_KIND_"), "yes" if d.fired else "no",
                          d.run, d.reason)
        print_table(table)

    emit(options(ctx), {"decisions": [as_dict(d) for d in decisions]}, render)


@pipelines_app.command("cancel")
def pipelines_cancel(ctx: typer.Context, run_: str = typer.Argument(..., metavar="RUN")) -> None:
    """Cancel a run (and its training job, if it is training)."""
    done = run(ctx, lambda c: c.cancel_pipeline_run(run_name(run_)))
    emit(options(ctx), done, lambda: out.print(f"{done.name} {_short(done.state, common.JobState, 'JOB_STATE_')}",
                                               highlight=False))
