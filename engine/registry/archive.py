"""Adapter archives: a canonical tar.gz of a PEFT directory, its sha256, and safe unpacking.

An archive holds exactly ``adapter_config.json`` and ``adapter_model.safetensors``. Packing is
deterministic (sorted members, zeroed times and owners, gzip mtime 0), so the same adapter
always gives the same sha256; a download re-imported elsewhere keeps its digest.

Unpacking accepts what people upload: the two files at the top or inside one folder, plus an
optional README.md (dropped). Pickled weights (``.bin``, ``.pt``, ...), links, devices, path
tricks and anything else are refused with INVALID_ARGUMENT before a byte is written.
All functions here are blocking; callers run them off the event loop.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import tarfile
from pathlib import Path, PurePosixPath

from engine.errors import InvalidArgument

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
ADAPTER_FILES = (CONFIG_FILE, WEIGHTS_FILE)
IGNORED_FILES = ("README.md",)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")
MAX_CONFIG_BYTES = 1 << 20
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pack_adapter(src_dir: Path, dest: Path) -> tuple[str, int]:
    """Write the canonical archive of the PEFT directory ``src_dir``; return (sha256, size)."""
    for name in ADAPTER_FILES:
        if not (src_dir / name).is_file():
            raise InvalidArgument("ADAPTER_FILES_MISSING", f"adapter directory has no {name}")
    with dest.open("wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for name in ADAPTER_FILES:
                    path = src_dir / name
                    info = tarfile.TarInfo(name)
                    info.size = path.stat().st_size
                    info.mode = 0o644
                    info.mtime = 0
                    with path.open("rb") as handle:
                        tar.addfile(info, handle)
        raw.flush()
    return sha256_file(dest), dest.stat().st_size


def _bad(reason: str, message: str, field_path: str) -> InvalidArgument:
    from engine.errors import FieldViolation  # noqa: PLC0415 - keep the module's public surface small

    return InvalidArgument(reason, message, violations=[FieldViolation(field_path, message)])


def unpack_archive(archive: Path, dest_dir: Path, *, field_path: str = "chunk") -> Path:
    """Extract the adapter files of an uploaded archive into ``dest_dir`` (which must not exist)."""
    try:
        tar = tarfile.open(archive, mode="r:*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise _bad("MALFORMED_ARCHIVE", f"the upload is not a tar/tar.gz archive: {exc}", field_path) from exc
    with tar:
        try:
            members = [m for m in tar.getmembers() if not m.isdir()]
        except (tarfile.TarError, OSError, EOFError, gzip.BadGzipFile) as exc:
            raise _bad("MALFORMED_ARCHIVE", f"the archive is corrupt: {exc}", field_path) from exc
        chosen = _choose_members(members, field_path)
        dest_dir.mkdir(parents=True)
        for name, member in chosen.items():
            source = tar.extractfile(member)
            assert source is not None
            with source, (dest_dir / name).open("wb") as out:
                for chunk in iter(functools.partial(source.read, _CHUNK), b""):
                    out.write(chunk)
    return dest_dir


def _choose_members(members: list[tarfile.TarInfo], field_path: str) -> dict[str, tarfile.TarInfo]:
    paths = {}
    for member in members:
        path = PurePosixPath(member.name.removeprefix("./"))
        if path.is_absolute() or ".." in path.parts or not path.parts:
            raise _bad("UNSAFE_ARCHIVE_MEMBER", f"archive member {member.name!r} escapes the archive", field_path)
        if path.suffix.lower() in PICKLE_SUFFIXES:
            raise _bad(
                "PICKLED_WEIGHTS",
                f"archive member {member.name!r} is a pickle-based weights file; upload safetensors only "
                f"(save_pretrained(..., safe_serialization=True))",
                field_path,
            )
        if not member.isreg():
            raise _bad("UNSAFE_ARCHIVE_MEMBER", f"archive member {member.name!r} is not a regular file", field_path)
        paths[path] = member
    folders = {p.parts[0] for p in paths if len(p.parts) > 1}
    top_level = {p for p in paths if len(p.parts) == 1}
    strip = 1 if len(folders) == 1 and not top_level else 0
    chosen: dict[str, tarfile.TarInfo] = {}
    for path, member in paths.items():
        rest = PurePosixPath(*path.parts[strip:])
        name = str(rest)
        if name in IGNORED_FILES:
            continue
        if name not in ADAPTER_FILES:
            raise _bad(
                "UNEXPECTED_ARCHIVE_MEMBER",
                f"archive member {member.name!r} is not part of a PEFT LoRA adapter "
                f"(expected {', '.join(ADAPTER_FILES)})",
                field_path,
            )
        chosen[name] = member
    missing = [n for n in ADAPTER_FILES if n not in chosen]
    if missing:
        raise _bad("ADAPTER_FILES_MISSING", f"the archive has no {', '.join(missing)}", field_path)
    if chosen[CONFIG_FILE].size > MAX_CONFIG_BYTES:
        raise _bad("MALFORMED_ADAPTER_CONFIG", f"{CONFIG_FILE} is larger than 1 MiB", field_path)
    return chosen


def read_small(path: Path, limit: int = MAX_CONFIG_BYTES) -> bytes:
    with path.open("rb") as handle:
        return handle.read(limit + 1)
