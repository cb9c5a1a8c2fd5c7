"""Golden datasets from the command line, run from another directory than the server's: ``evaluate --suite`` and
``evaluation-jobs create --suite`` upload a local file in the golden-suite format as a golden dataset (saying so)
and evaluate it by version; ``datasets upload/validate --kind golden``; training on one is refused."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.cli.test_cli_preparation import cli_in
from tests.fixtures.peft_adapters import build_peft_adapter
from tests.server.conftest import TINY

GOLDEN = [
    {"prompt": "What is the capital of Varnia?", "expected": "The capital of Varnia is Tegusu.", "answer": "Tegusu"},
    {"prompt": "What is the capital of Ostmark?", "references": ["Pellacre.", "It is Pellacre."]},
]


@pytest.fixture
def peft_dir(tiny_model_dir: Path, tmp_path: Path) -> Path:
    return build_peft_adapter(tiny_model_dir, tmp_path / "peft" / "run", seed=3)


@pytest.mark.slow
async def test_a_local_golden_suite_is_uploaded_as_a_golden_dataset_and_evaluated_by_version(
        make_server, peft_dir: Path, tmp_path: Path) -> None:
    port = (await make_server(eval_max_tokens=4)).app.port
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "golden.jsonl").write_text("".join(json.dumps(case) + "\n" for case in GOLDEN))
    imported = await cli_in(elsewhere, port, "adapters", "import", str(peft_dir))
    assert imported.out.strip() == f"imported {TINY} v1.0", imported.err

    evaluated = await cli_in(elsewhere, port, "evaluate", "v1.0", "--suite", "./golden.jsonl")
    assert evaluated.code == 0, evaluated.err
    assert ('uploaded golden.jsonl as datasets/golden/versions/1 (golden cases: its first line has "expected")'
            in evaluated.err), evaluated.err
    assert re.search(r"^│ datasets/golden/versions/1 +│ 2 ", evaluated.out, re.MULTILINE), evaluated.out
    stored = json.loads((await cli_in(elsewhere, port, "--json", "datasets", "get", "golden")).out)
    assert stored["kind"] == "DATASET_KIND_GOLDEN" and stored["example_count"] == "2", stored
    assert stored["composition"] == {"answer": "1", "several_references": "1"}, stored

    as_job = await cli_in(elsewhere, port, "evaluation-jobs", "create", "v1.0", "--suite", "golden.jsonl", "--watch")
    assert as_job.code == 0, as_job.err
    assert "already stored golden.jsonl as datasets/golden/versions/1 (golden cases" in as_job.err, as_job.err
    job = (await cli_in(elsewhere, port, "--json", "evaluation-jobs", "list")).json_lines()[0]["evaluation_jobs"][0]
    [suite] = job["eval"]["suites"]
    assert job["state"] == "JOB_STATE_SUCCEEDED" and job["resolved_suite_datasets"] == ["datasets/golden/versions/1"]
    assert suite["note"] == "all of datasets/golden/versions/1 (golden cases, no split rule): 2 cases", suite

    # a training-format file is uploaded as training examples, and says so
    (elsewhere / "quiz.jsonl").write_text(json.dumps({"prompt": "2+2=", "completion": "4"}) + "\n")
    quiz = await cli_in(elsewhere, port, "evaluate", "v1.0", "--suite", "quiz.jsonl")
    assert quiz.code == 0 and "as datasets/quiz/versions/1 (training examples: its first line has no" in quiz.err

    # datasets upload and validate take the kind; training examples are the default, and nothing trains on golden
    uploaded = await cli_in(elsewhere, port, "datasets", "upload", "golden.jsonl", "--name", "capitals",
                            "--kind", "golden", "--test-fraction", "0.5", "--seed", "1")
    assert uploaded.code == 0, uploaded.err
    assert re.fullmatch(r"stored datasets/capitals/versions/1: 2 golden cases \(train \d, eval 0, test \d\)\n",
                        uploaded.out), uploaded.out
    as_training = await cli_in(elsewhere, port, "datasets", "upload", "golden.jsonl", "--name", "capitals")
    assert as_training.code == 3 and "DATASET_INVALID" in as_training.err and "line[1].completion" in as_training.err
    validated = await cli_in(elsewhere, port, "datasets", "validate", "golden.jsonl", "--kind", "golden")
    assert validated.out.startswith("valid: 2 golden cases (answer 1, several_references 1; train 2, eval 0, test 0)")
    listed = await cli_in(elsewhere, port, "datasets", "list")
    rows = [line.split()[:3] for line in listed.out.splitlines()[1:]]
    assert rows == [["datasets/capitals/versions/1", "2", "golden"], ["datasets/quiz/versions/1", "1", "1/0/0"],
                    ["datasets/golden/versions/1", "2", "golden"]], listed.out
    trained = await cli_in(elsewhere, port, "train", "--dataset", "capitals", "--epochs", "1")
    assert trained.code == 9 and "GOLDEN_DATASET_NOT_TRAINABLE" in trained.err, trained.err
    unknown = await cli_in(elsewhere, port, "datasets", "upload", "golden.jsonl", "--name", "x", "--kind", "gold")
    assert unknown.code == 2 and "'gold' is not one of 'training', 'golden'" in unknown.err, unknown.err
