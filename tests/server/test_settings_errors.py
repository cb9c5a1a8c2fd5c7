"""Settings that cannot be read are one "invalid settings" message and exit 2, never a traceback; a
database_url's password never reaches a message (settings, start error)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

import server.main as server_main
from engine.errors import Unavailable
from engine.stores import postgres
from server.__main__ import main as server_cli
from server.settings import Settings, SettingsError, load_settings
from server.startup import describe
from tests.fixtures.certs import make_certs

PASSWORDS = ["s3cr/et+Kq", "s3cr#etKq", "s3cr?et", "1234/et"]  # e.g. `openssl rand -base64 24` makes '/' and '+'


@pytest.fixture
def no_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEARNING_ENGINE_CONFIG", raising=False)
    monkeypatch.delenv("LEARNING_ENGINE_SECRETS_DIR", raising=False)


@pytest.mark.parametrize("variable, value", [
    ("LEARNING_ENGINE_TRAINING_LORA_TARGET_MODULES", "q_proj,v_proj"),  # not JSON
    ("LEARNING_ENGINE_AUTH_TOKENS", "[{'name': 'ops'}]"),  # single quotes: not JSON
    ("LEARNING_ENGINE_BASE_MODELS", "{SmolLM2: /models/x}"),
])
def test_a_malformed_json_variable_is_a_settings_error_not_a_traceback(
        variable: str, value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], no_files) -> None:
    monkeypatch.setenv(variable, value)
    status = server_cli(["--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 2, f"exit {status} (settings errors exit 2); stderr: {err!r}"
    field = variable.removeprefix("LEARNING_ENGINE_").lower()
    assert err.startswith("invalid settings:"), f"not the settings message: {err!r}"
    assert field in err and variable in err, f"the message names neither {field} nor {variable}: {err!r}"
    assert "JSON" in err, f"the message does not say structured values are JSON: {err!r}"
    assert "Traceback" not in err, err


def test_a_malformed_secret_file_is_a_settings_error_naming_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_files) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "learning_engine_auth_tokens").write_text("[{'name': 'ops'}]")
    monkeypatch.setenv("LEARNING_ENGINE_SECRETS_DIR", str(secrets))
    with pytest.raises(SettingsError) as caught:
        load_settings({"data_dir": tmp_path})
    message = str(caught.value)
    assert "auth_tokens" in message and str(secrets) in message and "JSON" in message, message
    assert "'ops'" not in message, f"the file's content (it may be a secret) is in the message: {message!r}"


@pytest.mark.parametrize("content, problem", [
    ("- port: 6000\n", "must be a YAML mapping"),
    ("port: [6000\n", "is not valid YAML"),
    ("just words\n", "must be a YAML mapping"),
])
def test_a_config_file_that_is_no_mapping_is_a_settings_error_not_a_traceback(
        content: str, problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_files) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(content)
    status = server_cli(["--data-dir", str(tmp_path), "--config", str(config)])
    err = capsys.readouterr().err
    assert status == 2, f"exit {status} (settings errors exit 2); stderr: {err!r}"
    assert f"config file {config} {problem}" in err, f"the message does not name the file and its fault: {err!r}"


def test_an_empty_config_file_and_a_mapping_still_load(tmp_path: Path, no_files) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_settings(config_file=empty).port == 50051
    config = tmp_path / "c.yaml"
    config.write_text(f"port: 6001\nbase_models:\n  tiny: {tmp_path}\n")
    settings = load_settings({"gateway_port": 8090}, config_file=config)
    assert (settings.port, settings.gateway_port, settings.base_models) == (6001, 8090, {"tiny": tmp_path})
    assert load_settings({"port": 6002}, config_file=config).port == 6002, "a flag must win over the file"


@pytest.mark.parametrize("password", PASSWORDS)
def test_a_database_url_with_an_unescaped_password_is_refused_by_the_settings_without_the_password(
        password: str, monkeypatch: pytest.MonkeyPatch, no_files) -> None:
    url = f"postgresql://learning:{password}@127.0.0.1:5432/learning"
    monkeypatch.setenv("DATABASE_URL", url)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert "database_url" in message.lower(), f"the message does not name database_url: {message!r}"
    assert "postgresql://learning:***@127.0.0.1:5432/learning" in message, f"no masked URL shown: {message!r}"
    assert "percent-encode" in message.lower(), f"the message does not say to percent-encode: {message!r}"
    assert password[:4] not in message, f"the password leaks into the settings error: {message!r}"
    with pytest.raises(ValueError) as direct:  # Settings(...) itself: pydantic's text shows no input either
        Settings(database_url=url)
    assert password[:4] not in str(direct.value), f"the password leaks into the ValidationError: {direct.value}"


@pytest.mark.parametrize("url", [
    "postgresql://learning:p%2Fw%2Bd%23x@db:5432/learning", "postgres://db/learning", "postgresql://u@db/x",
    "postgresql:///learning?host=/var/run/postgresql",
    "postgresql:///learning",  # no host: the driver's default (PGHOST, else the local socket), as libpq's
])
def test_a_well_formed_database_url_is_kept(url: str, no_files) -> None:
    assert load_settings({"database_url": url}).database_url == url


@pytest.mark.parametrize("url, problem", [
    ("mysql://u:secret@db/x", "scheme"), ("postgresql://u:1234/secret@db/x", "'@' follows its host"),
    ("postgresql://u:secret@db:port/x", "port"),
])
def test_a_database_url_that_is_no_postgresql_url_is_refused(url: str, problem: str, no_files) -> None:
    with pytest.raises(SettingsError, match=problem) as caught:
        load_settings({"database_url": url})
    assert "secret" not in str(caught.value), f"the password leaks: {caught.value}"


async def test_a_dsn_the_driver_cannot_read_is_unavailable_without_the_dsn() -> None:
    url = "postgresql://learning:s3cr/et+Kq@127.0.0.1:1/learning"
    with pytest.raises(Unavailable) as caught:
        await asyncio.wait_for(postgres.connect(url), 30)
    text = describe(caught.value)
    assert "s3cr" not in text and "et+Kq" not in text, f"the DSN leaks into the error: {text!r}"
    assert "database_url" in text and "percent-encode" in text, f"the error does not say what to fix: {text!r}"
    assert caught.value.__suppress_context__, "the driver's ValueError (quoting the DSN) must not be chained"


@pytest.mark.parametrize("password", PASSWORDS[:2])
async def test_a_database_url_password_never_reaches_the_start_error(
        password: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Settings built past their validation (model_copy does not validate): connect's own guard holds.
    settings = Settings(data_dir=tmp_path).model_copy(
        update={"database_url": f"postgresql://learning:{password}@127.0.0.1:1/learning"})
    status = await asyncio.wait_for(server_main.serve(settings), 60)
    err = capsys.readouterr().err
    assert status == 1, f"exit {status}; stderr: {err!r}"
    assert "cannot start" in err and "database_url" in err, f"the start error does not name database_url: {err!r}"
    assert "s3cr" not in err, f"the password leaks into the start error: {err!r}"


@pytest.mark.parametrize("same_as", ["port", "gateway_port", "reference_backend_port"])
def test_metrics_port_on_a_port_already_taken_by_the_server_is_refused_by_the_settings(
        same_as: str, no_files) -> None:
    ports = {"port": 50051, "gateway_port": 8088, "reference_backend_port": 8099}
    with pytest.raises(SettingsError) as caught:
        load_settings({**ports, "metrics_port": ports[same_as]})
    message = str(caught.value)
    assert f"{same_as} and metrics_port are both {ports[same_as]}" in message, (
        f"the clash of metrics_port with {same_as} is not named: {message!r}")


def test_two_auth_tokens_of_one_secret_are_refused(no_files) -> None:
    """One token in two entries had the role of the last: a reader's token with an operator's entry beside it
    could disable serving."""
    digest = "ab" * 32
    with pytest.raises(SettingsError, match="auth_tokens a, b have the same sha256"):
        load_settings({"auth_tokens": [{"name": "a", "role": "reader", "sha256": digest},
                                       {"name": "b", "role": "operator", "sha256": digest}]})


def test_tls_files_that_are_no_certificate_and_key_are_a_settings_error(tmp_path: Path, no_files) -> None:
    """Read at start as the doors read them: a garbage file or a key that is not the certificate's failed the
    gateway after the database and the serving engine had started, said as its port being in use."""
    certs, other = make_certs(tmp_path / "a"), make_certs(tmp_path / "b")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    encrypted = tmp_path / "encrypted.key"  # refused, not a passphrase asked for on the terminal
    encrypted.write_bytes(serialization.load_pem_private_key(certs.server_key.read_bytes(), None).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase")))
    for settings, says in (
        ({"tls_cert_file": certs.server_cert, "tls_key_file": encrypted}, f"tls_key_file {encrypted} is encrypted"),
        ({"tls_cert_file": certs.server_cert, "tls_key_file": other.server_key}, "are not a readable PEM certificate"),
        ({"tls_cert_file": garbage, "tls_key_file": certs.server_key}, f"tls_cert_file {garbage}"),
        ({"tls_cert_file": certs.server_cert, "tls_key_file": certs.server_key, "tls_client_ca_file": garbage},
         f"tls_client_ca_file {garbage} holds no readable PEM CA certificate"),
    ):
        with pytest.raises(SettingsError, match=re.escape(says)):
            load_settings(settings)
    good = load_settings({"tls_cert_file": certs.server_cert, "tls_key_file": certs.server_key,
                          "tls_client_ca_file": certs.ca})
    assert good.tls_client_ca_file == certs.ca


def test_a_base_model_path_that_is_not_there_is_a_settings_error(tmp_path: Path, no_files) -> None:
    with pytest.raises(SettingsError, match=re.escape(f"no such folder or file: tiny: {tmp_path / 'nope'}")):
        load_settings({"base_models": {"tiny": tmp_path / "nope"}})


def test_a_config_path_that_is_a_folder_is_said_to_be_no_file(tmp_path: Path, no_files) -> None:
    with pytest.raises(SettingsError, match=f"config file {re.escape(str(tmp_path))} is not a file"):
        load_settings(config_file=tmp_path)


def test_metrics_port_zero_and_distinct_ports_are_accepted(no_files) -> None:
    assert load_settings({"metrics_port": 0, "port": 0, "gateway_port": 0}).metrics_port == 0
    assert load_settings({"metrics_port": 9464}).metrics_port == 9464


def test_a_misspelt_variable_is_named_at_start_with_the_setting_it_is_close_to(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], no_files) -> None:
    """pydantic-settings reads only its fields' variables, so LEARNING_ENGINE_BASE_KL_WIEGHT was ignored without a
    word and the job ran at the default weight; the server now says so when it starts (a warning, not a refusal:
    the clients' variables, which a shell running both exports, are no settings either)."""
    monkeypatch.setenv("LEARNING_ENGINE_BASE_KL_WIEGHT", "4")
    monkeypatch.setenv("LEARNING_ENGINE_TOKEN", "a client's bearer token")  # the CLI's: not named
    started: list[Settings] = []

    async def serve(settings: Settings) -> int:
        started.append(settings)
        return 0

    monkeypatch.setattr(server_main, "serve", serve)
    assert server_cli(["--data-dir", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert started and started[0].base_kl_weight != 4
    assert "LEARNING_ENGINE_BASE_KL_WIEGHT is not a setting and is ignored (did you mean " \
           "LEARNING_ENGINE_BASE_KL_WEIGHT?)" in err, err
    assert "LEARNING_ENGINE_TOKEN" not in err, err


@pytest.mark.parametrize("endpoint", ["otel-collector:4317", "grpc://otel-collector:4317"])
def test_an_otlp_endpoint_without_http_or_https_is_refused(endpoint: str, no_files) -> None:
    """The OTLP exporter took an endpoint without http:// as TLS: a plaintext collector named host:port got TLS
    handshakes and no spans, and nothing said so."""
    with pytest.raises(SettingsError, match="otlp_endpoint: .*must start with http:// \\(plaintext\\) or https://"):
        load_settings({"otlp_endpoint": endpoint})


@pytest.mark.parametrize("endpoint", ["http://otel-collector:4317", "https://otel.example.com:4317", ""])
def test_an_otlp_endpoint_with_its_scheme_or_empty_is_accepted(endpoint: str, no_files) -> None:
    assert load_settings({"otlp_endpoint": endpoint}).otlp_endpoint == endpoint  # "": docker compose's unset
