"""Canaries and auto-rollback count ratings with the server's thresholds (feedback_rating_positive_min and
feedback_rating_negative_max), as its feedback stats, drift and triggers do; they counted at or above 4 and at or
below 2 whatever the settings said."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from learning.v1 import feedback_pb2 as fb
from learning.v1 import feedback_pb2_grpc as fb_grpc
from tests.server.conftest import TINY


async def test_the_canarys_ratings_follow_the_servers_thresholds(make_pg_server) -> None:
    client = await make_pg_server(feedback_rating_positive_min=5, feedback_rating_negative_max=3)
    since = datetime.now(UTC) - timedelta(minutes=1)
    events = [fb.FeedbackEvent(client_event_id=f"r{i}", kind=fb.FEEDBACK_KIND_RATING, rating=stars,
                               adapter_version="v1.0", user_id=f"u{i}",
                               interaction=fb.Interaction(prompt="Hello", response="Hi"))
              for i, stars in enumerate([3, 4, 5])]
    await fb_grpc.FeedbackServiceStub(client.channel).SubmitFeedback(fb.SubmitFeedbackRequest(events=events))
    counts = await client.app.owned.lora.controller._rates.counts(TINY, "v1.0", since)
    # 3 stars is negative (at most 3), 4 neither (under 5), 5 positive
    assert (counts.positive, counts.negative) == (1, 1), counts
