"""Rollouts through the gateway's alias: canaries (start, status, abort) and manual traffic splits."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import grpc
import typer
from google.protobuf import duration_pb2
from rich.table import Table

from learning.v1 import lora_control_pb2 as lora
from learning_engine.cli.common import as_dict, emit, options, out, print_table, run, when
from learning_engine.client import AsyncClient

canary_app = typer.Typer(help="Canary rollouts: start one, see how it goes, abort it.", no_args_is_help=True)
traffic_app = typer.Typer(help="Traffic splits of the gateway's alias: a manual A/B split.", no_args_is_help=True)

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
# --wait: a canary not promoted exits 9 (FAILED_PRECONDITION), as a gate that refuses (for scripts and CI)
NOT_PROMOTED = grpc.StatusCode.FAILED_PRECONDITION.value[0]


def _duration(value: str | None, option: str) -> duration_pb2.Duration | None:
    """``90``, ``90s``, ``10m``, ``2h`` or ``1d`` as a Duration; None when not given."""
    if value is None:
        return None
    found = _DURATION.fullmatch(value.strip())
    if found is None:
        raise typer.BadParameter(f"expected a duration such as 90s, 10m, 2h or 1d, got {value!r}", param_hint=option)
    d = duration_pb2.Duration()
    try:
        d.FromNanoseconds(round(float(found[1]) * _UNITS[found[2]] * 1e9))
    except (ValueError, OverflowError):  # past what a Duration holds (about 10,000 years)
        raise typer.BadParameter(f"{value!r} is longer than a duration can be", param_hint=option) from None
    return d


def _figures_table(figures: lora.TrafficFigures) -> Table:
    table = Table("side", "version", "requests", "errors", "failed over", "mean latency", "ratings", "negative")
    for side, v in (("candidate", figures.candidate), ("active", figures.active)):
        ratings = v.positive_feedback + v.negative_feedback
        table.add_row(side, v.version, str(v.requests), f"{v.errors} ({v.error_rate:.1%})", str(v.failovers),
                      f"{v.mean_latency.ToTimedelta().total_seconds() * 1000:.0f} ms", str(ratings),
                      f"{v.negative_rate:.1%}")
    return table


def render_split(status: lora.LoraStatus) -> None:
    """The traffic split in force, a line and both sides' figures (nothing without one)."""
    if not status.HasField("traffic_split"):
        return
    split = status.traffic_split
    kind = lora.TrafficSplitKind.Name(split.kind).removeprefix("TRAFFIC_SPLIT_KIND_").lower()
    out.print(f"{kind} split: {split.share:.1%} of '{status.alias}' to {split.candidate_version}, the rest to "
              f"{split.active_version}; since {when(split.start_time)} by {split.actor}"
              + (f" ({split.reason})" if split.reason else ""), highlight=False)
    print_table(_figures_table(split.figures))


def _render(status: lora.LoraStatus):
    def render() -> None:
        if status.HasField("traffic_split"):
            render_split(status)
        else:
            serves = (status.active_version if status.enabled else "the base model (LoRA disabled)") or \
                "the base model"
            out.print(f"no traffic split: '{status.alias}' serves {serves}", highlight=False)
        if status.HasField("last_canary"):
            _render_outcome(status.last_canary, "last canary")

    return render


def _render_outcome(outcome: lora.CanaryOutcome, label: str = "canary") -> None:
    decision = lora.CanaryDecision.Name(outcome.decision).removeprefix("CANARY_DECISION_")
    out.print(f"{label}: {outcome.version} {decision} at {when(outcome.decide_time)}: {outcome.reason}",
              highlight=False)


def _split_only(status: lora.LoraStatus) -> dict:
    """What --json prints of a status for these commands: the split in force and the latest canary."""
    return {key: as_dict(getattr(status, key)) for key in ("traffic_split", "last_canary") if status.HasField(key)}


# The canary policy's options by field, shared by `canary start` (--share, ...) and `pipelines create`/`update`
# (--canary-share, ...): their help, the server's default in brackets, and the bounds of the int64 fields (the least
# the server takes, and int64's largest: a larger number cannot be sent).
_INT64_MAX = 2**63 - 1
CANARY_OPTIONS: dict[str, tuple[str, dict[str, int]]] = {
    "share": ("Share of the alias's requests, in (0, 1). [0.1]", {}),
    "min_requests": ("Candidate requests before a decision. [100]", {"min": 0, "max": _INT64_MAX}),
    "duration": ("Least time before a decision, e.g. 30m. [0]", {}),
    "max_duration": ("No evidence by then: rolled back; 0 = no limit. [24h]", {}),
    "feedback_margin": ("How much higher its negative-feedback rate may be. [0.05]", {}),
    "error_margin": ("How much higher its error rate may be. [0.01]", {}),
    "min_feedback": ("Ratings each side needs first. [20]", {"min": 0, "max": _INT64_MAX}),
    "error_spike": ("Error rate that rolls back at any time. [0.5]", {}),
    "error_spike_min_requests": ("Candidate requests before a spike counts. [10]", {"min": 1, "max": _INT64_MAX}),
    "check_interval": ("How often the policy is checked. [10s]", {}),
}
_DURATIONS = ("duration", "max_duration", "check_interval")


