"""Drift detection: are users asking what the served version was trained on?

Per base model, the prompts of the interactions that feedback carried in a window are compared with the prompts the
active adapter version was trained on (``detector.DriftDetector``), by a two-sample test on the base model's own
embeddings (``statistic``, ``embeddings``); the report also holds the negative-feedback rate and the evaluation
scores over the window. Its storage port is :class:`engine.drift.ports.DriftSource` (engine.stores.drift_store).
"""
