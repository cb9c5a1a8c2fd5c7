"""The TypeScript client's TLS options (clients/typescript/src/index.ts: `tls`, as the Python SDK's TlsConfig)
against live TLS servers with certificates made at test time (tests/fixtures/certs.py, as tests/security/test_tls.py
uses them): clients/typescript/test/tls.ts trusts the test CA (PEM text and bytes), fails without it, checks the
certificate against serverNameOverride, and presents a client certificate to a server that requires one (mTLS).
A certificate that does not verify, or that the server refuses, fails a call with UNAVAILABLE and a message that
says which certificate and what to check (isTlsFailure), and ends a resuming watch at once, while a broken TLS
connection is still resumed; clients/typescript/test/tls-failure.ts checks the same mapping without a server, for
the codes a live server cannot easily produce (an expired or self-signed certificate, a TLS alert)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.clients.test_typescript_client import (
    PACKAGE,
    _ensure_node_modules,
    _run,
    pytestmark,  # noqa: F401 - skip without node/npm
)
from tests.fixtures.certs import make_certs


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "tests"), [("tls", 6), ("mtls", 4)])
async def test_tls_options_against_a_tls_server(make_server, tmp_path: Path, mode: str, tests: int):
    certs = make_certs(tmp_path / "certs")
    make_certs(tmp_path / "other")  # another CA, and a client certificate it signed
    tls = {"tls_cert_file": certs.server_cert, "tls_key_file": certs.server_key}
    if mode == "mtls":
        tls["tls_client_ca_file"] = certs.ca
    server = await make_server(**tls)
    _ensure_node_modules()
    env = {**os.environ, "TLS_MODE": mode, "TLS_PORT": str(server.app.port), "CERTS": str(tmp_path / "certs"),
           "OTHER_CERTS": str(tmp_path / "other")}
    code, output = await _run("node", "--import", "tsx", "--test", "test/tls.ts", env=env, timeout=120,
                              cwd=PACKAGE)
    assert code == 0, f"the TLS tests failed:\n{output}"
    assert f"# pass {tests}" in output and "# fail 0" in output, output


async def test_tls_failures_without_a_server():
    _ensure_node_modules()
    code, output = await _run("node", "--import", "tsx", "--test", "test/tls-failure.ts", env=dict(os.environ),
                              timeout=120, cwd=PACKAGE)
    assert code == 0, f"the TLS failure tests failed:\n{output}"
    assert "# pass 5" in output and "# fail 0" in output, output
