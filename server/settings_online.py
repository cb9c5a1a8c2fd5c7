"""Online learning's part of the one settings object (mixed into ``server.settings.Settings``): the defaults a
session gets for what it leaves unset, and how its worker and the serving side run it. See docs/online.md."""

from __future__ import annotations

from pydantic import BaseModel, Field

from engine.online.session_state import OnlineConfig


class OnlineSettings(BaseModel):
    online_learning_rate: float = Field(
        1e-4, gt=0, le=1, description="Learning rate of an online session that sets none.")
    online_ewc_lambda: float = Field(
        0.3, ge=0, le=1e6, description="EWC strength of an online session against the version it starts from "
        "(its Fisher measured on that version's own training data); 0 turns EWC off.")
    online_replay_fraction: float = Field(
        0.5, ge=0, le=0.9, description="Share of each online update's examples replayed from earlier ones (the "
        "session's buffer and its start version's lineage).")
    online_poll_seconds: float = Field(
        0.5, gt=0, le=60, description="How often an online session's worker looks for new examples and controls.")
    online_max_update_share: float = Field(
        0.5, gt=0, le=1, description="The share of wall time an online session's updates may take: after an update "
        "of t seconds its worker waits t * (1 - share) / share before the next, so updates never starve serving "
        "on a shared machine (1: no wait).")
    online_max_example_chars: int = Field(
        32_000, ge=100, le=10_000_000, description="Longest online example (prompt and target) accepted; longer "
        "ones are refused and counted as skipped.")
    online_max_sessions: int = Field(
        2, ge=0, le=64, description="Online sessions a worker runs at once (0: none), taken from a queue of their "
        "own, besides its max_concurrent_jobs training and Fisher jobs (each session holds its own copy of the model "
        "while it runs).")
    online_feedback_seconds: float = Field(
        5.0, gt=0, le=3600, description="How often a session reads the feedback on its live model's answers: to "
        "turn it into examples (learn_from_feedback) and to check it for a negative-feedback spike.")
    online_ratings_window_seconds: float = Field(
        3600.0, gt=0, le=30 * 86400, description="The live model's ratings a negative-feedback spike is judged on: "
        "those of the last this many seconds (and since the last spike).")
    online_follow_seconds: float = Field(
        1.0, gt=0, le=600, description="How often a serving process loads online sessions' new live adapters, "
        "gates their publications and routes their live aliases (also those kept after a session ended).")

    online_retention_days: float = Field(
        30.0, ge=0, le=36_500, description="Days an ended online session's examples are kept in PostgreSQL (to look "
        "into what it learnt from), after which the periodic sweep deletes them; the windows published versions "
        "trained on are kept for as long as a later job may read them again (docs/online.md). 0: at the first sweep "
        "after the session ends.")
    online_sweep_seconds: float = Field(
        3600.0, gt=0, le=86_400, description="How often each server sweeps what online sessions leave: ended "
        "sessions' examples past online_retention_days, and the live adapters' archives of sessions that ended "
        "(or that a crashed worker left).")

    def online_config(self, fisher_batch_size: int) -> OnlineConfig:
        return OnlineConfig(poll_seconds=self.online_poll_seconds, max_update_share=self.online_max_update_share,
                            fisher_batch_size=fisher_batch_size, feedback_seconds=self.online_feedback_seconds,
                            ratings_window_seconds=self.online_ratings_window_seconds)
