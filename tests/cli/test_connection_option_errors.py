"""What the global options say about the connection is checked before any call, as the TLS files are: a
``--timeout`` that is no deadline (0, negative, nan, inf) and a token no header can carry exit 3 (USAGE) in one
line naming the option, never repeating the token (under --json, the error object on stdout). They were a
DEADLINE_EXCEEDED of every call (exit 4), and a traceback of gRPC's ExecuteBatchError (exit 1). A token read from
a file, with its trailing newline, is stripped and authenticates."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from typer.testing import CliRunner

from learning_engine.cli import app
from learning_engine.connection import Connection
from server import access, roles
from server.settings import AuthToken
from tests.cli.test_cli_e2e import cli as cli_at
from tests.cli.test_local_input_errors import CLI, cli, dead_target, one_line_error

TOKEN = "reader-token-0123456789abcdef"


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_a_timeout_that_is_no_deadline_is_a_usage_error(value: str) -> None:
    line = one_line_error(cli("--timeout", value, "jobs", "get", "trainingJobs/x"), 3, "USAGE")
    assert "--timeout must be a positive, finite number of seconds" in line, line
    scripted = cli("--json", "--timeout", value, "health")
    error = json.loads(scripted.stdout)["error"]
    assert scripted.returncode == 3 and error["reason"] == "USAGE" and "--timeout" in error["message"], error


@pytest.mark.parametrize("token", ["s3cr3t\nsecond-line", "s3cr3t\x1b[2J"])
def test_a_token_no_header_can_carry_is_a_usage_error(token: str) -> None:
    env = {**os.environ, "LEARNING_ENGINE_TARGET": dead_target(), "LEARNING_ENGINE_TOKEN": token}
    refused = subprocess.run([str(CLI), "jobs", "get", "trainingJobs/x"], env=env, capture_output=True, text=True,
                             timeout=60)
    line = one_line_error(refused, 3, "USAGE")
    assert "LEARNING_ENGINE_TOKEN" in line and "printable ASCII" in line, line
    assert "s3cr3t" not in refused.stdout + refused.stderr
    flagged = cli("--json", "--token", token, "jobs", "get", "trainingJobs/x")
    assert flagged.returncode == 3 and json.loads(flagged.stdout)["error"]["reason"] == "USAGE", flagged.stderr
    assert "s3cr3t" not in flagged.stdout + flagged.stderr


async def test_a_token_read_from_a_file_authenticates(make_memory_server) -> None:
    reader = AuthToken(name="r", role=roles.Role.READER.value, sha256=access.hash_token(TOKEN))
    port = (await make_memory_server(auth_tokens=(reader,))).app.port
    listed = await cli_at(port, "--json", "jobs", "list", token=f"{TOKEN}\n")
    assert listed.code == 0 and "Traceback" not in listed.err, listed.err
    assert (await cli_at(port, "jobs", "list", token="wrong\n")).code == 16  # UNAUTHENTICATED, as before


def test_an_actor_no_header_can_carry_is_a_usage_error() -> None:
    line = one_line_error(cli("--actor", "Zoë", "status"), 3, "USAGE")
    assert "--actor (or LEARNING_ENGINE_ACTOR): the actor holds U+00EB at position 2" in line, line


def test_the_actor_is_sent_as_the_x_actor_header() -> None:
    assert Connection(token="t", actor=" alice@example.com\n").metadata() == (
        ("authorization", "Bearer t"), ("x-actor", "alice@example.com"))
    assert Connection(actor="  ").metadata() == ()


@pytest.mark.parametrize(("given", "says"), [("a", "a token of 1 characters; at least 24"),
                                             ("", "a token of 0 characters"),
                                             ("x" * 30 + "\u00e9", "holds U+00E9")])
def test_hash_token_refuses_a_token_too_short_to_keep_secret_or_no_header_can_carry(given: str, says: str) -> None:
    """The server keeps an unsalted sha256 of each token: a short one is found again from it. ``--token ''`` made an
    entry of a generated token it did not print, which nobody could use."""
    result = CliRunner().invoke(app, ["hash-token", "--name", "x", "--role", "operator", "--token", given])
    assert result.exit_code == 2 and says in result.output, result.output


def test_hash_token_hashes_a_long_enough_token_given_on_stdin() -> None:
    token = "k" * 24
    result = CliRunner().invoke(app, ["--json", "hash-token", "--name", "x", "--role", "reader", "--token", "-"],
                                input=f"{token}\n")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["auth_token"]["sha256"] == access.hash_token(token)
