"""Data preparation jobs: documents into a dataset version of question-answer pairs, as a job of the typed job
core (engine.jobs) with per-chunk progress.

At creation (engine.preparation.creation: the requests, their checks, and the jobs servicers see) every document
is read (so a document that cannot be read, or a bad name or number, is refused before a job exists and nothing is
stored), then its bytes go to the artifact store under their sha256 (``preparations/documents/{sha256}``): the job
names them by digest, so any worker runs it and a document named by a server path cannot change under it.

The job runs where LoraControl runs (it asks the serving engine's model; ``prepare_generator_url`` names another
engine): its kind has the serving queue, as evaluation jobs do. For each chunk (engine.preparation.documents) it
asks the generator once for ``questions_per_chunk`` pairs (engine.preparation.generation), reads the first that many
of its reply, keeps those the chunk supports, and records a ChunkPrepared event. The kept pairs become one JSONL
file, each line a prompt-completion example with its ``source``: the document, the chunk's character offsets in the
document's text and the chunk's text. That file is stored as a version of the named dataset with the spec's split,
as any uploaded file is (engine.training.stored_datasets), so training names the dataset. A generator that cannot be
asked fails the job with UNAVAILABLE GENERATOR_UNAVAILABLE; a job whose every pair was filtered out fails with
FAILED_PRECONDITION NO_PAIRS_KEPT and stores nothing. Cancelling stops it at the next chunk.

The job's progress is its event log: each ChunkPrepared also carries the pairs kept of its chunk, and is stored
with the job (its counters folded in) in one write fenced by the lease, as every event is (engine.jobs.event_log).
A run that stops to go on later (paused, its worker stopping) stops at the next chunk, as a cancel does, and its
release stores what it recorded; a worker that takes the job over (its worker died) reads the same log, losing at
most what was recorded and not yet stored. A run of a job whose log holds ChunkPrepared events takes those chunks'
pairs from them (``_answered``) instead of asking again, with the duplicate check's questions and the counters
they imply, and asks only about the chunks after them, with the generator model the earlier runs asked: it
writes the same file, hence the same version and split, as a run never interrupted. A log that does not fit
the chunks read now (the documents read otherwise since) is set aside with a warning and every chunk asked
again. Nothing is kept outside the job's record, so a cancel, in any state, leaves nothing to remove.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from engine.errors import (
    Cancelled,
    DataLoss,
    EngineError,
    FailedPrecondition,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from engine.jobs.context import JobContext
from engine.jobs.core import Job, JobEvent, JobKind, JobProgress, JobState, Noticed, Warned
from engine.preparation import generation
from engine.preparation.documents import Chunk, chunks, read_text
from engine.registry.ports import ArtifactStore
from engine.serving.client import Completion
from engine.splits import SplitRule
from engine.training.dataset_records import PreparedOrigin, StoredDataset

DEFAULT_QUESTIONS_PER_CHUNK = 3
DEFAULT_CHUNK_CHARS = 1500
MIN_CHUNK_WORDS = 8  # a chunk with fewer words (a lone heading) is not asked about
DOCUMENT_PREFIX = "preparations/documents/"


# ---- the kind ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DocumentRef:
    """A document of a job: its file name (its extension says how it is read) and its bytes' digest."""

    name: str
    sha256: str
    size_bytes: int
    server_path: str = ""  # where it was read, when a server path named it; "": sent with the request

    @property
    def key(self) -> str:
        return DOCUMENT_PREFIX + self.sha256


@dataclass(frozen=True)
class PreparationJobSpec:
    dataset: str  # "datasets/{dataset}": the version is stored under it
    documents: tuple[DocumentRef, ...]
    questions_per_chunk: int = DEFAULT_QUESTIONS_PER_CHUNK
    chunk_chars: int = DEFAULT_CHUNK_CHARS
    generator_model: str = ""  # "": the configured one, else the serving target's base model
    split: SplitRule = field(default_factory=SplitRule)


