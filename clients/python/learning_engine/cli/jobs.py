"""train and jobs: create training jobs and list, inspect and steer them (following one with live progress bars
lives in training_watch.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import typer
from rich.table import Table

from learning.v1 import common_pb2 as common
from learning.v1 import training_pb2 as training
from learning.v1.error_reason_pb2 import ERROR_REASON_NO_STEPS_YET, ERROR_REASON_USAGE
from learning_engine.cli.common import (
    UINT32_MAX,
    UINT64_MAX,
    Options,
    as_dict,
    emit,
    err,
    fail,
    key_values,
    labels,
    local_write,
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
    MIN_SAMPLES,
    THUMBS_DOWN_WEIGHT,
    THUMBS_UP_WEIGHT,
    dataset_name,
    feedback_dataset,
    local_file,
    upload_local,
)
from learning_engine.cli.job_views import (
    AFTER,
    PAGE_SIZE,
    PAGE_TOKEN,
    STATE_FILTER,
    guard_interrupt,
    listed,
    parse_states,
    short_state,
    steered,
)
from learning_engine.cli.training_watch import follow_training
from learning_engine.client import AsyncClient

jobs_app = typer.Typer(
    help="Training jobs: list, get, watch, plot, pause, resume, cancel, checkpoints, publish.", no_args_is_help=True
)

def _choices(enum: Any, prefix: str) -> str:
    return " | ".join(n.removeprefix(prefix).lower() for n in enum.keys()[1:])


def short_enum(enum: Any, prefix: str, value: str, hint: str) -> int:
    """A protobuf enum's value from its short name ("lora_product" for FISHER_SPACE_LORA_PRODUCT); empty is
    unspecified (the server's default); another name is a usage error naming ``hint``."""
    if not value:
        return 0
    key = f"{prefix}{value.upper()}"
    if key not in enum.keys()[1:]:
        raise typer.BadParameter(f"unknown value {value!r}; one of {_choices(enum, prefix)}", param_hint=hint)
    return int(enum.Value(key))


SPACES = _choices(common.FisherSpace, "FISHER_SPACE_")
_PROTECTIONS = _choices(common.BaseProtectionMethod, "BASE_PROTECTION_METHOD_")


def parse_fisher_space(value: str, hint: str) -> int:
    return short_enum(common.FisherSpace, "FISHER_SPACE_", value, hint)


def base_protection(method: str, fraction: float | None, kl_weight: float | None, ewc_lambda: float | None = None,
                    prompt_kl_weight: float | None = None,
                    flag: str = "--base-protection") -> common.BaseProtection | None:
    """What keeps the base model's knowledge, from the options (None when none is given: the server's
    defaults)."""
    if not method and fraction is None and kl_weight is None and ewc_lambda is None and prompt_kl_weight is None:
        return None
    return common.BaseProtection(method=short_enum(common.BaseProtectionMethod, "BASE_PROTECTION_METHOD_", method,
                                                   flag), fraction=fraction, kl_weight=kl_weight,
                                 ewc_lambda=ewc_lambda, prompt_kl_weight=prompt_kl_weight)


def train(
    ctx: typer.Context,
    data: str = typer.Option(
        None, "--data", "-d", help="A JSONL file. One on this machine is uploaded first (a stored dataset named "
        "after the file; the same bytes again reuse its version); otherwise a path relative to the server's "
        "datasets dir."
    ),
    dataset: str = typer.Option(
        None, "--dataset", help="A stored dataset (see datasets): capitals, or datasets/capitals/versions/2."
    ),
    from_feedback: int = typer.Option(
        0, "--from-feedback", min=0, max=3650, help="Train on the last N days of feedback instead."
    ),
    min_samples: int = MIN_SAMPLES,
    base_model: str = typer.Option("", "--base-model", help="Base model id (server default if empty)."),
    parent: str = typer.Option("", "--parent", help="Continue from this adapter version (EWC applies)."),
    epochs: int = typer.Option(0, "--epochs", min=0, max=1000, help="Training epochs (0: the server's)."),
    learning_rate: float = typer.Option(0.0, "--learning-rate", "--lr"),
    warmup_steps: int = typer.Option(0, "--warmup-steps", min=0, max=UINT32_MAX,
                                     help="Steps of linear warm-up (server default if 0)."),
    lr_schedule: str = typer.Option(
        "", "--lr-schedule", help="After the warm-up: linear | cosine | constant (server default if empty)."
    ),
    batch_size: int = typer.Option(0, "--batch-size", min=0, max=1024, help="Examples a step (0: the server's)."),
    max_seq_length: int = typer.Option(0, "--max-seq-length", min=0, max=1_000_000),
    max_steps: int = typer.Option(0, "--max-steps", min=0, max=UINT32_MAX, help="Stop after this many steps (0: "
                                  "no limit)."),
    seed: int = typer.Option(None, "--seed", min=0, max=UINT32_MAX, help="The run's seed (unset: the server's)."),
    rank: int = typer.Option(0, "--rank", min=0, max=UINT32_MAX, help="LoRA rank (0: the server's)."),
    alpha: float = typer.Option(0.0, "--alpha", help="LoRA alpha."),
    ewc_lambda: float = typer.Option(None, "--ewc-lambda", help="EWC strength (server default if unset)."),
    ewc_gamma: float = typer.Option(None, "--ewc-gamma", help="Decay of earlier versions' importance (1.0)."),
    fisher_space: str = typer.Option(
        "", "--fisher-space", help=f"What the EWC penalty is over: {SPACES} (server default if empty)."
    ),
    replay_fraction: float = typer.Option(
        0.0, "--replay-fraction", help="Share of the data replayed from earlier versions' datasets (0..0.9)."
    ),
    no_ewc: bool = typer.Option(False, "--no-ewc", help="Disable EWC for a continued adapter."),
    protection: str = typer.Option(
        "", "--base-protection", help=f"What keeps the base model's knowledge: {_PROTECTIONS} (server default "
        "if empty)."
    ),
    base_fraction: float = typer.Option(
        None, "--base-fraction", help="Share of the training set that is the base model's answers (0..0.9)."
    ),
    base_kl_weight: float = typer.Option(
        None, "--base-kl-weight", help="Weight of the KL term to the base model on those answers (0..100)."
    ),
    base_ewc_lambda: float = typer.Option(
        None, "--base-ewc-lambda", help="ewc_base: weight of the EWC penalty against the base model (0..100000)."
    ),
    base_prompt_kl_weight: float = typer.Option(
        None, "--base-prompt-kl-weight", help="Weight of the KL term to the base model at the training examples' "
        "prompt positions (0..100)."
    ),
    fisher_snapshot: str = typer.Option("", "--fisher-snapshot"),
    major: bool = typer.Option(False, "--major", help="Publish as a new major version."),
    label: list[str] = typer.Option(None, "--label", help="KEY=VALUE, repeatable."),
    force: bool = FORCE_BELOW_MIN,
    thumbs_up_weight: float = THUMBS_UP_WEIGHT,
    thumbs_down_weight: float = THUMBS_DOWN_WEIGHT,
    feedback_label: list[str] = FEEDBACK_LABELS,
    feedback_adapter: str = FEEDBACK_ADAPTER,
    objective: str = typer.Option("", "--objective", help="sft | kto (kto needs --from-feedback; sft if empty)."),
    priority: int = typer.Option(0, "--priority", min=-1000, max=1000, help="Among queued jobs, higher runs first."),
    request_id: str = typer.Option(
        "", "--request-id", help="Idempotency key: the same id returns the same job."
    ),
    validate_only: bool = typer.Option(
        False, "--validate-only", help="Check the spec and its data and show what would run; create no job (a local "
        "--data file is stored first, to be checked, as the run would store it)."
    ),
    watch: bool = typer.Option(False, "--watch", "-w", help="Follow the job with a live progress bar."),
) -> None:
    """Create a training job from a JSONL file, a stored dataset or collected feedback."""
    opts = options(ctx)
    if [bool(data), bool(dataset), bool(from_feedback)].count(True) != 1:
        fail(
            opts,
            grpc.StatusCode.INVALID_ARGUMENT,
            "name exactly one of --data, --dataset or --from-feedback",
            reason=ERROR_REASON_USAGE,
        )
    feedback = feedback_dataset(opts, from_feedback, min_samples, force, thumbs_up_weight=thumbs_up_weight,
                                thumbs_down_weight=thumbs_down_weight, labels=feedback_label,
                                adapter_version=feedback_adapter)
    spec = training.TrainingJobSpec(
        objective=_objective(objective),
        base_model=base_model,
        lora=common.LoraConfig(rank=rank, alpha=alpha),
        hyperparameters=training.Hyperparameters(
            epochs=epochs,
            learning_rate=learning_rate,
            warmup_steps=warmup_steps,
            lr_schedule=short_enum(training.LrSchedule, "LR_SCHEDULE_", lr_schedule, "--lr-schedule"),
            batch_size=batch_size,
            max_seq_length=max_seq_length,
            max_steps=max_steps,
            seed=seed,
        ),
        parent_adapter_version=parent,
        ewc=training.EwcConfig(
            ewc_lambda=ewc_lambda,
            gamma=ewc_gamma,
            fisher_snapshot=fisher_snapshot,
            fisher_space=parse_fisher_space(fisher_space, "--fisher-space"),
            replay_fraction=replay_fraction,
            disabled=no_ewc,
        ),
        major_version_bump=major,
        labels=labels(label),
        base_protection=base_protection(protection, base_fraction, base_kl_weight, base_ewc_lambda,
                                        base_prompt_kl_weight),
    )
    local = local_file(data)  # uploaded in call(), then named by version
    if data and local is None:
        spec.jsonl.path = data
    elif dataset:
        spec.dataset_name = dataset_name(dataset)
    elif feedback is not None:
        spec.feedback.CopyFrom(feedback)

    async def call(client: AsyncClient) -> int:
        if local is not None:
            spec.dataset_name = await upload_local(client, local, quiet=opts.json)
        job = await client.create_training_job(
            spec, request_id=request_id, validate_only=validate_only, priority=priority
        )
        if validate_only:
            _validated(opts, job, uploaded=spec.dataset_name if local is not None else "")
            return 0
        if not watch:
            emit(opts, job, lambda: out.print(f"created {job.name} ({short_state(job.state)})"))
            return 0
        if not opts.json:
            err.print(f"created {job.name}")
        return await follow_training(client, opts.json, job.name)

    raise typer.Exit(guard_interrupt(ctx, call))


def _objective(value: str) -> int:
    return short_enum(training.Objective, "OBJECTIVE_", value, "--objective")


def _validated(opts: Options, job: training.TrainingJob, *, uploaded: str = "") -> None:
    """What validation found: the data as the job would see it and the spec with the server's defaults filled in.
    No job is created (--json: the spec and dataset, with "created": false); a request whose --request-id made a job
    already is answered with that job, which is named (--json: "job"). A local file is checked on the server once
    uploaded, as the run would upload it (the same bytes reuse their version): ``uploaded`` says so, not "nothing"
    (--json: "uploaded")."""
    spec, dataset, hp = job.spec, job.dataset, job.spec.hyperparameters
    source = {
        "jsonl": spec.jsonl.path, "dataset_name": dataset.dataset_name or spec.dataset_name,
        "feedback": f"feedback of the last {spec.feedback.days} days",
    }.get(spec.WhichOneof("dataset") or "", "-")
    composition = ", ".join(f"{k} {v}" for k, v in sorted(dataset.composition.items()))
    rows = {
        "data": f"{source}: {dataset.example_count} examples"
        + (f", {dataset.target_token_count} target tokens" if dataset.target_token_count else "")
        + (f" ({composition})" if composition else ""),
        "base model": spec.base_model,
        "objective": training.Objective.Name(spec.objective).removeprefix("OBJECTIVE_").lower(),
        "adapter": f"LoRA r{spec.lora.rank} alpha {spec.lora.alpha:g}",
        "training": f"{hp.epochs} epochs, lr {hp.learning_rate:g} "
        f"({training.LrSchedule.Name(hp.lr_schedule).removeprefix('LR_SCHEDULE_').lower()}"
        + (f" after {hp.warmup_steps} warm-up steps" if hp.warmup_steps else "") + f"), batch {hp.batch_size}, "
        f"max_seq_length {hp.max_seq_length}" + (f", max_steps {hp.max_steps}" if hp.max_steps else ""),
    }
    if spec.parent_adapter_version:
        ewc = spec.ewc
        rows["continues"] = spec.parent_adapter_version + (
            " without EWC" if ewc.disabled else
            f" with EWC lambda {ewc.ewc_lambda:g} gamma {ewc.gamma:g} over "
            f"{common.FisherSpace.Name(ewc.fisher_space).removeprefix('FISHER_SPACE_').lower()}"
        ) + (f", replay {ewc.replay_fraction:g}" if ewc.replay_fraction else "")
    data = ({"created": False, "spec": as_dict(spec), "dataset": as_dict(dataset)}
            | ({"job": job.name} if job.name else {}) | ({"uploaded": uploaded} if uploaded else {}))

    def render() -> None:
        if job.name:  # the same request, with its request_id, made this job before
            out.print(f"nothing created: this request made {job.name} already "
                      f"({short_state(job.state)}), which it asked for:", highlight=False)
        elif uploaded:
            out.print(f"valid; no job created, the file stored as {uploaded} to be checked (the run reuses it; "
                      "without --validate-only this would run):", highlight=False)
        else:
            out.print("valid; nothing created (without --validate-only this would run):", highlight=False)
        out.print(key_values(rows))

    emit(opts, data, render)


@jobs_app.command("list")
def jobs_list(
    ctx: typer.Context,
    state: list[str] = STATE_FILTER,
    page_size: int = PAGE_SIZE,
    page_token: str = PAGE_TOKEN,
    wide: bool = typer.Option(False, "--wide", help="Also show when each job was created and ended, and its worker."),
) -> None:
    """Recent training jobs, newest first (whole names, at any terminal width)."""
    states = parse_states(state)
    response = run(ctx, lambda c: c.list_training_jobs(states=states, page_size=page_size, page_token=page_token))
    listed(options(ctx), response, response.training_jobs, wide, ("adapter", lambda j: j.output_adapter_version),
            worker=True)


@jobs_app.command("get")
def jobs_get(ctx: typer.Context, name: str) -> None:
    """One training job."""
    emit(options(ctx), run(ctx, lambda c: c.get_training_job(name)))


@jobs_app.command("watch")
def jobs_watch(
    ctx: typer.Context, name: str, after: int = AFTER
):
    """Follow a job to its end (reconnecting if the connection drops)."""
    opts = options(ctx)
    raise typer.Exit(guard_interrupt(ctx, lambda c: follow_training(c, opts.json, name, after)))


@jobs_app.command("plot")
def jobs_plot(
    ctx: typer.Context,
    name: str,
    png: Path = typer.Option(Path("loss.png"), "--out", "-o", help="Where to write the loss curve (PNG)."),
    csv_path: Path = typer.Option(None, "--csv", help="Also write the metrics table (CSV) here."),
) -> None:
    """Write a job's loss curve, and its metrics as CSV, as the server has them now (running or ended)."""
    opts = options(ctx)
    metrics = run(ctx, lambda c: c.get_training_metrics(name))
    state = short_state(metrics.state)
    if not metrics.rows:  # nothing is written: a loss.png left from before must not pass for this job's
        fail(opts, grpc.StatusCode.FAILED_PRECONDITION, f"{name} has no steps yet ({state}): no loss curve to write",
             reason=ERROR_REASON_NO_STEPS_YET, metadata={"name": name, "state": state})
    local_write(opts, png, metrics.png, "--out")
    if csv_path is not None:
        local_write(opts, csv_path, metrics.csv, "--csv")
    last = metrics.rows[-1]
    written = {"name": name, "state": state, "rows": len(metrics.rows), "png": str(png),
               "csv": str(csv_path) if csv_path is not None else None}
    emit(opts, written, lambda: out.print(
        f"{name} ({state}, step {last.step} of {last.total_steps}) -> {png}"
        + (f", {csv_path}" if csv_path is not None else ""), highlight=False))


@jobs_app.command("cancel")
def jobs_cancel(ctx: typer.Context, name: str) -> None:
    """Ask a job to stop; it ends CANCELLED."""
    steered(ctx, run(ctx, lambda c: c.cancel_training_job(name)))


@jobs_app.command("pause")
def jobs_pause(ctx: typer.Context, name: str) -> None:
    """Pause a queued or running job: a running one checkpoints at its next step and frees its worker."""
    steered(ctx, run(ctx, lambda c: c.pause_training_job(name)))


@jobs_app.command("resume")
def jobs_resume(ctx: typer.Context, name: str) -> None:
    """Queue a paused job again; it continues from its last checkpoint."""
    steered(ctx, run(ctx, lambda c: c.resume_training_job(name)))


@jobs_app.command("checkpoints")
def jobs_checkpoints(ctx: typer.Context, name: str) -> None:
    """A job's stored checkpoints, newest first (publish one with jobs publish NAME STEP)."""
    checkpoints = run(ctx, lambda c: c.list_training_checkpoints(name))

    def render() -> None:
        if not checkpoints:
            out.print(f"{name} has no stored checkpoints", highlight=False)
            return
        table = Table("step", "loss", "eval loss", "bytes", "created", box=None, header_style="bold")
        for c in checkpoints:
            eval_loss = f"{c.eval_loss:.4f}" if c.HasField("eval_loss") else "-"
            table.add_row(str(c.step), f"{c.loss:.4f}", eval_loss, f"{c.size_bytes:,}", when(c.create_time))
        print_table(table)

    emit(options(ctx), {"checkpoints": [as_dict(c) for c in checkpoints]}, render)


@jobs_app.command("publish")
def jobs_publish(
    ctx: typer.Context,
    name: str,
    step: int = typer.Argument(..., min=1, max=UINT64_MAX, help="The checkpoint's step (see jobs checkpoints)."),
    request_id: str = typer.Option("", "--request-id", help="Idempotency key: the same id returns the same version."),
) -> None:
    """Publish one of a job's checkpoints as a new adapter version."""
    version = run(ctx, lambda c: c.publish_checkpoint(name, step, request_id=request_id))
    emit(options(ctx), {"name": name, "step": step, "adapter_version": version},
         lambda: out.print(f"{name} step {step} -> adapter {version}", highlight=False))


__all__ = ["SPACES", "base_protection", "parse_fisher_space", "jobs_app", "train"]
