"""``learning-engine online`` against a live server: create from a version, send a file of examples (stats after
each update, a refused line reported by its line of the file, exit 3), stats, learning rate out of range, publish,
stop, and a stop of a stopped session; its live alias kept after the stop, then moved and removed."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from tests.cli.test_cli_e2e import cli
from tests.server.lora_helpers import train


@pytest.mark.slow
async def test_online_commands(make_server, tmp_path: Path) -> None:
    server = await make_server(online_poll_seconds=0.05, online_follow_seconds=0.1, online_max_update_share=1.0)
    port = server.app.port
    start = await train(server)
    made = await cli(port, "online", "create", "notes", "--from", start, "--update-every", "5", "--publish-every",
                     "0", "--lr", "0.005", "--ewc-lambda", "0", "--replay", "0", "--live-alias", "notes-live")
    assert made.code == 0, made.err
    assert made.out.strip() == f"created onlineSessions/notes from {start}, served as tiny-llama@notes", made.out

    # every setting of a session has its option; a bad value is the server's INVALID_ARGUMENT naming the field
    tuned = await cli(port, "--json", "online", "create", "tuned", "--from", start, "--publish-every", "0",
                      "--max-seq-length", "64", "--weight-decay", "0", "--max-grad-norm", "0.5",
                      "--loss-spike-factor", "0", "--negative-feedback-min-ratings", "5")
    assert tuned.code == 0, tuned.err
    got = json.loads(tuned.out)["spec"]
    assert [got[k] for k in ("max_seq_length", "weight_decay", "max_grad_norm", "loss_spike_factor",
                             "negative_feedback_min_ratings")] == [64, 0, 0.5, 0, 5], got
    stopped = await cli(port, "online", "stop", "tuned")
    assert stopped.code == 0, stopped.err
    spiky = await cli(port, "online", "create", "spiky", "--from", start, "--loss-spike-factor", "1")
    assert spiky.code == 3 and "spec.loss_spike_factor" in spiky.err, spiky.err

    examples = tmp_path / "examples.jsonl"
    rows = [{"prompt": f"Note {i}?", "target": f"Remember {i}."} for i in range(12)] + [{"prompt": ""}]
    examples.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    sent = await cli(port, "online", "send", "notes", str(examples))
    assert sent.code == 3, sent.err  # some refused: named by their line of the file
    lines = sent.out.splitlines()
    assert lines[-2:] == ["sent 12 examples, 1 refused", f"  {examples}:13: empty prompt"], lines
    assert lines[-3].startswith("2 updates, 12 examples (1 skipped, 2 pending"), lines  # 2 wait for a third update

    stats = json.loads((await cli(port, "--json", "online", "stats", "notes")).out)
    assert (stats["total_updates"], stats["total_examples"], stats["enabled"]) == ("2", "12", True), stats
    bad = await cli(port, "online", "lr", "notes", "3")
    assert bad.code == 3 and "INVALID_ONLINE_SETTING" in bad.err and "learning_rate" in bad.err, bad.err
    published = await cli(port, "online", "publish", "notes")
    assert (published.code, published.out.strip()) == (0, "onlineSessions/notes: publication requested")
    stopped = await cli(port, "online", "stop", "notes")
    assert stopped.code == 0, stopped.err
    watched = await cli(port, "online", "watch", "notes")
    assert watched.code == 0, watched.err  # stopped: the way a session ends well
    assert "update 1: loss" in watched.out and "published v1.0.1" in watched.out, watched.out
    assert "cancelled: stopped after 2 updates" in watched.out, watched.out
    # the gate's verdict on the publication (no gate on this server: told by the worker, or, judged after the
    # stop, by the serving process that settles the alias), and on, once the session ended, to the alias kept
    assert "v1.0.1: no gate configured, taken as passed" in watched.out, watched.out
    after = watched.out.split("cancelled: stopped after 2 updates", 1)[1]
    assert "LIVE_ALIAS_KEPT: the live alias 'notes-live' keeps serving v1.0.1" in after, watched.out
    again = await cli(port, "online", "stop", "notes")
    assert again.code == 9 and "ONLINE_SESSION_ENDED" in again.err, again.err

    # The live alias outlives the session (kept on the publication, once the gate judged it), until moved or removed.
    deadline = time.monotonic() + 120  # a deadline, not a count of calls: each is a CLI process, slow on a busy host
    while True:
        got = json.loads((await cli(port, "--json", "online", "get", "notes")).out)
        if got.get("alias_state") == "LIVE_ALIAS_STATE_KEPT" or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    if got.get("alias_state") != "LIVE_ALIAS_STATE_KEPT":  # what to look at if it fails
        follower = server.app.owned.online_follow
        watched = await cli(port, "online", "watch", "notes")
        got["follower running"] = follower is not None and follower.running
        got["events"] = watched.out
    # the message as text: pytest cuts the repr of any other object to a line
    assert (got.get("alias_state"), got.get("alias_version")) == ("LIVE_ALIAS_STATE_KEPT", "v1.0.1"), \
        json.dumps(got, indent=1)
    listed = await cli(port, "online", "list")
    assert "notes-live: v1.0.1 (kept)" in listed.out, listed.out
    moved = await cli(port, "online", "move-alias", "notes", start)
    assert (moved.code, moved.out.strip()) == (0, f"onlineSessions/notes: notes-live: {start} (kept)"), moved
    removed = await cli(port, "online", "remove-alias", "notes")
    assert (removed.code, removed.out.strip()) == (0, f"onlineSessions/notes: notes-live: {start} (removed)")
    gone = await cli(port, "online", "remove-alias", "notes")
    assert gone.code == 9 and "ONLINE_NO_LIVE_ALIAS" in gone.err, gone.err


@pytest.mark.slow
async def test_online_kto_session_from_the_cli(make_server, tmp_path: Path) -> None:
    server = await make_server(online_poll_seconds=0.05, online_follow_seconds=0.1, online_max_update_share=1.0)
    port = server.app.port
    start = await train(server)
    unknown = await cli(port, "online", "create", "judged", "--from", start, "--loss", "dpo")
    assert unknown.code == 3 and "--loss must be one of sft, kto" in unknown.err, unknown.err
    made = await cli(port, "online", "create", "judged", "--from", start, "--loss", "kto", "--update-every", "4",
                     "--publish-every", "0", "--lr", "0.005", "--ewc-lambda", "0", "--replay", "0")
    assert made.code == 0, made.err
    assert made.out.strip() == (f"created onlineSessions/judged from {start}, learning by KTO, served as "
                                "tiny-llama@judged"), made.out

    examples = tmp_path / "judged.jsonl"
    rows = [{"prompt": f"Note {i}?", "target": f"Remember {i}.", "desirable": True} for i in range(4)]
    rows += [{"prompt": f"Note {i}?", "target": f"Forget {i}."} for i in range(4)]  # labelled by --label
    examples.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    sent = await cli(port, "online", "send", "judged", str(examples), "--label", "undesirable")
    assert sent.code == 0, sent.err
    lines = sent.out.splitlines()
    assert lines[-1] == "sent 8 examples, 0 refused" and lines[-2].startswith("2 updates, 8 examples"), lines

    unlabelled = tmp_path / "unlabelled.jsonl"
    unlabelled.write_text(json.dumps({"prompt": "Note 9?", "target": "Remember 9."}) + "\n")
    refused = await cli(port, "online", "send", "judged", str(unlabelled))
    assert refused.code == 3, refused.err
    assert refused.out.splitlines()[-2:] == ["sent 0 examples, 1 refused", f"  {unlabelled}:1: no desirable label: "
                                             "a KTO session needs one (true: an answer to give, false: one to avoid)"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "Note 9?", "target": "Remember 9.", "desirable": "yes"}) + "\n")
    wrong = await cli(port, "online", "send", "judged", str(bad))
    assert wrong.code == 3 and "desirable must be true or false" in wrong.err, wrong.err

    got = json.loads((await cli(port, "--json", "online", "get", "judged")).out)
    assert got["spec"]["loss"] == "ONLINE_LOSS_KTO", got["spec"]
    stopped = await cli(port, "online", "stop", "judged")
    assert stopped.code == 0, stopped.err
