"""Artifacts in a local directory (the embedded default): ``<root>/<key>``.

Create-only writes: the bytes go to a temporary file (``.tmp-*``) in the target folder, are fsynced,
then ``os.link``-ed to the final name; a crash between the two leaves the temporary file, which
``remove_partial_writes`` removes at the next start. The writer holds an exclusive ``flock`` on its temporary file
from its creation until it is removed (the kernel drops it when the writer dies), and ``remove_partial_writes`` only
removes temporary files it can lock: a write in flight in another process sharing the folder (the processes of one
machine may share it) is left alone. ``link`` fails if the name exists, so an existing object is never replaced,
even by a racing writer in another process; the folder is fsynced afterwards so the new name survives a crash, and
each folder a write creates (one level at a time) or a delete removes has its parent fsynced too, so the path to a
new object survives a crash as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from engine.errors import AlreadyExists, NotFound, Unavailable

_TEMPORARY_ATTEMPTS = 10


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
        """Remove the temporary files whose writer is gone: those no writer holds locked (see ``_temporary``)."""
        removed = 0
        for leftover in list(self._root.rglob(".tmp-*")):  # _put's temporary files, never an object
            if leftover.is_file() and _remove_unlocked(leftover):
                removed += 1
                try:
                    leftover.parent.rmdir()  # a version folder holding nothing else
                except OSError:
                    continue
                _fsync_dir(leftover.parent.parent)
        return removed

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._path(key).is_file)

    async def put_file(self, key: str, path: Path) -> None:
        await asyncio.to_thread(self._put, key, lambda out: _copy_into(path, out))

    async def put_bytes(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(self._put, key, lambda out: out.write(data))

    def _put(self, key: str, write: Callable[[BinaryIO], object]) -> None:
        final = self._path(key)
        fd, tmp_name = self._temporary(final.parent)
        try:  # the lock on the temporary file is held until it is removed (closing ``fd`` releases it)
            with os.fdopen(fd, "wb", closefd=False) as out:
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
            try:
                os.unlink(tmp_name)
            finally:
                os.close(fd)

    def _temporary(self, folder: Path) -> tuple[int, str]:
        """A new temporary file in ``folder`` (created, one level at a time, if missing), open and exclusively
        locked: ``remove_partial_writes`` leaves it alone until its descriptor is closed. It retries when a sweep
        (or a delete's ``rmdir``) removed the folder or the file before the lock was taken."""
        for _ in range(_TEMPORARY_ATTEMPTS):
            self._make_folders(folder)
            try:
                fd, name = tempfile.mkstemp(prefix=".tmp-", dir=folder)
            except FileNotFoundError:  # the folder went meanwhile (empty, a sweep or delete removed it)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # waits only for a sweep that locked it first (and removes it)
                if os.path.samestat(os.stat(name), os.fstat(fd)):
                    return fd, name
            except FileNotFoundError:  # a sweep locked it before this writer did, and removed it
                pass
            except BaseException:
                os.close(fd)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name)
                raise
            os.close(fd)
        raise Unavailable("ARTIFACT_STORE_UNAVAILABLE",
                          f"could not create a temporary file in {folder}: it was removed each time")

    def _make_folders(self, folder: Path) -> None:
        """Create ``folder`` and its missing parents one level at a time, fsyncing the parent of each folder created,
        so that its name survives a crash (up to the root)."""
        missing: list[Path] = []
        current = folder
        while not current.is_dir():
            missing.append(current)
            if current == current.parent:
                break
            current = current.parent
        for new in reversed(missing):
            try:
                new.mkdir()
            except FileExistsError:  # another writer created it (and fsyncs its parent)
                continue
            _fsync_dir(new.parent)

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
                    continue
                _fsync_dir(folder.parent)  # the folder's name is gone from its parent durably too


def _copy_into(path: Path, out: BinaryIO) -> None:
    with path.open("rb") as src:
        shutil.copyfileobj(src, out, 1 << 20)


def _remove_unlocked(path: Path) -> bool:
    """Remove a temporary file unless its writer still holds it locked (a write in flight, in any process of this
    machine); whether it was removed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:  # its writer finished meanwhile
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a live writer's
            return False
        try:
            if not os.path.samestat(os.stat(path), os.fstat(fd)):
                return False
        except FileNotFoundError:
            return False
        os.unlink(path)  # still locked: its writer, were it to lock it now, finds it gone and starts over
        return True
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _missing(key: str) -> NotFound:
    return NotFound("ARTIFACT_MISSING", f"artifact {key} does not exist", metadata={"key": key})
