"""A document in a language written without spaces (Chinese) is prepared: each of its characters counts as a word,
for the chunks worth asking about (8 words or more) and for the grounding check. Before, every chunk counted as
"fewer than 8 words", and the job failed NO_PAIRS_KEPT without asking the generator."""

from __future__ import annotations

from pathlib import Path

from learning.v1 import common_pb2 as common
from learning.v1 import preparation_pb2 as pb
from learning.v1 import preparation_pb2_grpc as pb_grpc
from tests.engine.test_judge import judge_engine
from tests.server.test_evaluation_judge import job_reason
from tests.server.test_preparation import chunk_text, prepared

TEXT = ("韦洛里亚的首都是马尔内塞。韦洛里亚位于奥尔河畔，与邻国交易羊毛、琥珀和咸鱼。"
        "奎尔维亚的首都是塔拉梅斯。奎尔维亚是一个山地国家，人们在高山谷中养山羊并开采铜矿。\n")


def copier(prompt: str) -> str:
    first = chunk_text(prompt).split("。")[0]
    return f"Q: 韦洛里亚的首都是哪里？\nA: {first}。"


async def test_a_chinese_document_is_asked_about_and_its_grounded_pairs_kept(make_server, data_dir: Path):
    runner, url, asked = await judge_engine(copier)
    try:
        client = await make_server(prepare_generator_url=url, prepare_generator_model="writer")
        jobs = pb_grpc.DataPreparationServiceStub(client.channel)
        spec = pb.PreparationJobSpec(dataset="datasets/zh", questions_per_chunk=1, documents=[
            pb.PreparationDocument(name="zh.txt", content=TEXT.encode())])
        job, _ = await prepared(jobs, spec)
    finally:
        await runner.cleanup()
    assert job.state == common.JOB_STATE_SUCCEEDED, (job_reason(job), job.error.message, job.result.skipped_chunks)
    assert len(asked) == 1 and job.result.kept == 1
