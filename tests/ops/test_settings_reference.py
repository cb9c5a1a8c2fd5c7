"""The configuration reference is generated from the settings object and lists every field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from server.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_reference_lists_every_setting_with_its_variable():
    result = subprocess.run(
        [sys.executable, "scripts/settings_reference.py"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    rows = [line for line in result.stdout.splitlines() if line.startswith("| `")]
    assert len(rows) == len(Settings.model_fields)
    for name in Settings.model_fields:
        assert any(row.startswith(f"| `{name}` | `LEARNING_ENGINE_{name.upper()}`") for row in rows), name
    assert "`DATABASE_URL`" in result.stdout
