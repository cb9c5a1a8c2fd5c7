"""Drift detection's part of the one settings object (mixed into ``server.settings.Settings``): how a drift report
(DriftService.GetDriftReport, a pipeline's drift trigger) is computed. See docs/drift.md."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, Field, model_validator

from engine.drift.report import DriftConfig


class DriftSettings(BaseModel):
    drift_window_days: float = Field(
        30.0, gt=0, le=366, description="The window of a drift report that names none: the feedback of the last "
        "this many days.")
    drift_significance: float = Field(
        0.05, gt=0, lt=1, description="Level of the drift test: drift when the p-value (the share of random splits "
        "of the pooled prompts at least as far apart) is at most this; lower flags drift less often by chance.")
    drift_permutations: int = Field(
        500, ge=20, le=100_000, description="Random splits the drift threshold and p-value are calibrated on.")
    drift_max_samples: int = Field(
        256, ge=2, le=5000, description="Prompts a drift report embeds on each side (incoming, training data), a "
        "stable sample: the cost on CPU grows with it (the base model embeds each once; embeddings are cached).")
    drift_min_samples: int = Field(
        20, ge=2, le=5000, description="Fewer incoming or reference prompts than this: the report says "
        "TOO_FEW_SAMPLES and does not test.")
    drift_moved_examples: int = Field(
        10, ge=0, le=100, description="Incoming prompts farthest from the training data listed in a drift report.")
    drift_series_buckets: int = Field(
        10, ge=1, le=366, description="Equal parts of a drift report's window for its negative-feedback rate series.")
    drift_max_tokens: int = Field(
        128, ge=8, le=4096, description="Tokens of a prompt the base model embeds for drift (longer ones are cut).")

    @model_validator(mode="after")
    def _min_within_max(self) -> DriftSettings:
        if self.drift_min_samples > self.drift_max_samples:
            raise ValueError(f"drift_min_samples {self.drift_min_samples} must be at most drift_max_samples "
                             f"{self.drift_max_samples}")
        return self

    def drift_config(self) -> DriftConfig:
        return DriftConfig(
            window=timedelta(days=self.drift_window_days), significance=self.drift_significance,
            permutations=self.drift_permutations, max_samples=self.drift_max_samples,
            min_samples=self.drift_min_samples, moved_examples=self.drift_moved_examples,
            buckets=self.drift_series_buckets, max_tokens=self.drift_max_tokens,
        )
