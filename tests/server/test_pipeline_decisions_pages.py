"""ListTriggerDecisions had a page size (at most 500) and no page token: a pipeline's older decisions could not be
read (a cron trigger skipped every minute while runs go on makes 500 in under nine hours), though the docs say every
decision is listed. It pages now, newest first, as ListPipelineRuns does."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from engine.pipelines.spec import TriggerDecision, TriggerKind
from engine.stores.pipeline_store import PostgresPipelineStore
from learning.v1 import pipeline_pb2 as pp
from tests.cli.test_cli_e2e import cli
from tests.server.test_pipelines import from_file, pipelines, refused


@pytest.mark.slow
async def test_trigger_decisions_page_newest_first_to_the_oldest(make_server) -> None:
    client = await make_server(embedded_worker=False)
    stub = pipelines(client)
    for pipeline_id in ("p", "q"):
        await stub.CreatePipeline(pp.CreatePipelineRequest(pipeline_id=pipeline_id, pipeline=from_file()))
    store = PostgresPipelineStore(client.app.owned.pool)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    times = [start + timedelta(minutes=i) for i in range(6)] + [start + timedelta(minutes=5)]  # two at one time
    for i, time in enumerate(times):
        await store.record(TriggerDecision("p", TriggerKind.CRON, f"cron#{i}", False, "a run was going on", time))

    pages, token = [], ""
    while True:
        got = await stub.ListTriggerDecisions(pp.ListTriggerDecisionsRequest(
            pipeline="pipelines/p", page_size=3, page_token=token))
        pages.append([d.key for d in got.decisions])
        token = got.next_page_token
        if not token:
            break
    assert [len(page) for page in pages] == [3, 3, 1], pages
    assert sum(pages, []) == ["cron#6", "cron#5", "cron#4", "cron#3", "cron#2", "cron#1", "cron#0"], pages
    whole = await stub.ListTriggerDecisions(pp.ListTriggerDecisionsRequest(pipeline="pipelines/p"))
    assert [d.key for d in whole.decisions] == sum(pages, []) and not whole.next_page_token

    first = await stub.ListTriggerDecisions(pp.ListTriggerDecisionsRequest(pipeline="pipelines/p", page_size=3))
    for request in (pp.ListTriggerDecisionsRequest(pipeline="pipelines/q", page_token=first.next_page_token),
                    pp.ListTriggerDecisionsRequest(pipeline="pipelines/p", page_token="not-a-token")):
        code, reason, _ = await refused(stub.ListTriggerDecisions(request))
        assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN"), request

    # the CLI pages too: each page says how to ask for the next
    keys, token = [], ""
    while True:
        page = await cli(client.app.port, "--json", "pipelines", "decisions", "p", "--limit", "3",
                         *(["--page-token", token] if token else []))
        assert page.code == 0, page.err
        listed = json.loads(page.out)
        keys += [d["key"] for d in listed["decisions"]]
        token = listed["next_page_token"]
        if not token:
            break
    assert keys == sum(pages, []), keys
    shown = await cli(client.app.port, "pipelines", "decisions", "p", "--limit", "3")
    assert "more: --page-token " in shown.err and shown.out.count("a run was going on") == 3, shown
