"""Every door under one rule: the gateway and /metrics take the gRPC bearer tokens and roles and its TLS settings."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import ssl
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from typer.testing import CliRunner
from yarl import URL

from learning_engine.cli import app
from server.access import TokenEntry, Tokens, hash_token
from server.http_doors import bearer_auth
from server.lora_wiring import start_reference_backend
from server.roles import Role
from server.settings import Settings
from tests.fixtures.certs import make_certs
from tests.security.test_access import AUTH, TOKENS
from tests.server.conftest import TINY

CHAT = {"model": "active", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


async def _status(session: aiohttp.ClientSession, method: str, url: str, credential, **kwargs) -> int:
    headers = {}
    if credential == "wrong":
        headers["Authorization"] = "Bearer not-a-configured-token"
    elif credential != "none":
        headers["Authorization"] = f"Bearer {TOKENS[credential]}"
    async with session.request(method, url, headers=headers, **kwargs) as response:
        await response.read()
        return response.status


async def test_gateway_and_metrics_take_the_grpc_tokens_and_roles(make_server, tiny_model_dir: Path):
    server = await make_server(auth_tokens=AUTH, metrics_port=0)
    gateway = f"http://127.0.0.1:{server.app.owned.lora.gateway.port}"
    metrics = f"http://127.0.0.1:{server.app.metrics.port}/metrics"
    async with aiohttp.ClientSession() as http:
        for credential in (*Role, "none", "wrong"):
            chat = await _status(http, "POST", gateway + "/v1/chat/completions", credential, json=CHAT)
            models = await _status(http, "GET", gateway + "/v1/models", credential)
            model = await _status(http, "GET", gateway + "/v1/models/active", credential)  # a route with a parameter
            page = await _status(http, "GET", metrics, credential)
            if credential in ("none", "wrong"):
                assert (chat, models, model, page) == (401, 401, 401, 401), credential
                continue
            may_infer = credential in (Role.INFERENCE, Role.OPERATOR)
            assert chat == models == model == (200 if may_infer else 403), (credential, chat, models, model)
            may_read = credential in (Role.READER, Role.TRAINER, Role.OPERATOR)
            assert page == (200 if may_read else 403), (credential, page)
        assert await _status(http, "GET", gateway + "/health", "none") == 200  # open, like gRPC health
        # `learning-engine metrics` exits as the gRPC doors' refusals do: 16 without a token, 7 for a weak role
        for credential, code in (("none", 16), (Role.INFERENCE, 7)):
            token = ["--token", TOKENS[credential]] if credential != "none" else []
            shown = await asyncio.to_thread(CliRunner().invoke, app, [*token, "metrics", "--url", metrics])
            assert shown.exit_code == code, (credential, shown.output)
        assert await _status(http, "GET", gateway + "/v1/unknown", "none") == 401  # nothing told before auth

        headers = {"Authorization": f"Bearer {TOKENS[Role.INFERENCE]}"}
        async with http.get(gateway + "/v1/models", headers=headers) as response:
            body = await response.text()
            listed = (await response.json())["data"]
    assert {m["id"] for m in listed} >= {"active", "tiny-llama"}
    assert all(set(m) <= {"id", "object", "created", "owned_by"} for m in listed), listed
    assert str(tiny_model_dir) not in body and "/" not in "".join(m["id"] for m in listed)


def _client_context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mtls"])
async def test_gateway_and_metrics_serve_the_grpc_tls_settings(make_server, tmp_path: Path, mutual: bool):
    certs = make_certs(tmp_path / "certs")
    server = await make_server(tls_cert_file=certs.server_cert, tls_key_file=certs.server_key, metrics_port=0,
                               tls_client_ca_file=certs.ca if mutual else None)
    urls = [f"https://localhost:{server.app.owned.lora.gateway.port}/health",
            f"https://localhost:{server.app.metrics.port}/metrics"]
    trusted = _client_context(certs.ca, certs.client_cert, certs.client_key) if mutual else _client_context(certs.ca)
    async with aiohttp.ClientSession() as http:
        for url in urls:
            async with http.get(url, ssl=trusted) as response:
                assert response.status == 200, url
            with pytest.raises(aiohttp.ClientError):  # plain HTTP against a TLS port
                async with http.get(url.replace("https://", "http://")) as response:
                    await response.read()
            with pytest.raises(aiohttp.ClientError):  # TLS without trusting the server's CA
                async with http.get(url, ssl=ssl.create_default_context()) as response:
                    await response.read()
            if mutual:
                with pytest.raises(aiohttp.ClientError):  # no client certificate
                    async with http.get(url, ssl=_client_context(certs.ca)) as response:
                        await response.read()
    # `learning-engine metrics` with the global TLS options (it used none: CERTIFICATE_VERIFY_FAILED)
    tls = ["--tls-ca", str(certs.ca)] + (["--tls-cert", str(certs.client_cert), "--tls-key", str(certs.client_key)]
                                         if mutual else [])
    shown = await asyncio.to_thread(CliRunner().invoke, app, [*tls, "--json", "metrics", "--url", urls[1]])
    assert shown.exit_code == 0 and json.loads(shown.stdout)["samples"], shown.output


def _outward_address() -> str | None:
    """This machine's address toward other hosts (no packet is sent), or None without a route off the machine."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks the interface
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if ipaddress.ip_address(address).is_loopback else address


@pytest.mark.slow
async def test_the_reference_backend_listens_on_loopback_when_the_server_listens_on_every_address(
        data_dir: Path, tiny_model_dir: Path):
    """The gateway is the backend's only caller; the backend has no tokens of its own, so anyone reaching it could
    load and unload adapters. With the server on 0.0.0.0 (tokens configured) it stays on 127.0.0.1."""
    settings = Settings(host="0.0.0.0", port=0, auth_tokens=AUTH, data_dir=data_dir, default_base_model=TINY,
                        base_models={TINY: tiny_model_dir}, torch_threads=1)
    process, url = await start_reference_backend(settings)
    try:
        backend = URL(url)
        assert backend.host == "127.0.0.1"
        async with aiohttp.ClientSession() as http:
            async with http.get(backend.with_path("/health")) as response:
                assert response.status == 200  # the gateway's way in
            outward = _outward_address()
            if outward is not None:  # the same port from another address of this machine: nothing listens there
                with pytest.raises(aiohttp.ClientConnectionError):
                    async with http.get(backend.with_host(outward).with_path("/v1/models")) as response:
                        await response.read()
    finally:
        process.terminate()
        await process.wait()


async def test_a_route_missing_from_the_role_table_is_the_operators_alone():
    """A route added to a door without its role is closed to every token but the operator's, not open to all."""
    tokens = Tokens([TokenEntry(f"{r.value}-user", r, hash_token(t)) for r, t in TOKENS.items()])

    async def answer(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(middlewares=[bearer_auth(tokens, {"/listed/{name}": Role.READER})])
    app.add_routes([web.get("/listed/{name}", answer), web.get("/unlisted", answer)])
    async with TestClient(TestServer(app)) as http:
        for role in Role:
            headers = {"Authorization": f"Bearer {TOKENS[role]}"}
            listed = (await http.get("/listed/x", headers=headers)).status
            unlisted = (await http.get("/unlisted", headers=headers)).status
            assert listed == (200 if role in (Role.READER, Role.TRAINER, Role.OPERATOR) else 403), role
            assert unlisted == (200 if role is Role.OPERATOR else 403), role
        assert (await http.get("/nowhere", headers={"Authorization": f"Bearer {TOKENS[Role.READER]}"})).status == 404
