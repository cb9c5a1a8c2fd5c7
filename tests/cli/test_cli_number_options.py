"""Every number option of every command, out of range: typer's usage error, never a traceback. Plain int options
went straight into uint32 and uint64 fields (``pipelines create --on-negative -1``, ``jobs list --page-size -1``,
``online watch --after 2**70``: ``ValueError: Value out of range``), and a duration too long for a Duration
(``canary start --check-interval 1e21``) the same. Walked in-process over the command tree, so that an option added
later is held to it too."""

from __future__ import annotations

import socket

import pytest
import typer
from typer.testing import CliRunner

from learning_engine.cli import app


def _dead_target() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def _commands(command, path: tuple[str, ...] = ()):
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from _commands(sub, (*path, name))
    else:
        yield path, command


def _integer_options() -> list[tuple[tuple[str, ...], list[str], str]]:
    """(command path, its arguments, option) of every integer option (a duration option is text)."""
    found = []
    for path, command in _commands(typer.main.get_command(app)):
        arguments = [["x"] * max(p.nargs, 1) for p in command.params if type(p).__name__.endswith("Argument")]
        for p in command.params:
            kind = f"{getattr(p, 'type_descriptor', '')} {getattr(p, 'bare_type', '')}".lower()
            if type(p).__name__.endswith("Option") and not p.is_flag and "int" in kind:
                found.append((path, sum(arguments, []), p.opts[0]))
    return found


OPTIONS = _integer_options()


def test_every_integer_parameter_has_both_bounds() -> None:
    """Each integer option and argument says its range, so that a value past it is typer's usage error: the walk
    below reaches an option only as far as the command's own checks let it (``train --epochs -1`` without a source
    stopped at the source, and with one it raised ``ValueError: Value out of range`` from the message)."""
    unbounded = []
    for path, command in _commands(typer.main.get_command(app)):
        for p in command.params:
            annotation = getattr(getattr(p, "type_descriptor", None), "annotation", None)
            if annotation in (int, int | None) and (p.min is None or p.max is None):
                unbounded.append(f"{' '.join(path)} {p.opts[0] if p.opts else p.name}: [{p.min}, {p.max}]")
    assert unbounded == [], unbounded


def test_the_walk_finds_the_options() -> None:
    assert (("jobs", "list"), [], "--page-size") in OPTIONS and (("online", "watch"), ["x"], "--after") in OPTIONS


@pytest.mark.slow  # a few hundred command lines, in-process
@pytest.mark.parametrize("value", ["-1", str(2**70)])
def test_an_integer_out_of_range_is_a_usage_error(value: str) -> None:
    crashed = []
    for path, arguments, option in OPTIONS:
        result = CliRunner().invoke(app, ["--target", _dead_target(), "--timeout", "1", *path, *arguments, option,
                                          value])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            crashed.append(f"{' '.join(path)} {option} {value}: {type(result.exception).__name__}: "
                           f"{result.exception}")
    assert not crashed, "\n".join(crashed)


def test_a_duration_too_long_is_a_usage_error() -> None:
    result = CliRunner().invoke(app, ["--target", _dead_target(), "canary", "start", "v1.1", "--check-interval",
                                      str(2**70)])
    assert result.exit_code == 2 and "--check-interval" in result.stderr, (result.exception, result.stderr)
