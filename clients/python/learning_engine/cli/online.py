"""``online``: sessions that keep a served adapter learning from the examples they are sent (create, list, get,
stats, send, watch, lr, enable, disable, update, publish, stop), and their live aliases, which outlive them
(move-alias, remove-alias)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import grpc
import typer
from rich.table import Table

from learning.v1 import common_pb2 as common
from learning.v1 import online_pb2 as ol
from learning.v1.error_reason_pb2 import ERROR_REASON_USAGE
from learning_engine.cli.common import (
    UINT64_MAX,
    Options,
    as_dict,
    emit,
    err,
    fail,
    local_text,
    options,
    out,
    print_table,
    run,
)
from learning_engine.cli.job_views import guard_interrupt, outcome_code
from learning_engine.client import AsyncClient

online_app = typer.Typer(help="Online learning: a served adapter that keeps learning from a stream of examples.",
                         no_args_is_help=True)
_OPTIMIZERS = {"adam": ol.ONLINE_OPTIMIZER_ADAM, "adamw": ol.ONLINE_OPTIMIZER_ADAMW, "sgd": ol.ONLINE_OPTIMIZER_SGD}
_LOSSES = {"sft": ol.ONLINE_LOSS_SFT, "kto": ol.ONLINE_LOSS_KTO}
_LABELS = {"desirable": True, "undesirable": False}
BATCH = 50  # examples per message of `online send`
_REFUSAL = re.compile(r"examples\[(\d+)\]: (.*)", re.DOTALL)  # AddExamplesResponse.refusals: "examples[3]: why"
# `online send` exits so when the session refused some examples (the others are stored), as the call would have
# for bad input: a script sees that the file was not taken whole.
EXAMPLES_REFUSED = grpc.StatusCode.INVALID_ARGUMENT.value[0]


def session_name(name: str) -> str:
    return name if name.startswith("onlineSessions/") else f"onlineSessions/{name}"


def _state(value: int) -> str:
    return common.JobState.Name(value).removeprefix("JOB_STATE_").lower()


def _loss(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.4f}"


def _alias(s: ol.OnlineSession) -> str:
    """The live alias, what it serves and its state: ``notes-live: v1.1.2 (kept)``."""
    if not s.spec.live_alias:
        return "-"
    state = ol.LiveAliasState.Name(s.alias_state).removeprefix("LIVE_ALIAS_STATE_").lower()
    return f"{s.spec.live_alias}: {s.alias_version or s.spec.start_version} ({state})"


def _stats_line(s: ol.OnlineStats) -> str:
    # unread: stored, not counted by the worker yet (a queued or paused session's)
    unread = f", {s.unread_examples} unread" if s.unread_examples else ""
    return (f"{s.total_updates} updates, {s.total_examples} examples ({s.skipped_examples} skipped, "
            f"{s.pending_examples} pending{unread}, {s.buffer_size} buffered), loss {_loss(s.average_loss)} "
            f"(last {_loss(s.last_loss)}), lr {s.learning_rate:g}, {'learning' if s.enabled else 'disabled'}")


def _verdict_line(v: ol.OnlineGateVerdict) -> str:
    if not v.HasField("passed"):
        return f"{v.version}: no gate configured, taken as passed"
    if v.passed:
        return f"{v.version} passed the gate"
    return f"{v.version} failed the gate ({', '.join(v.failed_checks) or 'no check named'})"


@online_app.command("create")
def online_create(
    ctx: typer.Context,
    session_id: str = typer.Argument("", help="Its id: lowercase letters, digits and '-' (default: generated)."),
    start_version: str = typer.Option("", "--from", help="The version to start from (default: the active one)."),
    update_every: int = typer.Option(0, "--update-every", min=0, max=10_000, help="New examples per update (10)."),
    buffer_size: int = typer.Option(0, "--buffer", min=0, max=100_000, help="Examples kept for replay (1000)."),
    learning_rate: float = typer.Option(None, "--lr", help="Learning rate (the server's online_learning_rate)."),
    optimizer: str = typer.Option("adamw", "--optimizer", help="adam, adamw or sgd."),
    ewc_lambda: float = typer.Option(None, "--ewc-lambda", help="EWC strength against the start version (0: off)."),
    replay: float = typer.Option(None, "--replay", help="Share of each update replayed from earlier examples."),
    publish_every: int = typer.Option(None, "--publish-every", min=0, max=100_000,
                                       help="Publish a version every N updates (0: only "
                                                                     "on `online publish`; default 100)."),
    checkpoint_every: int = typer.Option(0, "--checkpoint-every", min=0, max=100_000,
                                         help="Checkpoint every N updates (100)."),
    live_alias: str = typer.Option("", "--live-alias", help="A name serving the newest publication that passed "
                                                            "the gate."),
    base_model: str = typer.Option("", "--base-model", help="Base model id (default: the server's)."),
    learn_from_feedback: bool = typer.Option(False, "--learn-from-feedback",
                                             help="Corrections and thumbs up on the live model's answers (feedback "
                                                  "whose adapter_version is <base>@<id>) become examples."),
    negative_feedback_margin: float = typer.Option(
        None, "--negative-feedback-margin", help="Disable learning and put the start version back when the live "
        "model's negative-rating share exceeds the start version's by more than this (0: off; default 0.1)."),
    loss: str = typer.Option("sft", "--loss", help="sft, or kto: learn from examples labelled desirable or not "
                                                   "(each needs a target and a label; updates take about 2.5 times "
                                                   "as long)."),
    weight_decay: float = typer.Option(None, "--weight-decay", help="0..1 (0.01)."),
    max_grad_norm: float = typer.Option(None, "--max-grad-norm", help="Gradient clipping; 0: off (1.0)."),
    max_seq_length: int = typer.Option(0, "--max-seq-length", min=0, max=8192,
                                     help="Tokens an example is cut to, 16..8192 (the "
                                                                   "server's max_seq_length)."),
    loss_spike_factor: float = typer.Option(None, "--loss-spike-factor",
                                            help="Disable learning when an update's loss exceeds this many times "
                                                 "the median of the last 20 (0: off; else above 1; default 4)."),
    negative_feedback_min_ratings: int = typer.Option(0, "--negative-feedback-min-ratings", min=0, max=100_000,
                                                      help="Ratings of the live model before the negative-feedback "
                                                           "check judges (20)."),
) -> None:
    """Start a session; its adapter is served as <base>@<id> after every update."""
    opts = options(ctx)
    if optimizer not in _OPTIMIZERS:
        fail(opts, grpc.StatusCode.INVALID_ARGUMENT, f"--optimizer must be one of {', '.join(_OPTIMIZERS)}",
             reason=ERROR_REASON_USAGE)
    if loss not in _LOSSES:
        fail(opts, grpc.StatusCode.INVALID_ARGUMENT, f"--loss must be one of {', '.join(_LOSSES)}",
             reason=ERROR_REASON_USAGE)
    spec = ol.OnlineSessionSpec(base_model=base_model, start_version=start_version, update_every=update_every,
                                buffer_size=buffer_size, optimizer=_OPTIMIZERS[optimizer],
                                checkpoint_every=checkpoint_every, live_alias=live_alias,
                                learning_rate=learning_rate, ewc_lambda=ewc_lambda, replay_fraction=replay,
                                publish_every=publish_every, learn_from_feedback=learn_from_feedback,
                                negative_feedback_margin=negative_feedback_margin, loss=_LOSSES[loss],
                                weight_decay=weight_decay, max_grad_norm=max_grad_norm, max_seq_length=max_seq_length,
                                loss_spike_factor=loss_spike_factor,
                                negative_feedback_min_ratings=negative_feedback_min_ratings)
    made = run(ctx, lambda c: c.create_online_session(spec, session_id=session_id))
    learning = ", learning by KTO" if made.spec.loss == ol.ONLINE_LOSS_KTO else ""
    emit(opts, made, lambda: out.print(f"created {made.name} from {made.spec.start_version}{learning}, served as "
                                       f"{made.live_model}", highlight=False))


@online_app.command("list")
def online_list(ctx: typer.Context, page_size: int = typer.Option(0, "--page-size", min=0, max=1000),
                page_token: str = typer.Option("", "--page-token")) -> None:
    """Sessions, newest first."""
    response = run(ctx, lambda c: c.list_online_sessions(page_size=page_size, page_token=page_token))

    def render() -> None:
        table = Table("name", "state", "from", "updates", "examples", "loss", "published", "live alias", box=None,
                      header_style="bold")
        for s in response.sessions:
            table.add_row(s.name, _state(s.state), s.spec.start_version, str(s.stats.total_updates),
                          str(s.stats.total_examples), _loss(s.stats.average_loss),
                          ", ".join(p.version for p in s.publications), _alias(s))
        print_table(table)

    emit(options(ctx), response, render)


@online_app.command("get")
def online_get(ctx: typer.Context, name: str) -> None:
    """One session: its settings, stats, live adapter and publications with the gate's verdicts."""
    emit(options(ctx), run(ctx, lambda c: c.get_online_session(session_name(name))))


