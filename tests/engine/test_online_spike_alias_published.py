"""After a loss spike the live alias goes back to the newest earlier publication that passed the gate and is still
published, or else the start version. PostgresOnlineStore.set moves alias_version only onto a version still
published, and only while the alias follows the session (a KEPT alias never moves): the runner reads where the alias
is from the controls the write returns, records LIVE_ALIAS_MOVED_BACK only when it moved, and otherwise says in the
LEARNING_DISABLED reason (and disabled_reason) what the alias still serves (review findings)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from engine.online.learner import OnlineLearner, UpdateResult
from engine.online.session import RunningSession
from engine.online.spec import AliasState, GateVerdict, OnlineOutput, Publication
from engine.registry.records import version_not_found
from tests.engine.test_online_learner import loaded, session
from tests.engine.test_online_loss_spike_alias import BAD, GOOD
from tests.engine.test_online_publication import _Controls, _Registry, _session

PASSED = GateVerdict(passed=True)


class _AsStored(_Controls):
    """set() as engine.stores.online_store does it: alias_version moves only onto a version still published, and
    only while the alias follows the session (or it has none)."""

    def __init__(self, published: set[str], **fields: Any) -> None:
        super().__init__(**fields)
        self.published = published
        self.alias_writes: list[str] = []

    async def set(self, session_id: str, *, verdicts: dict[str, GateVerdict] | None = None, **changes: Any):
        if "alias_version" in changes:
            self.alias_writes.append(changes["alias_version"])
            movable = self.c.alias_state in (AliasState.NONE, AliasState.FOLLOWING)
            if not movable or (changes["alias_version"] and changes["alias_version"] not in self.published):
                changes = {k: v for k, v in changes.items() if k != "alias_version"}
        if not changes and not verdicts:
            return self.c
        return await super().set(session_id, verdicts=verdicts, **changes)


class _Pruned(_Registry):
    """The registry: the versions of ``deleted`` are no longer published (NOT_FOUND)."""

    def __init__(self, deleted: set[str]) -> None:
        super().__init__()
        self.deleted = deleted

    async def get(self, base_model: str, version: str, **_: Any):
        if version in self.deleted:
            raise version_not_found(base_model, version)
        return await super().get(base_model, version)


async def _spike(tiny_model_dir: Path, tmp_path: Path, store: _Controls, registry: _Registry | None = None,
                 publications: tuple[Publication, ...] = (GOOD, BAD)) -> RunningSession:
    """A loss spike at update 11 that puts back the weights of update 9: BAD (published at update 10) holds weights
    put aside, GOOD (update 5) weights kept."""
    learner = OnlineLearner(loaded(tiny_model_dir, tmp_path), session(replay_fraction=0.0))
    learner.updates = 10
    running = _session(learner, tmp_path, OnlineOutput(publications=publications), registry or _Registry(),
                       store=store)

    async def no_live(update: int) -> None:
        pass

    running._refresh_live = no_live  # type: ignore[method-assign]

    def spiking_update(learning_rate: float) -> UpdateResult:
        learner.updates += 1
        return UpdateResult(learner.updates, 9.0, 10, 0, 0.0, spike_median=1.0, put_back_to=9)

    learner.update = spiking_update  # type: ignore[method-assign]
    await running._update(1e-4)
    assert not store.c.enabled  # the spike was seen
    return running


def _codes(running: RunningSession, code: str) -> list[str]:
    return [p.message for p in running.ctx.recorded if getattr(p, "code", "") == code]  # type: ignore[attr-defined]


async def test_the_alias_skips_a_passed_publication_deleted_since(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The reviewer's case: GOOD passed the gate and was deleted since (the registry here does not know it yet: the
    store's write refuses it); the alias serves BAD, whose weights the spike put aside. It goes to the start version,
    and the warning says so."""
    store = _AsStored({"v1.0", BAD.version}, alias_version=BAD.version,
                      gates=((GOOD.version, PASSED), (BAD.version, PASSED)))
    running = await _spike(tiny_model_dir, tmp_path, store)
    moved = _codes(running, "LIVE_ALIAS_MOVED_BACK")
    assert store.c.alias_serves == "v1.0", (
        f"the alias serves {store.c.alias_serves} after the spike (weights put aside: {BAD.version}); the runner "
        f"recorded {moved}")
    assert len(moved) == 1 and BAD.version in moved[0] and "serves v1.0 again" in moved[0], moved
    assert store.c.gate(BAD.version) == PASSED, "a verdict the gate gave stays"


