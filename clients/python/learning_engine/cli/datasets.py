"""datasets: upload, create, list, show, validate and delete stored datasets: training examples (train --dataset
NAME) or golden cases (evaluate --suite-dataset NAME)."""

from __future__ import annotations

import enum
import json
import re
from pathlib import Path

import grpc
import typer
from rich.table import Column, Table

from learning.v1 import common_pb2 as common
from learning.v1 import dataset_pb2
from learning.v1.error_reason_pb2 import ERROR_REASON_USAGE
from learning_engine.cli.common import (
    UINT32_MAX,
    UINT64_MAX,
    Options,
    emit,
    err,
    fail,
    local_bytes,
    local_path,
    options,
    out,
    print_table,
    run,
    when,
)
from learning_engine.client import AsyncClient

datasets_app = typer.Typer(
    help="Stored datasets, training examples (train --dataset NAME) or golden cases (evaluate --suite-dataset NAME): "
         "upload, create, list, get, validate, delete.", no_args_is_help=True
)


class Kind(enum.StrEnum):
    """What a dataset's lines are (DatasetKind)."""

    training = "training"
    golden = "golden"


KINDS = {Kind.training: dataset_pb2.DATASET_KIND_TRAINING, Kind.golden: dataset_pb2.DATASET_KIND_GOLDEN}
GOLDEN_KEYS = ("expected", "references", "reference")  # a line holding one is a golden case (engine.golden)

_EVAL = typer.Option(0.0, "--eval-fraction", min=0.0, max=1.0, help="Share of the prompts held out for eval.")
_TEST = typer.Option(0.0, "--test-fraction", min=0.0, max=1.0, help="Share of the prompts held out for test.")
_SEED = typer.Option(0, "--seed", min=0, max=UINT64_MAX, help="Seed of the split.")
# The minimum the server applies when a request leaves min_samples 0 (FeedbackDataset: "0 means 100"). The option
# defaults to it and refuses 0, so that its help shows the number the server will use, and no one asks for 0
# expecting no minimum (that is --force).
MIN_SAMPLES = typer.Option(100, "--min-samples", min=1, max=UINT32_MAX,
                           help="With --from-feedback: fewer usable examples than this are refused (a pipeline run "
                           "is skipped) unless --force.")
FORCE_BELOW_MIN = typer.Option(False, "--force", help="With --from-feedback: go on even below --min-samples.")
# The rest of FeedbackDataset: left unset, the server's defaults (weights 2.0 and 0.5, no filter). Each is refused
# without --from-feedback, as --force is.
THUMBS_UP_WEIGHT = typer.Option(None, "--thumbs-up-weight", show_default=False,
                                help="With --from-feedback: the weight of an answer voted for, or otherwise wanted "
                                "(KTO's desirable weight; 0: the server's, 2.0).")
THUMBS_DOWN_WEIGHT = typer.Option(None, "--thumbs-down-weight", show_default=False,
                                  help="With --from-feedback: the weight of an answer voted down, or otherwise not "
                                  "wanted (KTO's undesirable weight; 0: the server's, 0.5).")
FEEDBACK_LABELS = typer.Option(None, "--feedback-label", show_default=False,
                               help="With --from-feedback: only events whose labels hold KEY=VALUE; repeatable "
                               "(every pair must hold).")
FEEDBACK_ADAPTER = typer.Option("", "--feedback-adapter", show_default=False,
                                help="With --from-feedback: only events on this adapter version's answers.")
_KIND = typer.Option(Kind.training, "--kind", help="What the lines are: training examples (messages, or prompt and "
                     "completion), or golden cases (prompt with expected or references, optionally answer and source) "
                     "that evaluations score and nothing trains on.")


def dataset_name(name: str) -> str:
    """``capitals`` or ``datasets/capitals[/versions/N]``, as the server names it."""
    return name if name.startswith("datasets/") else f"datasets/{name}"


def local_dataset_id(path: Path) -> str:
    """A stored dataset's id for a local file: its name without the extension, in the server's id alphabet
    (lower-case letters, digits, '.', '_', '-'; a letter or digit at each end; at most 63 characters)."""
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", path.stem.lower()).replace("..", ".")
    cleaned = re.sub(r"^[^a-z0-9]+|[^a-z0-9]+$", "", cleaned)[:63].rstrip("._-")
    return cleaned or "dataset"


