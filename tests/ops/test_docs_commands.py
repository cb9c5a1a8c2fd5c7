"""Every command the README and docs/ show is one the service and the CLI take.

The walkthroughs that depend on each other are run for real elsewhere (the README's Python snippet in
tests/clients/test_sdk_snippet.py, grpcurl against a server process in tests/e2e). Here every shell block of
every page is read, and each command in it is checked against the contracts, so a renamed field, method, command
or option breaks a test instead of a reader:

* a grpcurl call names a method of the protos, and its ``-d`` JSON parses as that method's request (proto JSON,
  as grpcurl reads it); a payload built by the shell (``$(...)``, ``@``) is checked for its method only;
* a ``learning-engine`` command line parses with the CLI's own parser (click's, under typer): the commands, the
  options and their values. Nothing runs.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from google.protobuf import descriptor_pool, json_format, message_factory
from typer._click.exceptions import BadParameter, UsageError
from typer.core import TyperGroup

import learning.v1
from learning_engine.cli import app

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(?:bash|sh|shell|console)?\n(.*?)^```", re.DOTALL | re.MULTILINE)
METHOD = re.compile(r"\b(learning\.v1\.[A-Za-z]+)/([A-Za-z]+)\b")


def _import_protos() -> None:
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(learning.v1.__path__):
        if module.name.endswith("_pb2"):
            importlib.import_module(f"learning.v1.{module.name}")


def _commands(text: str) -> Iterator[list[str]]:
    """The shell commands of a page's code blocks: continuation lines joined, comments dropped, split on ; && |."""
    for block in BLOCK.findall(text):
        joined = re.sub(r"\\\n\s*", " ", block)
        pending = ""  # lines of a command whose quote is still open
        for line in joined.splitlines():
            pending = f"{pending}\n{line}" if pending else line.strip()
            lexer = shlex.shlex(pending, posix=True, punctuation_chars=";&|")
            lexer.whitespace_split = True
            try:
                words = list(lexer)
            except ValueError:  # a quoted argument (a JSON request) goes on on the next line
                continue
            pending = ""
            command: list[str] = []
            for word in [*words, ";"]:
                if word in (";", "&&", "|", "||"):
                    if command:
                        yield command
                    command = []
                else:
                    command.append(word)


def _shown() -> list[tuple[str, list[str]]]:
    return [(page.relative_to(ROOT).as_posix(), words) for page in PAGES for words in _commands(page.read_text())]


SHOWN = _shown()
GRPCURL = [(page, w) for page, w in SHOWN if (w[0] == "$G" or w[0].endswith("grpcurl")) and METHOD.search(" ".join(w))]
CLI = [(page, w) for page, w in SHOWN if w[0] == "learning-engine"]


def test_the_pages_show_commands_of_both_kinds() -> None:
    pages = {page for page, _ in GRPCURL} | {page for page, _ in CLI}
    assert len(GRPCURL) >= 20 and len(CLI) >= 60 and len(pages) >= 6, (len(GRPCURL), len(CLI), sorted(pages))


@pytest.mark.parametrize(("page", "words"), GRPCURL, ids=[f"{p}:{' '.join(w)[:70]}" for p, w in GRPCURL])
def test_a_grpcurl_call_names_a_method_and_sends_its_request(page: str, words: list[str]) -> None:
    _import_protos()
    service_name, method_name = METHOD.search(" ".join(words)).groups()  # type: ignore[union-attr]
    service = descriptor_pool.Default().FindServiceByName(service_name)
    method = service.methods_by_name.get(method_name)
    assert method is not None, f"{page}: {service_name} has no method {method_name}"
    if "-d" not in words:
        return
    payload = words[words.index("-d") + 1]
    if payload == "@" or "$(" in payload:
        return  # built by the shell at run time
    request = message_factory.GetMessageClass(method.input_type)()
    try:
        json_format.Parse(payload, request)
    except (json_format.ParseError, json.JSONDecodeError) as exc:
        pytest.fail(f"{page}: {method_name}'s request does not parse: {exc}\n{payload}")


def _parse(args: list[str]) -> None:
    """Parse ``args`` as the CLI would, down to the command it names, without running anything. Typer carries its
    own copy of click (``typer._click``), whose group keeps the subcommand's name in ``ctx._protected_args`` as
    ``TyperGroup.invoke`` reads it."""
    command = typer.main.get_command(app)
    ctx = command.make_context("learning-engine", list(args))
    while isinstance(command, TyperGroup):
        rest = [*ctx._protected_args, *ctx.args]
        if not rest:
            return
        name, sub, rest = command.resolve_command(ctx, rest)
        assert sub is not None, name
        ctx = sub.make_context(name or "", rest, parent=ctx)
        command = sub


@pytest.mark.parametrize(("page", "words"), CLI, ids=[f"{p}:{' '.join(w)[:70]}" for p, w in CLI])
def test_a_cli_command_line_parses(page: str, words: list[str]) -> None:
    try:
        _parse(words[1:])
    except BadParameter as exc:
        if "does not exist" not in exc.format_message():  # the reader's own file, named as an example
            pytest.fail(f"{page}: {shlex.join(words)}: {exc.format_message()}")
    except UsageError as exc:
        pytest.fail(f"{page}: {shlex.join(words)}: {exc.format_message()}")