@dataclass(frozen=True)
class PreparationOutput:
    dataset: str = ""  # the version stored, "datasets/{dataset}/versions/{n}"; set on success
    created: bool = False  # False: a version holding the same pairs and split existed already
    generator_model: str = ""
    generator_target: str = ""
    chunks: int = 0  # asked about
    skipped_chunks: int = 0  # too short to ask about
    generated: int = 0  # pairs read from the replies (at most questions_per_chunk a chunk)
    kept: int = 0
    unsupported: int = 0
    duplicates: int = 0
    unparseable: int = 0  # pieces of replies that were no pair


@dataclass(frozen=True)
class ChunkPrepared:
    """Event: one chunk asked about, and what became of its pairs."""

    document: str
    chunk: int  # within its document
    start: int
    end: int
    done: int  # chunks asked about so far, all documents
    total: int
    kept: int
    unsupported: int
    duplicates: int
    unparseable: int
    rejected_sample: str = ""  # why the first rejected pair was rejected, if one was
    # The pairs kept, in order (``kept`` of them): a later run of the job takes them instead of asking again.
    pairs: tuple[generation.Pair, ...] = ()


PREPARATION = JobKind("preparation", "preparationJobs", PreparationJobSpec, PreparationOutput,
                      event_types=(ChunkPrepared,))
PreparationJob = Job[PreparationJobSpec, PreparationOutput]


# ---- ports --------------------------------------------------------------------------------


class Generator(Protocol):  # engine.serving.client.ServingClient
    @property
    def target(self) -> str: ...

    async def complete(self, model: str, prompt: str, *, max_tokens: int, chat: bool = True,
                       logprobs: bool = False) -> Completion: ...


class PreparedDatasets(Protocol):  # engine.training.stored_datasets.StoredDatasets
    @property
    def max_bytes(self) -> int: ...

    async def store_prepared(self, name: str, path: Path, *, split: SplitRule,
                             origin: PreparedOrigin) -> tuple[StoredDataset, bool]: ...


@dataclass(frozen=True)
class GeneratorConfig:
    model: str = ""  # prepare_generator_model; "": the serving target's base model
    max_tokens: int = 512  # of one reply


# ---- the runner -----------------------------------------------------------------------------


