"""Builds the drift detector from the settings (called by the composition root, server/engine_wiring.py)."""

from __future__ import annotations

import asyncpg

from engine.drift.detector import DriftDetector
from engine.drift.embeddings import BaseModelEmbedder
from engine.drift.ports import TrainingData, Versions
from engine.stores.drift_store import PostgresDriftSource
from engine.stores.serving_state import PostgresServingState
from engine.training.models import SMOLLM2_MODEL_ID, resolve_base_model
from server.settings import Settings


def drift_detector(settings: Settings, pool: asyncpg.Pool, versions: Versions,
                   training_data: TrainingData) -> DriftDetector:
    """Drift reports over PostgreSQL (feedback, evaluations, the active version) and the base models' embeddings."""
    config = settings.drift_config()
    embedder = BaseModelEmbedder(
        lambda model_id: resolve_base_model(model_id, models=settings.base_models, cache_dir=settings.models_dir),
        max_tokens=config.max_tokens,
    )
    return DriftDetector(
        config, source=PostgresDriftSource(pool), serving=PostgresServingState(pool), versions=versions,
        training_data=training_data, embedder=embedder,
        base_models=lambda: {*settings.base_models, SMOLLM2_MODEL_ID},
        rating_positive_min=settings.feedback_rating_positive_min,
        rating_negative_max=settings.feedback_rating_negative_max,
    )
