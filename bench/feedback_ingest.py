"""Feedback ingestion throughput: end to end (client -> gRPC StreamFeedback -> PostgreSQL) against raw asyncpg
COPY of the same rows into the same table, in the same run, interleaved; prints medians and the ratio.

End to end covers, per event: protobuf decode, conversion, validation, PII scrubbing (on), JSON for messages
and labels, the erasure check and COPY into feedback_events (with its indexes; a resend would take the staging
table and INSERT ... ON CONFLICT instead), one transaction per stream message. The server runs in its own process
(spawned by this script, FeedbackService only, with the error interceptor); the client streams pre-built
messages from this process.

Raw COPY is the same, already scrubbed rows straight into feedback_events, one COPY per batch of the same size,
on one connection, two ways: ``copy_records_to_table`` (asyncpg's binary encoding of the row tuples) and
``encode_rows`` + ``copy_to_table`` (the text-format data the server sends; encoding timed too). The ratio is
taken against the faster of the two.

Uses an embedded PostgreSQL unless --database-url (or DATABASE_URL) names a server. torch-free.

    .venv/bin/python bench/feedback_ingest.py --events 100000 --batch 2000 --repeats 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.feedback.events import FeedbackEvent  # noqa: E402
from engine.feedback.ingest import FeedbackBases, to_records  # noqa: E402
from engine.feedback.scrub import Scrubber  # noqa: E402
from engine.stores import postgres  # noqa: E402
from engine.stores.feedback_store import COLUMNS, PostgresFeedbackStore, encode_rows  # noqa: E402
from learning.v1 import feedback_pb2 as fb  # noqa: E402
from learning.v1 import feedback_pb2_grpc as fb_grpc  # noqa: E402
from server.convert_feedback import events_from_pb  # noqa: E402

KINDS = [fb.FEEDBACK_KIND_THUMBS_UP, fb.FEEDBACK_KIND_THUMBS_DOWN, fb.FEEDBACK_KIND_RATING,
         fb.FEEDBACK_KIND_DWELL_TIME, fb.FEEDBACK_KIND_COPY, fb.FEEDBACK_KIND_REGENERATE]
TOPICS = ["the capital of France", "how to sort a list in Python", "a haiku about autumn", "the boiling point of water",
          "a polite way to decline a meeting", "the difference between TCP and UDP"]


def make_events(n: int) -> list[fb.FeedbackEvent]:
    """Realistic events: ~250 characters of text each, 1 in 20 with an email or phone number to scrub."""
    now = datetime.now(UTC)
    events = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        topic = TOPICS[i % len(TOPICS)]
        prompt = f"Could you tell me about {topic}? I asked yesterday too (request {i})."
        if i % 20 == 0:
            prompt += f" Reply to user{i}@example.com or +1 555 010 {i % 10000:04d}."
        msg = fb.FeedbackEvent(
            client_event_id=f"evt-{i:09d}", kind=kind, user_id=f"user-{i % 5000}", tenant_id="acme",
            adapter_version=f"1.{i % 3}.0", labels={"app": "chat", "region": "eu"},
            interaction=fb.Interaction(
                interaction_id=f"int-{i}", prompt=prompt,
                response=f"Here is a short answer about {topic}: it depends on context, but in most cases the "
                f"usual answer applies. Ask again for details (answer {i}).",
            ),
        )
        if kind == fb.FEEDBACK_KIND_RATING:
            msg.rating = 1 + i % 5
        elif kind == fb.FEEDBACK_KIND_DWELL_TIME:
            msg.dwell_seconds = 3.5 + i % 60
        msg.time.FromDatetime(now - timedelta(seconds=n - i))
        events.append(msg)
    return events


# ---- the server process -------------------------------------------------------------------------------


async def serve(url: str, processes: int) -> None:
    from server.errors import ErrorInterceptor
    from server.services.feedback import build_feedback_service, feedback_ingestor
    from server.settings import Settings

    pool = await postgres.connect(url, min_size=2, max_size=4)
    server = grpc.aio.server(
        interceptors=[ErrorInterceptor()],
        options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
    )
    settings = Settings(data_dir=Path(tempfile.gettempdir()), feedback_ingest_processes=processes)
    sys.setswitchinterval(settings.switch_interval_seconds)  # as server.main.start does
    store = PostgresFeedbackStore(pool)
    service = build_feedback_service(settings, feedback_ingestor(settings, store), store)
    fb_grpc.add_FeedbackServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
    await server.stop(0)
    service.close()
    await pool.close()


# ---- the measurements -----------------------------------------------------------------------------------


async def end_to_end(
    stub: fb_grpc.FeedbackServiceStub, messages: list[fb.StreamFeedbackRequest], streams: int
) -> float:
    async def one(part: list[fb.StreamFeedbackRequest]) -> int:
        async def gen():
            for m in part:
                yield m

        return (await stub.StreamFeedback(gen())).stored

    started = time.perf_counter()
    stored = await asyncio.gather(*(one(messages[s::streams]) for s in range(streams)))
    elapsed = time.perf_counter() - started
    assert sum(stored) == sum(len(m.events) for m in messages), stored
    return elapsed


async def raw_copy(conn: asyncpg.Connection, batches: list[list[tuple]]) -> float:
    started = time.perf_counter()
    for rows in batches:
        async with conn.transaction():
            await conn.copy_records_to_table("feedback_events", records=rows, columns=COLUMNS)
    return time.perf_counter() - started


async def raw_copy_text(conn: asyncpg.Connection, batches: list[list[tuple]]) -> float:
    started = time.perf_counter()
    for rows in batches:
        data = encode_rows(rows).data
        async with conn.transaction():
            await conn.copy_to_table("feedback_events", source=memoryview(data), columns=COLUMNS, format="text")
    return time.perf_counter() - started


async def run(args: argparse.Namespace, url: str) -> None:
    admin = await asyncpg.connect(url)
    db = f"bench_{uuid.uuid4().hex[:8]}"
    await admin.execute(f'CREATE DATABASE "{db}"')
    await admin.close()
    base, _, query = url.partition("?")
    db_url = f"{base.rsplit('/', 1)[0]}/{db}" + (f"?{query}" if query else "")
    pool = await postgres.connect(db_url, max_size=2)
    await postgres.migrate(pool)

    events = make_events(args.events)
    messages = [fb.StreamFeedbackRequest(events=events[i : i + args.batch]) for i in range(0, len(events), args.batch)]
    domain: list[list[FeedbackEvent]] = [events_from_pb(m.events) for m in messages]
    scrubber = Scrubber()
    received = datetime.now(UTC)
    bases = FeedbackBases("SmolLM2-135M-Instruct")  # the server's default base model, which the events leave unset
    batches = [to_records(d, scrubber, received, bases)[0] for d in domain]
    payload = sum(m.ByteSize() for m in messages)

    server = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve", db_url, "--server-processes", str(args.server_processes),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    port = int((await server.stdout.readline()).decode())
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
    )
    stub = fb_grpc.FeedbackServiceStub(channel)
    times: dict[str, list[float]] = {"raw COPY, records": [], "raw COPY, text": [], "end to end": []}
    load_before = os.getloadavg()[0]  # the machine may be shared: say how busy it was
    try:
        async with pool.acquire() as conn:
            for repeat in range(args.repeats + 1):  # the first round warms up and is not counted
                await conn.execute("TRUNCATE feedback_events")
                raw = await raw_copy(conn, batches)
                await conn.execute("TRUNCATE feedback_events")
                raw_text = await raw_copy_text(conn, batches)
                await conn.execute("TRUNCATE feedback_events")
                e2e = await end_to_end(stub, messages, args.streams)
                if repeat:
                    times["raw COPY, records"].append(raw)
                    times["raw COPY, text"].append(raw_text)
                    times["end to end"].append(e2e)
                print(f"  round {repeat}{' (warm-up)' if not repeat else ''}: raw records {args.events / raw:,.0f}/s, "
                      f"raw text {args.events / raw_text:,.0f}/s, end to end {args.events / e2e:,.0f}/s", flush=True)
    finally:
        await channel.close()
        server.stdin.close()
        await server.wait()
        await pool.close()

    rate = {name: args.events / statistics.median(ts) for name, ts in times.items()}
    print(f"\n{args.events:,} events in messages of {args.batch} ({payload / args.events:.0f} bytes each on the wire), "
          f"{args.streams} stream(s), server feedback_ingest_processes={args.server_processes}, {args.repeats} "
          f"interleaved rounds, medians; CPUs: {os.cpu_count()}, load average (1 min) before/after: "
          f"{load_before:.2f}/{os.getloadavg()[0]:.2f}")
    for name, value in rate.items():
        print(f"  {name:<18} {value:>10,.0f} events/s")
    baseline = max(rate["raw COPY, records"], rate["raw COPY, text"])
    print(f"  ratio end to end / raw COPY (the faster): {rate['end to end'] / baseline:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=2_000, help="events per stream message (and per raw COPY)")
    parser.add_argument("--streams", type=int, default=1, help="concurrent StreamFeedback calls")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--server-processes", type=int, default=0,
                        help="the server's feedback_ingest_processes (worker processes preparing messages)")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--serve", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve, args.server_processes))
        return
    if args.database_url:
        asyncio.run(run(args, args.database_url))
        return
    root = Path(tempfile.mkdtemp(prefix="le-bench-pg-"))
    root.chmod(0o755)  # the embedded server runs as its own user when we are root
    embedded = postgres.EmbeddedPostgres(root / "data")
    try:
        url = embedded.start()
        print(f"embedded PostgreSQL at {url}", flush=True)
        asyncio.run(run(args, url))
    finally:
        embedded.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