def local_file(value: str) -> Path | None:
    """``value`` as a file on this machine, or None: then it names a path below the server's datasets dir."""
    return Path(value) if value and Path(value).is_file() else None


async def upload_local(client: AsyncClient, local: Path, *, quiet: bool, kind: Kind = Kind.training,
                       why: str = "") -> str:
    """Upload a file of this machine as the stored dataset named after it, without a split rule (the same bytes
    again reuse their version), say so on stderr unless ``quiet`` (with ``why`` it is of its kind), and return the
    version's name (``datasets/{dataset}/versions/{n}``): how ``train --data`` and ``evaluate --suite`` send a local
    file."""
    uploaded = await client.upload_dataset(f"datasets/{local_dataset_id(local)}", local, kind=KINDS[kind])
    if not quiet:
        err.print(f"{'uploaded' if uploaded.created else 'already stored'} {local} as {uploaded.dataset.name}"
                  + (f" ({why})" if why else ""), highlight=False)
    return uploaded.dataset.name


def suite_kind(local: Path) -> tuple[Kind, str]:
    """The kind a local suite file is uploaded as, and why, from its first line that is not blank: golden cases
    when it is a JSON object with "expected", "references" or "reference" (the golden-suite format), else training
    examples. Only that line is looked at; the server checks every line as the kind chosen."""
    with local.open("rb") as handle:
        first = next((line for line in handle if line.strip()), b"")
    try:
        doc = json.loads(first)
    except ValueError:
        doc = None
    key = next((k for k in GOLDEN_KEYS if isinstance(doc, dict) and k in doc), "")
    if key:
        return Kind.golden, f'golden cases: its first line has "{key}"'
    return Kind.training, "training examples: its first line has no \"expected\" or \"references\""


async def upload_suite(client: AsyncClient, local: Path, *, quiet: bool) -> str:
    """``upload_local`` for a suite file of this machine, of the kind its first line shows (:func:`suite_kind`)."""
    kind, why = suite_kind(local)
    return await upload_local(client, local, quiet=quiet, kind=kind, why=why)


def _split(eval_fraction: float, test_fraction: float, seed: int) -> dataset_pb2.SplitRule | None:
    if not (eval_fraction or test_fraction):
        return None
    return dataset_pb2.SplitRule(eval_fraction=eval_fraction, test_fraction=test_fraction, seed=seed)


def _counts(counts: dataset_pb2.SplitCounts) -> str:
    return f"train {counts.train}, eval {counts.eval}, test {counts.test}"


def _lines(count: int, kind: int) -> str:
    return f"{count} golden cases" if kind == dataset_pb2.DATASET_KIND_GOLDEN else f"{count} examples"


def _stored(opts: Options, response: dataset_pb2.UploadDatasetResponse | dataset_pb2.CreateDatasetResponse) -> None:
    d = response.dataset
    emit(opts, response, lambda: out.print(
        f"{'stored' if response.created else 'exists'} {d.name}: {_lines(d.example_count, d.kind)} "
        f"({_counts(d.split_counts)})", highlight=False))


