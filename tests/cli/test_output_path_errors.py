"""A file the CLI writes on this machine (``jobs plot --out/--csv``, ``report --out``, the archive of ``adapters
download``) at a path that cannot be written (an existing directory, under a file, a name too long) is a usage
error: one line naming the option and the path, exit 3 (USAGE), the JSON error object under --json, as a local
file that cannot be read is. It was a Python traceback (exit 1).

The server is a stand-in: what matters is the bytes it answers, written here (a real job's metrics and an
evaluation's report take a training run and a serving backend; their commands have their own tests)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import grpc
import pytest

from learning.v1 import adapter_pb2, adapter_pb2_grpc, lora_control_pb2, lora_control_pb2_grpc
from learning.v1 import common_pb2 as common
from learning.v1 import training_pb2 as training
from learning.v1 import training_pb2_grpc as training_grpc
from tests.cli.test_cli_e2e import cli

PNG = b"\x89PNG\r\n\x1a\n"
ARCHIVE = b"archive"


class Training(training_grpc.TrainingServiceServicer):
    async def GetTrainingMetrics(self, request, context):  # noqa: N802 - the RPC's name
        return training.GetTrainingMetricsResponse(
            rows=[training.TrainingMetricsRow(step=1, total_steps=2, loss=1.0)], csv=b"step\n1\n", png=PNG,
            state=common.JOB_STATE_RUNNING)


class Lora(lora_control_pb2_grpc.LoraControlServiceServicer):
    async def GetEvaluationReport(self, request, context):  # noqa: N802 - the RPC's name
        return lora_control_pb2.GetEvaluationReportResponse(content_type="text/html; charset=utf-8",
                                                            content=b"<html></html>")


class Adapters(adapter_pb2_grpc.AdapterServiceServicer):
    async def DownloadAdapter(self, request, context):  # noqa: N802 - the RPC's name
        header = adapter_pb2.AdapterArchiveHeader(
            adapter=adapter_pb2.Adapter(base_model="tiny", version="v1.0"), filename="adapter.tar.gz",
            sha256=hashlib.sha256(ARCHIVE).hexdigest(), size_bytes=len(ARCHIVE))
        yield adapter_pb2.DownloadAdapterResponse(header=header)
        yield adapter_pb2.DownloadAdapterResponse(chunk=ARCHIVE)


@pytest.fixture
async def port():
    server = grpc.aio.server()
    training_grpc.add_TrainingServiceServicer_to_server(Training(), server)
    lora_control_pb2_grpc.add_LoraControlServiceServicer_to_server(Lora(), server)
    adapter_pb2_grpc.add_AdapterServiceServicer_to_server(Adapters(), server)
    bound = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield bound
    await server.stop(0)


COMMANDS = {  # the option that names the file, then the command with "{path}" for it
    "plot --out": ("--out", ["jobs", "plot", "trainingJobs/x", "--out", "{path}"]),
    "plot --csv": ("--csv", ["jobs", "plot", "trainingJobs/x", "--out", "{ok}", "--csv", "{path}"]),
    "report --out": ("--out", ["report", "v1.0", "--out", "{path}"]),
}


def _unwritable(tmp_path: Path, where: str) -> Path:
    if where == "directory":
        (tmp_path / "plots").mkdir()
        return tmp_path / "plots"
    (tmp_path / "plots").write_text("a file")
    return tmp_path / "plots" / "deeper" / "loss.png"


@pytest.mark.slow
@pytest.mark.parametrize("where", ["directory", "under-a-file"])
@pytest.mark.parametrize("command", list(COMMANDS))
async def test_an_output_path_that_cannot_be_written_is_a_usage_error(port: int, tmp_path: Path, command: str,
                                                                      where: str) -> None:
    option, template = COMMANDS[command]
    path = _unwritable(tmp_path, where)
    args = [str(path) if a == "{path}" else str(tmp_path / "ok.png") if a == "{ok}" else a for a in template]
    refused = await cli(port, *args)
    assert "Traceback" not in refused.err and refused.code == 3, (refused.code, refused.err[-600:])
    lines = refused.err.strip().splitlines()
    assert len(lines) == 1 and "USAGE" in lines[0] and f"{option} {path}: cannot write it" in lines[0], lines
    assert ("Is a directory" if where == "directory" else f"{tmp_path / 'plots'}: Not a directory") in lines[0]
    scripted = await cli(port, "--json", *args)
    error = json.loads(scripted.out)["error"]
    assert scripted.code == 3 and error["reason"] == "USAGE" and error["metadata"] == {"path": str(path)}, error


async def test_a_download_directory_that_cannot_be_made_is_a_usage_error(port: int, tmp_path: Path) -> None:
    too_long = tmp_path / ("d" * 300)  # beyond NAME_MAX: mkdir fails with ENAMETOOLONG
    refused = await cli(port, "adapters", "download", "v1.0", "--out", str(too_long))
    assert "Traceback" not in refused.err and refused.code == 3, (refused.code, refused.err[-600:])
    assert "USAGE" in refused.err and "--out" in refused.err and "File name too long" in refused.err, refused.err
    written = await cli(port, "adapters", "download", "v1.0", "--out", str(tmp_path / "new" / "dir"))
    assert written.code == 0 and (tmp_path / "new" / "dir" / "tiny-v1.0.tar.gz").read_bytes() == ARCHIVE, written.err


async def test_missing_parent_directories_are_made(port: int, tmp_path: Path) -> None:
    png, table = tmp_path / "a" / "loss.png", tmp_path / "b" / "c" / "metrics.csv"
    plotted = await cli(port, "jobs", "plot", "trainingJobs/x", "--out", str(png), "--csv", str(table))
    assert plotted.code == 0 and png.read_bytes() == PNG and table.read_bytes() == b"step\n1\n", plotted.err
    report = tmp_path / "d" / "report.html"
    assert (await cli(port, "report", "v1.0", "--out", str(report))).code == 0 and report.exists()
