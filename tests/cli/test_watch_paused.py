"""A job watch that ends because the job was paused exits 10 (ABORTED: the job stopped before its end; resume
it and watch again), as docs/cli.md says, not 2 (UNKNOWN, which the CLI uses for no outcome at all); the summary
line still says PAUSED, and stderr says how to go on."""

from __future__ import annotations

from tests.cli.test_cli_e2e import TRAIN, cli


async def test_jobs_watch_of_a_paused_job_exits_aborted(make_server):
    port = (await make_server(embedded_worker=False)).app.port  # no worker: the job stays QUEUED until paused
    created = await cli(port, *TRAIN)
    assert created.code == 0, created.err
    name = created.out.split()[1]
    assert (await cli(port, "jobs", "pause", name)).code == 0
    watched = await cli(port, "jobs", "watch", name)
    assert watched.code == 10, (watched.code, watched.out, watched.err)
    assert watched.out.strip() == f"{name} PAUSED", watched.out
    assert f"jobs resume {name}" in watched.err, watched.err
    scripted = await cli(port, "--json", "jobs", "watch", name)
    assert scripted.code == 10, scripted.err
