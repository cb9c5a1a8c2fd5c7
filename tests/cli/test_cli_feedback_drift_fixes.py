"""Fixes of the feedback and drift commands (docs/feedback.md, docs/drift.md):

- ``feedback import`` that stops at a refused batch says how many events the batches before it stored (under
  ``--stream``, what the server's error says it committed, its metadata kept), names each bad event by its line of
  the file rather than by the server's ``events[i]`` of the batch, and exits with the call's code;
- ``--thumbs-up-weight``, ``--thumbs-down-weight``, ``--feedback-label`` and ``--feedback-adapter`` reach the
  FeedbackDataset of every command taking ``--from-feedback`` (train, fisher, datasets create/validate, pipelines
  create), and are refused without it as ``--force`` is;
- ``--days`` of ``drift report`` and ``feedback stats`` is bounded (more than 0, at most the server's longest
  window): NaN, infinities, huge values and 0 are typer's usage error (exit 2), never a traceback;
- ``feedback forget-user`` shows the online examples deleted with the events (the SDK's ``forget_user``).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from learning_engine.cli import app
from tests.cli.test_cli_e2e import TRAIN, cli


def dead_port() -> int:
    """A port nothing listens on: a command that gets as far as calling exits 14 (UNAVAILABLE)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def event(i: int, **fields: object) -> str:
    return json.dumps({"client_event_id": f"fix-{i}", "kind": "FEEDBACK_KIND_THUMBS_UP", "user_id": "u-fix",
                       "interaction": {"prompt": f"What is the capital of country {i}?", "response": f"City {i}."},
                       **fields}) + "\n"


BAD = {"kind": "FEEDBACK_KIND_RATING", "rating": 9}


@pytest.mark.slow
async def test_feedback_import_says_what_was_stored_and_names_the_bad_line(make_server, tmp_path: Path) -> None:
    port = (await make_server(embedded_worker=False)).app.port
    # line 2 is blank: the events are on lines 1, 3, 4 and 5, the bad one on line 4 (the third event)
    calls = tmp_path / "calls.jsonl"
    calls.write_text(event(0) + "\n" + event(1) + event(2, **BAD) + event(3))
    one_by_one = await cli(port, "feedback", "import", str(calls), "--batch", "1")
    assert one_by_one.code == 3, one_by_one.out + one_by_one.err  # INVALID_ARGUMENT, the failed call's code
    said = " ".join(one_by_one.err.split())
    assert f"{calls}: batch 3 of 4 (lines 4-4) failed" in said, said
    assert "the 2 batch(es) before it (lines 1-3) were stored: 2 events stored, 0 duplicates" in said, said
    assert "the batches after it were not stored" in said and "line[4].rating" in said, said
    assert "events[0]" not in said, said
    stats = json.loads((await cli(port, "--json", "feedback", "stats")).out)
    assert int(stats["total"]) == 2

    # On one stream, as --json: the server's committed_messages and counts are kept, the events named by line.
    streamed = tmp_path / "streamed.jsonl"
    streamed.write_text(event(10) + event(11) + event(12) + event(13, **BAD) + event(14))
    scripted = await cli(port, "--json", "feedback", "import", str(streamed), "--batch", "2", "--stream")
    assert scripted.code == 3, scripted.out + scripted.err
    error = json.loads(scripted.out)["error"]
    assert error["reason"] == "INVALID_FEEDBACK", error
    meta = error["metadata"]
    assert (meta["committed_messages"], meta["stored"], meta["duplicates"]) == ("1", "2", "0"), meta
    assert (meta["failed_lines"], meta["first_invalid_line"], meta["first_invalid_index"]) == ("3-4", "4", "1"), meta
    assert [v["field"] for v in error["violations"]] == ["line[4].rating"], error
    assert "batch 2 of 3 (lines 3-4) failed" in error["message"] and "2 events stored" in error["message"], error
    stats = json.loads((await cli(port, "--json", "feedback", "stats")).out)
    assert int(stats["total"]) == 4

    # The calls' error carries the same counts; the first batch failing stored nothing.
    first = tmp_path / "first.jsonl"
    first.write_text(event(20, **BAD) + event(21))
    refused = await cli(port, "--json", "feedback", "import", str(first))
    error = json.loads(refused.out)["error"]
    assert refused.code == 3 and (error["metadata"]["committed_messages"], error["metadata"]["stored"]) == ("0", "0")
    assert "nothing before it was stored" in error["message"] and error["metadata"]["invalid_lines"] == "1", error

    # Sending the corrected file again stores the rest once.
    calls.write_text(event(0) + "\n" + event(1) + event(2) + event(3))
    again = await cli(port, "feedback", "import", str(calls), "--batch", "1")
    assert (again.code, again.out.strip()) == (0, "4 events: 2 stored, 2 duplicates"), again.err


async def test_feedback_import_help_claims_no_check_of_the_whole_file() -> None:
    helped = await cli(dead_port(), "feedback", "import", "--help", columns=200)
    said = " ".join(helped.out.split())
    assert helped.code == 0 and "the whole file is checked first" not in said, said
    assert "A refused batch stops the import: the batches before it are stored" in said, said


FEEDBACK_OPTIONS = ["--thumbs-up-weight", "1", "--thumbs-down-weight", "1", "--feedback-label", "team=a",
                    "--feedback-label", "lang=en", "--feedback-adapter", "v1.0"]
