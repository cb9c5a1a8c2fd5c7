"""A training job's metrics, built from its event log: a table, its CSV and a labelled loss-curve PNG.

One row per optimiser step, from the job's ``StepMetrics`` events, with the loss of an ``EvalReported`` at that
step beside it. A job resumed from a checkpoint (after a pause, a restart or a worker that stopped) reports the
steps after its checkpoint again: a step reported again replaces the row of that step *and every row after it*
(those belonged to the run that was given up), so the table is the trajectory the job actually followed, one
row per step. Built the same way for a running job (live) and an ended one, on any process that reads the log.

CSV columns (header ``CSV_COLUMNS``, in this order; floats in Python's shortest round-trip form, an empty cell
where there is no value):

- ``step``: the optimiser step, from 1.
- ``time``: when the step was reported (UTC, ISO 8601).
- ``total_steps``: the steps the job was to take.
- ``epoch``: fractional epoch at the end of the step.
- ``loss``: ``task_loss + ewc_penalty``, what the optimiser minimised.
- ``task_loss``: the objective's loss (SFT or KTO) on the step's examples.
- ``ewc_penalty``: the EWC penalty against the parent (0 without EWC).
- ``learning_rate``: the learning rate the step was taken with (warmup, then linear decay).
- ``grad_norm``: the global gradient norm before clipping.
- ``tokens_per_second``: tokens per second over the last few steps, every token of the rows (prompt, markup and
  targets; no padding): the work a step does, not only what it trains on.
- ``eval_loss``: the loss on the job's held-out eval split at that step (each checkpoint and the end), else
  empty; a job without an eval split has the ``train_end`` evaluation's, the loss on the training data after
  the last step.
"""

from __future__ import annotations

import asyncio
import bisect
import csv
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from engine.jobs.core import JobEvent
from engine.registry.ports import ArtifactStore
from engine.training.spec import EVAL_SPLIT, EvalReported, MetricsArtifacts, StepMetrics, TrainingJob

CSV_COLUMNS = ("step", "time", "total_steps", "epoch", "loss", "task_loss", "ewc_penalty", "learning_rate",
               "grad_norm", "tokens_per_second", "eval_loss")
PNG_SIZE = (900, 600)  # pixels (width, height) of the loss curve
_DPI = 100


@dataclass(frozen=True)
class MetricsRow:
    """One optimiser step. A step known only from an evaluation has NaN training values (empty in the CSV)."""

    step: int
    time: datetime
    total_steps: int
    epoch: float
    loss: float
    task_loss: float
    ewc_penalty: float
    learning_rate: float
    grad_norm: float
    tokens_per_second: float
    eval_loss: float | None = None

    @classmethod
    def of(cls, m: StepMetrics, time: datetime) -> MetricsRow:
        return cls(step=m.step, time=time, total_steps=m.total_steps, epoch=m.epoch, loss=m.loss,
                   task_loss=m.task_loss, ewc_penalty=m.ewc_penalty, learning_rate=m.learning_rate,
                   grad_norm=m.grad_norm, tokens_per_second=m.tokens_per_second)


@dataclass(frozen=True)
class MetricsTable:
    """A job's rows, by step."""

    rows: tuple[MetricsRow, ...] = ()

    def __len__(self) -> int:
        return len(self.rows)

    def to_csv(self) -> bytes:
        """The table as CSV (UTF-8, ``\\n`` line ends): the header, then one line per row."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for r in self.rows:
            writer.writerow([
                r.step, r.time.isoformat(timespec="milliseconds"), r.total_steps, _cell(r.epoch), _cell(r.loss),
                _cell(r.task_loss), _cell(r.ewc_penalty), _cell(r.learning_rate), _cell(r.grad_norm),
                _cell(r.tokens_per_second), _cell(r.eval_loss),
            ])
        return out.getvalue().encode()


def _cell(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else repr(value)


def build_table(events: Iterable[JobEvent]) -> MetricsTable:
    """The table of a job's event log (events in sequence order; other events are ignored). The eval loss is
    the held-out eval split's when the job has one, else the loss on the training data after the last step."""
    events = list(events)
    split = EVAL_SPLIT if any(isinstance(e.payload, EvalReported) and e.payload.split == EVAL_SPLIT
                              for e in events) else "train_end"
    rows: list[MetricsRow] = []
    for event in events:
        payload = event.payload
        if isinstance(payload, StepMetrics):
            while rows and rows[-1].step >= payload.step:  # a resumed run reports these again
                rows.pop()
            rows.append(MetricsRow.of(payload, event.time))
        elif isinstance(payload, EvalReported) and payload.split == split:
            loss = dict(payload.metrics).get("loss")
            if loss is None:
                continue
            at = bisect.bisect_left([r.step for r in rows], payload.step)
            if at < len(rows) and rows[at].step == payload.step:
                rows[at] = replace(rows[at], eval_loss=loss)
            else:
                nan = math.nan
                rows.insert(at, MetricsRow(step=payload.step, time=event.time, total_steps=0, epoch=nan, loss=nan,
                                           task_loss=nan, ewc_penalty=nan, learning_rate=nan, grad_norm=nan,
                                           tokens_per_second=nan, eval_loss=loss))
    return MetricsTable(tuple(rows))


