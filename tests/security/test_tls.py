"""TLS and mTLS from settings, with certificates generated at test time."""

from __future__ import annotations

from pathlib import Path

import pytest

from learning_engine import AsyncClient, TlsConfig, errors
from server import access
from server.settings import AuthToken
from tests.fixtures.certs import make_certs

TOKEN = "operator-token-for-tls-tests-0123456789"


async def _health(port: int, tls: TlsConfig | None, token: str | None = None) -> str:
    async with AsyncClient(f"localhost:{port}", tls=tls, token=token, timeout=3) as client:
        return await client.health()


async def test_tls_serves_only_tls_clients(make_server, tmp_path: Path):
    certs = make_certs(tmp_path / "certs")
    server = await make_server(tls_cert_file=certs.server_cert, tls_key_file=certs.server_key)
    port = server.app.port
    assert await _health(port, TlsConfig.from_files(certs.ca)) == "SERVING"
    with pytest.raises(errors.Unavailable):
        await _health(port, None)  # plaintext against a TLS port
    with pytest.raises(errors.Unavailable):
        await _health(port, TlsConfig())  # TLS without trusting the test CA


async def test_mtls_requires_a_client_certificate_signed_by_the_ca(make_server, tmp_path: Path):
    certs = make_certs(tmp_path / "certs")
    other = make_certs(tmp_path / "other")
    server = await make_server(
        tls_cert_file=certs.server_cert,
        tls_key_file=certs.server_key,
        tls_client_ca_file=certs.ca,
        auth_tokens=(AuthToken(name="ops", role="operator", sha256=access.hash_token(TOKEN)),),
    )
    port = server.app.port
    mutual = TlsConfig.from_files(certs.ca, certs.client_cert, certs.client_key)
    assert await _health(port, mutual) == "SERVING"
    with pytest.raises(errors.Unavailable):
        await _health(port, TlsConfig.from_files(certs.ca))  # no client certificate
    with pytest.raises(errors.Unavailable):
        await _health(port, TlsConfig.from_files(certs.ca, other.client_cert, other.client_key))  # unknown CA
    async with AsyncClient(f"localhost:{port}", tls=mutual, token=TOKEN) as client:  # token auth on top of mTLS
        listed = await client.list_training_jobs()
        assert list(listed.training_jobs) == []
    async with AsyncClient(f"localhost:{port}", tls=mutual) as client:
        with pytest.raises(errors.Unauthenticated):
            await client.list_training_jobs()


async def test_a_watch_against_a_certificate_it_does_not_trust_ends_at_once(make_server, tmp_path: Path, caplog):
    """A watch re-opens after UNAVAILABLE, for up to reconnect_attempts (30: minutes); a certificate that does not
    verify is UNAVAILABLE too, and no retry changes it: the watch raises at once, resuming nothing."""
    certs = make_certs(tmp_path / "certs")
    other = make_certs(tmp_path / "other")
    server = await make_server(tls_cert_file=certs.server_cert, tls_key_file=certs.server_key)
    caplog.set_level("INFO", logger="learning_engine")
    async with AsyncClient(f"localhost:{server.app.port}", tls=TlsConfig.from_files(other.ca), timeout=3) as client:
        with pytest.raises(errors.Unavailable) as caught:
            async for _ in client.watch_lora_status():
                pass
    assert "handshake failed" in caught.value.message.lower(), caught.value.message
    assert not [r for r in caplog.records if "resuming" in r.getMessage()], [r.getMessage() for r in caplog.records]
