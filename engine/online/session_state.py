"""What one online session holds while it runs (engine.online.session): the parts the runner hands it, its config,
and the state its loop shares with what it stores (engine.online.artifacts) and its spikes (engine.online.spikes).
"""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from engine.domain import Example
from engine.lora.state import FeedbackRates
from engine.online.interruptions import Ctx
from engine.online.learner import OnlineLearner
from engine.online.ports import FeedbackExamples, OnlineStore
from engine.online.spec import CHECKPOINT_PREFIX, LIVE_PREFIX, OnlineSessionSpec
from engine.registry import AdapterRecord, AdapterRegistry
from engine.registry.ports import ArtifactStore
from engine.training.checkpoint_store import CheckpointArchive


@dataclass(frozen=True)
class OnlineConfig:
    poll_seconds: float = 0.5
    max_update_share: float = 0.5  # of wall time; after an update of t seconds the loop waits t * (1 - s) / s
    fisher_batch_size: int = 4
    feedback_seconds: float = 5.0  # how often a session reads the feedback on its live model
    ratings_window_seconds: float = 3600.0  # the live model's ratings judged for a negative-feedback spike


@dataclass(frozen=True)
class SessionParts:
    """What a running session works with."""

    store: OnlineStore
    registry: AdapterRegistry
    artifacts: ArtifactStore
    config: OnlineConfig
    feedback: FeedbackExamples | None
    rates: FeedbackRates | None


class SessionState:
    """What one running session holds, shared by its loop (engine.online.session) and the parts of it in
    engine.online.artifacts and engine.online.spikes."""

    def __init__(self, parts: SessionParts, ctx: Ctx, learner: OnlineLearner, start: AdapterRecord, *,
                 erasures: int = 0, lineage: Callable[[], Awaitable[list[Example]]] | None = None) -> None:
        self.r = parts
        self.ctx = ctx
        self.learner = learner
        self.start = start
        self.id = ctx.job.id
        self.live_keys: collections.deque[str] = collections.deque()
        self.resting_until = 0.0
        # The weights (or the optimiser, the counters) changed since the last checkpoint: an update, or a
        # negative-feedback spike putting the start version's weights back, did it. A learner just built or just
        # restored from its checkpoint has nothing a checkpoint would add.
        self.changed = False
        # A loss spike put weights back that its write (learning off, verdicts, alias) has not stored yet: a stop
        # for a store's error stores no checkpoint of them, which would resume as if nothing had happened.
        self.spike_unstored = False
        done = ctx.job.output.publications
        if done:
            # A learner restored from a checkpoint older than the session's last publication (or, with none, from
            # the start version) trains again on examples that publication claimed: the next window starts after it.
            learner.published(done[-1].last_sequence)
        self.feedback_at = 0.0  # when the feedback was last read (monotonic)
        self.ran_since: float | None = None  # when the loop started (monotonic): a long run resets the interruptions
        self.erasures_seen = erasures  # the session's erasure count (Controls.erasures) acted on
        self.lineage = lineage  # reads the lineage's data the learner replays again (None: it holds none)
        scratch = ctx.work_dir / "archive"
        self.live_archive = CheckpointArchive(parts.artifacts, scratch, prefix=LIVE_PREFIX)
        self.checkpoint_archive = CheckpointArchive(parts.artifacts, scratch, prefix=CHECKPOINT_PREFIX)

    @property
    def spec(self) -> OnlineSessionSpec:
        return self.ctx.job.spec
