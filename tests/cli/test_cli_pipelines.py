"""``learning-engine pipelines`` against a live server: create with triggers, run and watch to the end (its exit
code the run's outcome), the runs and decisions listed, disable, and a bad cron expression."""

from __future__ import annotations

import json

import pytest

from tests.cli.test_cli_e2e import cli


@pytest.mark.slow
async def test_pipelines_commands(make_server) -> None:
    port = (await make_server()).app.port
    made = await cli(port, "pipelines", "create", "nightly", "--data", "capitals.jsonl", "--epochs", "1",
                     "--cron", "0 3 * * *", "--tz", "Europe/Paris", "--on-negative", "20")
    assert made.code == 0, made.err
    assert made.out.strip() == ("created pipelines/nightly: cron '0 3 * * *' Europe/Paris, "
                                "20 negative feedback events"), made.out
    listed = json.loads((await cli(port, "--json", "pipelines", "list")).out)
    assert [p["name"] for p in listed["pipelines"]] == ["pipelines/nightly"]

    ran = await cli(port, "pipelines", "run", "nightly", "--reason", "first", "--watch")
    assert ran.code == 0, ran.err
    lines = ran.out.splitlines()
    assert lines[:2] == ["dataset: started", "dataset: skipped: capitals.jsonl is read by the training job, which "
                                             "records its digest"], lines
    assert lines[-1].endswith(": v1.0 activated") and "evaluate: skipped" in ran.out, ran.out
    runs = json.loads((await cli(port, "--json", "pipelines", "runs", "nightly")).out)["runs"]
    assert [(r["state"], r["version"], r["reason"]) for r in runs] == [("JOB_STATE_SUCCEEDED", "v1.0", "first")]
    decisions = json.loads((await cli(port, "--json", "pipelines", "decisions", "nightly")).out)["decisions"]
    assert [(d["kind"], d["fired"]) for d in decisions] == [("TRIGGER_KIND_MANUAL", True)]

    off = await cli(port, "pipelines", "disable", "pipelines/nightly")
    assert (off.code, off.out.strip()) == (0, "pipelines/nightly disabled"), off.err
    bad = await cli(port, "pipelines", "create", "broken", "--data", "capitals.jsonl", "--cron", "every day")
    assert bad.code == 3 and "INVALID_CRON" in bad.err and "pipeline.triggers[0].cron.expression" in bad.err, bad.err
    usage = await cli(port, "pipelines", "create", "two", "--data", "a.jsonl", "--dataset", "b")
    assert usage.code == 3 and "exactly one of" in usage.err

    # a canary rollout with its policy from the options (the rest the server's defaults), as `canary start` takes it
    careful = await cli(port, "--json", "pipelines", "create", "careful", "--data", "capitals.jsonl", "--rollout",
                        "canary", "--base-protection", "base_kl", "--canary-share", "0.25", "--canary-min-requests",
                        "40", "--canary-min-feedback", "8", "--canary-max-duration", "2h", "--canary-check-interval",
                        "30s")
    assert careful.code == 0, careful.err
    assert json.loads(careful.out)["training"]["base_protection"]["method"] == "BASE_PROTECTION_METHOD_BASE_KL"
    policy = json.loads(careful.out)["rollout"]["canary"]
    given = {k: policy[k] for k in ("share", "min_requests", "min_feedback", "max_duration", "check_interval")}
    assert given == {"share": 0.25, "min_requests": "40", "min_feedback": "8", "max_duration": "7200s",
                     "check_interval": "30s"}, policy
    assert (policy["feedback_margin"], policy["error_spike"]) == (0.05, 0.5)  # left out: the server's defaults
    late = await cli(port, "pipelines", "create", "late", "--data", "capitals.jsonl", "--rollout", "canary",
                     "--canary-duration", "soon")
    assert late.code == 2 and "Invalid value for --canary-duration" in late.err, late.err  # a usage error
