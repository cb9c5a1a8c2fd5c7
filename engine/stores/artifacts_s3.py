"""Artifacts in an S3 bucket (MinIO in docker-compose, SeaweedFS in tests) through the minio SDK.

The SDK is synchronous, so every call runs in a worker thread (``asyncio.to_thread``).

No overwrite, although ``Minio.put_object`` cannot send ``If-None-Match``:

* The registry reserves a version number in PostgreSQL before it writes anything (the
  primary key decides races), and every object a publish writes but the manifest has a key
  of that publish attempt's own (engine.registry.records.attempt_key), so no two publishers
  ever write one such key, even when a number changes hands (a reservation freed as stale).
* Large objects (the archive) are checked with ``stat_object`` before ``fput_object``; an
  existing key is refused. With keys of their attempt's own this is race-free.
* The manifest (``metadata.json``), the object whose presence makes a version published,
  is small and is written with one signed ``PUT`` carrying ``If-None-Match: *`` through the
  SDK's request layer (``Minio._execute``, which signs any headers). The store itself then
  refuses an existing manifest atomically (412), which also protects against writers that
  do not share our database (e.g. a second deployment pointed at the same bucket).
  ``_execute`` is private; minio is pinned to 7.2.* and a test covers the 412 path.

Connection failures (refused, timed out, reset) become ``Unavailable``; the HTTP client is
built with short connect timeouts and few retries so an outage is reported in seconds.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import MinioException, S3Error
from minio.helpers import DictType

from engine.errors import AlreadyExists, FailedPrecondition, NotFound, Unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
_MISSING = ("NoSuchKey", "NoSuchObject", "ResourceNotFound")


class S3ArtifactStore:
    """ArtifactStore (see engine.registry.ports) over an S3 bucket."""

    def __init__(
        self,
        *,
        endpoint: str,
        bucket: str,
        access_key: str,
        secret_key: str,
        secure: bool,
        region: str = "us-east-1",
        connect_timeout: float = 3.0,
        read_timeout: float = 60.0,
        retries: int = 2,
    ) -> None:
        self._endpoint = endpoint
        self._bucket = bucket
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            maxsize=10,
            retries=urllib3.Retry(total=retries, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
        )
        self._client = Minio(
            endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region,
            http_client=http,
        )
        self._ready = False

    @property
    def bucket(self) -> str:
        return self._bucket

    def uri(self, key: str) -> str:
        return f"s3://{self._bucket}/{key}"

    async def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(fn)
        except S3Error:
            raise
        except (urllib3.exceptions.HTTPError, MinioException, OSError) as exc:
            raise Unavailable(
                "ARTIFACT_STORE_UNAVAILABLE",
                f"the object store at {self._endpoint} cannot be reached ({what}): {type(exc).__name__}",
                metadata={"endpoint": self._endpoint, "bucket": self._bucket},
            ) from exc

    async def ensure_ready(self) -> None:
        if self._ready:
            return
        try:
            exists = await self._call("bucket check", lambda: self._client.bucket_exists(self._bucket))
            if not exists:
                await self._call("create bucket", lambda: self._client.make_bucket(self._bucket))
        except S3Error as exc:
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise self._failed(exc, "bucket setup") from exc
        self._ready = True

    async def probe(self) -> None:
        if not await self._call("bucket check", lambda: self._client.bucket_exists(self._bucket)):
            raise Unavailable("ARTIFACT_STORE_UNAVAILABLE", f"the bucket {self._bucket} does not exist",
                              metadata={"endpoint": self._endpoint, "bucket": self._bucket})

    async def remove_partial_writes(self) -> int:
        return 0  # an object PUT is all or nothing; multipart uploads cut short are the store's to expire (MinIO: 24 h)

    async def exists(self, key: str) -> bool:
        await self.ensure_ready()
        try:
            await self._call("stat", lambda: self._client.stat_object(self._bucket, key))
            return True
        except S3Error as exc:
            if exc.code in _MISSING:
                return False
            raise self._failed(exc, "stat") from exc

    async def put_file(self, key: str, path: Path) -> None:
        if await self.exists(key):
            raise _exists(key)
        try:
            await self._call("upload", lambda: self._client.fput_object(self._bucket, key, str(path)))
        except S3Error as exc:
            raise self._failed(exc, "upload") from exc

    async def put_bytes(self, key: str, data: bytes) -> None:
        await self.ensure_ready()
        headers: DictType = {"If-None-Match": "*", "Content-Type": "application/octet-stream"}

        def put() -> None:
            self._client._execute("PUT", self._bucket, key, body=data, headers=headers)  # noqa: SLF001

        try:
            await self._call("upload", put)
        except S3Error as exc:
            if exc.code == "PreconditionFailed" or (exc.response is not None and exc.response.status == 412):
                raise _exists(key) from exc
            raise self._failed(exc, "upload") from exc

    async def get_file(self, key: str, dest: Path) -> None:
        try:
            await self._call("download", lambda: self._client.fget_object(self._bucket, key, str(dest)))
        except S3Error as exc:
            if exc.code in _MISSING:
                raise _missing(key) from exc
            raise self._failed(exc, "download") from exc

    async def get_bytes(self, key: str) -> bytes:
        def read() -> bytes:
            response = self._client.get_object(self._bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        try:
            return await self._call("download", read)
        except S3Error as exc:
            if exc.code in _MISSING:
                raise _missing(key) from exc
            raise self._failed(exc, "download") from exc

    # ---- objects of any bucket, read with this store's client (engine.training.dataset_records.ObjectSource) ----

    async def object_size(self, bucket: str, key: str) -> int | None:
        """The size of ``s3://bucket/key``, or None if there is no such object (a dataset's s3:// source)."""
        try:
            stat = await self._call("stat", lambda: self._client.stat_object(bucket, key))
        except S3Error as exc:
            if exc.code in (*_MISSING, "NoSuchBucket"):
                return None
            raise self._failed(exc, f"stat of s3://{bucket}/{key}") from exc
        return int(stat.size or 0)

    async def download(self, bucket: str, key: str, dest: Path) -> None:
        try:
            await self._call("download", lambda: self._client.fget_object(bucket, key, str(dest)))
        except S3Error as exc:
            if exc.code in _MISSING:
                raise _missing(key) from exc
            raise self._failed(exc, f"download of s3://{bucket}/{key}") from exc

    async def delete(self, keys: Sequence[str]) -> None:
        for key in keys:  # one by one, in order: the manifest goes first
            try:
                await self._call("delete", functools.partial(self._client.remove_object, self._bucket, key))
            except S3Error as exc:
                if exc.code not in _MISSING:
                    raise self._failed(exc, "delete") from exc

    async def list_keys(self, prefix: str) -> list[str]:
        def names() -> list[str]:
            objects = self._client.list_objects(self._bucket, prefix=prefix, recursive=True)
            return sorted(str(o.object_name) for o in objects if o.object_name)

        try:
            return await self._call("list", names)
        except S3Error as exc:
            raise self._failed(exc, "list") from exc

    async def delete_prefix(self, prefix: str) -> None:
        """Remove every object under ``prefix`` (tests and tools)."""

        def remove() -> None:
            objects = self._client.list_objects(self._bucket, prefix=prefix, recursive=True)
            errors = self._client.remove_objects(self._bucket, (DeleteObject(o.object_name) for o in objects))
            for error in errors:
                log.warning("could not delete %s: %s", error.name, error.message)

        await self._call("delete", remove)

    def _failed(self, exc: S3Error, what: str) -> FailedPrecondition:
        return FailedPrecondition(
            "ARTIFACT_STORE_ERROR",
            f"the object store refused the {what}: {exc.code}: {exc.message}",
            metadata={"endpoint": self._endpoint, "bucket": self._bucket, "s3_code": str(exc.code)},
        )


def _exists(key: str) -> AlreadyExists:
    return AlreadyExists(
        "ARTIFACT_EXISTS", f"artifact {key} already exists; refusing to overwrite it", metadata={"key": key}
    )


def _missing(key: str) -> NotFound:
    return NotFound("ARTIFACT_MISSING", f"artifact {key} does not exist", metadata={"key": key})
