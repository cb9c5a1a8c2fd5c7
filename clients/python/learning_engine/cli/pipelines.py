"""``pipelines``: the loop that runs unattended (create, update, list, get, run, watch, runs, get-run, decisions,
enable, disable, cancel, delete)."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, NoReturn

import grpc
import typer
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from rich.table import Table

from learning.v1 import common_pb2 as common
from learning.v1 import pipeline_pb2 as pp
from learning.v1 import training_pb2 as training
from learning.v1.error_reason_pb2 import ERROR_REASON_USAGE
from learning_engine.cli.common import (
    Options,
    as_dict,
    emit,
    err,
    fail,
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
    MIN_SAMPLES,
    THUMBS_DOWN_WEIGHT,
    THUMBS_UP_WEIGHT,
    dataset_name,
    feedback_dataset,
)
from learning_engine.cli.job_views import guard_interrupt, outcome_code
from learning_engine.cli.jobs import base_protection
from learning_engine.cli.rollout import CANARY_OPTIONS, canary_option, canary_policy
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


# ---- the options create and update share ------------------------------------------------------------------------
# Each is None (or False) when not given: create builds the pipeline from nothing, update changes only what is
# given. Integers go into uint32 (uint64) fields: each is bounded by the server's limit, so that one out of range is
# a usage error (exit 2), never a traceback.
_MAX_COUNT = 1_000_000  # FeedbackCountTrigger.count: 1..1,000,000 (engine/pipelines/triggers.py MAX_COUNT)
_MAX_DAYS = 3650  # FeedbackDataset.days (server/convert_dataset_source.py MAX_FEEDBACK_DAYS)
_MAX_EPOCHS = 1000  # Hyperparameters.epochs (server/convert.py)
_UINT32_MAX = 2**32 - 1
_UINT64_MAX = 2**64 - 1
_MAX_PAGE = 1000  # a page_size above it is cut to it (server/convert_jobs.py page_size)


def _changed(option: Any, *decls: str, **attributes: Any) -> Any:
    """A copy of the typer option ``option``, with other flags (``decls``) and other ``attributes``."""
    copied = copy.copy(option)
    if decls:
        copied.param_decls = decls
    for name, value in attributes.items():
        setattr(copied, name, value)
    return copied


def _unset(option: Any, *decls: str) -> Any:
    """``option`` as `pipelines update` takes it: None when not given (the pipeline keeps what it has)."""
    return _changed(option, *decls, default=None, show_default=False)


_MIN_SAMPLES = _changed(MIN_SAMPLES, max=_UINT32_MAX)
FROM_FEEDBACK = typer.Option(None, "--from-feedback", min=1, max=_MAX_DAYS, show_default=False,
                             help="Train on the last N days of feedback (at most 3650).")
DATA = typer.Option(None, "--data", show_default=False, help="Or a JSONL file below the server's datasets dir.")
DATASET = typer.Option(None, "--dataset", show_default=False,
                       help="Or a stored dataset (datasets/NAME, its newest version).")
CRON = typer.Option(None, "--cron", show_default=False, help="A schedule, e.g. '0 2 * * 1' (Mondays 02:00).")
TIME_ZONE = typer.Option(None, "--tz", show_default=False,
                         help="With --cron: the schedule's IANA time zone (default: UTC; update: the replaced "
                         "schedule's).")
ON_FEEDBACK = typer.Option(None, "--on-feedback", min=0, max=_MAX_COUNT, show_default=False,
                           help="Run after N feedback events since the last run (0: no such trigger).")
ON_NEGATIVE = typer.Option(None, "--on-negative", min=0, max=_MAX_COUNT, show_default=False,
                           help="Run after N negative feedback events (0: no such trigger).")
ON_DRIFT = typer.Option(False, "--on-drift", help="Run when the drift detector finds drift.")
DRIFT_THRESHOLD = typer.Option(None, "--drift-threshold", min=0.0, show_default=False,
                               help="With --on-drift: run when the drift statistic reaches this, rather than at the "
                               "drift detector's own threshold.")
ROLLOUT = typer.Option(None, "--rollout", show_default=False,
                       help="activate (the default), canary or none (publish only).")
SUITES = typer.Option(None, "--suite", show_default=False,
                      help="A golden suite JSONL for the gate (below the server's datasets dir); repeatable.")
SUITE_DATASETS = typer.Option(
    None, "--suite-dataset", show_default=False, help="A stored dataset as a golden suite for the gate, its test "
    "split: capitals (its newest version at each run) or datasets/capitals/versions/2; repeatable.")
EPOCHS = typer.Option(None, "--epochs", min=0, max=_MAX_EPOCHS, show_default=False,
                      help="Training epochs (0: the server's).")
LEARNING_RATE = typer.Option(None, "--lr", show_default=False, help="Learning rate (0: the server's).")
REPLAY = typer.Option(None, "--replay", show_default=False, help="Share of earlier versions' examples replayed.")
PROTECTION = typer.Option(None, "--base-protection", show_default=False,
                          help="What keeps the base model's knowledge: none | self_rehearsal | base_kl | ewc_base "
                          "(server default if empty).")
BASE_FRACTION = typer.Option(None, "--base-fraction",
                             help="Share of the training set that is the base model's answers.")
BASE_KL_WEIGHT = typer.Option(None, "--base-kl-weight",
                              help="Weight of the KL term to the base model on those answers.")
BASE_EWC_LAMBDA = typer.Option(None, "--base-ewc-lambda",
                               help="ewc_base: weight of the EWC penalty against the base model.")
BASE_PROMPT_KL_WEIGHT = typer.Option(None, "--base-prompt-kl-weight",
                                     help="Weight of the KL term to the base model at the training examples' prompt "
                                     "positions.")
DESCRIPTION = typer.Option(None, "--description", show_default=False)
PAGE_SIZE = typer.Option(0, "--page-size", min=0, max=_MAX_PAGE, help="0: the server's (50).")
_CANARY = "--canary-"  # the canary policy's options, as `canary start` takes them (--share: --canary-share)
_SOURCES = ("--from-feedback", "--data", "--dataset")


@dataclass
class _Given:
    """The options create and update share, by parameter name; None where not given."""

    from_feedback: int | None
    data: str | None
    dataset: str | None
    min_samples: int | None
    force: bool | None
    thumbs_up_weight: float | None
    thumbs_down_weight: float | None
    feedback_label: list[str] | None
    feedback_adapter: str | None
    epochs: int | None
    learning_rate: float | None
    replay: float | None
    protection: str | None
    base_fraction: float | None
    base_kl_weight: float | None
    base_ewc_lambda: float | None
    base_prompt_kl_weight: float | None
    cron: str | None
    time_zone: str | None
    on_feedback: int | None
    on_negative: int | None
    on_drift: bool | None
    drift_threshold: float | None
    rollout: str | None
    suite: list[str] | None
    suite_dataset: list[str] | None
    description: str | None
    enabled: bool | None
    canary: dict[str, float | int | str | None]

    @classmethod
    def of(cls, parameters: dict[str, Any], enabled: bool | None) -> _Given:
        """The options of a command's ``parameters`` (its locals(), by name; the canary policy's as
        ``canary_<field>``)."""
        names = {f.name for f in fields(cls)} - {"canary", "enabled"}
        return cls(**{name: parameters[name] for name in names}, enabled=enabled,
                   canary={field: parameters[f"canary_{field}"] for field in CANARY_OPTIONS})

    def sources(self) -> list[str]:
        return [flag for flag, value in zip(_SOURCES, (self.from_feedback, self.data, self.dataset), strict=True)
                if value is not None]

    def canary_flags(self) -> list[str]:
        return [_CANARY + field.replace("_", "-") for field, value in self.canary.items() if value is not None]

    def trains(self) -> bool:
        """Whether an option of the training template is given (for update: its mask names training)."""
        return any(value is not None for value in (
            self.from_feedback, self.data, self.dataset, self.min_samples, self.force, self.thumbs_up_weight,
            self.thumbs_down_weight, self.feedback_label, self.feedback_adapter, self.epochs, self.learning_rate,
            self.replay, self.protection, self.base_fraction, self.base_kl_weight, self.base_ewc_lambda,
            self.base_prompt_kl_weight))

    def triggers(self) -> bool:
        return any(value is not None for value in (self.cron, self.on_feedback, self.on_negative, self.on_drift))

    def rolls_out(self) -> bool:
        return self.rollout is not None or bool(self.canary_flags())


def _usage(opts: Options, message: str) -> NoReturn:
    fail(opts, grpc.StatusCode.INVALID_ARGUMENT, message, reason=ERROR_REASON_USAGE)


def _check(opts: Options, given: _Given, *, creating: bool) -> None:
    """The usage errors that need no pipeline (exit 3, before any call): a source too many (or, creating, none);
    an unknown --rollout; and an option that would be ignored: --tz without --cron, --drift-threshold without
    --on-drift, --canary-* with a rollout other than canary (creating: without --rollout canary)."""
    sources = given.sources()
    if len(sources) > 1 or (creating and not sources):
        _usage(opts, f"name {'exactly' if creating else 'at most'} one of {', '.join(_SOURCES)}"
               + (f" (got {' and '.join(sources)})" if sources else ""))
    if given.rollout is not None and given.rollout not in _MODES:
        _usage(opts, f"--rollout must be one of {', '.join(_MODES)}")
    if given.time_zone is not None and not given.cron:
        _usage(opts, "--tz applies to --cron (the schedule's time zone); without a schedule it would be ignored")
    if given.drift_threshold is not None and not given.on_drift:
        _usage(opts, "--drift-threshold applies to --on-drift; without a drift trigger it would be ignored")
    canary = given.canary_flags()
    if canary and (given.rollout or ("activate" if creating else "canary")) != "canary":
        _usage(opts, f"{', '.join(canary)} {'applies' if len(canary) == 1 else 'apply'} to --rollout canary (the "
               f"canary's policy); with rollout {given.rollout or 'activate'} it would be stored unused")


def _training(opts: Options, given: _Given, current: training.TrainingJobSpec) -> training.TrainingJobSpec:
    """``current`` (an empty spec when creating) with the options given: a new source replaces the old one; the
    feedback dataset's minimum, --force, weights and filters change the feedback source's (and are refused for
    another source, as everywhere); the rest change their fields only."""
    spec = training.TrainingJobSpec()
    spec.CopyFrom(current)
    if given.data is not None:
        spec.jsonl.CopyFrom(common.JsonlDataset(path=given.data))
    elif given.dataset is not None:
        spec.dataset_name = dataset_name(given.dataset)
    # the feedback source's as it stands (when it stays the source), with the options given over it
    stays = current.HasField("feedback") and given.data is None and given.dataset is None
    kept = current.feedback if stays else common.FeedbackDataset()
    days = given.from_feedback if given.from_feedback is not None else kept.days
    weights = [weight if weight is not None else (old or None) for weight, old in (
        (given.thumbs_up_weight, kept.thumbs_up_weight), (given.thumbs_down_weight, kept.thumbs_down_weight))]
    feedback = feedback_dataset(
        opts, days, given.min_samples if given.min_samples is not None else kept.min_samples or MIN_SAMPLES.default,
        given.force if given.force is not None else kept.force, thumbs_up_weight=weights[0],
        thumbs_down_weight=weights[1],
        labels=given.feedback_label or [f"{key}={value}" for key, value in kept.labels.items()],
        adapter_version=given.feedback_adapter if given.feedback_adapter is not None else kept.adapter_version)
    if feedback is not None:
        spec.feedback.CopyFrom(feedback)
    if given.epochs is not None:
        spec.hyperparameters.epochs = given.epochs
    if given.learning_rate is not None:
        spec.hyperparameters.learning_rate = given.learning_rate
    if given.replay is not None and (given.replay or spec.HasField("ewc")):
        spec.ewc.replay_fraction = given.replay
    protection = base_protection(given.protection or "", given.base_fraction, given.base_kl_weight,
                                 given.base_ewc_lambda, given.base_prompt_kl_weight)
    if protection is not None:
        _set_given(spec.base_protection, protection)
    return spec


def _set_given(target: Message, given: Message) -> None:
    """Each field set in ``given`` (an optional one at 0 included), whole, on ``target``; the rest stay."""
    for field, value in given.ListFields():
        if field.message_type is not None:
            getattr(target, field.name).CopyFrom(value)
        else:
            setattr(target, field.name, value)


def _kind(trigger: pp.PipelineTrigger) -> str:
    which = trigger.WhichOneof("trigger") or ""
    return "negative" if which == "feedback" and trigger.feedback.negative_only else which


def _triggers(given: _Given, current: Sequence[pp.PipelineTrigger]) -> list[pp.PipelineTrigger]:
    """``current`` with each kind of trigger given replacing the ones of its kind (--cron '', --on-feedback 0,
    --on-negative 0 and --no-drift remove them)."""
    new: dict[str, list[pp.PipelineTrigger]] = {}
    if given.cron is not None:
        zones = [t.cron.time_zone for t in current if _kind(t) == "cron"]
        zone = given.time_zone or (zones[0] if len(zones) == 1 and zones[0] else "UTC")
        new["cron"] = [pp.PipelineTrigger(cron=pp.CronTrigger(expression=given.cron, time_zone=zone))] * bool(
            given.cron)
    if given.on_feedback is not None:
        new["feedback"] = [pp.PipelineTrigger(feedback=pp.FeedbackCountTrigger(count=given.on_feedback))] * bool(
            given.on_feedback)
    if given.on_negative is not None:
        new["negative"] = [pp.PipelineTrigger(feedback=pp.FeedbackCountTrigger(
            count=given.on_negative, negative_only=True))] * bool(given.on_negative)
    if given.on_drift is not None:
        new["drift"] = [pp.PipelineTrigger(drift=pp.DriftTrigger(threshold=given.drift_threshold or 0.0))] * bool(
            given.on_drift)
    return [t for t in current if _kind(t) not in new] + [t for made in new.values() for t in made]


def _rollout(opts: Options, given: _Given, current: pp.RolloutPolicy) -> pp.RolloutPolicy:
    """``current`` with the mode given and the --canary-* options over its canary policy (refused when the
    pipeline's rollout, as changed, is not canary)."""
    mode = _MODES[given.rollout] if given.rollout is not None else current.mode or pp.ROLLOUT_MODE_ACTIVATE
    canary = given.canary_flags()
    if canary and mode != pp.ROLLOUT_MODE_CANARY:
        _usage(opts, f"{', '.join(canary)} {'applies' if len(canary) == 1 else 'apply'} to --rollout canary (the "
               f"canary's policy); the pipeline's rollout is {_short(mode, pp.RolloutMode, 'ROLLOUT_MODE_')}")
    policy = pp.RolloutPolicy(mode=mode)
    policy.canary.CopyFrom(current.canary)
    _set_given(policy.canary, canary_policy(given.canary, flag_prefix=_CANARY))
    if not policy.canary.ByteSize():
        policy.ClearField("canary")
    return policy


def _changes(opts: Options, given: _Given, current: pp.Pipeline, *,
             creating: bool) -> tuple[pp.Pipeline, list[str]]:
    """The pipeline the options make of ``current`` (an empty Pipeline when creating: every field), and the
    update-mask paths of the fields they change (updating: only those fields are set)."""
    changed, paths = pp.Pipeline(), []
    if creating or given.trains():
        changed.training.CopyFrom(_training(opts, given, current.training))
        paths.append("training")
    if creating or given.triggers():
        changed.triggers.extend(_triggers(given, current.triggers))
        paths.append("triggers")
    if creating or given.rolls_out():
        changed.rollout.CopyFrom(_rollout(opts, given, current.rollout))
        paths.append("rollout")
    if given.suite is not None:  # --suite '' (alone) removes them all
        changed.suite_paths.extend(s for s in given.suite if s)
        paths.append("suite_paths")
    if given.suite_dataset is not None:
        changed.suite_datasets.extend(dataset_name(d) for d in given.suite_dataset if d)
        paths.append("suite_datasets")
    if given.enabled is not None:
        changed.enabled = given.enabled
        paths.append("enabled")
    if given.description is not None:
        changed.description = given.description
        paths.append("description")
    return changed, paths


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
    min_samples: int = _MIN_SAMPLES,
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
    canary_share: float | None = canary_option("share", _CANARY),
    canary_min_requests: int | None = canary_option("min_requests", _CANARY),
    canary_min_feedback: int | None = canary_option("min_feedback", _CANARY),
    canary_feedback_margin: float | None = canary_option("feedback_margin", _CANARY),
    canary_error_margin: float | None = canary_option("error_margin", _CANARY),
    canary_error_spike: float | None = canary_option("error_spike", _CANARY),
    canary_error_spike_min_requests: int | None = canary_option("error_spike_min_requests", _CANARY),
    canary_duration: str | None = canary_option("duration", _CANARY),
    canary_max_duration: str | None = canary_option("max_duration", _CANARY),
    canary_check_interval: str | None = canary_option("check_interval", _CANARY),
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
    given = _Given.of(locals(), enabled=not disabled)
    _check(opts, given, creating=True)
    pipeline, _ = _changes(opts, given, pp.Pipeline(), creating=True)
    pipeline.base_model = base_model
    made = run(ctx, lambda c: c.create_pipeline(pipeline_id, pipeline))
    emit(opts, made, lambda: out.print(f"created {made.name}: {_summary(made)}", highlight=False))


@pipelines_app.command("update")
def pipelines_update(
    ctx: typer.Context,
    name: str,
    from_feedback: int | None = FROM_FEEDBACK,
    min_samples: int | None = _unset(_MIN_SAMPLES),
    force: bool | None = _unset(FORCE_BELOW_MIN, "--force/--no-force"),
    thumbs_up_weight: float | None = THUMBS_UP_WEIGHT,
    thumbs_down_weight: float | None = THUMBS_DOWN_WEIGHT,
    feedback_label: list[str] | None = FEEDBACK_LABELS,
    feedback_adapter: str | None = _unset(FEEDBACK_ADAPTER),
    data: str | None = DATA,
    dataset: str | None = DATASET,
    cron: str | None = CRON,
    time_zone: str | None = TIME_ZONE,
    on_feedback: int | None = ON_FEEDBACK,
    on_negative: int | None = ON_NEGATIVE,
    on_drift: bool | None = _unset(ON_DRIFT, "--on-drift/--no-drift"),
    drift_threshold: float | None = DRIFT_THRESHOLD,
    rollout: str | None = ROLLOUT,
    canary_share: float | None = canary_option("share", _CANARY),
    canary_min_requests: int | None = canary_option("min_requests", _CANARY),
    canary_min_feedback: int | None = canary_option("min_feedback", _CANARY),
    canary_feedback_margin: float | None = canary_option("feedback_margin", _CANARY),
    canary_error_margin: float | None = canary_option("error_margin", _CANARY),
    canary_error_spike: float | None = canary_option("error_spike", _CANARY),
    canary_error_spike_min_requests: int | None = canary_option("error_spike_min_requests", _CANARY),
    canary_duration: str | None = canary_option("duration", _CANARY),
    canary_max_duration: str | None = canary_option("max_duration", _CANARY),
    canary_check_interval: str | None = canary_option("check_interval", _CANARY),
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
    given = _Given.of(locals(), enabled=enabled)
    _check(opts, given, creating=False)
    target = pipeline_name(name)
    if not (given.trains() or given.triggers() or given.rolls_out() or given.suite is not None
            or given.suite_dataset is not None or given.enabled is not None or given.description is not None):
        _usage(opts, "name what to change: the options are those of pipelines create (see --help)")

    async def call(client: AsyncClient) -> tuple[pp.Pipeline, list[str]]:
        reads = given.trains() or given.triggers() or given.rolls_out()  # merged into the pipeline as it stands
        current = await client.get_pipeline(target) if reads else pp.Pipeline()
        changed, paths = _changes(opts, given, current, creating=False)
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
                    after: int = typer.Option(0, "--after", min=0, max=_UINT64_MAX,
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
            out.print(f"{_short(event.stage_started.stage, pp.PipelineStage, 'PIPELINE_STAGE_')}: started",
                      highlight=False)
        elif kind == "stage_ended":
            s = event.stage_ended
            out.print(f"{_short(s.stage, pp.PipelineStage, 'PIPELINE_STAGE_')}: "
                      f"{_short(s.state, pp.StageState, 'STAGE_STATE_')}: {s.message}", highlight=False)
        elif kind == "stage_progress" and event.stage_progress.total:
            p = event.stage_progress
            what = (f"{p.message}: answer" if p.stage == pp.PIPELINE_STAGE_EVALUATE else "training step")
            err.print(f"  {what} {p.completed}/{p.total}", highlight=False)
    done = await client.get_pipeline_run(name)
    if not as_json:
        out.print(f"{done.name} {_short(done.state, common.JobState, 'JOB_STATE_')}"
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
            table.add_row(r.name, _short(r.state, common.JobState, "JOB_STATE_"),
                          _short(r.trigger, pp.TriggerKind, "TRIGGER_KIND_"), when(r.create_time), r.version,
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
        trigger = _short(done.trigger, pp.TriggerKind, "TRIGGER_KIND_")
        out.print(f"{done.name} {_short(done.state, common.JobState, 'JOB_STATE_')}: {done.pipeline}, {trigger}"
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
                table.add_row(_short(stage.stage, pp.PipelineStage, "PIPELINE_STAGE_"),
                              _short(stage.state, pp.StageState, "STAGE_STATE_"), stage.resource or "-", stage.message)
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
            table.add_row(when(d.time), _short(d.kind, pp.TriggerKind, "TRIGGER_KIND_"), "yes" if d.fired else "no",
                          d.run, d.reason)
        print_table(table)
        if response.next_page_token:
            err.print(f"more: --page-token {response.next_page_token}", highlight=False)

    emit(options(ctx), response, render)


@pipelines_app.command("cancel")
def pipelines_cancel(ctx: typer.Context, run_: str = typer.Argument(..., metavar="RUN")) -> None:
    """Cancel a run (and its training job, if it is training)."""
    done = run(ctx, lambda c: c.cancel_pipeline_run(run_name(run_)))
    emit(options(ctx), done, lambda: out.print(f"{done.name} {_short(done.state, common.JobState, 'JOB_STATE_')}",
                                               highlight=False))
