"""The HF copy converted from the shipped SmolLM2 GGUF: what it leaves on disk (one real conversion, ~30 s)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from engine.training.models import SMOLLM2_MODEL_ID, convert_gguf_to_hf, make_temp_dir, smollm2_gguf_path

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    models = tmp_path_factory.mktemp("models")
    # what a conversion killed while writing (SIGKILL, OOM, a container stopped) leaves behind: its temp dir,
    # made by make_temp_dir beside the final location, holding part of the 540 MB of weights
    leftover = make_temp_dir(models, SMOLLM2_MODEL_ID)
    (leftover / "model.safetensors").write_bytes(b"\0" * 1024)
    # another model's temp dir whose name starts like ours: a conversion under another lock may own it
    other = make_temp_dir(models, f"{SMOLLM2_MODEL_ID}.v2")
    old = os.umask(0o022)
    try:
        out = convert_gguf_to_hf(smollm2_gguf_path(), models / SMOLLM2_MODEL_ID)
    finally:
        os.umask(old)
    return out, leftover, other


def test_converted_files_are_readable_by_other_users(converted: tuple[Path, Path, Path]) -> None:
    """make_temp_dir gives the copy "normal (umask) permissions instead of 0700" so that another user (MAX Serve's
    container, a server run as a service user) can read it; the weights file must be readable too."""
    out, _, _ = converted
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert modes.get("model.safetensors") == 0o644, modes
    unreadable = {name: oct(mode) for name, mode in modes.items() if mode & 0o044 != 0o044}
    assert not unreadable, f"files of the converted model other users cannot read (umask 022): {unreadable}"


def test_conversion_removes_what_an_interrupted_conversion_left(converted: tuple[Path, Path, Path]) -> None:
    """Conversions hold the lock, so under it any other .<name>.* temp dir is an orphan of a killed run."""
    out, leftover, other = converted
    assert (out / "config.json").is_file()
    orphans = sorted(p.name for p in out.parent.iterdir() if p.is_dir() and p.name.startswith(f".{out.name}."))
    assert not leftover.exists(), f"orphaned temp dirs of an interrupted conversion are never removed: {orphans}"
    assert other.is_dir(), "another model's temp dir was removed"
    assert (out.parent / f".{out.name}.lock").is_file(), "the lock file was removed"
