"""``train --data FILE --validate-only`` with a file of this machine: the server checks a stored dataset, so the
file is uploaded first, as the run would upload it; the CLI said "nothing created" all the same. It says what was
stored (--json: "uploaded"). A fake client behind the CLI records what it is asked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from learning.v1 import dataset_pb2, training_pb2
from learning_engine.cli import app
from learning_engine.cli.common import Options


class FakeClient:
    def __init__(self) -> None:
        self.created: list[training_pb2.TrainingJobSpec] = []

    async def __aenter__(self) -> FakeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def upload_dataset(self, name: str, source: Path, **_: Any) -> dataset_pb2.UploadDatasetResponse:
        return dataset_pb2.UploadDatasetResponse(dataset=dataset_pb2.Dataset(name=f"{name}/versions/2"), created=True)

    async def create_training_job(self, spec: training_pb2.TrainingJobSpec, **_: Any) -> training_pb2.TrainingJob:
        self.created.append(spec)
        return training_pb2.TrainingJob(spec=spec)


def test_validate_only_says_the_local_file_was_stored(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    local = tmp_path / "capitals.jsonl"
    local.write_text('{"prompt": "a", "completion": "b"}\n')
    fake = FakeClient()
    monkeypatch.setattr(Options, "client", lambda self: fake)
    shown = CliRunner().invoke(app, ["train", "--data", str(local), "--validate-only"])
    assert shown.exit_code == 0, shown.output
    assert "no job created, the file stored as datasets/capitals/versions/2" in shown.stdout, shown.stdout
    assert "nothing created" not in shown.stdout
    scripted = CliRunner().invoke(app, ["--json", "train", "--data", str(local), "--validate-only"])
    assert json.loads(scripted.stdout)["uploaded"] == "datasets/capitals/versions/2"
    assert [s.dataset_name for s in fake.created] == ["datasets/capitals/versions/2"] * 2