@online_app.command("stats")
def online_stats(ctx: typer.Context, name: str) -> None:
    """Examples (read, skipped, pending an update, stored and unread), updates, buffer, average loss over the last
    100 updates, learning rate, enabled."""
    stats = run(ctx, lambda c: c.get_online_stats(session_name(name)))
    emit(options(ctx), stats, lambda: out.print(_stats_line(stats), highlight=False))


def _read_examples(opts: Options, path: Path, label: bool | None) -> tuple[list[ol.OnlineExample], list[int]]:
    """A JSONL file of {"prompt", "target"?, "weight"?, "desirable"?, "client_example_id"?} lines, and the file line
    of each example (blank lines are not examples, so the two numberings differ); ``label``: the desirable label of
    the lines without one (None: none)."""
    examples, numbers = [], []
    for number, line in enumerate(local_text(opts, path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            desirable = row.get("desirable", label)
            if desirable is not None and not isinstance(desirable, bool):
                raise ValueError(f"desirable must be true or false, not {desirable!r}")
            examples.append(ol.OnlineExample(prompt=row["prompt"], target=row.get("target", ""),
                                             weight=row.get("weight"), desirable=desirable,
                                             client_example_id=row.get("client_example_id", "")))
            numbers.append(number)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            fail(opts, grpc.StatusCode.INVALID_ARGUMENT, f"{path}:{number}: not an example ({exc})",
                 reason=ERROR_REASON_USAGE)
    return examples, numbers


def _refusal_line(refusal: str, path: Path, numbers: list[int]) -> str:
    """A refusal named by the file's line (``examples.jsonl:3: empty prompt``): the server numbers the examples of
    the stream from 0 (``examples[2]: empty prompt``), which is not how anyone finds the line to fix. One in
    another shape is shown as the server wrote it."""
    found = _REFUSAL.fullmatch(refusal)
    if found is None or int(found.group(1)) >= len(numbers):
        return refusal
    return f"{path}:{numbers[int(found.group(1))]}: {found.group(2)}"


@online_app.command("send")
def online_send(ctx: typer.Context, name: str,
                file: Path = typer.Argument(...,
                                            help="JSONL: {\"prompt\": ..., \"target\": ..., \"weight\": ..., "
                                                 "\"desirable\": true|false, \"client_example_id\": ...} (an id "
                                                 "the session stored already is not stored again: sending a file "
                                                 "again after an error is safe)"),
                label: str = typer.Option("", "--label", help="desirable or undesirable: the label of the lines "
                                                              "without a \"desirable\" of their own (a KTO session "
                                                              "needs one on every example).")) -> None:
    """Stream a file's examples to the session, printing its stats after each update, until all are trained on;
    exits 3 if the session refused some of them (each named by its line of the file)."""
    opts = options(ctx)
    if label and label not in _LABELS:
        fail(opts, grpc.StatusCode.INVALID_ARGUMENT, f"--label must be one of {', '.join(_LABELS)}",
             reason=ERROR_REASON_USAGE)
    examples, numbers = _read_examples(opts, file, _LABELS.get(label))

    def batches() -> Iterator[list[ol.OnlineExample]]:
        for start in range(0, len(examples), BATCH):
            yield examples[start:start + BATCH]

    async def send(client: AsyncClient) -> ol.StreamExamplesResponse:
        last = ol.StreamExamplesResponse()
        async for answer in client.stream_examples(session_name(name), batches()):
            last = answer
            if opts.json:
                print(json.dumps(as_dict(answer)), flush=True)
            else:
                out.print(_stats_line(answer.stats), highlight=False)
        return last

    last = run(ctx, send)
    if not opts.json:
        again = f", {last.duplicates} stored already" if last.duplicates else ""
        out.print(f"sent {last.accepted} examples, {last.refused} refused{again}", highlight=False)
        for refusal in last.refusals:
            out.print(f"  {_refusal_line(refusal, file, numbers)}", highlight=False)
    if last.refused:
        raise typer.Exit(EXAMPLES_REFUSED)


@online_app.command("watch")
def online_watch(ctx: typer.Context, name: str,
                 after: int = typer.Option(0, "--after", min=0, max=UINT64_MAX,
                                           help="Only events after this sequence.")) -> None:
    """Follow a session's updates, publications and warnings until it ends; exits 0 once it was stopped (the way a
    session ends well), else its error's code (a failed session)."""
    opts = options(ctx)

    async def follow(client: AsyncClient) -> int:
        async for message in client.watch_online_session(session_name(name), after_sequence=after):
            if opts.json:
                print(json.dumps(as_dict(message)), flush=True)
            elif message.HasField("event"):
                event = message.event
                kind = event.WhichOneof("kind")
                if kind == "updated":
                    u = event.updated
                    out.print(f"update {u.update}: loss {u.loss:.4f} on {u.examples} examples (+{u.replayed} "
                              f"replayed), ewc {u.ewc_penalty:.4g}", highlight=False)
                elif kind == "published":
                    out.print(f"published {event.published.version}", highlight=False)
                elif kind == "gate_verdict":
                    out.print(_verdict_line(event.gate_verdict), highlight=False)
                elif kind in ("warning", "notice"):
                    detail = getattr(event, kind)
                    out.print(f"{detail.code}: {detail.message}", highlight=False)
                elif kind == "state_change":
                    out.print(f"{_state(event.state_change.state)}: {event.state_change.message}", highlight=False)
        done = await client.get_online_session(session_name(name))
        if done.state == common.JOB_STATE_CANCELLED:
            return 0
        if done.HasField("error") and done.error.code and not opts.json:
            err.print(f"[red]{done.error.message}[/]", highlight=False)
        return outcome_code(done.state, done.error.code if done.HasField("error") else 0)

    raise typer.Exit(guard_interrupt(
        ctx, follow, going_on=f"the session keeps running (learning-engine online watch {name})"))


def _change(ctx: typer.Context, call: Callable[[AsyncClient], Awaitable[ol.OnlineSession]], said: str) -> None:
    done = run(ctx, call)
    emit(options(ctx), done, lambda: out.print(f"{done.name}: {said}", highlight=False))


@online_app.command("lr")
def online_lr(ctx: typer.Context, name: str, learning_rate: float) -> None:
    """Set the learning rate from the next update on."""
    _change(ctx, lambda c: c.set_learning_rate(session_name(name), learning_rate), f"learning rate {learning_rate:g}")


@online_app.command("enable")
def online_enable(ctx: typer.Context, name: str) -> None:
    """Resume updates."""
    _change(ctx, lambda c: c.enable_online_learning(session_name(name)), "learning")


@online_app.command("disable")
def online_disable(ctx: typer.Context, name: str, reason: str = typer.Option("", "--reason")) -> None:
    """Stop updates; examples are still taken and kept."""
    _change(ctx, lambda c: c.disable_online_learning(session_name(name), reason=reason), "disabled")


@online_app.command("update")
def online_update(ctx: typer.Context, name: str) -> None:
    """One update now on what is buffered (refused while learning is disabled: enable it first)."""
    _change(ctx, lambda c: c.force_update(session_name(name)), "update requested")


@online_app.command("publish")
def online_publish(ctx: typer.Context, name: str) -> None:
    """Publish the session's adapter as a version (then gated)."""
    _change(ctx, lambda c: c.publish_online_session(session_name(name)), "publication requested")


@online_app.command("stop")
def online_stop(ctx: typer.Context, name: str) -> None:
    """Stop the session for good (a last checkpoint first)."""
    _change(ctx, lambda c: c.stop_online_session(session_name(name)), "stopping")


@online_app.command("move-alias")
def online_move_alias(ctx: typer.Context, name: str, version: str) -> None:
    """Point the session's live alias at VERSION (no gate); after the session ended it stays there until moved or
    removed."""
    done = run(ctx, lambda c: c.move_live_alias(session_name(name), version))
    emit(options(ctx), done, lambda: out.print(f"{done.name}: {_alias(done)}", highlight=False))


@online_app.command("remove-alias")
def online_remove_alias(ctx: typer.Context, name: str) -> None:
    """Stop routing the session's live alias, also one kept after the session ended."""
    done = run(ctx, lambda c: c.remove_live_alias(session_name(name)))
    emit(options(ctx), done, lambda: out.print(f"{done.name}: {_alias(done)}", highlight=False))
