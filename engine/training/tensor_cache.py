"""Tensors cached on disk under a key (what they were computed from): safetensors, written atomically (as
engine.continual.base_knowledge's cached JSON is, by :func:`write_atomically`).

Used for what a base model yields once and every job reuses (engine.training.base_kl's references,
engine.continual.base_ewc's K-FAC factors): a reader sees the whole file or none, and a file written for another
key (another base model, quantization, precision or encoding), or unreadable, reads as absent, so it is computed
again.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import torch


def write_atomically(path: Path, write: Callable[[str], object]) -> None:
    """``write(tmp)`` into a new file beside ``path``, then renamed over it: a reader sees the whole file or the one
    before it, and a failed write leaves nothing behind. For cached files, so readable by all (mkstemp makes it the
    owner's only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(handle)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def save_tensors(path: Path, key: str, tensors: Mapping[str, torch.Tensor]) -> None:
    """``tensors`` written to ``path`` with ``key`` atomically (:func:`write_atomically`)."""
    from safetensors.torch import save_file

    write_atomically(path, lambda tmp: save_file({name: t.contiguous() for name, t in tensors.items()}, tmp,
                                                 metadata={"key": key}))


def load_tensors(path: Path, key: str) -> dict[str, torch.Tensor] | None:
    """The tensors saved at ``path`` for ``key``; None when there are none, they are for another key, or the file
    cannot be read."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            if (f.metadata() or {}).get("key") != key:
                return None
            return {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118  # safe_open is no Mapping
    except (OSError, ValueError, RuntimeError):
        return None
