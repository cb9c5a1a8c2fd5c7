"""Artifacts in a local directory (the embedded default): ``<root>/<key>``.

Create-only writes: the bytes go to a temporary file (``.tmp-*``) in the target folder, are fsynced,
then ``os.link``-ed to the final name; a crash between the two leaves the temporary file, which
``remove_partial_writes`` removes at the next start. ``link`` fails if the name exists, so an existing
object is never replaced, even by a racing writer in another process; the folder is
fsynced afterwards so the new name survives a crash.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from engine.errors import AlreadyExists, NotFound, Unavailable


class LocalArtifactStore:
    """ArtifactStore (see engine.registry.ports) over a directory."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def _path(self, key: str) -> Path:
        parts = PurePosixPath(key).parts
        if not parts or key.startswith("/") or ".." in parts:
            raise ValueError(f"bad artifact key {key!r}")
        return self._root.joinpath(*parts)

    def uri(self, key: str) -> str:
        return self._path(key).resolve().as_uri()

    async def ensure_ready(self) -> None:
        await asyncio.to_thread(self._root.mkdir, parents=True, exist_ok=True)

    async def probe(self) -> None:
        await asyncio.to_thread(self._probe)

    def _probe(self) -> None:
        try:  # a file written and removed: the folder exists, is writable and has room
            with tempfile.TemporaryFile(prefix=".probe-", dir=self._root) as handle:
                handle.write(b"ok")
                handle.flush()
        except OSError as exc:
            raise Unavailable(
                "ARTIFACT_STORE_UNAVAILABLE", f"the artifact directory {self._root} cannot be written: {exc.strerror}",
            ) from exc

    async def remove_partial_writes(self) -> int:
        return await asyncio.to_thread(self._remove_partial_writes)

    def _remove_partial_writes(self) -> int:
        removed = 0
        for leftover in list(self._root.rglob(".tmp-*")):  # _put's temporary files, never an object
            if leftover.is_file():
                leftover.unlink(missing_ok=True)
                removed += 1
                try:
                    leftover.parent.rmdir()  # a version folder holding nothing else
                except OSError:
                    pass
        return removed

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._path(key).is_file)

    async def put_file(self, key: str, path: Path) -> None:
        await asyncio.to_thread(self._put, key, lambda out: _copy_into(path, out))

    async def put_bytes(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._put, key, lambda out: out.write(data))

    def _put(self, key: str, write: Callable[[BinaryIO], object]) -> None:
        final = self._path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=final.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                write(out)
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(tmp_name, final)
            except FileExistsError:
                raise AlreadyExists(
                    "ARTIFACT_EXISTS", f"artifact {key} already exists; refusing to overwrite it",
                    metadata={"key": key},
                ) from None
            _fsync_dir(final.parent)
        finally:
            os.unlink(tmp_name)

    async def get_file(self, key: str, dest: Path) -> None:
        await asyncio.to_thread(self._get_file, key, dest)

    def _get_file(self, key: str, dest: Path) -> None:
        try:
            shutil.copyfile(self._path(key), dest)
        except FileNotFoundError:
            raise _missing(key) from None

    async def get_bytes(self, key: str) -> bytes:
        try:
            return await asyncio.to_thread(self._path(key).read_bytes)
        except FileNotFoundError:
            raise _missing(key) from None

    async def delete(self, keys: Sequence[str]) -> None:
        await asyncio.to_thread(self._delete, list(keys))

    async def list_keys(self, prefix: str) -> list[str]:
        return await asyncio.to_thread(self._list_keys, prefix)

    def _list_keys(self, prefix: str) -> list[str]:
        folder = prefix.rsplit("/", 1)[0]  # the objects under prefix are in this folder or below it
        top = self._path(folder) if folder else self._root
        if not top.is_dir():
            return []
        keys = (p.relative_to(self._root).as_posix() for p in top.rglob("*")
                if p.is_file() and not p.name.startswith(".tmp-"))  # not _put's temporary files
        return sorted(k for k in keys if k.startswith(prefix))

    def _delete(self, keys: list[str]) -> None:
        folders = set()
        for key in keys:
            path = self._path(key)
            path.unlink(missing_ok=True)
            folders.add(path.parent)
        for folder in folders:
            if folder.is_dir():
                _fsync_dir(folder)
                try:
                    folder.rmdir()  # only when empty
                except OSError:
                    pass


def _copy_into(path: Path, out: BinaryIO) -> None:
    with path.open("rb") as src:
        shutil.copyfileobj(src, out, 1 << 20)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _missing(key: str) -> NotFound:
    return NotFound("ARTIFACT_MISSING", f"artifact {key} does not exist", metadata={"key": key})
