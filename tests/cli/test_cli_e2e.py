"""The installed ``learning-engine`` command against a live server: train --watch, deploy, rollback, exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.training.models import select_device
from engine.training.spec import Precision
from learning.v1 import common_pb2, fisher_pb2, fisher_pb2_grpc
from server import access
from server.settings import AuthToken

CLI = Path(sys.executable).with_name("learning-engine")
TRAIN = [
    "train",
    "--data",
    "capitals.jsonl",
    "--epochs",
    "2",
    "--batch-size",
    "4",
    "--lr",
    "5e-3",
    "--max-seq-length",
    "128",
    "--seed",
    "7",
]


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]


async def cli(port: int, *args: str, token: str | None = None, columns: int = 120) -> Result:
    env = {**os.environ, "LEARNING_ENGINE_TARGET": f"127.0.0.1:{port}", "COLUMNS": str(columns)}
    env.pop("LEARNING_ENGINE_TOKEN", None)
    if token:
        env["LEARNING_ENGINE_TOKEN"] = token
    proc = await asyncio.create_subprocess_exec(
        str(CLI), *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    return Result(proc.returncode, out.decode(), err.decode())


@pytest.mark.slow
async def test_train_watch_deploy_rollback(make_server):
    server = await make_server(metrics_port=0)
    port = server.app.port

    health = await cli(port, "health")
    assert health.code == 0, health.err
    assert "learning.v1.TrainingService" in health.out and "SERVING" in health.out

    watched = await cli(port, *TRAIN, "--watch")
    assert watched.code == 0, watched.err
    assert "SUCCEEDED -> adapter v1.0" in watched.out
    assert "loss" in watched.err and "tok/s" in watched.err and "ETA" in watched.err  # the progress bar
    assert f"RUNNING: training on {select_device(Precision.AUTO).device}" in watched.err

    scripted = await cli(port, "--json", *TRAIN, "--major", "--watch")
    assert scripted.code == 0, scripted.err
    lines = scripted.json_lines()
    assert "snapshot" in lines[0]
    events = [line["event"] for line in lines if "event" in line]
    assert [int(e["sequence"]) for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["state_change"]["state"] == "JOB_STATE_SUCCEEDED"
    steps = [e["step_metrics"] for e in events if "step_metrics" in e]
    assert len(steps) == 12 and all(s["tokens_per_second"] > 0 for s in steps)

    listed = await cli(port, "--json", "adapters", "list")
    assert listed.code == 0, listed.err
    assert sorted(a["version"] for a in listed.json_lines()[0]["adapters"]) == ["v1.0", "v2.0"]

    first = await cli(port, "--json", "deploy", "v1.0", "--reason", "first rollout")
    assert first.code == 0, first.out + first.err
    second = await cli(port, "--json", "deploy", "v2.0", "--reason", "new major")
    assert second.code == 0, second.out + second.err
    assert second.json_lines()[0]["status"]["active_version"] == "v2.0"
    back = await cli(port, "--json", "rollback", "--reason", "cli test")
    assert back.code == 0, back.out + back.err
    status = await cli(port, "--json", "status")
    assert status.json_lines()[0]["active_version"] == "v1.0"
    human = await cli(port, "status")
    assert "v1.0" in human.out and "gateway" in human.out  # where to send requests (GetLoraStatus.gateway_url)
    refused = await cli(port, "deploy", "v9.9", "--reason", "no such version")
    assert refused.code == 5, refused.err
    told = (await cli(port, "status")).out
    assert "ACTIVATE v9.9" in told and "(failed: " in told, told  # it read as if it had been done
    first = await cli(port, "adapters", "list", "--page-size", "1")  # a page, and how to ask for the next
    token = first.err.split("more: --page-token ", 1)[1].split()[0]
    rest = await cli(port, "--json", "adapters", "list", "--page-size", "1", "--page-token", token)
    assert rest.code == 0 and len(rest.json_lines()[0]["adapters"]) == 1, rest

    missing = await cli(port, "--json", "jobs", "get", "trainingJobs/" + "0" * 32)
    assert missing.code == 5  # NOT_FOUND
    assert missing.json_lines()[0]["error"]["reason"] == "JOB_NOT_FOUND"
    bad = await cli(port, "train", "--data", "../etc/passwd")
    assert bad.code == 3 and "DATASET_PATH_OUTSIDE_ROOT" in bad.err  # INVALID_ARGUMENT

    continued = await cli(port, "--json", *TRAIN, "--parent", "v1.0", "--fisher-space", "lora_product",
                          "--ewc-gamma", "0.8", "--replay-fraction", "0.25", "--validate-only")
    assert continued.code == 0, continued.out + continued.err
    ewc = continued.json_lines()[0]["spec"]["ewc"]
    assert ewc["fisher_space"] == "FISHER_SPACE_LORA_PRODUCT" and ewc["replay_fraction"] == 0.25
    assert ewc["gamma"] == 0.8 and ewc["ewc_lambda"] == 0.3  # the product space's default lambda, filled in
    unknown = await cli(port, *TRAIN, "--parent", "v1.0", "--fisher-space", "weights")
    assert unknown.code == 2 and "lora_parameters | lora_product" in unknown.err  # refused before any call
    protected = await cli(port, "--json", *TRAIN, "--base-protection", "base_kl", "--base-kl-weight", "4",
                          "--base-prompt-kl-weight", "0.5", "--validate-only")
    assert protected.code == 0, protected.out + protected.err
    kept = protected.json_lines()[0]["spec"]["base_protection"]
    assert kept == {"method": "BASE_PROTECTION_METHOD_BASE_KL", "fraction": 0.3, "kl_weight": 4.0,
                    "ewc_lambda": 64.0, "prompt_kl_weight": 0.5}, kept  # fraction and lambda: the server's defaults
    held = await cli(port, "--json", *TRAIN, "--base-protection", "ewc_base", "--base-ewc-lambda", "2",
                     "--validate-only")
    assert held.code == 0, held.out + held.err
    held_spec = held.json_lines()[0]["spec"]["base_protection"]
    assert (held_spec["method"], held_spec["ewc_lambda"]) == ("BASE_PROTECTION_METHOD_EWC_BASE", 2.0), held_spec
    too_much = await cli(port, *TRAIN, "--base-protection", "self_rehearsal", "--base-fraction", "0.95")
    assert too_much.code == 3 and "spec.base_protection.fraction" in too_much.err, too_much.err
    nameless = await cli(port, *TRAIN, "--base-protection", "forget_nothing")
    assert nameless.code == 2 and all(m in nameless.err for m in ("none |", "self_rehearsal", "base_kl", "ewc_base")), \
        nameless.err  # (the error box wraps the list where the terminal's width says)
    products = await cli(port, "fisher", "--data", "capitals.jsonl", "--adapter-version", "v1.0",
                         "--space", "lora_product", "--samples", "4", "--watch")
    assert products.code == 0, products.out + products.err
    assert " SUCCEEDED fisherSnapshots/" in products.out
    name = products.out.split()[-1]
    stub = fisher_pb2_grpc.FisherServiceStub(server.channel)
    snapshot = (await stub.GetFisherSnapshot(fisher_pb2.GetFisherSnapshotRequest(name=name))).fisher_snapshot
    assert snapshot.space == common_pb2.FISHER_SPACE_LORA_PRODUCT and snapshot.sample_count == 4
    listed = await cli(port, "snapshots", "list", "--adapter-version", "v1.0")
    assert listed.code == 0 and name in listed.out and "lora_product" in listed.out, listed.out + listed.err
    info = await cli(port, "--json", "snapshots", "info", name)
    assert info.code == 0 and info.json_lines()[0]["space"] == "FISHER_SPACE_LORA_PRODUCT"
    assert (await cli(port, "snapshots", "delete", name)).code == 0
    gone = await cli(port, "--json", "snapshots", "info", name)
    assert gone.code == 5 and gone.json_lines()[0]["error"]["reason"] == "FISHER_SNAPSHOT_NOT_FOUND"
    zero = await cli(port, "--json", "fisher", "--data", "capitals.jsonl", "--adapter-version", "v1.0",
                     "--samples", "0")
    assert zero.code == 3 and "must be at least 1" in zero.out  # an explicit 0 is not the default
    no_feedback = await cli(port, "--json", "fisher", "--from-feedback", "7", "--adapter-version", "v1.0")
    assert no_feedback.code == 9  # FAILED_PRECONDITION: this server has collected no feedback
    assert no_feedback.json_lines()[0]["error"]["reason"] == "FEEDBACK_DATASET_EMPTY"

    metrics = await cli(port, "--json", "metrics", "--url", f"http://127.0.0.1:{server.app.metrics.port}/metrics")
    assert metrics.code == 0, metrics.err
    samples = metrics.json_lines()[0]["samples"]
    assert any(s["name"] == "learning_engine_active_adapter" and s["labels"]["version"] == "v1.0" for s in samples)
    assert any(s["name"] == "learning_engine_adapter_swap_seconds_count" for s in samples)


@pytest.mark.slow
async def test_exit_codes_follow_the_grpc_status(make_server):
    token = "trainer-token-cli-test-0123456789"
    server = await make_server(auth_tokens=(AuthToken(name="t", role="trainer", sha256=access.hash_token(token)),))
    port = server.app.port
    assert (await cli(port, "jobs", "list")).code == 16  # UNAUTHENTICATED
    assert (await cli(port, "jobs", "list", token="wrong")).code == 16
    denied = await cli(port, "deploy", "v1.0", token=token)
    assert denied.code == 7 and "operator" in denied.err  # PERMISSION_DENIED
    assert (await cli(port, "jobs", "list", token=token)).code == 0
    assert (await cli(port + 1 if port < 65535 else 1, "--timeout", "2", "health")).code == 14  # UNAVAILABLE
    made = await cli(port, "--json", "hash-token", "--name", "ci", "--role", "reader")
    entry = made.json_lines()[0]
    assert entry["auth_token"]["sha256"] == access.hash_token(entry["token"])
