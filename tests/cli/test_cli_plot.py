"""The live bars of ``train --watch`` (elapsed time, learning rate, task loss, EWC penalty; a continuation's Fisher
pre-pass as a bar of its own) and ``jobs plot`` writing a job's loss curve and CSV from the server."""

from __future__ import annotations

import csv
import io
import struct
from pathlib import Path

import pytest

from engine.training.metrics import CSV_COLUMNS, PNG_SIZE
from tests.cli.test_cli_e2e import cli

TRAIN = ["train", "--data", "capitals.jsonl", "--epochs", "1", "--batch-size", "4", "--lr", "5e-3",
         "--max-seq-length", "128", "--seed", "7", "--watch"]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", "not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.mark.slow
async def test_watch_bars_and_jobs_plot(make_memory_server, data_dir: Path, tmp_path: Path) -> None:
    port = (await make_memory_server()).app.port
    first = await cli(port, *TRAIN)
    assert first.code == 0, first.err
    bar = next(line for line in first.err.splitlines() if line.startswith("succeeded"))
    assert "6/6 0:00:" in bar, bar  # steps, then the elapsed time
    assert " (task " in bar and " + ewc 0) lr " in bar and "tok/s" in bar and "ETA 0:00:00" in bar, bar
    assert "parent fisher" not in first.err

    continued = await cli(port, *TRAIN, "--parent", "v1.0")
    assert continued.code == 0, continued.err
    fisher = next(line for line in continued.err.splitlines() if line.startswith("parent fisher"))
    assert "24/24 0:00:" in fisher and "samples/s" in fisher, fisher  # the parent's 24 examples, measured
    name = continued.out.split()[0]
    assert name.startswith("trainingJobs/") and "-> adapter v1.1" in continued.out

    png, table = tmp_path / "plots" / "loss.png", tmp_path / "metrics.csv"
    plotted = await cli(port, "jobs", "plot", name, "--out", str(png), "--csv", str(table))
    assert plotted.code == 0, plotted.err
    assert plotted.out.strip() == f"{name} (SUCCEEDED, step 6 of 6) -> {png}, {table}"
    assert png_size(png) == PNG_SIZE
    rows = list(csv.DictReader(io.StringIO(table.read_text())))
    assert list(rows[0]) == list(CSV_COLUMNS) and [int(r["step"]) for r in rows] == list(range(1, 7))
    assert all(float(r["ewc_penalty"]) >= 0 for r in rows) and any(float(r["ewc_penalty"]) > 0 for r in rows)
    assert rows[-1]["eval_loss"] and not rows[0]["eval_loss"]
    scripted = await cli(port, "--json", "jobs", "plot", name, "--out", str(tmp_path / "again.png"))
    assert scripted.json_lines() == [{"name": name, "state": "SUCCEEDED", "rows": 6,
                                      "png": str(tmp_path / "again.png"), "csv": None}]

    missing = await cli(port, "--json", "jobs", "plot", "trainingJobs/" + "0" * 32)
    assert missing.code == 5 and missing.json_lines()[0]["error"]["reason"] == "JOB_NOT_FOUND"
    # A job that failed before its first step: nothing to draw, and nothing written.
    long_prompt = " ".join(["word"] * 200)
    (data_dir / "datasets" / "long.jsonl").write_text(
        "".join(f'{{"prompt": "{long_prompt} {i}", "completion": " ok"}}\n' for i in range(4)))
    failed = await cli(port, "train", "--data", "long.jsonl", "--max-seq-length", "16", "--watch")
    assert failed.code == 3, failed.err  # the job's error: INVALID_ARGUMENT
    empty = await cli(port, "jobs", "plot", failed.out.split()[0], "--out", str(tmp_path / "none.png"),
                      "--csv", str(tmp_path / "none.csv"))
    assert empty.code == 9 and "NO_STEPS_YET" in empty.err and "has no steps yet (FAILED)" in empty.err
    assert not (tmp_path / "none.png").exists() and not (tmp_path / "none.csv").exists()