def canary_option(field: str, prefix: str = "--") -> Any:
    """The option of the canary policy's ``field``, named ``prefix`` + the field, dashed; left out (None), the
    server's default."""
    help_text, bounds = CANARY_OPTIONS[field]
    return typer.Option(None, prefix + field.replace("_", "-"), help=help_text, min=bounds.get("min"),
                        max=bounds.get("max"))


def canary_policy(values: Mapping[str, float | int | str | None], *, flag_prefix: str = "--") -> lora.CanaryPolicy:
    """A canary policy of the options given by their field names; an option left out (None) takes the server's
    default. A duration that does not parse names its flag (``flag_prefix`` + the field, dashed)."""
    policy = lora.CanaryPolicy()
    for name, value in values.items():
        if value is None:
            continue
        if name in _DURATIONS:
            parsed = _duration(str(value), flag_prefix + name.replace("_", "-"))
            if parsed is not None:
                getattr(policy, name).CopyFrom(parsed)
        else:
            setattr(policy, name, value)
    return policy


@canary_app.command("start")
def canary_start(
    ctx: typer.Context,
    version: str,
    share: float = canary_option("share"),
    min_requests: int = canary_option("min_requests"),
    duration: str = canary_option("duration"),
    max_duration: str = canary_option("max_duration"),
    feedback_margin: float = canary_option("feedback_margin"),
    error_margin: float = canary_option("error_margin"),
    min_feedback: int = canary_option("min_feedback"),
    error_spike: float = canary_option("error_spike"),
    error_spike_min_requests: int = canary_option("error_spike_min_requests"),
    check_interval: str = canary_option("check_interval"),
    force: bool = typer.Option(False, "--force", help="Start even if the evaluation gate fails."),
    reason: str = typer.Option("", "--reason"),
    base_model: str = typer.Option("", "--base-model", help="The version's base model (the serving target's)."),
    wait: bool = typer.Option(False, "--wait", help="Then wait for the decision: exit 0 if promoted, else 9."),
) -> None:
    """Roll a version out as a canary: after the gate it takes a share of the alias's requests, and its policy
    promotes it or rolls it back. An option left out takes the server's default (in brackets); durations
    read 90s, 10m, 2h or 1d (a bare number is seconds)."""
    policy = canary_policy(
        {"share": share, "min_requests": min_requests, "feedback_margin": feedback_margin,
         "error_margin": error_margin, "min_feedback": min_feedback, "error_spike": error_spike,
         "error_spike_min_requests": error_spike_min_requests, "duration": duration, "max_duration": max_duration,
         "check_interval": check_interval})
    opts = options(ctx)

    async def call(client: AsyncClient) -> tuple[lora.LoraStatus, lora.CanaryOutcome | None]:
        status = await client.start_canary(version, policy, force=force, reason=reason, base_model=base_model)
        emit(opts, _split_only(status), _render(status))
        return status, (await client.wait_canary(version) if wait else None)

    _, outcome = run(ctx, call)
    if outcome is not None:
        emit(opts, outcome, lambda: _render_outcome(outcome))
        if outcome.decision != lora.CANARY_DECISION_PROMOTED:
            raise typer.Exit(NOT_PROMOTED)


@canary_app.command("status")
def canary_status(ctx: typer.Context) -> None:
    """The split in force with both sides' figures, and how the latest canary ended."""
    status = run(ctx, lambda c: c.get_lora_status())
    emit(options(ctx), _split_only(status), _render(status))


@canary_app.command("abort")
def canary_abort(
    ctx: typer.Context,
    version: str = typer.Argument("", help="Only this version's canary (another's in force is left running)."),
    reason: str = typer.Option("", "--reason"),
) -> None:
    """End the canary in force with no verdict: the candidate leaves traffic."""
    status = run(ctx, lambda c: c.abort_canary(reason=reason, version=version))
    emit(options(ctx), _split_only(status), _render(status))


@traffic_app.command("split")
def traffic_split(
    ctx: typer.Context,
    version: str = typer.Argument("", help="The version to send the share to (not needed with --share 0)."),
    share: float = typer.Option(..., "--share", help="In [0, 1); 0 ends the manual split."),
    reason: str = typer.Option("", "--reason"),
    base_model: str = typer.Option("", "--base-model", help="The version's base model (the serving target's)."),
) -> None:
    """A manual A/B split of the alias between the active version and another (no gate, no decision)."""
    status = run(ctx, lambda c: c.set_traffic_split(version, share, reason=reason, base_model=base_model))
    emit(options(ctx), _split_only(status), _render(status))
