"""Feedback on model responses: validation, PII scrubbing, ingestion and datasets built from it."""