def feedback_dataset(opts: Options, days: int, min_samples: int, force: bool, *,
                     thumbs_up_weight: float | None = None, thumbs_down_weight: float | None = None,
                     labels: list[str] | None = None, adapter_version: str = "") -> common.FeedbackDataset | None:
    """The FeedbackDataset of ``--from-feedback DAYS`` (None without it), for every command that takes one, so that
    all send the same minimum. ``--force`` without it is refused: a file or a stored dataset has no minimum to go
    below, and silently ignoring the flag would let a user believe it did something. So are the weights and filters
    of a feedback dataset (``--thumbs-up-weight``, ``--thumbs-down-weight``, ``--feedback-label``,
    ``--feedback-adapter``); their values are the server's to check (a weight: finite, at least 0)."""
    if force and not days:
        fail(opts, grpc.StatusCode.INVALID_ARGUMENT,
             "--force applies to --from-feedback (go on below --min-samples); a file or a stored dataset has no "
             "minimum", reason=ERROR_REASON_USAGE)
    given = [flag for flag, value in (("--thumbs-up-weight", thumbs_up_weight is not None),
                                      ("--thumbs-down-weight", thumbs_down_weight is not None),
                                      ("--feedback-label", bool(labels)), ("--feedback-adapter", bool(adapter_version)))
             if value]
    if given and not days:
        fail(opts, grpc.StatusCode.INVALID_ARGUMENT,
             f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to --from-feedback (the weights and "
             "filters of a dataset built from feedback); a file or a stored dataset has none",
             reason=ERROR_REASON_USAGE)
    if not days:
        return None
    pairs: dict[str, str] = {}
    for pair in labels or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--feedback-label")
        pairs[key] = value
    return common.FeedbackDataset(
        days=days, min_samples=min_samples, force=force, labels=pairs, adapter_version=adapter_version,
        thumbs_up_weight=0.0 if thumbs_up_weight is None else thumbs_up_weight,
        thumbs_down_weight=0.0 if thumbs_down_weight is None else thumbs_down_weight)


def _one_source(opts: Options, **given: object) -> None:
    flags = {name: "FILE" if name == "file" else "--" + name.replace("_", "-") for name in given}
    named = [flags[name] for name, value in given.items() if value]
    if len(named) != 1:
        got = f" (got {' and '.join(named)})" if named else ""
        fail(opts, grpc.StatusCode.INVALID_ARGUMENT, f"name exactly one of {', '.join(flags.values())}{got}",
             reason=ERROR_REASON_USAGE)


@datasets_app.command("upload")
def datasets_upload(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="JSONL examples (prompt/completion or chat), "
                                "or golden cases with --kind golden."),
    name: str = typer.Option(..., "--name", "-n", help="The dataset: capitals or datasets/capitals."),
    eval_fraction: float = _EVAL,
    test_fraction: float = _TEST,
    seed: int = _SEED,
    kind: Kind = _KIND,
) -> None:
    """Upload a JSONL file as a new version of a dataset (the same bytes, split and kind again: the existing one)."""
    local_path(options(ctx), file)
    split = _split(eval_fraction, test_fraction, seed)
    _stored(options(ctx), run(ctx, lambda c: c.upload_dataset(dataset_name(name), file, split=split,
                                                              kind=KINDS[kind])))


@datasets_app.command("create")
def datasets_create(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The dataset: capitals or datasets/capitals."),
    server_path: str = typer.Option("", "--server-path", help="A JSONL file below the server's datasets dir."),
    s3: str = typer.Option("", "--s3", help="An s3://bucket/key JSONL object (servers storing artifacts in S3)."),
    from_feedback: int = typer.Option(0, "--from-feedback", min=0, max=3650,
                                       help="Freeze the last N days of feedback."),
    min_samples: int = MIN_SAMPLES,
    force: bool = FORCE_BELOW_MIN,
    thumbs_up_weight: float = THUMBS_UP_WEIGHT,
    thumbs_down_weight: float = THUMBS_DOWN_WEIGHT,
    feedback_label: list[str] = FEEDBACK_LABELS,
    feedback_adapter: str = FEEDBACK_ADAPTER,
    eval_fraction: float = _EVAL,
    test_fraction: float = _TEST,
    seed: int = _SEED,
    kind: Kind = _KIND,
) -> None:
    """Store a version of a dataset from a server file, an S3 object or a window of feedback (training only)."""
    opts = options(ctx)
    _one_source(opts, server_path=server_path, s3=s3, from_feedback=from_feedback)
    split = _split(eval_fraction, test_fraction, seed)
    feedback = feedback_dataset(opts, from_feedback, min_samples, force, thumbs_up_weight=thumbs_up_weight,
                                thumbs_down_weight=thumbs_down_weight, labels=feedback_label,
                                adapter_version=feedback_adapter)
    _stored(opts, run(ctx, lambda c: c.create_dataset(dataset_name(name), split=split, server_path=server_path,
                                                      s3_uri=s3, feedback=feedback, kind=KINDS[kind])))


_SOURCES = {"upload": "upload", "server_path": "server file", "s3_uri": "s3", "feedback": "feedback"}


def _source(d: dataset_pb2.Dataset) -> str:
    kind = d.WhichOneof("source")
    if kind == "upload":
        return f"upload {d.upload.filename}".strip()
    if kind == "feedback":
        return f"feedback, {d.feedback.days or 7} days"
    if kind == "prepared":
        return f"prepared by {d.prepared.preparation_job}"
    return str(getattr(d, kind)) if kind else "-"


