"""Adapter archives: a canonical tar.gz of a PEFT directory, its sha256, and safe unpacking.

An archive holds exactly ``adapter_config.json`` and ``adapter_model.safetensors``. Packing is
deterministic (sorted members, zeroed times and owners, gzip mtime 0), so the same adapter
always gives the same sha256; a download re-imported elsewhere keeps its digest.

Unpacking accepts what people upload: the tar.gz of a trainer's output folder, the two files at the top or inside
one folder; the rest of the folder (a tokenizer, a README, training arguments, checkpoints) is dropped unread, as the
client drops it from a folder it packs. Pickled weights (``.bin``, ``.pt``, ...), links, devices, path tricks, more
than 4 GiB of declared content (a decompression bomb) and more than 64 members are refused with INVALID_ARGUMENT
from each member's header, before a byte of it is written.
All functions here are blocking; callers run them off the event loop.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from engine.errors import InvalidArgument

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
ADAPTER_FILES = (CONFIG_FILE, WEIGHTS_FILE)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")
MAX_CONFIG_BYTES = 1 << 20
MAX_UNPACKED_BYTES = 4 << 30  # all members' declared sizes together; as much as ImportAdapter may upload
MAX_MEMBERS = 64
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


def unpack_archive(archive: Path, dest_dir: Path, *, field_path: str = "chunk",
                   max_total_bytes: int = MAX_UNPACKED_BYTES) -> Path:
    """Extract the adapter files of an uploaded archive into ``dest_dir`` (which must not exist).

    The archive is read as a stream, member by member, and each member is checked from its header
    before any of its bytes is written: its name and type, and its declared size against its own
    limit and what the members before it declared, which together may not exceed
    ``max_total_bytes``. A decompression bomb is refused at its header; whatever was written before a
    refusal is removed.
    """
    try:
        tar = tarfile.open(archive, mode="r|*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise _bad("MALFORMED_ARCHIVE", f"the upload is not a tar/tar.gz archive: {exc}", field_path) from exc
    dest_dir.mkdir(parents=True)
    try:
        with tar:
            written = _extract_checked(tar, dest_dir, field_path, max_total_bytes)
    except BaseException:
        shutil.rmtree(dest_dir, ignore_errors=True)
        raise
    missing = [n for n in ADAPTER_FILES if n not in written]
    if missing:
        shutil.rmtree(dest_dir, ignore_errors=True)
        raise _bad("ADAPTER_FILES_MISSING", f"the archive has no {', '.join(missing)}", field_path)
    return dest_dir


def _extract_checked(tar: tarfile.TarFile, dest_dir: Path, field_path: str, max_total_bytes: int) -> set[str]:
    written: set[str] = set()
    layout: str | None = None  # "" once a file sat at the top, else the one folder holding the files
    declared = 0
    try:
        for count, member in enumerate(tar, start=1):
            if count > MAX_MEMBERS:
                raise _bad("UNEXPECTED_ARCHIVE_MEMBER", f"the archive has more than {MAX_MEMBERS} members", field_path)
            if member.isdir():
                continue
            path = _safe_path(member, field_path)
            declared += member.size
            if declared > max_total_bytes:
                raise _bad("ARCHIVE_TOO_LARGE",
                           f"the archive unpacks to more than {max_total_bytes} bytes (member {member.name!r} "
                           f"declares {member.size}); an adapter is never that large", field_path)
            folder = "" if len(path.parts) == 1 else path.parts[0]
            name = path.parts[-1] if len(path.parts) <= 2 else str(path)
            if layout is None:
                layout = folder
            if folder != layout or len(path.parts) > 2 or name not in ADAPTER_FILES:
                # what a trainer leaves beside the adapter (its tokenizer, a README, training args, checkpoints):
                # not kept, as the client leaves it out of a directory it packs (pickles were refused above)
                continue
            if name in written:
                raise _bad("UNEXPECTED_ARCHIVE_MEMBER", f"the archive holds {name} twice", field_path)
            if name == CONFIG_FILE and member.size > MAX_CONFIG_BYTES:
                raise _bad("MALFORMED_ADAPTER_CONFIG", f"{CONFIG_FILE} is larger than 1 MiB", field_path)
            _copy_member(tar, member, dest_dir / name)
            written.add(name)
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise _bad("MALFORMED_ARCHIVE", f"the archive is corrupt: {exc}", field_path) from exc
    return written


def _safe_path(member: tarfile.TarInfo, field_path: str) -> PurePosixPath:
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
    return path


def _copy_member(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> None:
    """Write exactly the member's declared bytes (tarfile reads no more than its header says)."""
    source = tar.extractfile(member)
    assert source is not None
    with source, dest.open("wb") as out:
        for chunk in iter(lambda: source.read(_CHUNK), b""):
            out.write(chunk)


def read_small(path: Path, limit: int = MAX_CONFIG_BYTES) -> bytes:
    with path.open("rb") as handle:
        return handle.read(limit + 1)
