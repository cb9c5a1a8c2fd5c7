"""Hostile PDFs. A broken PDF must be refused as DOCUMENT_UNREADABLE (never INTERNAL), and a PDF whose
text layer holds a lone UTF-16 surrogate must be refused or prepared, never fail the job as INTERNAL."""

from __future__ import annotations

from pathlib import Path

import grpc

from learning.v1 import common_pb2 as common
from learning.v1 import preparation_pb2 as pb
from learning.v1 import preparation_pb2_grpc as pb_grpc
from tests.engine.test_judge import judge_engine
from tests.fixtures.pdf import pdf_of, text_pdf
from tests.server.test_datasets import refused
from tests.server.test_evaluation_judge import job_reason
from tests.server.test_preparation import prepared, writer

GOOD = text_pdf(["The capital of Veloria is Marnesse. Veloria trades in wool, amber and salted fish."])
BROKEN = {
    "operand.pdf": GOOD.replace(b"BT /F1", b"1 0 R BT /F1", 1),  # pypdf: AssertionError
    "filter.pdf": GOOD.replace(b"<< /Length", b"<< /Filter /FooDecode /Length", 1),  # NotImplementedError
    "jbig2.pdf": GOOD.replace(b"<< /Length", b"<< /Filter /JBIG2Decode /Length", 1),  # DependencyError
}


def pdf_with_tounicode(text: str, cmap_body: bytes) -> bytes:
    cmap = (b"/CIDInit /ProcSet findresource begin 12 dict begin begincmap /CMapName /X def "
            b"1 begincodespacerange <00> <FF> endcodespacerange " + cmap_body + b" endcmap end end")
    body = ("BT /F1 10 Tf 40 800 Td (" + text + ") Tj ET").encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [4 0 R] /Count 1 >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /ToUnicode 6 0 R >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 3 0 R >> >> "
        b"/Contents 5 0 R >>",
        b"<< /Length %d >>\nstream\n" % len(body) + body + b"\nendstream",
        b"<< /Length %d >>\nstream\n" % len(cmap) + cmap + b"\nendstream",
    ]
    return pdf_of(objects)


async def test_broken_pdfs_are_refused_as_unreadable_not_internal(make_server, data_dir: Path):
    client = await make_server()
    jobs = pb_grpc.DataPreparationServiceStub(client.channel)
    got = {}
    for name, data in BROKEN.items():
        spec = pb.PreparationJobSpec(dataset="datasets/x", documents=[pb.PreparationDocument(name=name, content=data)])
        code, reason, violations = await refused(jobs.CreatePreparationJob(pb.CreatePreparationJobRequest(spec=spec)))
        got[name] = (code, reason, [f for f, _ in violations])
    want = (grpc.StatusCode.INVALID_ARGUMENT, "DOCUMENT_UNREADABLE", ["spec.documents[0]"])
    assert got == {name: want for name in BROKEN}


async def test_a_pdf_with_a_lone_surrogate_does_not_fail_the_job_as_internal(make_server, data_dir: Path):
    # The ToUnicode map sends "Z" to U+D800: pypdf decodes it with surrogatepass, so the text holds '\ud800'.
    data = pdf_with_tounicode("The capital of Veloria is Marnesse. Veloria trades in wool, amber and fish Z.",
                              b"1 beginbfchar <5A> <D800> endbfchar")
    runner, url, _ = await judge_engine(writer)
    try:
        client = await make_server(prepare_generator_url=url, prepare_generator_model="writer")
        jobs = pb_grpc.DataPreparationServiceStub(client.channel)
        spec = pb.PreparationJobSpec(dataset="datasets/x", documents=[pb.PreparationDocument(name="a.pdf",
                                                                                            content=data)])
        try:
            job, _ = await prepared(jobs, spec)
        except grpc.aio.AioRpcError as err:  # refused at creation: fine, if it is a clear INVALID_ARGUMENT
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
            return
    finally:
        await runner.cleanup()
    assert job.state == common.JOB_STATE_SUCCEEDED, (job_reason(job), job.error.message)
