"""Constructing a client: half-given mTLS material is refused with ValueError (gRPC core would abort the process),
and a blocking Client whose construction fails stops its event-loop thread."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from learning_engine import Client, TlsConfig


@pytest.mark.parametrize("tls", ["TlsConfig(client_certificate=b'cert')", "TlsConfig(client_key=b'key')"])
def test_a_certificate_without_its_key_is_refused_not_a_process_abort(tls: str) -> None:
    # In a child process: before the fix, gRPC core aborted it with SIGABRT.
    code = (
        "from learning_engine import AsyncClient, TlsConfig\n"
        "try:\n"
        f"    AsyncClient('127.0.0.1:1', tls={tls})\n"
        "except ValueError as exc:\n"
        "    print('refused', exc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"process died with {proc.returncode}: {proc.stderr[-300:]}"
    assert proc.stdout.startswith("refused"), proc.stdout


def test_from_files_refuses_a_certificate_without_its_key(tmp_path: Path) -> None:
    cert = tmp_path / "client.pem"
    cert.write_bytes(b"cert")
    with pytest.raises(ValueError, match="client_certificate without client_key"):
        TlsConfig.from_files(cert=cert)


def _loop_threads() -> int:
    return sum(t.name == "learning-engine-client" for t in threading.enumerate())


def test_a_client_that_fails_to_construct_leaves_no_thread_behind() -> None:
    before = _loop_threads()
    for _ in range(3):
        with pytest.raises(TypeError):  # a str read with read_text() instead of read_bytes()
            Client("127.0.0.1:1", tls=TlsConfig(root_certificates="-----BEGIN CERTIFICATE-----"))  # type: ignore[arg-type]
    assert _loop_threads() == before, "each failed Client() leaked its event-loop thread"