class PreparationRunner:
    kind = PREPARATION

    def __init__(self, generator: Generator, *, artifacts: ArtifactStore, datasets: PreparedDatasets,
                 config: GeneratorConfig, base_model: Callable[[], str]) -> None:
        self._generator = generator
        self._artifacts = artifacts
        self._datasets = datasets
        self._config = config
        self._base_model = base_model

    def model_for(self, spec: PreparationJobSpec) -> str:
        return spec.generator_model or self._config.model or self._base_model()

    async def run(self, ctx: JobContext[PreparationJobSpec, PreparationOutput]) -> str:
        spec = ctx.job.spec
        earlier = ctx.job.output.generator_model if _reported(ctx.events) else ""  # the model earlier runs asked
        model = earlier or self.model_for(spec)
        ctx.set_output(replace(ctx.job.output, generator_model=model, generator_target=self._generator.target))
        ctx.transition(JobState.PREPARING, f"reading {len(spec.documents)} document(s)")
        pieces: list[Chunk] = []
        text_bytes = 0  # the documents' text is held to dataset_max_bytes here too, as when the job was created
        for i, doc in enumerate(spec.documents):
            text = await self._text(doc, f"spec.documents[{i}]", text_bytes)
            text_bytes += len(text.encode())
            pieces += await asyncio.to_thread(chunks, doc.name, text, max_chars=spec.chunk_chars)
        asked = asked_chunks(pieces)
        answered = _answered(ctx.events, asked)
        if answered is None:  # the log does not fit the chunks read now: ask about every chunk again
            ctx.record(Warned("PREPARED_CHUNKS_ASKED_AGAIN", "the chunks an earlier run of this job answered are not "
                              "the chunks its documents are read into now; every chunk is asked about again"))
            answered, model = [], self.model_for(spec)
        # The counters of what was answered (a run that starts over starts them again), folded as the events were.
        folded = replace(ctx.job, output=PreparationOutput(
            generator_model=model, generator_target=self._generator.target, skipped_chunks=len(pieces) - len(asked)))
        for report in answered:
            folded = self.fold(folded, report)
        ctx.set_output(folded.output)
        if not asked:
            raise FailedPrecondition(
                "NO_PAIRS_KEPT", f"the documents hold no chunk of {MIN_CHUNK_WORDS} words or more to ask about; "
                "nothing was stored", metadata={"chunks": str(len(pieces))})
        lines: list[bytes] = []
        seen: dict[str, set[str]] = {}
        for report, chunk in zip(answered, asked, strict=False):
            lines += [line(pair, chunk) for pair in report.pairs]
            seen.setdefault(chunk.document, set()).update(generation.normalised_question(p.question)
                                                          for p in report.pairs)
        size = sum(map(len, lines))
        if answered:
            ctx.record(Noticed("PREPARATION_RESUMED", f"{len(answered)} of {len(asked)} chunk(s) were answered by an "
                                                      f"earlier run of this job ({len(lines)} pair(s) kept): they are "
                                                      f"not asked about again"))
            # The progress as the events stored it: (len(answered), len(asked)), folded from the last of them.
            ctx.started(JobState.RUNNING, f"asking {model} for {spec.questions_per_chunk} pair(s) about each of "
                                          f"the {len(asked) - len(answered)} chunk(s) left of {len(asked)}")
        else:
            ctx.started(JobState.RUNNING, f"asking {model} for {spec.questions_per_chunk} pair(s) about each of "
                                          f"{len(asked)} chunk(s)", total_steps=len(asked))
        for done, chunk in enumerate(asked[len(answered):], start=len(answered) + 1):
            if ctx.cancel.cancelled:  # a pause or a shutdown too: the events recorded are the job's progress
                raise Cancelled("JOB_CANCELLED", f"the preparation was cancelled after {done - 1} of "
                                                 f"{len(asked)} chunks")
            reply = await self._ask(model, chunk, spec.questions_per_chunk)
            reading = generation.parse(reply)
            asked_for = reading.pairs[:spec.questions_per_chunk]  # a model that goes on: the first ones count
            verdicts = generation.select(asked_for, chunk.text, seen.setdefault(chunk.document, set()))
            pairs = tuple(v.pair for v in verdicts if v.kept)
            kept = [line(pair, chunk) for pair in pairs]
            lines += kept
            size += sum(map(len, kept))
            rejected = [v for v in verdicts if not v.kept]
            ctx.record(ChunkPrepared(
                document=chunk.document, chunk=chunk.index, start=chunk.start, end=chunk.end, done=done,
                total=len(asked), kept=len(pairs),
                unsupported=sum(v.problem == "unsupported" for v in verdicts),
                duplicates=sum(v.problem == "duplicate" for v in verdicts), unparseable=reading.unparseable,
                rejected_sample=f"{rejected[0].pair.question!r}: {rejected[0].detail}"[:300] if rejected else "",
                pairs=pairs))
            if size > self._datasets.max_bytes:  # what the lines repeat was held to the limit at creation: the
                raise ResourceExhausted(  # generator's pairs take the rest; stop now, not after every chunk
                    "DATASET_TOO_LARGE", f"the {len(lines)} pair(s) kept from {done} of {len(asked)} chunk(s) hold "
                    f"{size} bytes, more than the {self._datasets.max_bytes} a dataset may hold (dataset_max_bytes): "
                    "the generator's questions and answers take more than the chunks' text leaves; nothing was "
                    "stored", metadata={"limit": str(self._datasets.max_bytes), "size": str(size)})
        out = ctx.job.output
        if not lines:
            raise FailedPrecondition(
                "NO_PAIRS_KEPT", f"{model} wrote {out.generated} pair(s) about {len(asked)} chunk(s) and none is "
                f"supported by its chunk ({out.unsupported} unsupported, {out.duplicates} duplicate, "
                f"{out.unparseable} unparseable); nothing was stored",
                metadata={"generator_model": model, "generated": str(out.generated), "chunks": str(len(asked))})
        path = ctx.work_dir / "prepared.jsonl"

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"".join(lines))

        await asyncio.to_thread(write)
        record, created = await self._datasets.store_prepared(
            spec.dataset, path, split=spec.split,
            origin=PreparedOrigin(job=ctx.job.name, documents=tuple(d.name for d in spec.documents)))
        ctx.set_output(replace(ctx.job.output, dataset=record.name, created=created))
        split = record.content.counts
        return (f"{record.name}: {len(lines)} pair(s) kept of {out.generated} from {len(asked)} chunk(s) "
                f"(train {split.train}, eval {split.eval}, test {split.test})"
                + ("" if created else "; the same pairs were stored already"))

    async def _text(self, doc: DocumentRef, field_path: str, text_before: int) -> str:
        try:
            data = await self._artifacts.get_bytes(doc.key)
        except NotFound as exc:
            raise DataLoss("ARTIFACT_MISSING", f"document {doc.name} is missing from the artifact store",
                           metadata={"document": doc.name, "key": doc.key}) from exc
        if hashlib.sha256(data).hexdigest() != doc.sha256:
            raise DataLoss("ARTIFACT_MISSING", f"the stored bytes of document {doc.name} do not match their sha256",
                           metadata={"document": doc.name, "key": doc.key})
        return await asyncio.to_thread(read_text, doc.name, data, field_path,
                                       max_text_bytes=self._datasets.max_bytes, text_before=text_before)

    async def _ask(self, model: str, chunk: Chunk, n: int) -> str:
        try:
            reply = await self._generator.complete(model, generation.prompt_for(chunk.text, n),
                                                   max_tokens=self._config.max_tokens)
        except EngineError as exc:
            raise Unavailable(
                "GENERATOR_UNAVAILABLE", f"the generator {model} at {self._generator.target} could not be asked "
                f"about chunk {chunk.index} of {chunk.document}: {exc.message}",
                metadata={"generator_model": model, "target": self._generator.target, "cause": exc.reason},
            ) from exc
        return reply.text

    def fold(self, job: PreparationJob, payload: object) -> PreparationJob:
        if isinstance(payload, ChunkPrepared):
            out = job.output
            generated = payload.kept + payload.unsupported + payload.duplicates
            return replace(job, progress=JobProgress(payload.done, payload.total), output=replace(
                out, chunks=payload.done, generated=out.generated + generated, kept=out.kept + payload.kept,
                unsupported=out.unsupported + payload.unsupported, duplicates=out.duplicates + payload.duplicates,
                unparseable=out.unparseable + payload.unparseable))
        return job


