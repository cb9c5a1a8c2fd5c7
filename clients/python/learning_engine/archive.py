"""Adapter archives on the client side: pack a PEFT directory into the archive ImportAdapter takes.

The archive is a tar.gz holding exactly ``adapter_config.json`` and ``adapter_model.safetensors`` at
its top, packed the way the server packs the archives it stores (those two members in that order,
zeroed times and owners, mode 0644, PAX headers, gzip mtime 0): the same adapter gives the same
sha256 here and on the server, so an adapter downloaded, unpacked and imported again keeps its digest.

A PEFT directory is what ``save_pretrained`` writes (and Axolotl's or LLaMA-Factory's output
directory): the two files, usually with a tokenizer, a README and training state beside them; only
the two files are packed. Pickled weights (``adapter_model.bin``) are not an adapter here: the server
loads safetensors only.
"""

from __future__ import annotations

import gzip
import hashlib
import tarfile
from pathlib import Path

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
ADAPTER_FILES = (CONFIG_FILE, WEIGHTS_FILE)
_PICKLED_WEIGHTS = ("adapter_model.bin", "adapter_model.pt", "adapter_model.pth")
_CHUNK = 1 << 20


def pack_adapter_directory(source: Path, archive: Path) -> Path:
    """Write the archive of the PEFT directory ``source`` to ``archive``; FileNotFoundError names what is missing."""
    missing = [name for name in ADAPTER_FILES if not (source / name).is_file()]
    if missing:
        pickled = [name for name in _PICKLED_WEIGHTS if (source / name).is_file()]
        hint = (
            f"; {pickled[0]} is pickled weights, which are refused: save with save_pretrained(..., "
            "safe_serialization=True)"
            if pickled and WEIGHTS_FILE in missing
            else ""
        )
        raise FileNotFoundError(
            f"{source} is not a PEFT adapter directory: it has no {' and no '.join(missing)}{hint}"
        )
    with archive.open("wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for name in ADAPTER_FILES:
                    path = source / name
                    info = tarfile.TarInfo(name)
                    info.size = path.stat().st_size
                    info.mode = 0o644
                    info.mtime = 0
                    with path.open("rb") as handle:
                        tar.addfile(info, handle)
    return archive


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