async def test_a_publication_the_registry_says_is_deleted_is_not_tried(tiny_model_dir: Path, tmp_path: Path) -> None:
    store = _AsStored({"v1.0", BAD.version}, alias_version=BAD.version,
                      gates=((GOOD.version, PASSED), (BAD.version, PASSED)))
    running = await _spike(tiny_model_dir, tmp_path, store, _Pruned({GOOD.version}))
    assert store.c.alias_serves == "v1.0"
    assert GOOD.version not in store.alias_writes, store.alias_writes
    moved = _codes(running, "LIVE_ALIAS_MOVED_BACK")
    assert len(moved) == 1 and "serves v1.0 again" in moved[0], moved


async def test_a_passed_publication_still_published_is_gone_back_to(tiny_model_dir: Path, tmp_path: Path) -> None:
    store = _AsStored({"v1.0", GOOD.version, BAD.version}, alias_version=BAD.version,
                      gates=((GOOD.version, PASSED), (BAD.version, PASSED)))
    running = await _spike(tiny_model_dir, tmp_path, store)
    assert store.c.alias_serves == GOOD.version
    moved = _codes(running, "LIVE_ALIAS_MOVED_BACK")
    assert len(moved) == 1 and f"serves {GOOD.version} again" in moved[0], moved


async def test_a_kept_alias_is_not_said_to_have_moved(tiny_model_dir: Path, tmp_path: Path) -> None:
    store = _AsStored({"v1.0", GOOD.version, BAD.version}, alias_version=BAD.version, alias_state=AliasState.KEPT,
                      gates=((GOOD.version, PASSED), (BAD.version, PASSED)))
    running = await _spike(tiny_model_dir, tmp_path, store)
    assert store.c.alias_serves == BAD.version  # a kept alias never moves
    assert not _codes(running, "LIVE_ALIAS_MOVED_BACK"), "the alias did not move"
    disabled = _codes(running, "LEARNING_DISABLED")
    assert len(disabled) == 1 and f"still serves {BAD.version}" in disabled[0] and "kept" in disabled[0], disabled
    assert disabled[0] == store.c.disabled_reason, "the stored reason says it too"


async def test_with_nothing_published_to_go_back_to_the_reason_says_what_it_serves(tiny_model_dir: Path,
                                                                                   tmp_path: Path) -> None:
    store = _AsStored({BAD.version}, alias_version=BAD.version, gates=((GOOD.version, PASSED),
                                                                        (BAD.version, PASSED)))
    running = await _spike(tiny_model_dir, tmp_path, store, _Pruned({GOOD.version, "v1.0"}))
    assert store.c.alias_serves == BAD.version
    assert not _codes(running, "LIVE_ALIAS_MOVED_BACK")
    disabled = _codes(running, "LEARNING_DISABLED")
    assert len(disabled) == 1 and f"still serves {BAD.version}" in disabled[0] and "v1.0" in disabled[0], disabled
    assert store.c.disabled_reason == disabled[0]
    assert store.c.gate(BAD.version) == PASSED and not store.c.enabled


async def test_an_alias_on_a_version_kept_stays_and_nothing_is_said(tiny_model_dir: Path, tmp_path: Path) -> None:
    store = _AsStored({"v1.0", GOOD.version, BAD.version}, alias_version=GOOD.version,
                      gates=((GOOD.version, PASSED),))
    running = await _spike(tiny_model_dir, tmp_path, store)
    assert store.c.alias_serves == GOOD.version
    assert not _codes(running, "LIVE_ALIAS_MOVED_BACK")
    assert "still serves" not in store.c.disabled_reason
    assert store.c.gate(BAD.version) == GateVerdict(passed=False, failed_checks=("loss_spike",))


async def test_the_gate_moving_the_alias_onto_weights_put_aside_meanwhile_is_undone(tiny_model_dir: Path,
                                                                                    tmp_path: Path) -> None:
    """Between the read and the write the gate passes BAD and moves the alias onto it: the write puts it back
    where it was (GOOD, still published)."""
    store = _AsStored({"v1.0", GOOD.version, BAD.version}, alias_version=GOOD.version,
                      gates=((GOOD.version, PASSED),))
    read = store.controls

    async def gate_moves_after_the_read(session_id: str):
        controls = await read(session_id)
        store.c = replace(store.c, alias_version=BAD.version, gates=(*store.c.gates, (BAD.version, PASSED)))
        return controls

    store.controls = gate_moves_after_the_read  # type: ignore[method-assign]
    await _spike(tiny_model_dir, tmp_path, store)
    assert store.c.alias_serves == GOOD.version