def _reported(events: Sequence[JobEvent]) -> bool:
    """Whether an earlier run of the job reported a chunk."""
    return any(isinstance(e.payload, ChunkPrepared) for e in events)


def _answered(events: Sequence[JobEvent], asked: Sequence[Chunk]) -> list[ChunkPrepared] | None:
    """What earlier runs of a job, whose log is ``events``, answered of the chunks it asks about (``asked``): the
    ChunkPrepared of its first chunks, in order ([] if none). A chunk reported again (after a run that started
    over) replaces its report and those after it, as a job resumed from a checkpoint reports its steps again.
    None if the reports do not fit ``asked``: another chunk at a place (the documents are read otherwise now),
    another total, or a report without its kept pairs (one a version before them recorded)."""
    reports: list[ChunkPrepared] = []
    for event in events:
        report = event.payload
        if isinstance(report, ChunkPrepared):
            if not 1 <= report.done <= len(reports) + 1:
                return None
            del reports[report.done - 1:]
            reports.append(report)
    if len(reports) > len(asked):
        return None
    for report, chunk in zip(reports, asked, strict=False):
        if (report.document, report.chunk, report.start, report.end, report.total, report.kept) != (
                chunk.document, chunk.index, chunk.start, chunk.end, len(asked), len(report.pairs)):
            return None
    return reports


def line(pair: generation.Pair, chunk: Chunk) -> bytes:
    doc = {"prompt": pair.question, "completion": pair.answer,
           "source": {"document": chunk.document, "start": chunk.start, "end": chunk.end, "text": chunk.text}}
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def asked_chunks(pieces: list[Chunk]) -> list[Chunk]:
    """The chunks a job asks the generator about: those of ``MIN_CHUNK_WORDS`` words or more."""
    return [c for c in pieces if generation.word_count(c.text) >= MIN_CHUNK_WORDS]

