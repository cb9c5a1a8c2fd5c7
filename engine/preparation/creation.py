"""Creating data preparation jobs (the kind, its spec and its runner: engine.preparation.jobs): the requests
servicers send, checked and their documents read and stored before a job exists, and the jobs' get, list, cancel
and watch.

At creation every document is read (so a document that cannot be read, or a bad name or number, is refused
before a job exists and nothing is stored), then its bytes go to the artifact store under their sha256
(``preparations/documents/{sha256}``, DocumentRef.key): the job names them by digest.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import AlreadyExists, FieldViolation, InvalidArgument, ResourceExhausted
from engine.jobs.codec import request_digest
from engine.jobs.core import JobEvent, JobState
from engine.jobs.manager import JobManager, RetriedCreates
from engine.preparation import generation
from engine.preparation.documents import chunks, document_kind, read_text
from engine.preparation.jobs import (
    DEFAULT_CHUNK_CHARS,
    DEFAULT_QUESTIONS_PER_CHUNK,
    DocumentRef,
    PreparationJob,
    PreparationJobSpec,
    PreparationOutput,
    asked_chunks,
    line,
)
from engine.registry.ports import ArtifactStore
from engine.splits import SplitRule
from engine.training.dataset_records import parse_dataset_name

MAX_DOCUMENTS = 256
MAX_QUESTIONS_PER_CHUNK = 10
MIN_CHUNK_CHARS, MAX_CHUNK_CHARS = 200, 8000


@dataclass(frozen=True)
class DocumentInput:
    """A document as a request gives it: its bytes, or a path below the datasets directory."""

    name: str
    content: bytes | None = None
    server_path: str = ""


@dataclass(frozen=True)
class PreparationRequest:
    dataset: str
    documents: tuple[DocumentInput, ...]
    questions_per_chunk: int = DEFAULT_QUESTIONS_PER_CHUNK
    chunk_chars: int = DEFAULT_CHUNK_CHARS
    generator_model: str = ""
    split: SplitRule = field(default_factory=SplitRule)


ServerPath = Callable[[str, str], Path]  # (path below the datasets directory, request field) -> file; raises if bad


class PreparationJobs(RetriedCreates[PreparationJobSpec, PreparationOutput]):
    """The preparation jobs servicers see: create (validated, documents stored), get, list, cancel, watch."""

    def __init__(self, manager: JobManager[PreparationJobSpec, PreparationOutput], *, artifacts: ArtifactStore,
                 server_path: ServerPath, max_bytes: int) -> None:
        self._manager = manager
        self._artifacts = artifacts
        self._server_path = server_path
        self._max_bytes = max_bytes

    async def create(self, request: PreparationRequest, *, request_id: str = "",
                     received: object = None) -> PreparationJob:
        """Read and check the documents, store them, and queue a job of them; the job of an earlier create with
        ``request_id`` and the same ``received`` (the request as the client sent it; ``request`` if None) first,
        before any document is read, whatever changed since (a server_path document removed)."""
        digest = request_digest(request if received is None else received)
        earlier = await self._manager.created_for(request_id, digest)
        if earlier is not None:
            return earlier
        parse_dataset_name(request.dataset, "spec.dataset", versioned=False)
        _check_numbers(request)
        if not request.documents:
            raise InvalidArgument("INVALID_PREPARATION_SPEC", "name at least one document",
                                  violations=[FieldViolation("spec.documents", "at least one document")])
        if len(request.documents) > MAX_DOCUMENTS:
            raise InvalidArgument("INVALID_PREPARATION_SPEC", f"at most {MAX_DOCUMENTS} documents a job",
                                  violations=[FieldViolation("spec.documents", f"at most {MAX_DOCUMENTS}")])
        names: set[str] = set()
        read: list[tuple[DocumentInput, bytes]] = []
        total = 0
        # dataset_max_bytes holds the documents' bytes and also their text as UTF-8, which is what the job chunks and
        # what its pairs' source spans store: a small PDF can hold far more text than bytes (pages that all show one
        # compressed stream), and would cost the reading, and the generator one request a chunk, of all of it. Its
        # pages are read one by one, and the reading stops as soon as the text passes the limit. The same limit,
        # rather than a setting of its own: a prepared dataset of more text than dataset_max_bytes could not be
        # stored anyway.
        text_bytes = 0
        repeated = 0  # what the pairs' lines repeat of the documents, at most (_repeated_bytes)
        for i, doc in enumerate(request.documents):
            where = f"spec.documents[{i}]"
            document_kind(doc.name, f"{where}.name")
            if doc.name in names:
                raise InvalidArgument("INVALID_PREPARATION_SPEC", f"two documents are named {doc.name!r}",
                                      violations=[FieldViolation(f"{where}.name", "names must differ")])
            names.add(doc.name)
            data = await self._bytes(doc, where)
            total += len(data)
            if total > self._max_bytes:
                raise ResourceExhausted(
                    "DOCUMENTS_TOO_LARGE", f"the documents hold more than the {self._max_bytes} bytes a preparation "
                    "may read (dataset_max_bytes); nothing was stored",
                    metadata={"limit": str(self._max_bytes), "size": str(total)})
            text = await asyncio.to_thread(read_text, doc.name, data, where, max_text_bytes=self._max_bytes,
                                           text_before=text_bytes)  # readable, with text, not too much, or refused
            text_bytes += len(text.encode())
            repeated += await asyncio.to_thread(_repeated_bytes, doc.name, text, request)
            read.append((doc, data))
        if repeated > self._max_bytes:
            raise ResourceExhausted(
                "DOCUMENTS_TOO_LARGE", f"each kept pair's line repeats its chunk's text, so with up to "
                f"{request.questions_per_chunk} pair(s) a chunk the prepared dataset could hold {repeated} bytes "
                f"before any question or answer, more than the {self._max_bytes} a dataset may hold "
                "(dataset_max_bytes); send less text or ask for fewer questions_per_chunk; nothing was stored",
                violations=[FieldViolation("spec.documents", f"their text, {request.questions_per_chunk} time(s) "
                                                             f"over, is more than {self._max_bytes} bytes"),
                            FieldViolation("spec.questions_per_chunk", "fewer pairs a chunk repeat its text less")],
                metadata={"limit": str(self._max_bytes), "size": str(repeated), "measured": "repeated_text",
                          "questions_per_chunk": str(request.questions_per_chunk)})
        refs = [DocumentRef(doc.name, hashlib.sha256(data).hexdigest(), len(data), doc.server_path)
                for doc, data in read]
        spec = PreparationJobSpec(dataset=request.dataset, documents=tuple(refs),
                                  questions_per_chunk=request.questions_per_chunk, chunk_chars=request.chunk_chars,
                                  generator_model=request.generator_model, split=request.split)
        job = self._manager.new_job(spec, PreparationOutput(), request_id=request_id, digest=digest)
        await self._manager.check_request(job)  # a reused request_id is refused before anything is stored
        for ref, (_, data) in zip(refs, read, strict=True):  # only once every document is readable
            try:
                await self._artifacts.put_bytes(ref.key, data)
            except AlreadyExists:  # the same bytes, sent before (the key is their digest)
                pass
        return await self._manager.submit(job)

    async def _bytes(self, doc: DocumentInput, where: str) -> bytes:
        if doc.content is not None and doc.server_path:
            raise InvalidArgument("INVALID_PREPARATION_SPEC", f"{where} gives both content and server_path",
                                  violations=[FieldViolation(where, "set content or server_path, not both")])
        if doc.content is not None:
            if not doc.content:
                raise InvalidArgument("INVALID_PREPARATION_SPEC", f"{where}.content is empty",
                                      violations=[FieldViolation(f"{where}.content", "must not be empty")])
            return doc.content
        if not doc.server_path:
            raise InvalidArgument("INVALID_PREPARATION_SPEC", f"{where} gives neither content nor server_path",
                                  violations=[FieldViolation(where, "set content or server_path")])
        path = await asyncio.to_thread(self._server_path, doc.server_path, f"{where}.server_path")
        try:
            size = await asyncio.to_thread(lambda: path.stat().st_size)
            if size > self._max_bytes:
                raise ResourceExhausted(
                    "DOCUMENTS_TOO_LARGE", f"document {doc.server_path} holds {size} bytes, more than the "
                    f"{self._max_bytes} a preparation may read (dataset_max_bytes)",
                    metadata={"limit": str(self._max_bytes), "size": str(size)})
            return await asyncio.to_thread(path.read_bytes)
        except OSError as exc:  # e.g. a file the server may not read
            raise InvalidArgument(
                "DOCUMENT_UNREADABLE", f"document {doc.server_path} cannot be read ({exc.strerror})",
                violations=[FieldViolation(f"{where}.server_path", "cannot be read")],
                metadata={"document": doc.name}) from exc

    async def get(self, job_id: str) -> PreparationJob:
        return await self._manager.get(job_id)

    async def list(self, *, states: Sequence[JobState], page_size: int,
                   page_token: str) -> tuple[list[PreparationJob], str]:
        return await self._manager.list(states=states, page_size=page_size, page_token=page_token)

    async def cancel(self, job_id: str) -> PreparationJob:
        return await self._manager.cancel(job_id)

    def watch(self, job_id: str, *, after_sequence: int = 0) -> AsyncIterator[PreparationJob | JobEvent]:
        return self._manager.watch(job_id, after_sequence=after_sequence)


def _repeated_bytes(name: str, text: str, request: PreparationRequest) -> int:
    """The most the prepared file's lines can take for the document itself: each kept pair's line repeats its
    chunk's text and span (``line``), and a chunk asked about keeps at most ``questions_per_chunk`` pairs.

    Checked when the job is created, so that a job whose documents are accepted does not fail DATASET_TOO_LARGE
    at its end, after asking about every chunk, for what the service itself repeats. The pairs' questions and
    answers are the generator's, not known yet; they are counted as the job goes (the job stops when its lines
    pass the limit). Storing each chunk's text once, or not at all, would change the stored format that readers
    of the pairs rely on (each line's source span with its text), and would still not bound the lines."""
    empty = generation.Pair("", "")
    return request.questions_per_chunk * sum(
        len(line(empty, c)) for c in asked_chunks(chunks(name, text, max_chars=request.chunk_chars)))



def _check_numbers(request: PreparationRequest) -> None:
    violations = []
    if not 1 <= request.questions_per_chunk <= MAX_QUESTIONS_PER_CHUNK:
        violations.append(FieldViolation("spec.questions_per_chunk", f"1 to {MAX_QUESTIONS_PER_CHUNK} (0: "
                                                                     f"{DEFAULT_QUESTIONS_PER_CHUNK})"))
    if not MIN_CHUNK_CHARS <= request.chunk_chars <= MAX_CHUNK_CHARS:
        violations.append(FieldViolation("spec.chunk_chars", f"{MIN_CHUNK_CHARS} to {MAX_CHUNK_CHARS} (0: "
                                                             f"{DEFAULT_CHUNK_CHARS})"))
    if len(request.generator_model) > 256 or not request.generator_model.isprintable():
        violations.append(FieldViolation("spec.generator_model", "at most 256 printable characters"))
    if violations:
        raise InvalidArgument("INVALID_PREPARATION_SPEC", "invalid preparation spec: "
                              + "; ".join(f"{v.field} must be {v.description}" for v in violations),
                              violations=violations)
