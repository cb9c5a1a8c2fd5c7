"""A create refused as REQUEST_ID_REUSED stores nothing (its documents do not reach the artifact store)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import grpc

from learning.v1 import preparation_pb2 as pb
from learning.v1 import preparation_pb2_grpc as pb_grpc
from tests.server.test_datasets import refused

FIRST = b"The capital of Veloria is Marnesse. Veloria trades in wool, amber and salted fish."
SECOND = b"The capital of Quorvia is Talameth. Quorvia is a mountain country of goats and copper."


async def test_a_reused_request_id_is_refused_and_stores_nothing(make_server, data_dir: Path):
    client = await make_server()
    jobs = pb_grpc.DataPreparationServiceStub(client.channel)

    def request(content: bytes) -> pb.CreatePreparationJobRequest:
        return pb.CreatePreparationJobRequest(request_id="r-1", spec=pb.PreparationJobSpec(
            dataset="datasets/x", documents=[pb.PreparationDocument(name="a.txt", content=content)]))

    await jobs.CreatePreparationJob(request(FIRST))
    code, reason, _ = await refused(jobs.CreatePreparationJob(request(SECOND)))
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")
    stored = [p.name for p in (data_dir / "artifacts" / "preparations" / "documents").rglob("*") if p.is_file()]
    assert hashlib.sha256(SECOND).hexdigest() not in stored, stored  # the refused request's document was stored

