"""What walking through the docs with the CLI found, held in place: each command's --min-samples shows the minimum
the server applies (100, not 0, which the server reads as 100) and comes with --force wherever the request can carry
it; the tour's stored datasets have the test split it evaluates; the golden.jsonl the pages use is shipped, where
they say it is, and parses as the cases they describe; `online update` on a disabled session is refused; `online
send` names a refused example by its line of the file and exits 3; a refused metrics URL says metrics_port is unset;
the pages' grpcurl lines define $G and quote what grpcurl prints."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from google.protobuf import json_format

from engine.golden import composition, read_cases
from learning.v1 import online_pb2 as ol
from tests.cli.test_cli_e2e import cli
from tests.cli.test_cli_operations import feedback_lines
from tests.cli.test_local_input_errors import CLI, dead_target, one_line_error
from tests.cli.test_local_input_errors import cli as offline
from tests.server.lora_helpers import train

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
GOLDEN = ROOT / "scripts" / "samples" / "golden.jsonl"
FROM_FEEDBACK = [["train"], ["fisher"], ["datasets", "create"], ["datasets", "validate"], ["pipelines", "create"]]


def help_rows(*command: str) -> dict[str, str]:
    """The option rows of ``command --help``, rendered wide enough for one line each, by option name."""
    shown = subprocess.run([str(CLI), *command, "--help"], env={**os.environ, "COLUMNS": "250"}, capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    rows = (line.strip("│ ") for line in shown.stdout.splitlines())
    return {row.split()[0]: row for row in rows if row.startswith("--")}


def code_lines(page: str) -> list[str]:
    """The lines of a page's fenced code blocks."""
    blocks = re.findall(r"```\w*\n(.*?)```", (DOCS / page).read_text(), re.DOTALL)
    return [line for block in blocks for line in block.splitlines()]


# ---- 1, 2: --min-samples and --force ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", FROM_FEEDBACK, ids=" ".join)
def test_min_samples_shows_the_servers_minimum_and_force_goes_with_it(command: list[str]) -> None:
    rows = help_rows(*command)
    row = rows["--min-samples"]  # at least 1 (pipelines: and at most the uint32 it goes into)
    assert "[default: 100]" in row and ("x>=1" in row or "[1<=x<=" in row), row
    assert "below --min-samples" in rows["--force"], rows["--force"]


def test_min_samples_0_which_the_server_reads_as_100_is_refused_before_calling() -> None:
    refused = offline("fisher", "--from-feedback", "7", "--min-samples", "0")
    assert refused.returncode == 2 and "greater than or equal to 1" in refused.stderr, refused.stderr


@pytest.mark.parametrize("command", [["fisher", "--data", "a.jsonl"], ["pipelines", "create", "p", "--data", "a.jsonl"],
                                     ["datasets", "create", "d", "--server-path", "a.jsonl"],
                                     ["datasets", "validate", "--server-path", "a.jsonl"]], ids=" ".join)
def test_force_without_from_feedback_is_refused_rather_than_ignored(command: list[str]) -> None:
    line = one_line_error(offline(*command, "--force"), 3, "USAGE")
    assert "--force applies to --from-feedback" in line, line


@pytest.mark.slow
async def test_the_minimum_and_force_reach_the_server_and_the_golden_sample_validates(make_server,
                                                                                     tmp_path: Path) -> None:
    server = await make_server()
    port = server.app.port
    events = tmp_path / "events.jsonl"
    events.write_text(feedback_lines("u-1", "u-2", "u-3"))
    assert (await cli(port, "feedback", "import", str(events))).code == 0
    below = await cli(port, "datasets", "validate", "--from-feedback", "7")
    assert below.code == 9 and "FEEDBACK_DATASET_TOO_SMALL" in below.err and "min_samples=100" in below.err, below.err
    forced = await cli(port, "datasets", "validate", "--from-feedback", "7", "--force")
    assert forced.code == 0 and forced.out.startswith("valid: 3 examples"), forced.out + forced.err
    made = await cli(port, "--json", "pipelines", "create", "eager", "--from-feedback", "7", "--min-samples", "20",
                     "--force", "--disabled")
    assert made.code == 0, made.err
    feedback = json.loads(made.out)["training"]["feedback"]
    assert (feedback["min_samples"], feedback.get("force")) == (20, True), feedback
    fisher = await cli(port, "--json", "fisher", "--from-feedback", "7", "--force", "--adapter-version",
                       await train(server, epochs=1))
    assert fisher.code == 0, fisher.err
    feedback = json.loads(fisher.out)["spec"]["feedback"]
    assert (feedback["min_samples"], feedback.get("force")) == (100, True), feedback

    validated = await cli(port, "datasets", "validate", str(GOLDEN), "--kind", "golden")
    assert validated.code == 0, validated.err
    for page in ("cli.md", "datasets.md"):  # what the pages say it prints
        said = next(line for line in code_lines(page) if "datasets validate scripts/samples/golden.jsonl" in line)
        assert validated.out.startswith(said.split("# ")[1].removesuffix(" ...)")), (said, validated.out)


