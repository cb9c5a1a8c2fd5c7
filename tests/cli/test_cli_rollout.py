"""``learning-engine traffic split`` and ``canary start|status|abort`` against a live server, on two imported
adapters (no training): a manual split set and ended, a refused canary, one promoted (``--wait``) and one aborted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.test_cli_e2e import cli
from tests.fixtures.peft_adapters import build_peft_adapter
from tests.server.conftest import TINY


@pytest.fixture(scope="module")
def adapters(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("rollout-cli")
    return [build_peft_adapter(tiny_model_dir, root / f"run{seed}", seed=seed) for seed in (3, 4)]


@pytest.mark.slow
async def test_traffic_split_and_canary_commands(make_server, adapters: list[Path]) -> None:
    port = (await make_server()).app.port
    for adapter, version in zip(adapters, ("v1.0", "v2.0"), strict=True):
        imported = await cli(port, "adapters", "import", str(adapter))
        assert imported.out.strip() == f"imported {TINY} {version}", imported.err
    assert (await cli(port, "deploy", "v1.0", "--known-good")).code == 0

    split = await cli(port, "--actor", "alice@example.com", "traffic", "split", "v2.0", "--share", "0.3", "--reason",
                      "A/B")
    assert split.code == 0, split.err
    assert split.out.startswith("manual split: 30.0% of 'active' to v2.0, the rest to v1.0; since ")
    assert "candidate" in split.out and "mean latency" in split.out
    shown = json.loads((await cli(port, "--json", "canary", "status")).out)
    assert shown["traffic_split"]["kind"] == "TRAFFIC_SPLIT_KIND_MANUAL" and shown["traffic_split"]["share"] == 0.3
    assert shown["traffic_split"]["actor"] == "alice@example.com"  # --actor: who asked, with no auth on
    refused = await cli(port, "canary", "start", "v2.0")
    assert refused.code == 9 and "TRAFFIC_SPLIT_RUNNING" in refused.err
    ended = await cli(port, "traffic", "split", "--share", "0")
    assert ended.code == 0 and ended.out.strip() == "no traffic split: 'active' serves v1.0", ended.out

    bad = await cli(port, "canary", "start", "v2.0", "--share", "1.5", "--check-interval", "soon")
    assert bad.code == 2 and "--check-interval" in bad.err  # the CLI's own usage error
    bad = await cli(port, "canary", "start", "v2.0", "--share", "1.5")
    assert bad.code == 3 and "INVALID_CANARY_POLICY" in bad.err and "policy.share: must be in (0, 1)" in bad.err

    # One decided on time alone (no traffic or ratings asked for): promoted, and --wait exits 0.
    promoted = await cli(port, "canary", "start", "v2.0", "--share", "0.5", "--min-requests", "0", "--duration",
                         "1s", "--min-feedback", "0", "--check-interval", "0.2", "--reason", "cli", "--wait")
    assert promoted.code == 0, promoted.err
    assert promoted.out.startswith("canary split: 50.0% of 'active' to v2.0, the rest to v1.0")
    assert "canary: v2.0 PROMOTED at " in promoted.out and "not worse than the active version" in promoted.out

    running = await cli(port, "canary", "start", "v1.0", "--min-requests", "1000")
    assert running.code == 0, running.err
    status = await cli(port, "canary", "status")
    assert status.out.startswith("canary split: 10.0% of 'active' to v1.0, the rest to v2.0")
    assert "last canary: v2.0 PROMOTED" in status.out
    other = await cli(port, "canary", "abort", "v2.0")
    assert other.code == 9 and "NO_CANARY_RUNNING" in other.err and "v1.0" in other.err, other.err
    aborted = await cli(port, "--json", "canary", "abort", "v1.0", "--reason", "enough")
    assert aborted.code == 0, aborted.err
    last = json.loads(aborted.out)
    assert "traffic_split" not in last and last["last_canary"]["decision"] == "CANARY_DECISION_ABORTED"
    assert last["last_canary"]["reason"] == "enough"
    none = await cli(port, "canary", "abort")
    assert none.code == 9 and "NO_CANARY_RUNNING" in none.err
