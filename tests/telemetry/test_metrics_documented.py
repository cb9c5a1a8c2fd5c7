"""Every metric on /metrics is documented: docs/operations.md lists each series the registry defines."""

from __future__ import annotations

from pathlib import Path

from engine import telemetry

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _exposed() -> set[str]:
    """The metric names as /metrics shows them (a counter's with its ``_total``)."""
    return {family.name + ("_total" if family.type == "counter" else "") for family in telemetry.REGISTRY.collect()}


def test_every_metric_is_documented_in_operations() -> None:
    operations = (DOCS / "operations.md").read_text()
    missing = sorted(name for name in _exposed() if name not in operations)
    assert not missing, f"on /metrics but not in docs/operations.md: {missing}"
