"""``learning-engine drift report`` against a live server: the human report, --json, and a bad window."""

from __future__ import annotations

import json

import pytest

from tests.cli.test_cli_e2e import cli
from tests.server.conftest import TINY


@pytest.mark.slow
async def test_drift_report_command(make_server) -> None:
    port = (await make_server(embedded_worker=False)).app.port
    human = await cli(port, "drift", "report", "--days", "7")
    assert human.code == 0, human.err
    assert human.out.startswith(f"{TINY}: no reference (") and "serves alone" in human.out, human.out
    assert "0 interactions in the window" in human.out and "negative rate" in human.out
    report = json.loads((await cli(port, "--json", "drift", "report", "--until", "2026-01-02")).out)
    assert report["outcome"] == "DRIFT_OUTCOME_NO_REFERENCE" and report["base_model"] == TINY
    assert (report["window_start_time"], report["window_end_time"]) == ("2025-12-03T00:00:00Z", "2026-01-02T00:00:00Z")
    assert len(report["negative_rate"]) == 10
    bad = await cli(port, "drift", "report", "--days", "-1")  # refused before calling, as any option out of range
    assert bad.code == 2 and "--days" in bad.err and "more than 0" in bad.err, bad.err
    unknown = await cli(port, "--json", "drift", "report", "--base-model", "nope")
    assert unknown.code == 5 and json.loads(unknown.out)["error"]["reason"] == "BASE_MODEL_NOT_FOUND"


@pytest.mark.slow
async def test_no_reference_names_the_version_not_a_count_of_nothing(make_server, data_dir) -> None:
    """An active version whose training file is gone: the report said "trained on 0 prompts" (it was trained on 24)
    above a note telling the user to name a Fisher snapshot or disable EWC (a training job's remedy)."""
    from tests.server.lora_helpers import activate, train

    server = await make_server()
    version = await train(server, epochs=1)
    await activate(server, version)
    (data_dir / "datasets" / "capitals.jsonl").unlink()  # cleaned up after training
    shown = await cli(server.app.port, "drift", "report")
    assert shown.code == 0, shown.err
    lines = shown.out.splitlines()
    assert lines[0].startswith(f"{TINY}: no reference (") and lines[1] == f"reference: {version}", shown.out
    assert f"the training data of the active version {version} is not known here" in shown.out, shown.out
    assert "trained on 0" not in shown.out and "EWC" not in shown.out, shown.out
