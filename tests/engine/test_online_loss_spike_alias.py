"""A loss spike at update n+1 is measured on the weights update n made, and the learner puts back the weights from
before update n. A publication made at update n published exactly those weights: in the write that disables
learning, the spike fails the gate of every publication of weights it put aside (check ``loss_spike``) and moves
the live alias off the one it serves, back to the newest publication that passed before them (or the start
version), as a negative-feedback spike does. Publications of the weights it kept are left as they are."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

from engine.online.learner import OnlineLearner, UpdateResult
from engine.online.spec import GateVerdict, OnlineOutput, Publication
from tests.engine.test_online_gate_after_spike import _followed, _serving
from tests.engine.test_online_learner import loaded, rows, same, session, weights
from tests.engine.test_online_publication import _Controls, _Registry, _session

EARLIER = datetime.now(UTC) - timedelta(minutes=5)
GOOD = Publication("v1.0.1", 5, 1, 20, EARLIER)  # published at update 5: weights the spike keeps
BAD = Publication("v1.0.2", 10, 21, 40, datetime.now(UTC))  # published at update 10: the weights update 10 made
LOSS_SPIKE_VERDICT = GateVerdict(passed=False, failed_checks=("loss_spike",))  # engine.online.spikes'


async def _spike_at_update_11(tiny_model_dir: Path, tmp_path: Path, store: _Controls,
                              publications: tuple[Publication, ...] = (BAD,), put_back_to: int | None = None):
    """A spike at update 11; the learner says it put back the weights of update ``put_back_to`` (None: it says
    nothing, the result's default: the start version's, every publication put aside)."""
    learner = OnlineLearner(loaded(tiny_model_dir, tmp_path), session(replay_fraction=0.0))
    learner.updates = 10
    running = _session(learner, tmp_path, OnlineOutput(publications=publications), _Registry(), store=store)

    async def no_live(update: int) -> None:
        pass

    running._refresh_live = no_live  # type: ignore[method-assign]

    def spiking_update(learning_rate: float) -> UpdateResult:
        # what OnlineLearner.update returns on a spike: the loss of update 11, measured on update 10's weights; the
        # adapter is put back to the weights update 9 left
        learner.updates += 1
        said = {} if put_back_to is None else {"put_back_to": put_back_to}
        return UpdateResult(learner.updates, 9.0, 10, 0, 0.0, spike_median=1.0, **said)

    learner.update = spiking_update  # type: ignore[method-assign]
    await running._update(1e-4)
    assert not store.c.enabled  # the spike was seen
    return running


async def test_a_loss_spike_moves_the_alias_off_the_publication_of_the_spiking_weights(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    store = _Controls(alias_version=BAD.version, gates=((BAD.version, GateVerdict(passed=True)),))
    await _spike_at_update_11(tiny_model_dir, tmp_path, store)
    assert store.c.alias_serves != BAD.version, (
        f"after the loss spike the live alias still serves {BAD.version}, published from the weights the spike "
        "put aside")
    assert store.c.alias_serves == "v1.0", "with no publication before it that passed, the start version"


async def test_the_gate_never_moves_the_alias_onto_the_publication_of_the_spiking_weights(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    store = _Controls()  # the alias serves the start version; v1.0.2 not judged yet
    running = await _spike_at_update_11(tiny_model_dir, tmp_path, store)
    assert store.c.gate(BAD.version) == LOSS_SPIKE_VERDICT, store.c.gates
    assert store.c.alias_version == "", "an alias on the start version by default stays so (not chosen)"
    await _serving(store, tmp_path)._follow(_followed(running), set())  # the gate's next tick (it passes all)
    assert store.c.alias_serves != BAD.version, (
        f"the gate moved the live alias onto {BAD.version} after a loss spike put its weights aside "
        f"(verdict {store.c.gate(BAD.version)})")


async def test_the_alias_goes_back_to_the_last_publication_that_passed_before_the_weights_put_aside(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    store = _Controls(alias_version=BAD.version,
                      gates=((GOOD.version, GateVerdict(passed=True)), (BAD.version, GateVerdict(passed=True))))
    running = await _spike_at_update_11(tiny_model_dir, tmp_path, store, publications=(GOOD, BAD), put_back_to=9)
    assert store.c.alias_serves == GOOD.version, f"the alias serves {store.c.alias_serves}"
    assert store.c.gate(GOOD.version) == GateVerdict(passed=True), "the spike failed a publication it kept"
    assert store.c.gate(BAD.version) == GateVerdict(passed=True), "the spike replaced a verdict the gate had given"
    assert "v1.0.2 published weights it put aside" in store.c.disabled_reason
    moved = [p for p in running.ctx.recorded if getattr(p, "code", "") == "LIVE_ALIAS_MOVED_BACK"]
    assert len(moved) == 1 and "v1.0.2" in moved[0].message and "v1.0.1 again" in moved[0].message


async def test_a_publication_of_the_weights_kept_is_not_failed_and_the_alias_stays_on_it(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    store = _Controls(alias_version=GOOD.version, gates=((GOOD.version, GateVerdict(passed=True)),))
    await _spike_at_update_11(tiny_model_dir, tmp_path, store, publications=(GOOD, BAD), put_back_to=9)
    assert store.c.alias_serves == GOOD.version
    assert store.c.gate(BAD.version) == LOSS_SPIKE_VERDICT  # not judged yet: failed
    assert store.c.gate(GOOD.version) == GateVerdict(passed=True)


def test_the_learner_says_which_update_s_weights_a_spike_put_back(tiny_model_dir: Path, tmp_path: Path) -> None:
    """As tests/engine/test_online_learner.py's spike: update 13 wrecks the weights (its own loss, measured on update
    12's, is fine), update 14's loss spikes and the weights of update 12 come back: a publication at update 13 holds
    weights put aside, one at update 12 does not."""
    learner = OnlineLearner(loaded(tiny_model_dir, tmp_path), session(loss_spike_factor=1.25))
    learner.add(rows(60))
    for _ in range(12):
        assert math.isnan(learner.update(1e-3).spike_median)
    fine = weights(learner)
    assert math.isnan(learner.update(1.0).spike_median)
    spiked = learner.update(1e-3)
    assert spiked.update == 14 and spiked.spike_median > 0
    assert spiked.put_back_to == 12, spiked
    assert same(fine, weights(learner))