# ---- 3, 4: the tour's datasets, and the golden sample ----------------------------------------------------------


def test_every_stored_dataset_the_cli_tour_evaluates_has_a_test_split_or_no_split() -> None:
    lines = code_lines("cli.md")
    evaluated = {name for line in lines for name in re.findall(r"--suite-dataset (\S+)", line)}
    for line in lines:
        stored = re.search(r"datasets (?:upload|create) \S+ .*?--name (\S+)|datasets create (\S+)", line)
        name = stored and (stored.group(1) or stored.group(2))
        if name in evaluated and "-fraction" in line:
            assert "--test-fraction" in line, f"evaluating {name} would find its test split empty: {line}"


def test_the_golden_sample_parses_as_the_cases_the_pages_describe() -> None:
    cases, bad = read_cases(GOLDEN.read_text().splitlines())
    assert not bad and len(cases) == 4, bad
    assert dict(composition(cases)) == {"answer": 2, "several_references": 1, "source": 1}


@pytest.mark.parametrize("page", ["cli.md", "datasets.md"])
def test_the_pages_name_the_golden_sample_where_it_is(page: str) -> None:
    """Locally the checkout's file; on the server where `make samples` puts it, below the datasets dir."""
    named = [path for line in code_lines(page) for path in re.findall(r"[\w./]*golden\.jsonl", line)]
    assert named and set(named) <= {"scripts/samples/golden.jsonl", "./scripts/samples/golden.jsonl",
                                    "samples/golden.jsonl"}, named
    assert "cp scripts/samples/*.jsonl $(DATA_DIR)/datasets/samples/" in (ROOT / "Makefile").read_text()


# ---- 5, 7: online update and online send -----------------------------------------------------------------------


@pytest.mark.slow
async def test_online_send_names_refused_lines_and_update_is_refused_while_disabled(make_server,
                                                                                     tmp_path: Path) -> None:
    server = await make_server(online_poll_seconds=0.05, online_follow_seconds=0.1, online_max_update_share=1.0)
    port = server.app.port
    start = await train(server)
    made = await cli(port, "online", "create", "notes", "--from", start, "--update-every", "2", "--publish-every",
                     "0", "--ewc-lambda", "0", "--replay", "0")
    assert made.code == 0, made.err
    examples = tmp_path / "examples.jsonl"
    examples.write_text('{"prompt": "Who keeps cove 3?", "target": "Ilsa Varn."}\n\n'
                        '{"prompt": " "}\n{"prompt": "Who keeps cove 4?", "target": "Oren Tal."}\n')
    sent = await cli(port, "online", "send", "notes", str(examples))
    assert sent.code == 3, (sent.code, sent.err)
    assert sent.out.splitlines()[-2:] == ["sent 2 examples, 1 refused", f"  {examples}:3: empty prompt"], sent.out

    assert (await cli(port, "online", "disable", "notes", "--reason", "audit")).code == 0
    update = await cli(port, "online", "update", "notes")
    assert update.code == 9 and "ONLINE_LEARNING_DISABLED" in update.err and "enable it first" in update.err, update
    assert (await cli(port, "online", "stop", "notes")).code == 0


# ---- 6: metrics --------------------------------------------------------------------------------------------------


def test_a_refused_metrics_url_says_the_server_needs_metrics_port() -> None:
    line = one_line_error(offline("metrics", "--url", f"http://{dead_target()}/metrics"), 14, "METRICS_UNREACHABLE")
    assert "metrics_port" in line and "unset by default" in line, line
    assert "metrics_port" in next(line for line in code_lines("cli.md") if "learning-engine metrics" in line)


# ---- 7: the pages' grpcurl lines ---------------------------------------------------------------------------------


@pytest.mark.parametrize("page", ["cli.md", "datasets.md", "feedback.md", "online.md", "pipelines.md"])
def test_a_page_that_uses_g_defines_it_first(page: str) -> None:
    lines = code_lines(page)
    used = [i for i, line in enumerate(lines) if "$G " in line]
    defined = [i for i, line in enumerate(lines) if re.match(r'\s*G="', line)]
    assert not used or (defined and defined[0] < used[0]), page


def test_online_md_quotes_what_grpcurl_prints_for_a_resent_example() -> None:
    said = re.search(r"# again: (\{.*?\})", (DOCS / "online.md").read_text())
    assert said, "the resend's answer is quoted"
    printed = json_format.MessageToDict(ol.AddExamplesResponse(last_sequence=29, duplicates=1),
                                        preserving_proto_field_name=True)
    assert json.loads(said.group(1)) == printed
