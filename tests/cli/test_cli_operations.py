"""The ``learning-engine`` commands beyond train/deploy against a live server: what --validate-only found,
job lists with whole names at 80 columns, pause/resume/cancel, checkpoints, Fisher and evaluation jobs, datasets,
feedback (a stream, stats, forgetting a user, train --force), the registry (importing a PEFT directory,
downloads named by version and never overwritten unless --force, lineage, prune, delete), evaluate and its
reports (a local suite uploaded as a dataset from another directory, the HTML report fetched there), and status
--watch.

The server runs no worker (``embedded_worker=False``): jobs stay QUEUED until a command steers them, and no test
here trains. (Evaluation jobs run all the same, on the worker of the process that serves LoraControl.)
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
from pathlib import Path

import pytest

from tests.cli.test_cli_e2e import CLI, TRAIN, cli
from tests.cli.test_cli_preparation import cli_in
from tests.fixtures.peft_adapters import build_peft_adapter
from tests.server.conftest import TINY

JOB_NAME_LENGTH = len("trainingJobs/") + 32


@pytest.fixture(scope="module")
def peft_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An output directory as PEFT's save_pretrained leaves it (Axolotl and LLaMA-Factory too), with training
    state beside the adapter files."""
    out = build_peft_adapter(tiny_model_dir, tmp_path_factory.mktemp("peft-cli") / "run", seed=3)
    (out / "training_args.bin").write_bytes(b"\x80\x04pickled")
    return out


def feedback_lines(*users: str) -> str:
    return "".join(json.dumps({
        "client_event_id": f"cli-{i}", "kind": "FEEDBACK_KIND_THUMBS_UP", "user_id": user,
        "interaction": {"prompt": f"What is the capital of country {i}?", "response": f"City {i}."},
    }) + "\n" for i, user in enumerate(users))


