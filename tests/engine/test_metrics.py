"""A job's metrics table from its event log: one row per step (a resumed run's repeated steps replace the run it
gave up), the CSV's header and values, and the loss curve as a PNG of the documented size."""

from __future__ import annotations

import csv
import io
import struct
from datetime import UTC, datetime, timedelta

from engine.jobs.core import JobEvent, JobState, Noticed, StateChanged
from engine.training.metrics import CSV_COLUMNS, PNG_SIZE, build_table, render_png, training_metrics
from engine.training.spec import EvalReported, StepMetrics

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def step(n: int, *, total: int = 6, task: float | None = None, penalty: float = 0.0) -> StepMetrics:
    task = 2.0 / n if task is None else task
    return StepMetrics(step=n, total_steps=total, epoch=n / 3, loss=task + penalty, task_loss=task,
                       ewc_penalty=penalty, learning_rate=1e-3 * (total - n + 1) / total, grad_norm=0.5 + n,
                       tokens_per_second=100.0 * n, eta_seconds=float(total - n))


def log(*payloads: object) -> list[JobEvent]:
    return [JobEvent(i + 1, T0 + timedelta(seconds=i), p) for i, p in enumerate(payloads)]


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_a_resumed_run_replaces_the_steps_it_reports_again_and_those_after() -> None:
    # Run 1 reached step 5 (checkpoint at 3) and its worker stopped; run 2 resumed from step 3 with other values.
    events = log(
        StateChanged(None, JobState.QUEUED), StateChanged(JobState.QUEUED, JobState.RUNNING),
        *(step(n) for n in range(1, 6)),
        StateChanged(JobState.RUNNING, JobState.QUEUED, "worker stopped"),
        Noticed("RESUMED", "continuing from the checkpoint of step 3 of 6"),
        step(4, task=0.9), step(5, task=0.8), step(6, task=0.7, penalty=0.05),
        EvalReported(step=6, split="train_end", metrics=(("loss", 0.65),)),
    )
    table = build_table(events)
    assert [r.step for r in table.rows] == [1, 2, 3, 4, 5, 6]
    assert [r.task_loss for r in table.rows[3:]] == [0.9, 0.8, 0.7]  # the last report of each step
    assert table.rows[3].time == events[9].time
    assert table.rows[-1].loss == 0.7 + 0.05 and table.rows[-1].eval_loss == 0.65
    assert all(r.eval_loss is None for r in table.rows[:-1])

    # A run that resumed from step 2 and was cancelled after step 3: steps 4-5 of the run it gave up are gone.
    cut = build_table(log(*(step(n) for n in range(1, 6)), step(3, task=0.1)))
    assert [(r.step, r.task_loss) for r in cut.rows] == [(1, 2.0), (2, 1.0), (3, 0.1)]


def test_csv_has_the_documented_header_and_round_trips_the_values() -> None:
    table = build_table(log(step(1), step(2, penalty=0.25),
                            EvalReported(step=2, split="train_end", metrics=(("loss", 0.5),))))
    text = table.to_csv().decode()
    lines = text.splitlines()
    assert lines[0] == ",".join(CSV_COLUMNS) == (
        "step,time,total_steps,epoch,loss,task_loss,ewc_penalty,learning_rate,grad_norm,tokens_per_second,eval_loss")
    assert len(lines) == 3 and text.endswith("\n")
    first, second = csv.DictReader(io.StringIO(text))
    assert first == {"step": "1", "time": "2026-12-01T12:00:00.000+00:00", "total_steps": "6",
                     "epoch": repr(1 / 3), "loss": "2.0", "task_loss": "2.0", "ewc_penalty": "0.0",
                     "learning_rate": "0.001", "grad_norm": "1.5", "tokens_per_second": "100.0", "eval_loss": ""}
    assert float(second["loss"]) == 1.25 and float(second["ewc_penalty"]) == 0.25
    assert float(second["learning_rate"]) == 1e-3 * 5 / 6 and second["eval_loss"] == "0.5"


def test_an_evaluation_without_its_step_gets_a_row_of_its_own() -> None:
    table = build_table(log(step(1), EvalReported(step=3, split="train_end", metrics=(("loss", 0.4),)),
                            EvalReported(step=1, split="train_end", metrics=(("accuracy", 0.9),))))
    assert [(r.step, r.eval_loss) for r in table.rows] == [(1, None), (3, 0.4)]
    line = table.to_csv().decode().splitlines()[2]
    assert line == "3,2026-12-01T12:00:01.000+00:00,0,,,,,,,,0.4"  # no training values: empty cells


def test_png_is_a_labelled_image_of_the_documented_size() -> None:
    events = log(*(step(n, total=80, penalty=0.01 * n) for n in range(1, 81)),
                 EvalReported(step=80, split="train_end", metrics=(("loss", 0.03),)))
    report = training_metrics("trainingJobs/abc", events)
    assert len(report.table) == 80 and report.csv.count(b"\n") == 81
    assert png_size(report.png) == PNG_SIZE
    assert png_size(render_png(build_table(events[:1]), "one step")) == PNG_SIZE  # a single point is drawn too


def test_no_steps_yet_is_an_empty_table_a_header_and_no_image() -> None:
    report = training_metrics("trainingJobs/abc", log(StateChanged(None, JobState.QUEUED)))
    assert report.table.rows == ()
    assert report.csv == (",".join(CSV_COLUMNS) + "\n").encode()
    assert report.png == b""
