"""Protobuf <-> domain conversion for data preparation jobs (see server/convert.py)."""

from __future__ import annotations

from engine.jobs.core import JobEvent
from engine.names import resource_id
from engine.preparation.creation import DocumentInput, PreparationRequest
from engine.preparation.jobs import (
    DEFAULT_CHUNK_CHARS,
    DEFAULT_QUESTIONS_PER_CHUNK,
    ChunkPrepared,
    PreparationJob,
    PreparationJobSpec,
)
from learning.v1 import dataset_pb2
from learning.v1 import preparation_pb2 as pb
from server.convert_dataset import split_from_pb
from server.convert_jobs import core_event_to_pb, job_core_to_pb


def request_from_pb(msg: pb.PreparationJobSpec) -> PreparationRequest:
    """What a create request asks for; its numbers, names and documents are checked by the engine."""
    documents = []
    for doc in msg.documents:
        which = doc.WhichOneof("source")
        documents.append(DocumentInput(name=doc.name, content=doc.content if which == "content" else None,
                                       server_path=doc.server_path if which == "server_path" else ""))
    return PreparationRequest(
        dataset=msg.dataset, documents=tuple(documents),
        questions_per_chunk=msg.questions_per_chunk or DEFAULT_QUESTIONS_PER_CHUNK,
        chunk_chars=msg.chunk_chars or DEFAULT_CHUNK_CHARS, generator_model=msg.generator_model,
        split=split_from_pb(msg.split, "spec.split"),
    )


def spec_to_pb(spec: PreparationJobSpec) -> pb.PreparationJobSpec:
    msg = pb.PreparationJobSpec(
        dataset=spec.dataset, questions_per_chunk=spec.questions_per_chunk, chunk_chars=spec.chunk_chars,
        generator_model=spec.generator_model,
        documents=[pb.PreparationDocument(name=d.name, sha256=d.sha256, size_bytes=d.size_bytes,
                                          read_from=d.server_path) for d in spec.documents],
    )
    if spec.split.splits:
        msg.split.CopyFrom(dataset_pb2.SplitRule(eval_fraction=spec.split.eval_fraction,
                                                 test_fraction=spec.split.test_fraction, seed=spec.split.seed))
    return msg


def job_to_pb(job: PreparationJob) -> pb.PreparationJob:
    o = job.output
    msg = job_core_to_pb(job, pb.PreparationJob(spec=spec_to_pb(job.spec)))
    msg.result.CopyFrom(pb.PreparationResult(
        dataset_version=o.dataset, created=o.created, generator_model=o.generator_model,
        generator_target=o.generator_target, chunks=o.chunks, skipped_chunks=o.skipped_chunks,
        generated=o.generated, kept=o.kept, unsupported=o.unsupported, duplicates=o.duplicates,
        unparseable=o.unparseable))
    return msg


def event_to_pb(event: JobEvent) -> pb.PreparationJobEvent:
    msg = core_event_to_pb(event, pb.PreparationJobEvent())
    p = event.payload
    if isinstance(p, ChunkPrepared):
        msg.chunk.CopyFrom(pb.ChunkPrepared(
            document=p.document, chunk=p.chunk, start=p.start, end=p.end, done=p.done, total=p.total, kept=p.kept,
            unsupported=p.unsupported, duplicates=p.duplicates, unparseable=p.unparseable,
            rejected_sample=p.rejected_sample))
    return msg


def job_id_from_name(name: str, field_path: str = "name") -> str:
    return resource_id(name, "preparationJobs", field_path)