@datasets_app.command("list")
def datasets_list(
    ctx: typer.Context,
    dataset: str = typer.Option("", "--dataset", "-d", help="Only this dataset's versions."),
    page_size: int = typer.Option(20, "--page-size", min=0, max=1000),
    page_token: str = typer.Option("", "--page-token", help="The next page, as a previous list printed it."),
    wide: bool = typer.Option(False, "--wide", help="Also show where each came from (file, object) and when."),
) -> None:
    """Dataset versions, newest first (whole names, at any terminal width); golden cases are counted as "N golden"."""
    response = run(ctx, lambda c: c.list_datasets(dataset=dataset_name(dataset) if dataset else "",
                                                  page_size=page_size, page_token=page_token))

    def render() -> None:
        columns = [Column("name", no_wrap=True), "examples", "train/eval/test", "source"]
        table = Table(*columns, *(["created"] if wide else []), box=None, header_style="bold")
        for d in response.datasets:
            c = d.split_counts
            source = _source(d) if wide else _SOURCES.get(d.WhichOneof("source") or "", "-")
            count = f"{d.example_count} golden" if d.kind == dataset_pb2.DATASET_KIND_GOLDEN else str(d.example_count)
            table.add_row(d.name, count, f"{c.train}/{c.eval}/{c.test}", source,
                          *([when(d.create_time)] if wide else []))
        print_table(table)
        if response.next_page_token:
            out.print(f"more: --page-token {response.next_page_token}", highlight=False)

    emit(options(ctx), response, render)


@datasets_app.command("get")
def datasets_get(ctx: typer.Context, name: str = typer.Argument(..., help="A version, or a dataset's newest.")) -> None:
    """One dataset version: its digest, counts, split and source."""
    emit(options(ctx), run(ctx, lambda c: c.get_dataset(dataset_name(name))))


@datasets_app.command("validate")
def datasets_validate(
    ctx: typer.Context,
    file: Path = typer.Argument(None, help="A local JSONL file to check."),
    server_path: str = typer.Option("", "--server-path", help="Or a JSONL file below the server's datasets dir."),
    s3: str = typer.Option("", "--s3", help="Or an s3://bucket/key JSONL object."),
    from_feedback: int = typer.Option(0, "--from-feedback", min=0, max=3650, help="Or the last N days of feedback."),
    min_samples: int = MIN_SAMPLES,
    force: bool = FORCE_BELOW_MIN,
    thumbs_up_weight: float = THUMBS_UP_WEIGHT,
    thumbs_down_weight: float = THUMBS_DOWN_WEIGHT,
    feedback_label: list[str] = FEEDBACK_LABELS,
    feedback_adapter: str = FEEDBACK_ADAPTER,
    eval_fraction: float = _EVAL,
    test_fraction: float = _TEST,
    seed: int = _SEED,
    kind: Kind = _KIND,
) -> None:
    """Check examples (or golden cases) as a dataset version would be checked, and count them; stores nothing."""
    opts = options(ctx)
    _one_source(opts, file=file, server_path=server_path, s3=s3, from_feedback=from_feedback)
    content = local_bytes(opts, file) if file is not None else None
    split = _split(eval_fraction, test_fraction, seed)
    feedback = feedback_dataset(opts, from_feedback, min_samples, force, thumbs_up_weight=thumbs_up_weight,
                                thumbs_down_weight=thumbs_down_weight, labels=feedback_label,
                                adapter_version=feedback_adapter)
    checked = run(ctx, lambda c: c.validate_dataset(split=split, content=content, server_path=server_path,
                                                    s3_uri=s3, feedback=feedback, kind=KINDS[kind]))
    shapes = ", ".join(f"{k} {v}" for k, v in sorted(checked.composition.items()))
    emit(opts, checked, lambda: out.print(
        f"valid: {_lines(checked.example_count, checked.kind)} ({shapes + '; ' if shapes else ''}"
        f"{_counts(checked.split_counts)}), sha256 {checked.sha256}", highlight=False))


@datasets_app.command("delete")
def datasets_delete(
    ctx: typer.Context, name: str = typer.Argument(..., help="A version, or a dataset (every version of it).")
) -> None:
    """Delete a version, or every version of a dataset (refused while a job or an adapter was trained on it)."""
    deleted = run(ctx, lambda c: c.delete_dataset(dataset_name(name)))
    emit(options(ctx), {"deleted": deleted}, lambda: out.print(f"deleted {', '.join(deleted)}", highlight=False))