SENT = {"thumbs_up_weight": 1.0, "thumbs_down_weight": 1.0, "labels": {"team": "a", "lang": "en"},
        "adapter_version": "v1.0"}


@pytest.mark.slow
async def test_feedback_dataset_options_reach_every_command(make_server, tmp_path: Path) -> None:
    port = (await make_server(embedded_worker=False)).app.port
    events = tmp_path / "events.jsonl"
    events.write_text(event(0, labels={"team": "a", "lang": "en"}, adapter_version="v1.0") + event(1))
    assert (await cli(port, "feedback", "import", str(events))).code == 0
    # the filters pick the one event labelled so on v1.0's answers (the server says so when it finds none)
    empty = await cli(port, "train", "--from-feedback", "7", "--feedback-label", "team=b", "--validate-only")
    assert empty.code == 9 and "team=b" in empty.err, empty.err
    checked = await cli(port, "--json", "train", "--from-feedback", "7", "--force", *FEEDBACK_OPTIONS,
                        "--validate-only")
    assert checked.code == 0, checked.out + checked.err
    feedback = checked.json_lines()[0]["spec"]["feedback"]
    assert {k: feedback.get(k) for k in SENT} == SENT, feedback
    human = await cli(port, "train", "--from-feedback", "7", "--force", *FEEDBACK_OPTIONS, "--validate-only")
    assert "feedback of the last 7 days: 1 examples" in human.out, human.out + human.err

    created = await cli(port, "--json", "pipelines", "create", "weekly", "--from-feedback", "7", "--cron",
                        "0 2 * * 1", *FEEDBACK_OPTIONS)
    assert created.code == 0, created.out + created.err
    feedback = json.loads((await cli(port, "--json", "pipelines", "get", "weekly")).out)["training"]["feedback"]
    assert {k: feedback.get(k) for k in SENT} == SENT, feedback

    # Their values are the server's to check (a weight: finite, at least 0), by each command that sends them.
    for command in (["datasets", "validate"], ["datasets", "create", "fb"], ["fisher"], ["train"]):
        bad = await cli(port, "--json", *command, "--from-feedback", "7", "--thumbs-down-weight", "-1",
                        "--feedback-label", "team=a")
        assert bad.code == 3, (command, bad.out + bad.err)
        fields = [v["field"] for v in json.loads(bad.out)["error"]["violations"]]
        assert any(f.endswith("feedback.thumbs_down_weight") or f == "thumbs_down_weight" for f in fields), fields
    unpaired = await cli(port, "datasets", "validate", "--from-feedback", "7", "--feedback-label", "team")
    assert unpaired.code == 2 and "--feedback-label" in unpaired.err, unpaired.err


@pytest.mark.parametrize("command", [
    [*TRAIN, "--thumbs-up-weight", "1"],
    ["train", "--dataset", "capitals", "--feedback-label", "team=a"],
    ["fisher", "--data", "capitals.jsonl", "--feedback-adapter", "v1.0"],
    ["datasets", "create", "x", "--server-path", "a.jsonl", "--thumbs-down-weight", "1"],
    ["datasets", "validate", "--server-path", "a.jsonl", "--feedback-label", "team=a"],
    ["pipelines", "create", "p", "--data", "a.jsonl", "--thumbs-up-weight", "1", "--feedback-adapter", "v1"],
])
def test_feedback_dataset_options_without_from_feedback_are_refused(command: list[str]) -> None:
    refused = CliRunner().invoke(app, ["--target", f"127.0.0.1:{dead_port()}", "--json", *command])
    assert refused.exit_code == 3, refused.output  # before any call: a dead server would be 14
    error = json.loads(refused.stdout)["error"]
    assert error["reason"] == "USAGE" and "to --from-feedback" in error["message"], error


@pytest.mark.parametrize("command", [
    ["drift", "report", "--days", value] for value in ("nan", "1e12", "0", "366.5")
] + [
    ["feedback", "stats", "--days", value] for value in ("inf", "1000000", "0", "3651")
])
def test_days_out_of_range_is_a_usage_error_not_a_traceback(command: list[str]) -> None:
    # in-process (refused before any call): a traceback would be an exception left in the result
    refused = CliRunner().invoke(app, ["--target", f"127.0.0.1:{dead_port()}", *command])
    assert refused.exit_code == 2 and "--days" in refused.stderr, (refused.exception, refused.stderr)


@pytest.mark.parametrize("command", [
    ["drift", "report", "--days", "366"], ["drift", "report", "--days", "0.5"], ["feedback", "stats", "--days", "3650"],
])
async def test_days_in_range_are_sent(command: list[str]) -> None:
    sent = await cli(dead_port(), "--timeout", "5", *command)
    assert sent.code == 14, sent.err  # UNAVAILABLE: it got as far as calling


def test_feedback_stats_window_before_the_year_1_is_a_usage_error() -> None:
    refused = CliRunner().invoke(app, ["--target", f"127.0.0.1:{dead_port()}", "feedback", "stats", "--days", "30",
                                       "--until", "0001-01-05"])
    assert refused.exit_code == 3 and "USAGE" in refused.stderr and "before the year 1" in refused.stderr, (
        refused.exception, refused.stderr)
