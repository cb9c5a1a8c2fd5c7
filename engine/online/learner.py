"""The arithmetic of an online session, run in its worker thread: buffer examples, take one optimiser step.

An update trains on the oldest ``update_every`` examples received and not yet trained on (what there is, on a
forced update), mixed with replayed earlier ones so that those make up ``replay_fraction`` of the step (sampled from the
buffer of examples already trained on and from the start version's lineage, as a training job's replay), under
the EWC penalty against the start version. The step is the training recipe's: the same tokenisation, packed
forward pass, objective, penalty, clipping and optimiser (Adam, AdamW or SGD with weight decay). The objective is
the session's ``loss``: the recipe's example-weighted SFT loss, or its KTO loss (engine.training.kto) on the
examples' labels, with the adapter disabled as the reference model. Examples replayed from the buffer keep their
labels; those replayed from the start version's lineage are answers to give (desirable), as in a training job.

What never stops a session: an example with no target token within ``max_seq_length`` is skipped when it
arrives (so is one without the label and target KTO needs, which the API refuses before), and an update whose
loss is not finite changes nothing (its examples are counted as skipped). A loss above ``loss_spike_factor``
times the median of the last updates' was measured on the weights the previous update made: the adapter goes
back to the weights before that one (the newest whose loss was fine), and the runner disables learning. The
result says which update those weights are of (``put_back_to``): a publication made after it published weights
put aside, and the runner fails its gate and moves the live alias off it.
"""

from __future__ import annotations

import collections
import math
import random
import statistics
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import torch

from engine.continual.ewc import replay_count
from engine.domain import Example, Objective
from engine.online.spec import (
    LOSS_WINDOW,
    SPIKE_MIN_UPDATES,
    SPIKE_WINDOW,
    OnlineOptimizer,
    OnlineSessionSpec,
    OnlineStats,
    StoredExample,
)
from engine.training.batching import StepBatch, batching
from engine.training.datasets import EncodedExample, encode_example, pad_token_id
from engine.training.kto import KtoObjective
from engine.training.loading import LoadedModel
from engine.training.objectives import WeightedSft
from engine.training.run import BatchObjective, Penalty

MICRO_BATCH = 8  # examples per forward pass within an update


def make_optimizer(kind: OnlineOptimizer, params: list[torch.nn.Parameter], lr: float,
                   weight_decay: float) -> torch.optim.Optimizer:
    if kind is OnlineOptimizer.SGD:
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    if kind is OnlineOptimizer.ADAM:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


@dataclass(frozen=True)
class Held:
    """An example the learner holds, to train on or to replay."""

    seq: int
    encoded: EncodedExample
    desirable: bool = True  # KTO's label (an SFT session's examples are all answers to give)


@dataclass(frozen=True)
class UpdateResult:
    update: int
    loss: float  # NaN when the update was skipped
    examples: int
    replayed: int
    ewc_penalty: float
    skipped: str = ""  # why nothing changed ("" : the step was taken)
    spike_median: float = math.nan  # set when the loss was a spike (the adapter was put back)
    # On a spike: the update whose weights the adapter was put back to (0: the start version's, or those a
    # checkpoint or a negative-feedback spike put in place at that update); the weights of every later update were
    # put aside.
    put_back_to: int = 0


