"""What walking docs/pipelines.md with the CLI found, held in place:

1. ``pipelines update NAME`` changes a pipeline in place (its runs stay), sending only the fields its options name
   in the update mask; the training template and the canary policy change as they stand (read first, and sent with
   the etag read, or ``--etag``'s), a trigger option replaces the triggers of its kind;
2. ``--base-model``, ``--drift-threshold`` and the canary's error options reach the pipeline;
3. ``pipelines get-run RUN`` shows a run's stages, rollout and error, and ``pipelines runs`` a failed run's error
   in short;
4. an integer out of its field's range is a usage error (exit 2), never a traceback;
5. ``--canary-*`` without ``--rollout canary`` and ``--tz`` without ``--cron`` are refused (exit 3, USAGE) rather
   than stored unused or dropped;
6. ``pipelines create --disabled`` says its triggers are off.

The in-process tests put a fake client behind the CLI to see the very request it sends.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import duration_pb2
from typer.testing import CliRunner

from learning.v1 import common_pb2 as common
from learning.v1 import lora_control_pb2 as lora
from learning.v1 import pipeline_pb2 as pp
from learning.v1 import training_pb2 as training
from learning_engine.cli import app
from learning_engine.cli.common import Options
from tests.cli.test_cli_e2e import cli
from tests.cli.test_cli_feedback_drift_fixes import dead_port, event

# ---- the request the CLI sends (a fake client behind it) ------------------------------------------------------


class FakeClient:
    """Answers get_pipeline with ``current`` and records what create_pipeline and update_pipeline are sent."""

    def __init__(self, current: pp.Pipeline) -> None:
        self.current = current
        self.reads: list[str] = []
        self.sent: list[tuple[pp.Pipeline, list[str]]] = []

    async def __aenter__(self) -> FakeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def get_pipeline(self, name: str) -> pp.Pipeline:
        self.reads.append(name)
        return pp.Pipeline.FromString(self.current.SerializeToString())

    async def update_pipeline(self, pipeline: pp.Pipeline, update_mask: Any) -> pp.Pipeline:
        self.sent.append((pipeline, list(update_mask)))
        done = pp.Pipeline.FromString(self.current.SerializeToString())
        for path in update_mask:
            done.ClearField(path)
            field = getattr(pipeline, path)
            if isinstance(field, bool | str):
                setattr(done, path, field)
            elif hasattr(field, "CopyFrom"):
                getattr(done, path).CopyFrom(field)
            else:
                getattr(done, path).extend(field)
        return done

    async def create_pipeline(self, pipeline_id: str, pipeline: pp.Pipeline) -> pp.Pipeline:
        self.sent.append((pipeline, []))
        made = pp.Pipeline.FromString(pipeline.SerializeToString())
        made.name = f"pipelines/{pipeline_id}"
        return made


def current_pipeline() -> pp.Pipeline:
    """A pipeline trained on a week of feedback with filters, on a schedule and a negative count, as a canary."""
    spec = training.TrainingJobSpec(
        feedback=common.FeedbackDataset(days=7, min_samples=100, labels={"team": "a"}, adapter_version="v1.0",
                                        thumbs_up_weight=1.5),
        hyperparameters=training.Hyperparameters(epochs=3, learning_rate=1e-4))
    spec.ewc.replay_fraction = 0.2
    return pp.Pipeline(
        name="pipelines/taught", base_model="tiny", training=spec, suite_paths=["golden.jsonl"],
        rollout=pp.RolloutPolicy(mode=pp.ROLLOUT_MODE_CANARY, canary=lora.CanaryPolicy(
            share=0.5, min_requests=20, max_duration=duration_pb2.Duration(seconds=86400))),
        triggers=[pp.PipelineTrigger(cron=pp.CronTrigger(expression="0 2 * * 1", time_zone="Europe/Paris")),
                  pp.PipelineTrigger(feedback=pp.FeedbackCountTrigger(count=100, negative_only=True))],
        enabled=True, description="weekly", etag="etag-1")


def invoke(monkeypatch: pytest.MonkeyPatch, *args: str,
           current: pp.Pipeline | None = None) -> tuple[Any, FakeClient]:
    fake = FakeClient(current if current is not None else current_pipeline())
    monkeypatch.setattr(Options, "client", lambda self: fake)
    result = CliRunner().invoke(app, ["--json", "pipelines", *args])
    return result, fake


def test_update_sends_only_what_its_options_name(monkeypatch: pytest.MonkeyPatch) -> None:
    result, fake = invoke(monkeypatch, "update", "taught", "--description", "nightly", "--disabled")
    assert result.exit_code == 0, result.output
    ((sent, mask),) = fake.sent
    assert sorted(mask) == ["description", "enabled"]
    assert sent.name == "pipelines/taught" and not sent.etag  # nothing merged: no read, no etag of one
    assert not sent.HasField("training") and not sent.HasField("rollout") and not sent.triggers, sent
    assert fake.reads == []
    assert json.loads(result.stdout)["description"] == "nightly"


def test_update_changes_the_training_template_as_it_stands(monkeypatch: pytest.MonkeyPatch) -> None:
    # the walk's case: feedback-triggered runs skipped "lower min_samples or set force"
    result, fake = invoke(monkeypatch, "update", "taught", "--min-samples", "5", "--force")
    assert result.exit_code == 0, result.output
    ((sent, mask),) = fake.sent
    assert mask == ["training"] and sent.etag == "etag-1", (mask, sent.etag)  # merged: sent with the etag read
    expected = current_pipeline().training
    expected.feedback.min_samples, expected.feedback.force = 5, True
    assert sent.training == expected, sent.training  # the source, its filters, epochs and replay kept
    assert not sent.triggers and not sent.HasField("rollout") and not sent.description

    result, fake = invoke(monkeypatch, "update", "taught", "--epochs", "2", "--etag", "etag-0")
    assert result.exit_code == 0, result.output
    ((sent, mask),) = fake.sent
    assert (mask, sent.etag, sent.training.hyperparameters.epochs) == (["training"], "etag-0", 2)
    assert sent.training.feedback == current_pipeline().training.feedback

    result, fake = invoke(monkeypatch, "update", "taught", "--data", "capitals.jsonl")
    ((sent, mask),) = fake.sent
    assert sent.training.WhichOneof("dataset") == "jsonl" and sent.training.jsonl.path == "capitals.jsonl"
    # a feedback option on a pipeline whose source is not feedback is refused, as on create
    file_fed = current_pipeline()
    file_fed.training.jsonl.path = "capitals.jsonl"
    result, fake = invoke(monkeypatch, "update", "taught", "--force", current=file_fed)
    assert result.exit_code == 3 and fake.sent == [], result.output
    assert "--force applies to --from-feedback" in json.loads(result.stdout)["error"]["message"]


def test_update_replaces_or_drops_the_feedback_filters(monkeypatch: pytest.MonkeyPatch) -> None:
    result, fake = invoke(monkeypatch, "update", "taught", "--feedback-label", "team=b", "--feedback-label", "tier=1")
    assert result.exit_code == 0, result.output
    ((sent, _),) = fake.sent
    assert dict(sent.training.feedback.labels) == {"team": "b", "tier": "1"}  # replaced, not merged
    assert sent.training.feedback.adapter_version == "v1.0"

    result, fake = invoke(monkeypatch, "update", "taught", "--feedback-label", "", "--feedback-adapter", "")
    assert result.exit_code == 0, result.output
    ((sent, mask),) = fake.sent
    assert mask == ["training"] and dict(sent.training.feedback.labels) == {}, sent.training.feedback
    assert sent.training.feedback.adapter_version == "" and sent.training.feedback.days == 7


def test_update_replaces_the_triggers_of_the_kinds_given(monkeypatch: pytest.MonkeyPatch) -> None:
    result, fake = invoke(monkeypatch, "update", "taught", "--on-negative", "3", "--on-drift", "--drift-threshold",
                          "0.4")
    assert result.exit_code == 0, result.output
    ((sent, mask),) = fake.sent
    assert mask == ["triggers"]
    assert list(sent.triggers) == [
        current_pipeline().triggers[0],  # the schedule stays
        pp.PipelineTrigger(feedback=pp.FeedbackCountTrigger(count=3, negative_only=True)),
        pp.PipelineTrigger(drift=pp.DriftTrigger(threshold=0.4))]
    result, fake = invoke(monkeypatch, "update", "taught", "--cron", "0 3 * * *")  # its time zone stays
    assert fake.sent[0][0].triggers[-1].cron == pp.CronTrigger(expression="0 3 * * *", time_zone="Europe/Paris")
    result, fake = invoke(monkeypatch, "update", "taught", "--cron", "", "--on-negative", "0")
    assert result.exit_code == 0 and list(fake.sent[0][0].triggers) == [], result.output


def test_update_changes_the_canary_policy_as_it_stands(monkeypatch: pytest.MonkeyPatch) -> None:
    result, fake = invoke(monkeypatch, "update", "taught", "--canary-error-spike", "0.3", "--canary-max-duration",
                          "0")
    assert result.exit_code == 0, result.output
    ((sent, mask),) = fake.sent
    assert mask == ["rollout"] and sent.rollout.mode == pp.ROLLOUT_MODE_CANARY
    assert sent.rollout.canary == lora.CanaryPolicy(share=0.5, min_requests=20, error_spike=0.3,
                                                    max_duration=duration_pb2.Duration(seconds=0))
    assert sent.rollout.canary.HasField("max_duration")  # 0: no limit, sent as such
    # a pipeline that activates has no canary to change
    activating = current_pipeline()
    activating.rollout.mode = pp.ROLLOUT_MODE_ACTIVATE
    result, fake = invoke(monkeypatch, "update", "taught", "--canary-share", "0.2", current=activating)
    assert result.exit_code == 3 and fake.sent == [], result.output
    assert "--canary-share applies to --rollout canary" in json.loads(result.stdout)["error"]["message"]
    result, fake = invoke(monkeypatch, "update", "taught", "--rollout", "canary", "--canary-share", "0.2",
                          current=activating)
    assert result.exit_code == 0 and fake.sent[0][0].rollout.canary.share == 0.2, result.output


def test_create_sends_the_base_model_drift_threshold_and_canary_error_options(monkeypatch: pytest.MonkeyPatch
                                                                             ) -> None:
    result, fake = invoke(monkeypatch, "create", "careful", "--data", "capitals.jsonl", "--base-model", "tiny",
                          "--on-drift", "--drift-threshold", "0.25", "--rollout", "canary", "--canary-error-margin",
                          "0.02", "--canary-error-spike", "0.4", "--canary-error-spike-min-requests", "5")
    assert result.exit_code == 0, result.output
    ((sent, _),) = fake.sent
    assert sent.base_model == "tiny"
    assert list(sent.triggers) == [pp.PipelineTrigger(drift=pp.DriftTrigger(threshold=0.25))]
    assert sent.rollout == pp.RolloutPolicy(mode=pp.ROLLOUT_MODE_CANARY, canary=lora.CanaryPolicy(
        error_margin=0.02, error_spike=0.4, error_spike_min_requests=5))


def test_create_disabled_says_its_triggers_are_off(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeClient(pp.Pipeline())
    monkeypatch.setattr(Options, "client", lambda self: fake)
    said = CliRunner().invoke(app, ["pipelines", "create", "taught", "--data", "capitals.jsonl", "--on-negative", "3",
                                    "--disabled"])
    assert said.exit_code == 0, said.output
    assert said.stdout.strip() == ("created pipelines/taught: 3 negative feedback events; disabled: its triggers do "
                                   "not fire until `pipelines enable taught`"), said.stdout
    enabled = CliRunner().invoke(app, ["pipelines", "create", "taught", "--data", "capitals.jsonl", "--on-negative",
                                       "3"])
    assert enabled.stdout.strip() == "created pipelines/taught: 3 negative feedback events", enabled.stdout


# ---- usage errors, before any call (a dead server would be exit 14) -------------------------------------------


@pytest.mark.parametrize("command", [
    ["pipelines", "create", "x", "--data", "a.jsonl", "--on-negative", "-1"],
    ["pipelines", "create", "x", "--data", "a.jsonl", "--on-feedback", "-5"],
    ["pipelines", "create", "x", "--data", "a.jsonl", "--epochs", "-1"],
    ["pipelines", "create", "x", "--from-feedback", "-1"],
    ["pipelines", "create", "x", "--data", "a.jsonl", "--on-negative", "5000000000"],
    ["pipelines", "create", "x", "--data", "a.jsonl", "--on-negative", "1000001"],
    ["pipelines", "create", "x", "--data", "a.jsonl", "--epochs", "1001"],
    ["pipelines", "create", "x", "--from-feedback", "3651"],
    ["pipelines", "create", "x", "--from-feedback", "7", "--min-samples", "5000000000"],
    ["pipelines", "create", "x", "--data", "a.jsonl", "--rollout", "canary", "--canary-min-requests", "-1"],
    ["pipelines", "create", "x", "--data", "a.jsonl", "--rollout", "canary", "--canary-error-spike-min-requests",
     "0"],
    ["pipelines", "create", "x", "--data", "a.jsonl", "--on-drift", "--drift-threshold", "-1"],
    ["pipelines", "update", "x", "--on-negative", "-1"],
    ["pipelines", "update", "x", "--epochs", "-1"],
    ["pipelines", "update", "x", "--min-samples", "0"],
    ["pipelines", "runs", "P", "--page-size", "-1"],
    ["pipelines", "list", "--page-size", "-1"],
    ["pipelines", "list", "--page-size", "5000000000"],
    ["pipelines", "watch", "RUN", "--after", "-3"],
    ["pipelines", "watch", "RUN", "--after", str(2**64)],
], ids=" ".join)
def test_integers_out_of_range_are_usage_errors_not_tracebacks(command: list[str]) -> None:
    # in-process (refused before any call): a traceback would be an exception left in the result
    refused = CliRunner().invoke(app, ["--target", f"127.0.0.1:{dead_port()}", *command])
    assert refused.exit_code == 2 and "Invalid value" in refused.stderr, (refused.exception, refused.stderr)


@pytest.mark.parametrize("command", [
    ["pipelines", "create", "x", "--data", "a.jsonl", "--on-negative", "1000000", "--epochs", "1000"],
    ["pipelines", "create", "x", "--from-feedback", "3650", "--min-samples", str(2**32 - 1)],
    ["pipelines", "list", "--page-size", "1000"],
    ["pipelines", "runs", "P", "--page-size", "0"],
], ids=" ".join)
async def test_integers_at_their_bounds_are_sent(command: list[str]) -> None:
    sent = await cli(dead_port(), "--timeout", "5", *command)
    assert sent.code == 14, sent.err  # UNAVAILABLE: it got as far as calling


@pytest.mark.parametrize(("command", "flag", "needs"), [
    (["create", "cz", "--data", "a.jsonl", "--canary-share", "0.5"], "--canary-share", "--rollout canary"),
    (["create", "cz", "--data", "a.jsonl", "--rollout", "activate", "--canary-error-spike", "0.3"],
     "--canary-error-spike", "--rollout canary"),
    (["create", "cz", "--data", "a.jsonl", "--rollout", "none", "--canary-duration", "1h"], "--canary-duration",
     "--rollout canary"),
    (["create", "cz", "--data", "a.jsonl", "--tz", "Asia/Tokyo"], "--tz", "--cron"),
    (["create", "cz", "--data", "a.jsonl", "--cron", "", "--tz", "Asia/Tokyo"], "--tz", "--cron"),
    (["create", "cz", "--data", "a.jsonl", "--drift-threshold", "0.3"], "--drift-threshold", "--on-drift"),
    (["update", "cz", "--tz", "Asia/Tokyo"], "--tz", "--cron"),
    (["update", "cz", "--rollout", "activate", "--canary-share", "0.5"], "--canary-share", "--rollout canary"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_options_that_would_be_ignored_are_refused(command: list[str], flag: str, needs: str) -> None:
    refused = CliRunner().invoke(app, ["--target", f"127.0.0.1:{dead_port()}", "--json", "pipelines", *command])
    assert refused.exit_code == 3, refused.output  # before any call: a dead server would be 14
    error = json.loads(refused.stdout)["error"]
    assert error["reason"] == "USAGE" and f"{flag} applies to {needs}" in error["message"], error


async def test_update_without_a_change_is_a_usage_error() -> None:
    refused = await cli(dead_port(), "pipelines", "update", "taught")
    assert refused.code == 3 and "USAGE" in refused.err and "name what to change" in refused.err, refused.err
    base = await cli(dead_port(), "pipelines", "update", "taught", "--base-model", "other")
    assert base.code == 2 and "--base-model" in base.err, base.err  # the base model never changes


# ---- against a server: the walk's story ---------------------------------------------------------------------


@pytest.mark.slow
async def test_a_skipped_pipeline_is_fixed_in_place_and_its_failed_run_shows_why(make_server,
                                                                                 tmp_path: Path) -> None:
    port = (await make_server()).app.port
    events = tmp_path / "events.jsonl"
    events.write_text("".join(event(i) for i in range(3)))
    assert (await cli(port, "feedback", "import", str(events))).code == 0
    made = await cli(port, "pipelines", "create", "taught", "--from-feedback", "7", "--epochs", "1", "--on-negative",
                     "3", "--on-drift", "--drift-threshold", "0.3", "--description", "the walk", "--disabled")
    assert made.code == 0, made.err
    assert made.out.strip() == ("created pipelines/taught: 3 negative feedback events, drift >= 0.3; disabled: its "
                                "triggers do not fire until `pipelines enable taught`"), made.out
    unknown = await cli(port, "pipelines", "create", "other", "--data", "capitals.jsonl", "--base-model", "nope/none")
    assert unknown.code == 9 and "nope/none" in unknown.err, unknown.err  # --base-model is sent

    failed = await cli(port, "pipelines", "run", "taught", "--watch")
    assert failed.code == 9, failed.out + failed.err  # 3 examples, below the minimum of 100
    listed = await cli(port, "pipelines", "runs", "taught")
    row = listed.out.splitlines()[1]
    assert "FEEDBACK_DATASET_TOO_SMALL: " in row and "…" in row, listed.out  # the error, in short
    run = json.loads((await cli(port, "--json", "pipelines", "runs", "taught")).out)["runs"][0]["name"]
    shown = await cli(port, "pipelines", "get-run", run.removeprefix("pipelineRuns/"))
    assert shown.code == 0, shown.err
    assert shown.out.startswith(f"{run} failed: pipelines/taught, manual"), shown.out
    assert any(line.split()[:2] == ["dataset", "failed"] for line in shown.out.splitlines()), shown.out
    error = next(line for line in shown.out.splitlines() if line.startswith("error: "))
    assert error.startswith("error: FAILED_PRECONDITION (FEEDBACK_DATASET_TOO_SMALL): ") and \
        "lower min_samples or set force" in error, error
    as_json = json.loads((await cli(port, "--json", "pipelines", "get-run", run)).out)
    assert as_json["stages"][0]["state"] == "STAGE_STATE_FAILED" and as_json["error"]["code"] == 9, as_json

    before = json.loads((await cli(port, "--json", "pipelines", "get", "taught")).out)
    stale = await cli(port, "pipelines", "update", "taught", "--min-samples", "3", "--etag", "not-the-etag")
    assert stale.code == 10 and "ABORTED" in stale.err, stale.err
    fixed = await cli(port, "pipelines", "update", "taught", "--min-samples", "3", "--etag", before["etag"])
    assert fixed.code == 0, fixed.err
    assert fixed.out.startswith("updated pipelines/taught (training): 3 negative feedback events"), fixed.out
    after = json.loads((await cli(port, "--json", "pipelines", "get", "taught")).out)
    assert after["training"]["feedback"]["min_samples"] == 3 and after["training"]["feedback"]["days"] == 7
    assert after["training"]["hyperparameters"]["epochs"] == 1, after["training"]
    for kept in ("triggers", "rollout", "description", "enabled", "create_time", "base_model"):
        assert after[kept] == before[kept], kept
    assert after["etag"] != before["etag"]
    runs = json.loads((await cli(port, "--json", "pipelines", "runs", "taught")).out)["runs"]
    assert [r["name"] for r in runs] == [run]  # the pipeline and its runs stay

    again = await cli(port, "pipelines", "run", "taught", "--watch")
    assert again.code == 0, again.out + again.err
    assert again.out.splitlines()[-1].endswith("v1.0 activated"), again.out