def render_png(table: MetricsTable, title: str) -> bytes:
    """The loss curve (``PNG_SIZE`` pixels): loss, task loss and EWC penalty by step with the evaluations'
    losses as points, the learning rate in a panel below; ``title`` (the job's name) on top. Empty bytes for a
    table without rows: there is nothing to draw yet. Thread-safe (no pyplot state)."""
    if not table.rows:
        return b""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415 - seconds to import; only here
    from matplotlib.figure import Figure  # noqa: PLC0415

    rows = table.rows
    steps = [r.step for r in rows]
    marker = "." if len(rows) <= 60 else None  # a few steps: show each
    fig = Figure(figsize=(PNG_SIZE[0] / _DPI, PNG_SIZE[1] / _DPI), dpi=_DPI)
    FigureCanvasAgg(fig)
    losses, rates = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (3, 1.2)})
    losses.plot(steps, [r.loss for r in rows], color="C0", marker=marker, label="loss (task + EWC)")
    losses.plot(steps, [r.task_loss for r in rows], color="C1", linestyle="--", marker=marker, label="task loss")
    losses.plot(steps, [r.ewc_penalty for r in rows], color="C2", linestyle=":", marker=marker,
                label="EWC penalty")
    evals = [(r.step, r.eval_loss) for r in rows if r.eval_loss is not None]
    if evals:
        losses.scatter([s for s, _ in evals], [v for _, v in evals], color="C3", marker="D", zorder=3,
                       label="eval loss")
    losses.set_ylabel("loss")
    losses.grid(True, alpha=0.3)
    losses.legend(loc="upper right", fontsize="small")
    rates.plot(steps, [r.learning_rate for r in rows], color="C4", marker=marker)
    rates.set_ylabel("learning rate")
    rates.set_xlabel("optimiser step")
    rates.grid(True, alpha=0.3)
    rates.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    last = rows[-1]
    total = f" of {last.total_steps}" if last.total_steps else ""
    fig.suptitle(f"{title}: step {last.step}{total}")
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=_DPI)
    return out.getvalue()


@dataclass(frozen=True)
class TrainingMetrics:
    """What GetTrainingMetrics returns: the table, its CSV and its loss curve (empty bytes without rows)."""

    table: MetricsTable
    csv: bytes
    png: bytes


def training_metrics(title: str, events: Iterable[JobEvent]) -> TrainingMetrics:
    """The table, CSV and PNG of an event log. Blocking (matplotlib): run it off the event loop."""
    table = build_table(events)
    return TrainingMetrics(table, table.to_csv(), render_png(table, title))


async def store_metrics(store: ArtifactStore, job: TrainingJob, token: str,
                        events: Iterable[JobEvent]) -> MetricsArtifacts | None:
    """Render the job's metrics and store them as ``training-metrics/<job id>/<lease token>/metrics.csv`` and
    ``loss.png`` (the store is create-only: a worker that takes the job over writes its own); None, and nothing
    stored, for a job without steps."""
    report = await asyncio.to_thread(training_metrics, job.name, events)
    if not report.table.rows:
        return None
    prefix = f"training-metrics/{job.id}/{token[:12]}"
    csv_key, png_key = f"{prefix}/metrics.csv", f"{prefix}/loss.png"
    await store.put_bytes(csv_key, report.csv)
    await store.put_bytes(png_key, report.png)
    return MetricsArtifacts(csv_key=csv_key, csv_uri=store.uri(csv_key), png_key=png_key,
                            png_uri=store.uri(png_key), rows=len(report.table))


__all__ = ["CSV_COLUMNS", "PNG_SIZE", "MetricsRow", "MetricsTable", "TrainingMetrics", "build_table", "render_png",
           "store_metrics", "training_metrics"]