class OnlineLearner:
    """One session's model, optimiser, buffer and counters (touched only from its worker thread)."""

    def __init__(self, loaded: LoadedModel, spec: OnlineSessionSpec, *, penalty: Penalty | None = None,
                 earlier: list[Example] | None = None) -> None:
        self.loaded = loaded
        self.spec = spec
        self.penalty = penalty
        self.earlier = list(earlier or ())
        self.params = [p for p in loaded.model.parameters() if p.requires_grad]
        self._start = self._weights()  # the start version's (a negative-feedback spike puts them back)
        self._good = self._weights()  # the newest weights whose loss was not a spike
        self._good_update = 0  # the update count when the weights were _good's (the next update starts from them)
        self.optimizer = make_optimizer(spec.optimizer, self.params, spec.learning_rate, spec.weight_decay)
        self.pending: collections.deque[Held] = collections.deque()
        self.buffer: collections.deque[Held] = collections.deque(maxlen=spec.buffer_size)
        self.losses: collections.deque[float] = collections.deque(maxlen=LOSS_WINDOW)
        self.rng = random.Random(spec.seed)
        self.updates = 0
        self.total_examples = 0
        self.skipped = 0
        self.last_sequence = 0
        self.last_loss = math.nan
        self.trained_through = 0  # the sequence number of the last example trained on
        self.window_first = 0  # the first example the next publication claims (0: the first trained on)

    # ---- examples ------------------------------------------------------------------------------

    def add(self, rows: list[StoredExample]) -> list[str]:
        """Tokenise and queue ``rows`` (the runner reads no more than the buffer holds); returns a warning per row
        skipped."""
        warnings = []
        for row in rows:
            self.total_examples += 1
            self.last_sequence = max(self.last_sequence, row.seq)
            if self.kto and (row.desirable is None or not row.target):
                self.skipped += 1
                warnings.append(f"example {row.seq} has no {'desirable label' if row.target else 'target'}, which "
                                "KTO needs: skipped")
                continue
            held = self._held(row)
            if held.encoded.predicted_token_count == 0:
                self.skipped += 1
                warnings.append(f"example {row.seq} has no target token within max_seq_length="
                                f"{self.spec.max_seq_length}: skipped")
                continue
            self.pending.append(held)
        return warnings

    @property
    def kto(self) -> bool:
        return self.spec.loss is Objective.KTO

    def _held(self, row: StoredExample) -> Held:
        encoded = encode_example(self.loaded.tokenizer, row.example(), self.spec.max_seq_length)
        return Held(row.seq, encoded, row.desirable is not False if self.kto else True)

    def due(self, forced: bool) -> bool:
        return bool(self.pending) and (forced or len(self.pending) >= self.spec.update_every)

    # ---- the update ------------------------------------------------------------------------------

    def update(self, learning_rate: float) -> UpdateResult:
        """One optimiser step on the oldest ``update_every`` pending examples (fewer on a forced update) plus
        replay (call only when :meth:`due`). A backlog is worked off one update of ``update_every`` at a time."""
        new = [self.pending.popleft() for _ in range(min(self.spec.update_every, len(self.pending)))]
        self.window_first = self.window_first or new[0].seq
        self.trained_through = new[-1].seq
        pool_size = len(self.buffer) + len(self.earlier)
        count = replay_count(len(new), self.spec.replay_fraction, pool_size)
        drawn = [self._replayed(i) for i in self.rng.sample(range(pool_size), count)] if count else []
        replayed = [h for h in drawn if h.encoded.predicted_token_count]  # a lineage's example may have none
        data = [*new, *replayed]
        self.updates += 1
        before = self._weights()
        loss, penalty = self._step([h.encoded for h in data], [h.desirable for h in data], learning_rate)
        self.buffer.extend(new)
        if not math.isfinite(loss):
            self._restore(before)
            self.skipped += len(new)
            return UpdateResult(self.updates, math.nan, len(new), len(replayed), math.nan,
                                skipped=f"the loss was {loss}: nothing changed and its {len(new)} examples are "
                                        "counted as skipped")
        self.last_loss = loss
        spike = self._spike(loss)
        if spike is not None:
            # The loss was measured on the weights the previous update made: those are the bad ones.
            put_back_to = self._good_update
            self._restore(self._good)
            self._good_update = self.updates  # the weights are _good's again as of this update
            return UpdateResult(self.updates, loss, len(new), len(replayed), penalty, spike_median=spike,
                                put_back_to=put_back_to)
        self._good = before  # the loss on these weights was fine
        self._good_update = self.updates - 1
        self.losses.append(loss)
        return UpdateResult(self.updates, loss, len(new), len(replayed), penalty)

    def published(self, last: int) -> None:
        """A publication claimed the examples up to ``last``: the next one claims those after them, so that the
        windows of a session's publications follow each other without overlapping. (A session resumed from a
        checkpoint older than its last publication comes back to it having trained again on its examples, maybe
        not update for update, as a forced update takes what there was: its next window still starts here; the
        runner says so when it takes the session over.) A window never moves back."""
        self.window_first = max(self.window_first, last + 1)

    def forget(self, present: Collection[int], lineage: list[Example] | None = None) -> int:
        """Drop the buffered and pending examples whose sequence number is not in ``present`` (deleted from the
        store), and, given ``lineage`` (the lineage's data read again), the earlier examples it no longer holds
        (one for one: a duplicate goes as often as it went from the store; none is added, such as feedback that
        arrived late in a version's window); returns how many were dropped."""
        before = len(self.buffer) + len(self.pending) + len(self.earlier)
        for queue in (self.buffer, self.pending):
            kept = [item for item in queue if item.seq in present]
            queue.clear()
            queue.extend(kept)
        if lineage is not None:
            left = collections.Counter(lineage)
            kept_earlier = []
            for example in self.earlier:
                if left[example] > 0:
                    left[example] -= 1
                    kept_earlier.append(example)
            self.earlier = kept_earlier
        return before - len(self.buffer) - len(self.pending) - len(self.earlier)

    def put_back_start(self) -> None:
        """The start version's weights again, with a new optimiser (its moments belong to the weights put aside)
        and no loss history (the loss-spike check starts over). Counters, buffer and pending examples stay."""
        self._restore(self._start)
        self._good = self._weights()
        self._good_update = self.updates
        self.optimizer = make_optimizer(self.spec.optimizer, self.params, self.spec.learning_rate,
                                        self.spec.weight_decay)
        self.losses.clear()

    def _weights(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.params]

    def _replayed(self, index: int) -> Held:
        """A buffered example with its label, or one of the start version's lineage (an answer to give)."""
        if index < len(self.buffer):
            return self.buffer[index]
        example = self.earlier[index - len(self.buffer)]
        return Held(0, encode_example(self.loaded.tokenizer, example, self.spec.max_seq_length))

    def objective(self, desirable: list[bool]) -> BatchObjective:
        """The training recipe's objective of the session's loss, over examples labelled ``desirable``."""
        return KtoObjective(desirable) if self.kto else WeightedSft()

    def _step(self, data: list[EncodedExample], desirable: list[bool], learning_rate: float) -> tuple[float, float]:
        model, plan = self.loaded.model, self.loaded.plan
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        task = 0.0
        model.train()
        step = StepBatch(data, range(len(data)), MICRO_BATCH)
        with batching(model, data, packing=True, pad_id=pad_token_id(self.loaded.tokenizer), plan=plan) as layout:
            for share in self.objective(desirable).step_losses(model, step, layout.forward):
                value = float(share.detach())
                if not math.isfinite(value):
                    self.optimizer.zero_grad(set_to_none=True)
                    return value, math.nan
                share.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
                task += value
        penalty = self.penalty(model) if self.penalty is not None else torch.zeros(())
        if not math.isfinite(float(penalty.detach())):
            self.optimizer.zero_grad(set_to_none=True)
            return float(penalty.detach()), math.nan
        if penalty.requires_grad:
            penalty.backward()  # type: ignore[no-untyped-call]
        clip = self.spec.max_grad_norm if self.spec.max_grad_norm > 0 else math.inf
        torch.nn.utils.clip_grad_norm_(self.params, clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return task + float(penalty.detach()), float(penalty.detach())

    def _spike(self, loss: float) -> float | None:
        """The median the loss is a spike against, or None."""
        factor = self.spec.loss_spike_factor
        if factor <= 0 or len(self.losses) < SPIKE_MIN_UPDATES:
            return None
        median = statistics.median(list(self.losses)[-SPIKE_WINDOW:])
        return median if median > 0 and loss > factor * median else None

    @torch.no_grad()
    def _restore(self, before: list[torch.Tensor]) -> None:
        for param, saved in zip(self.params, before, strict=True):
            param.copy_(saved)

    # ---- state -----------------------------------------------------------------------------------

    def stats(self, *, learning_rate: float, enabled: bool, published: int) -> OnlineStats:
        return OnlineStats(
            total_examples=self.total_examples, skipped_examples=self.skipped, total_updates=self.updates,
            buffer_size=len(self.buffer), pending_examples=len(self.pending),
            average_loss=statistics.fmean(self.losses) if self.losses else None,
            last_loss=self.last_loss if math.isfinite(self.last_loss) else None,
            learning_rate=learning_rate, enabled=enabled, last_sequence=self.last_sequence,
            published_versions=published,
        )

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps besides the adapter: optimiser, counters, and the buffer and the examples read
        but not yet trained on, by sequence number (the examples themselves stay in the database)."""
        return {
            "optimizer": self.optimizer.state_dict(), "updates": self.updates, "total": self.total_examples,
            "skipped": self.skipped, "last_sequence": self.last_sequence,
            "losses": list(self.losses), "last_loss": self.last_loss, "rng": self.rng.getstate(),
            "buffer": [h.seq for h in self.buffer], "trained_through": self.trained_through,
            "window_first": self.window_first, "pending": [h.seq for h in self.pending],
        }

    def restore(self, state: dict[str, Any], buffered: list[StoredExample], pending: list[StoredExample]) -> None:
        """Put back a checkpoint's state; ``buffered`` and ``pending`` are the rows of the sequence numbers its
        buffer and its pending examples name."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates, self.total_examples = int(state["updates"]), int(state["total"])
        self.skipped = int(state["skipped"])
        self.last_sequence, self.last_loss = int(state["last_sequence"]), float(state["last_loss"])
        self.losses.extend(float(x) for x in state["losses"])
        self.rng.setstate(_rng_state(state["rng"]))
        self.trained_through, self.window_first = int(state["trained_through"]), int(state["window_first"])
        self._good = self._weights()  # called after the checkpoint's weights were loaded
        self._good_update = self.updates
        for rows, into in ((buffered, self.buffer), (pending, self.pending)):
            into.extend(self._held(row) for row in rows)


def _rng_state(saved: Any) -> tuple[Any, ...]:
    """random.Random's state as saved (torch.load gives lists back for its tuples)."""
    version, internal, gauss = saved
    return version, tuple(internal), gauss