@pytest.mark.slow
async def test_jobs_feedback_registry_and_serving_commands(make_server, data_dir: Path, peft_dir: Path,
                                                          tmp_path: Path) -> None:
    (data_dir / "datasets" / "golden.jsonl").write_text(
        json.dumps({"prompt": "What is the capital of France?", "expected": "Paris"}) + "\n")
    port = (await make_server(embedded_worker=False, eval_max_tokens=4)).app.port

    # --validate-only says what validation found and names no job.
    checked = await cli(port, *TRAIN, "--validate-only")
    assert checked.code == 0, checked.err
    assert "valid; nothing created" in checked.out and "capitals.jsonl: 24 examples" in checked.out
    assert "2 epochs, lr 0.005 (linear), batch 4, max_seq_length 128" in checked.out and f"{TINY}" in checked.out
    cosine = await cli(port, *TRAIN, "--lr-schedule", "cosine", "--warmup-steps", "3", "--validate-only")
    assert "lr 0.005 (cosine after 3 warm-up steps)" in cosine.out, cosine.out
    assert (await cli(port, *TRAIN, "--lr-schedule", "exponential")).code == 2
    assert "created" not in checked.out.replace("nothing created", "") and "trainingJobs/" not in checked.out
    assert json.loads((await cli(port, "--json", "jobs", "list")).out)["training_jobs"] == []  # nothing created
    kto = await cli(port, *TRAIN, "--objective", "kto", "--validate-only")
    assert kto.code == 3 and "KTO_NEEDS_FEEDBACK" in kto.err
    assert (await cli(port, *TRAIN, "--objective", "dpo")).code == 2

    # Queued jobs: whole names at 80 columns (and narrower), filtered by state, steered one command each.
    created = [await cli(port, *TRAIN, "--priority", "3") for _ in range(2)]
    assert all(c.code == 0 and c.out.startswith("created trainingJobs/") for c in created), created
    names = [c.out.split()[1] for c in created]
    for columns, wide in ((80, False), (80, True), (50, False)):
        listed = await cli(port, "jobs", "list", *(["--wide"] if wide else []), columns=columns)
        assert listed.code == 0, listed.err
        rows = [line.split() for line in listed.out.splitlines()[1:]]
        assert [row[0] for row in rows] == names[::-1], listed.out  # newest first, each name whole
        assert all(len(row[0]) == JOB_NAME_LENGTH and row[1] == "QUEUED" for row in rows)
        header = listed.out.splitlines()[0].split()
        assert header[:4] == ["name", "state", "progress", "adapter"] and ("worker" in header) == wide
        if columns == 80 and not wide:
            assert max(len(line.rstrip()) for line in listed.out.splitlines()) <= 80, listed.out
    paused = await cli(port, "jobs", "pause", names[0])
    assert (paused.code, paused.out.strip()) == (0, f"{names[0]} PAUSED"), paused.err
    only_paused = await cli(port, "--json", "jobs", "list", "--state", "paused")
    assert [j["name"] for j in json.loads(only_paused.out)["training_jobs"]] == [names[0]]
    unknown_state = await cli(port, "jobs", "list", "--state", "sleeping")
    assert unknown_state.code == 2 and "unknown state 'sleeping'" in unknown_state.err
    again = await cli(port, "jobs", "pause", names[0])
    assert again.code == 9 and "JOB_NOT_PAUSABLE" in again.err  # FAILED_PRECONDITION
    assert (await cli(port, "jobs", "resume", names[0])).out.strip() == f"{names[0]} QUEUED"
    assert (await cli(port, "jobs", "cancel", names[0])).out.strip() == f"{names[0]} CANCELLED"
    none = await cli(port, "jobs", "checkpoints", names[0])
    assert none.code == 0 and none.out.strip() == f"{names[0]} has no stored checkpoints"
    unpublished = await cli(port, "--json", "jobs", "publish", names[0], "3")
    assert unpublished.code == 5 and unpublished.json_lines()[0]["error"]["reason"] == "CHECKPOINT_NOT_FOUND"

    # Datasets: an upload by short name (and the same again), a server file, whole names in the list, validation
    # of a bad file, training by name, delete.
    samples = data_dir / "datasets" / "capitals.jsonl"
    uploaded = await cli(port, "datasets", "upload", str(samples), "--name", "capitals", "--eval-fraction", "0.25")
    split_counts = re.match(r"stored datasets/capitals/versions/1: 24 examples \(train (\d+), eval (\d+), test 0\)$",
                       uploaded.out.strip())
    assert uploaded.code == 0 and split_counts and int(split_counts[2]) > 0, uploaded.out + uploaded.err
    same = await cli(port, "datasets", "upload", str(samples), "--name", "capitals", "--eval-fraction", "0.25")
    assert same.out.startswith("exists datasets/capitals/versions/1: "), same.out
    copied = await cli(port, "datasets", "create", "capitals-copy", "--server-path", "capitals.jsonl")
    assert copied.out.startswith("stored datasets/capitals-copy/versions/1: 24 examples (train 24, eval 0"), copied.err
    two_sources = await cli(port, "datasets", "create", "x", "--server-path", "a.jsonl", "--from-feedback", "7")
    assert two_sources.code == 3 and "(got --server-path and --from-feedback)" in two_sources.err
    stored = await cli(port, "datasets", "list", columns=80)
    assert [line.split() for line in stored.out.splitlines()[1:]] == [
        ["datasets/capitals-copy/versions/1", "24", "24/0/0", "server", "file"],
        ["datasets/capitals/versions/1", "24", f"{split_counts[1]}/{split_counts[2]}/0", "upload"]], stored.out
    assert max(len(line.rstrip()) for line in stored.out.splitlines()) <= 80, stored.out
    bad_lines = tmp_path / "bad.jsonl"
    bad_lines.write_text('{"prompt": "What is the capital of Veloria?"}\n')
    rejected = await cli(port, "datasets", "validate", str(bad_lines))
    assert rejected.code == 3 and "line[1]" in rejected.err, rejected.err
    valid = await cli(port, "datasets", "validate", "--server-path", "capitals.jsonl")
    assert valid.out.startswith("valid: 24 examples ("), valid.out + valid.err
    by_name = await cli(port, "train", "--dataset", "capitals", "--validate-only")
    assert by_name.code == 0 and "datasets/capitals/versions/1: " in by_name.out, by_name.out + by_name.err
    deleted = await cli(port, "datasets", "delete", "capitals-copy")
    assert deleted.out.strip() == "deleted datasets/capitals-copy/versions/1"

    # Feedback: one stream, stats, train --force below --min-samples, forgetting a user.
    events = tmp_path / "events.jsonl"
    events.write_text(feedback_lines("u-1", "u-2", "u-1"))
    streamed = await cli(port, "feedback", "import", str(events), "--stream", "--batch", "2")
    assert (streamed.code, streamed.out.strip()) == (0, "3 events: 3 stored, 0 duplicates"), streamed.err
    stats = await cli(port, "--json", "feedback", "stats")
    counted = json.loads(stats.out)
    assert int(counted["total"]) == 3 and counted["by_kind"] == [{"kind": "FEEDBACK_KIND_THUMBS_UP", "count": "3"}]
    human = await cli(port, "feedback", "stats", "--days", "1")
    assert human.out.startswith("3 events from ") and "thumbs_up" in human.out and "(base model)" in human.out
    before = await cli(port, "feedback", "stats", "--until", "2020-01-01")
    assert before.out.startswith("0 events from 2019-12-25T00:00:00 to 2020-01-01T00:00:00"), before.out
    below = await cli(port, "train", "--from-feedback", "7", "--min-samples", "50", "--validate-only")
    assert below.code == 9 and "FEEDBACK_DATASET_TOO_SMALL" in below.err, below.err
    forced = await cli(port, "train", "--from-feedback", "7", "--min-samples", "50", "--force", "--validate-only")
    assert forced.code == 0 and "feedback of the last 7 days: 3 examples" in forced.out, forced.out + forced.err
    misplaced = await cli(port, *TRAIN, "--force")
    assert misplaced.code == 3 and "--force applies to --from-feedback" in misplaced.err
    forgot = await cli(port, "feedback", "forget-user", "u-1")
    assert (forgot.code, forgot.out.strip()) == (0, "forgot u-1: 2 events deleted")
    assert int(json.loads((await cli(port, "--json", "feedback", "stats")).out)["total"]) == 1
    assert (await cli(port, "feedback", "forget-user", " ")).code == 3

    # The registry: a PEFT directory imports as it is; downloads are named by version and kept.
    imported = await cli(port, "adapters", "import", str(peft_dir))
    assert (imported.code, imported.out.strip()) == (0, f"imported {TINY} v1.0"), imported.err
    downloads = tmp_path / "downloads"
    first = await cli(port, "adapters", "download", "v1.0", "--out", str(downloads))
    archive = downloads / f"{TINY}-v1.0.tar.gz"
    assert (first.code, first.out.strip()) == (0, f"v1.0 -> {archive}"), first.err
    child = await cli(port, "adapters", "import", str(archive), "--parent", "v1.0")
    assert child.out.strip() == f"imported {TINY} v1.1", child.err
    second = await cli(port, "adapters", "download", "v1.1", "--out", str(downloads))
    assert second.code == 0 and sorted(p.name for p in downloads.iterdir()) == [archive.name, f"{TINY}-v1.1.tar.gz"]
    original = archive.read_bytes()
    archive.write_bytes(b"kept")
    refused = await cli(port, "adapters", "download", "v1.0", "--out", str(downloads))
    assert refused.code == 3 and f"{archive} exists; --force overwrites it" in refused.err
    assert archive.read_bytes() == b"kept"
    assert (await cli(port, "adapters", "download", "v1.0", "--out", str(downloads), "--force")).code == 0
    assert archive.read_bytes() == original
    weightless = tmp_path / "weightless"
    weightless.mkdir()
    shutil.copy(peft_dir / "adapter_config.json", weightless)
    bad = await cli(port, "adapters", "import", str(weightless))
    assert bad.code == 3 and "has no adapter_model.safetensors" in bad.err
    lineage = await cli(port, "adapters", "lineage", "v1.1")
    rows = [line.split("│")[1:-1] for line in lineage.out.splitlines() if line.startswith("│")]
    assert [[cell.strip() for cell in row][:2] for row in rows] == [["v1.1", "imported"], ["v1.0", "imported"]]
    evaluated = await cli(port, "evaluate", "v1.1", "--baseline", "v1.0", "--suite", "golden.jsonl")
    assert evaluated.code == 0, evaluated.err
    assert re.match(r"v1\.1 vs v1\.0: (passed|FAILED)\n", evaluated.out), evaluated.out
    assert "golden" in evaluated.out and "report: file://" in evaluated.out
    assert (await cli(port, "evaluate", "v9.9", "--suite", "golden.jsonl")).code == 5
    checked = await cli(port, "evaluate", "v1.1", "--baseline", "v1.0", "--suite", "golden.jsonl", "--check")
    said = re.match(r"v1\.1 vs v1\.0: (passed|FAILED)\n", checked.out)
    assert said and checked.code == (9 if said.group(1) == "FAILED" else 0), checked.out  # --check: 9 on FAILED
    markdown = await cli(port, "report", "v1.1", "--format", "markdown")
    assert markdown.code == 0 and "v1.1" in markdown.out and "golden" in markdown.out, markdown.err
    chart = await cli(port, "report", "v1.1", "--format", "png", "--out", str(tmp_path / "eval.png"))
    assert chart.code == 0 and (tmp_path / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", chart.err
    assert (await cli(port, "report", "v1.1", "--format", "png")).code == 3  # a PNG on a terminal: no
    unknown = await cli(port, "--json", "report", "v1.1", "--evaluation", "20200101T000000000000-vs-v1.0")
    assert unknown.code == 5 and unknown.json_lines()[0]["error"]["reason"] == "EVALUATION_NOT_FOUND", unknown.out
    # From another directory than the server's: a local suite is uploaded as a dataset and evaluated on, by name
    # (--suite-dataset) too, and the HTML report of that evaluation is fetched there.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "Local Quiz.jsonl").write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": f"What is the capital of country {i}?"},
        {"role": "assistant", "content": f"City {i}."}]}) + "\n" for i in range(3)))
    local = await cli_in(elsewhere, port, "evaluate", "v1.1", "--baseline", "v1.0", "--suite", "Local Quiz.jsonl")
    assert local.code == 0, local.err
    assert "uploaded Local Quiz.jsonl as datasets/local-quiz/versions/1" in local.err
    assert re.search(r"^│ datasets/local-quiz/versions/1 +│ 3 ", local.out, re.MULTILINE), local.out
    named = await cli_in(elsewhere, port, "--json", "evaluate", "v1.1", "--baseline", "v1.0",
                         "--suite-dataset", "local-quiz", "--suite-dataset", "datasets/local-quiz/versions/1")
    assert named.code == 0 and not named.err, named.err
    assert [s["name"] for s in json.loads(named.out)["suites"]] == ["datasets/local-quiz/versions/1"] * 2
    fetched = await cli_in(elsewhere, port, "report", "v1.1", "--format", "html", "--out", "v1.1.html")
    assert fetched.code == 0, fetched.err
    page = (elsewhere / "v1.1.html").read_text()
    assert "datasets/local-quiz/versions/1" in page and "<img id=chart" in page and "City 2." in page
    as_job = await cli_in(elsewhere, port, "evaluation-jobs", "create", "v1.1", "--baseline", "v1.0", "--suite",
                          "Local Quiz.jsonl", "--watch")
    assert as_job.code == 0 and "already stored Local Quiz.jsonl as datasets/local-quiz/versions/1" in as_job.err
    assert "SUCCEEDED" in as_job.out and "datasets/local-quiz/versions/1" in as_job.out, as_job.out
    unknown_dataset = await cli_in(elsewhere, port, "evaluate", "v1.1", "--suite-dataset", "nope")
    assert unknown_dataset.code == 5 and "STORED_DATASET_NOT_FOUND" in unknown_dataset.err, unknown_dataset.err
    unconfigured = await cli(port, "evaluate", "v1.1")  # no --suite, none configured, and the gate is off here
    assert unconfigured.code == 9 and "EVAL_SUITE_NOT_CONFIGURED" in unconfigured.err
    judged = await cli(port, "evaluation-jobs", "create", "v1.1", "--baseline", "v1.0", "--suite", "golden.jsonl",
                       "--watch")
    assert judged.code == 0, judged.err  # the job succeeded, whatever it decided
    evaluation_job, state = judged.out.split()[:2]
    assert evaluation_job.startswith("evaluationJobs/") and state == "SUCCEEDED", judged.out
    verdict = re.search(r"^v1\.1 vs v1\.0: (passed|FAILED)$", judged.out, re.MULTILINE)
    assert verdict and "golden" in judged.out, judged.out
    evaluation_jobs = await cli(port, "evaluation-jobs", "list", columns=80)
    assert evaluation_jobs.out.splitlines()[1].split() == [evaluation_job, "SUCCEEDED", "100%",
                                                           verdict.group(1).lower()], evaluation_jobs.out
    ended = await cli(port, "evaluation-jobs", "cancel", evaluation_job)
    assert ended.code == 9 and "JOB_NOT_CANCELLABLE" in ended.err
    loose = await cli(port, "evaluation-jobs", "create", "v1.1", "--suite", "golden.jsonl", "--judge-model", "x")
    assert loose.code == 3 and "spec.judge_model" in loose.err, loose.err  # a judge model without --judge
    unread = await cli(port, "evaluation-jobs", "create", "v1.1", "--suite", "golden.jsonl", "--judge", "--watch")
    assert unread.code == 14 and "in no readable format" in unread.err, unread.err  # the tiny model as judge
    dry = await cli(port, "adapters", "prune", "--keep", "1", "--dry-run")
    assert dry.out.strip() == "would delete v1.0; kept v1.1"
    assert (await cli(port, "adapters", "delete", "v1.0")).out.strip() == "deleted v1.0"
    gone = await cli(port, "--json", "adapters", "lineage", "v1.1")
    assert [("delete_time" in a) for a in gone.json_lines()[0]["adapters"]] == [False, True]

    # Fisher jobs: created queued, listed whole, cancelled; watching an ended one exits with its outcome.
    fisher = await cli(port, "fisher", "--data", "capitals.jsonl", "--adapter-version", "v1.1", "--samples", "4")
    assert fisher.code == 0 and fisher.out.startswith("created fisherJobs/"), fisher.err
    fisher_name = fisher.out.split()[1]
    fisher_jobs = await cli(port, "fisher-jobs", "list", columns=80)
    assert fisher_jobs.out.splitlines()[1].split()[:2] == [fisher_name, "QUEUED"], fisher_jobs.out
    assert (await cli(port, "fisher-jobs", "cancel", fisher_name)).out.strip() == f"{fisher_name} CANCELLED"
    watched = await cli(port, "fisher-jobs", "watch", fisher_name)
    assert watched.code == 1 and f"{fisher_name} CANCELLED" in watched.out  # 1: CANCELLED

    # status --watch: the status now, then each change, until Ctrl-C.
    env = {**os.environ, "LEARNING_ENGINE_TARGET": f"127.0.0.1:{port}"}
    watcher = await asyncio.create_subprocess_exec(str(CLI), "--json", "status", "--watch", env=env,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert watcher.stdout is not None
    try:
        async with asyncio.timeout(60):
            assert json.loads(await watcher.stdout.readline())["active_version"] == ""  # none yet
            deployed = await cli(port, "deploy", "v1.1", "--base-model", TINY, "--reason", "cli test")
            assert deployed.code == 0, deployed.err
            while json.loads(await watcher.stdout.readline()).get("active_version") != "v1.1":
                pass
            watcher.send_signal(signal.SIGINT)
            assert await watcher.wait() == 130
    finally:
        if watcher.returncode is None:
            watcher.kill()
            await watcher.wait()


async def test_train_data_uploads_a_file_of_this_machine(make_server, data_dir: Path, tmp_path: Path) -> None:
    """`train --data ./x.jsonl` works from any machine: a local file is uploaded (once) and trained on by its
    stored version; a name that is no local file is still a path below the server's datasets dir."""
    port = (await make_server(embedded_worker=False)).app.port
    local = tmp_path / "My Capitals.jsonl"  # not below the server's datasets dir: only this machine has it
    shutil.copy(data_dir / "datasets" / "capitals.jsonl", local)
    args = [arg if arg != "capitals.jsonl" else str(local) for arg in TRAIN]
    first = await cli(port, *args, "--validate-only")
    assert first.code == 0, first.err
    assert f"uploaded {local} as datasets/my-capitals/versions/1" in first.err
    assert "24 examples" in first.out
    created = await cli(port, "--json", *args)
    assert created.code == 0, created.err
    assert "already stored" not in created.out  # --json: stdout is the job alone
    job = json.loads(created.out)
    assert job["spec"]["dataset_name"] == "datasets/my-capitals/versions/1" and job["state"] == "JOB_STATE_QUEUED"
    assert (await cli(port, *TRAIN, "--validate-only")).code == 0  # capitals.jsonl: the server's file


@pytest.mark.slow
async def test_evaluating_the_base_model_itself(make_server, data_dir: Path, tmp_path: Path) -> None:
    """`evaluate --base-model-itself` (and as a job, and its reports, the learning curve's chart too): the base model
    on the golden suites only, against itself while no version is active; naming a version too, or no golden suite,
    is refused."""
    (data_dir / "datasets" / "golden.jsonl").write_text(
        json.dumps({"prompt": "What is the capital of France?", "expected": "Paris"}) + "\n")
    port = (await make_server(eval_max_tokens=4)).app.port
    evaluated = await cli(port, "evaluate", "--base-model-itself", "--suite", "golden.jsonl")
    assert evaluated.code == 0, evaluated.err
    assert re.match(r"the base model vs the base model: (passed|FAILED)\n", evaluated.out), evaluated.out
    assert re.search(r"^│ golden +│ 1 ", evaluated.out, re.MULTILINE), evaluated.out
    fetched = await cli(port, "report", "--base-model-itself", "--format", "html", "--out", str(tmp_path / "b.html"))
    assert fetched.code == 0 and fetched.out.startswith("the base model evaluation "), fetched.err
    assert "Eval of the base model against the base model" in (tmp_path / "b.html").read_text()
    curve = await cli(port, "report", "--base-model-itself", "--format", "lineage-png", "-o", str(tmp_path / "c.png"))
    assert curve.code == 0 and (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", curve.err
    assert (await cli(port, "report", "--base-model-itself", "--format", "lineage-png")).code == 3  # needs --out
    as_job = await cli(port, "evaluation-jobs", "create", "--base-model-itself", "--suite", "golden.jsonl", "--watch")
    assert as_job.code == 0 and "SUCCEEDED" in as_job.out, as_job.err
    assert re.search(r"^the base model vs the base model: (passed|FAILED)$", as_job.out, re.MULTILINE), as_job.out
    both = await cli(port, "evaluate", "v1.0", "--base-model-itself", "--suite", "golden.jsonl")
    assert both.code == 3 and "INVALID_EVALUATION_SPEC" in both.err, both.err
    unconfigured = await cli(port, "evaluation-jobs", "create", "--base-model-itself")
    assert unconfigured.code == 9 and "EVAL_SUITE_NOT_CONFIGURED" in unconfigured.err, unconfigured.err
