"""Pipelines: the loop that runs unattended (engine.pipelines.spec)."""
