"""The options `pipelines create` and `pipelines update` share, and what they build of them: the pipeline (and, for
an update, its field mask) from the options given, the current pipeline's training template, triggers and canary
policy changed as they stand."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, NoReturn

import grpc
import typer
from google.protobuf.message import Message

from learning.v1 import common_pb2 as common
from learning.v1 import pipeline_pb2 as pp
from learning.v1 import training_pb2 as training
from learning.v1.error_reason_pb2 import ERROR_REASON_USAGE
from learning_engine.cli.common import UINT32_MAX, Options, fail
from learning_engine.cli.datasets import FEEDBACK_LABELS, MIN_SAMPLES, dataset_name, feedback_dataset
from learning_engine.cli.jobs import base_protection
from learning_engine.cli.rollout import CANARY_OPTIONS, canary_policy


def short(value: int, enum: type, prefix: str) -> str:
    """An enum value's name as the CLI shows it: ``ROLLOUT_MODE_CANARY`` -> ``canary``."""
    return enum.Name(value).removeprefix(prefix).lower()  # type: ignore[attr-defined]


_MODES = {"activate": pp.ROLLOUT_MODE_ACTIVATE, "canary": pp.ROLLOUT_MODE_CANARY, "none": pp.ROLLOUT_MODE_NONE}


# ---- the options create and update share ------------------------------------------------------------------------
# Each is None (or False) when not given: create builds the pipeline from nothing, update changes only what is
# given. Integers go into uint32 (uint64) fields: each is bounded by the server's limit, so that one out of range is
# a usage error (exit 2), never a traceback.
_MAX_COUNT = 1_000_000  # FeedbackCountTrigger.count: 1..1,000,000 (engine/pipelines/triggers.py MAX_COUNT)
_MAX_DAYS = 3650  # FeedbackDataset.days (server/convert_dataset_source.py MAX_FEEDBACK_DAYS)
_MAX_EPOCHS = 1000  # Hyperparameters.epochs (server/convert.py)
_MAX_PAGE = 1000  # a page_size above it is cut to it (server/convert_jobs.py page_size)


def _changed(option: Any, *decls: str, **attributes: Any) -> Any:
    """A copy of the typer option ``option``, with other flags (``decls``) and other ``attributes``."""
    copied = copy.copy(option)
    if decls:
        copied.param_decls = decls
    for name, value in attributes.items():
        setattr(copied, name, value)
    return copied


def unset(option: Any, *decls: str) -> Any:
    """``option`` as `pipelines update` takes it: None when not given (the pipeline keeps what it has)."""
    return _changed(option, *decls, default=None, show_default=False)


UPDATE_FEEDBACK_LABELS = _changed(FEEDBACK_LABELS, help=f"{FEEDBACK_LABELS.help} Replaces the pipeline's; '' (alone) "
                                  "removes them.")


PIPELINE_MIN_SAMPLES = _changed(MIN_SAMPLES, max=UINT32_MAX)
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
CANARY = "--canary-"  # the canary policy's options, as `canary start` takes them (--share: --canary-share)
_SOURCES = ("--from-feedback", "--data", "--dataset")


@dataclass
class Given:
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
    def of(cls, parameters: dict[str, Any], enabled: bool | None) -> Given:
        """The options of a command's ``parameters`` (its locals(), by name; the canary policy's as
        ``canary_<field>``)."""
        names = {f.name for f in fields(cls)} - {"canary", "enabled"}
        return cls(**{name: parameters[name] for name in names}, enabled=enabled,
                   canary={field: parameters[f"canary_{field}"] for field in CANARY_OPTIONS})

    def sources(self) -> list[str]:
        return [flag for flag, value in zip(_SOURCES, (self.from_feedback, self.data, self.dataset), strict=True)
                if value is not None]

    def canary_flags(self) -> list[str]:
        return [CANARY + field.replace("_", "-") for field, value in self.canary.items() if value is not None]

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


def usage(opts: Options, message: str) -> NoReturn:
    fail(opts, grpc.StatusCode.INVALID_ARGUMENT, message, reason=ERROR_REASON_USAGE)


def check(opts: Options, given: Given, *, creating: bool) -> None:
    """The usage errors that need no pipeline (exit 3, before any call): a source too many (or, creating, none);
    an unknown --rollout; and an option that would be ignored: --tz without --cron, --drift-threshold without
    --on-drift, --canary-* with a rollout other than canary (creating: without --rollout canary)."""
    sources = given.sources()
    if len(sources) > 1 or (creating and not sources):
        usage(opts, f"name {'exactly' if creating else 'at most'} one of {', '.join(_SOURCES)}"
               + (f" (got {' and '.join(sources)})" if sources else ""))
    if given.rollout is not None and given.rollout not in _MODES:
        usage(opts, f"--rollout must be one of {', '.join(_MODES)}")
    if given.time_zone is not None and not given.cron:
        usage(opts, "--tz applies to --cron (the schedule's time zone); without a schedule it would be ignored")
    if given.drift_threshold is not None and not given.on_drift:
        usage(opts, "--drift-threshold applies to --on-drift; without a drift trigger it would be ignored")
    canary = given.canary_flags()
    if canary and (given.rollout or ("activate" if creating else "canary")) != "canary":
        usage(opts, f"{', '.join(canary)} {'applies' if len(canary) == 1 else 'apply'} to --rollout canary (the "
               f"canary's policy); with rollout {given.rollout or 'activate'} it would be stored unused")


def _training(opts: Options, given: Given, current: training.TrainingJobSpec) -> training.TrainingJobSpec:
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
        labels=[f"{key}={value}" for key, value in kept.labels.items()] if given.feedback_label is None
        else [pair for pair in given.feedback_label if pair],  # --feedback-label '' (alone) removes them all
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


def _triggers(given: Given, current: Sequence[pp.PipelineTrigger]) -> list[pp.PipelineTrigger]:
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


def _rollout(opts: Options, given: Given, current: pp.RolloutPolicy) -> pp.RolloutPolicy:
    """``current`` with the mode given and the --canary-* options over its canary policy (refused when the
    pipeline's rollout, as changed, is not canary)."""
    mode = _MODES[given.rollout] if given.rollout is not None else current.mode or pp.ROLLOUT_MODE_ACTIVATE
    canary = given.canary_flags()
    if canary and mode != pp.ROLLOUT_MODE_CANARY:
        usage(opts, f"{', '.join(canary)} {'applies' if len(canary) == 1 else 'apply'} to --rollout canary (the "
               f"canary's policy); the pipeline's rollout is {short(mode, pp.RolloutMode, 'ROLLOUT_MODE_')}")
    policy = pp.RolloutPolicy(mode=mode)
    policy.canary.CopyFrom(current.canary)
    _set_given(policy.canary, canary_policy(given.canary, flag_prefix=CANARY))
    if not policy.canary.ByteSize():
        policy.ClearField("canary")
    return policy


def changes(opts: Options, given: Given, current: pp.Pipeline, *,
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
