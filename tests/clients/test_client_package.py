"""The client package (clients/python) stands alone: no torch, no server, a working CLI in a fresh virtualenv.

The fresh install is the real thing, made fast: ``pip wheel`` resolves the package's declared
dependencies from the registries and builds the client's wheel from this checkout (about 5 s), then
pip installs from those wheels alone (``--no-index``, about 3 s) into a virtualenv made without pip
(``--python`` lets this environment's pip install into it). A plain ``pip install ./clients/python``
into a new virtualenv took 35-55 s here, mostly bootstrapping pip and building in an isolated
environment, which says nothing more about the package.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "clients" / "python"
FORBIDDEN = ("server", "engine", "torch", "transformers", "peft", "tests")
# Run in the fresh virtualenv: importing the SDK and the CLI must not load any of FORBIDDEN.
IMPORT_CHECK = f"""
import sys
import learning_engine, learning_engine.cli
from learning.v1 import error_reason_pb2
loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set({FORBIDDEN!r}))
assert not loaded, loaded
"""


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_client_package_imports_neither_server_nor_engine() -> None:
    offenders = sorted(
        f"{path.relative_to(ROOT)}: {name}"
        for path in PACKAGE.rglob("*.py")
        for name in _imports(path)
        if name.split(".")[0] in FORBIDDEN
    )
    assert not offenders, offenders


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtualenv with ``learning-engine-client`` installed the way a user installs it."""
    base = tmp_path_factory.mktemp("client-venv")
    wheels, venv = base / "wheels", base / "venv"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    built = subprocess.run(
        [*pip, "wheel", "--quiet", "--no-build-isolation", "--wheel-dir", str(wheels), str(PACKAGE)],
        capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, f"pip wheel failed (are the package registries reachable?):\n{built.stderr}"
    # The base interpreter, not this virtualenv's: nothing of the server's environment leaks in.
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    installed = subprocess.run(
        [*pip, "--python", str(venv / "bin" / "python"), "install", "--quiet", "--no-compile", "--no-index",
         "--find-links", str(wheels), "learning-engine-client"],
        capture_output=True, text=True, timeout=300,
    )
    assert installed.returncode == 0, installed.stderr
    return venv


def test_a_fresh_install_holds_no_torch_and_imports_nothing_of_the_server(fresh_venv: Path) -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(fresh_venv / "bin" / "python"), "list", "--format", "json"],
        capture_output=True, text=True, check=True, timeout=60,
    )
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert "learning-engine-client" in names and "grpcio" in names
    assert not names & {"torch", "transformers", "peft", "learning-engine"}, sorted(names)
    python = str(fresh_venv / "bin" / "python")
    no_torch = subprocess.run([python, "-c", "import torch"], capture_output=True, text=True, timeout=60)
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    clean = subprocess.run([python, "-c", IMPORT_CHECK], capture_output=True, text=True, timeout=60, cwd=fresh_venv)
    assert clean.returncode == 0, clean.stderr


async def _cli(venv: Path, port: int, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEARNING_ENGINE_", "PYTHON", "VIRTUAL_ENV"))}
    env |= {"LEARNING_ENGINE_TARGET": f"127.0.0.1:{port}", "COLUMNS": "120"}
    proc = await asyncio.create_subprocess_exec(
        str(venv / "bin" / "learning-engine"), *args, env=env, cwd=venv,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode, out.decode(), err.decode()


async def test_the_installed_cli_talks_to_a_server(fresh_venv: Path, client) -> None:
    port = client.app.port
    code, out, err = await _cli(fresh_venv, port, "--help")
    assert code == 0 and "deploy" in out and "serve" not in out.split(), err  # serving is the server's command

    code, out, err = await _cli(fresh_venv, port, "--json", "health")
    assert code == 0, err
    assert json.loads(out)["learning.v1.TrainingService"] == "SERVING"

    code, out, err = await _cli(fresh_venv, port, "--json", "jobs", "list")
    assert code == 0, err
    assert json.loads(out) == {"training_jobs": [], "next_page_token": ""}  # a new server: no jobs (the empty
    # response, its fields at their defaults as --json prints them)

    code, out, err = await _cli(fresh_venv, port, "--json", "jobs", "get", "trainingJobs/" + "0" * 32)
    assert code == 5, err  # NOT_FOUND, with the reason read from the status details
    assert json.loads(out)["error"]["reason"] == "JOB_NOT_FOUND"
