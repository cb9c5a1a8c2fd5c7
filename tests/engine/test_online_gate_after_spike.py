"""A negative-feedback spike puts the live alias back on the start version (users rated the live weights down). A
publication made before the spike and judged after it (evaluation takes minutes; a serving process may have been
down), or being judged while it happens, must not move the alias back onto the weights the spike put aside: the
spike records a failed verdict ("feedback_spike") on every publication the gate has not judged, in the write that
moves the alias back, and a verdict is recorded (and moves the alias) only where none is."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from engine.lora.state import EvalSummary
from engine.online.learner import OnlineLearner
from engine.online.serving import OnlineServing
from engine.online.session import RunningSession
from engine.online.spec import SPIKE_VERDICT, GateVerdict, OnlineOutput, Publication
from engine.stores.artifacts_local import LocalArtifactStore
from engine.stores.online_store import PostgresOnlineStore
from tests.engine.test_online_feedback_window import _publish, start_version  # noqa: F401 - a fixture
from tests.engine.test_online_learner import loaded, session
from tests.engine.test_online_publication import _Controls, _Rates, _Registry, _session
from tests.registry.conftest import TINY, make_peft, make_registry, pool  # noqa: F401 - fixtures

BEFORE = datetime.now(UTC) - timedelta(minutes=2)
PASSED, MADE_BEFORE = Publication("v1.0.1", 50, 1, 500, BEFORE), Publication("v1.0.2", 100, 501, 1000, BEFORE)


class _Gate:
    """The golden suite does not see what users rated down: every publication passes it."""

    base_model = "tiny"

    async def evaluate(self, version: str, baseline_version: str | None) -> EvalSummary:
        return SimpleNamespace(passed=True, failed_checks=())  # type: ignore[return-value]


async def _worker(tiny_model_dir: Path, tmp_path: Path, store: _Controls) -> RunningSession:
    """The session's worker: v1.0.1 passed the gate (the alias serves it), v1.0.2 is not judged yet."""
    learner = OnlineLearner(loaded(tiny_model_dir, tmp_path), session(replay_fraction=0.0))
    running = _session(learner, tmp_path, OnlineOutput(publications=(PASSED, MADE_BEFORE)), _Registry(),
                       store=store, rates=_Rates())

    async def no_live(update: int) -> None:
        pass

    running._refresh_live = no_live  # type: ignore[method-assign]
    return running


def _serving(store: _Controls, tmp_path: Path) -> OnlineServing:
    return OnlineServing(sessions=None, store=store, artifacts=None, client=None, router=None,  # type: ignore[arg-type]
                         gate=_Gate(), adapters=None, cache_dir=tmp_path)  # type: ignore[arg-type]


def _followed(running: RunningSession) -> Any:
    return SimpleNamespace(id="s1", spec=running.spec, output=running.ctx.job.output)


async def test_a_publication_from_before_a_feedback_spike_never_moves_the_alias_off_the_start_version(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    store = _Controls(alias_version="v1.0.1", gates=(("v1.0.1", GateVerdict(passed=True)),))
    running = await _worker(tiny_model_dir, tmp_path, store)
    assert await running._feedback_spike()
    assert store.c.alias_serves == "v1.0" and not store.c.enabled
    assert store.c.gate("v1.0.2") == SPIKE_VERDICT, f"v1.0.2's verdict after the spike: {store.c.gate('v1.0.2')}"
    assert store.c.gate("v1.0.1") == GateVerdict(passed=True), "the spike changed a verdict the gate had given"
    serving = _serving(store, tmp_path)
    await serving._follow(_followed(running), set())  # the gate's next tick
    await serving.judging_ended()
    assert store.c.alias_serves == "v1.0", (
        f"the alias serves {store.c.alias_serves} again: the weights the feedback spike put aside")


async def test_a_publication_judged_while_a_feedback_spike_happens_does_not_move_the_alias(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    store = _Controls(alias_version="v1.0.1", gates=(("v1.0.1", GateVerdict(passed=True)),))
    running = await _worker(tiny_model_dir, tmp_path, store)

    async def spike() -> None:  # while the gate evaluates v1.0.2, the worker finds the spike
        store.judging = None
        assert await running._feedback_spike()

    store.judging = spike
    serving = _serving(store, tmp_path)
    await serving._follow(_followed(running), set())
    await serving.judging_ended()
    assert store.c.gate("v1.0.2") == SPIKE_VERDICT, f"v1.0.2's verdict: {store.c.gate('v1.0.2')}"
    assert store.c.alias_serves == "v1.0", f"the gate moved the alias onto {store.c.alias_serves} after the spike"


async def test_the_store_keeps_the_spikes_verdict_and_moves_the_alias_only_with_a_verdict_it_records(
    pool, start_version: str, make_registry, make_peft, tmp_path: Path  # noqa: F811 - fixtures
) -> None:
    registry = make_registry(LocalArtifactStore(tmp_path / "artifacts"))
    passed, made_before = await _publish(registry, make_peft), await _publish(registry, make_peft)
    store = PostgresOnlineStore(pool)
    await store.create("s1", 1e-4, base_model=TINY, start_version=start_version, live_alias="notes-live")
    moved = await store.record_gate("s1", passed, GateVerdict(passed=True))
    assert moved.alias_version == passed, "a verdict that passes moves the alias in the same write"
    assert await store.claim_gate("s1", made_before, "serving-1", 60.0)  # a serving process judges it now
    spiked = await store.set("s1", enabled=False, disabled_reason="spike", alias_version=start_version,
                             verdicts={passed: SPIKE_VERDICT, made_before: SPIKE_VERDICT})
    assert spiked.alias_version == start_version and not spiked.enabled
    assert spiked.gate(passed) == GateVerdict(passed=True), "the spike overwrote a verdict the gate had given"
    assert spiked.gate(made_before) == SPIKE_VERDICT
    after = await store.record_gate("s1", made_before, GateVerdict(passed=True))  # its evaluation ends
    assert after.gate(made_before) == SPIKE_VERDICT, f"the gate's late verdict replaced the spike's: {after.gates}"
    assert after.alias_version == start_version, f"the gate moved the alias onto {after.alias_version} after the spike"
    assert not await store.claim_gate("s1", made_before, "serving-2", 60.0), "a judged version is claimed again"
    assert (await store.controls("s1")) == after
