"""DeleteUserFeedback between a session's read of a window of feedback and the write of its examples: the erased
user's feedback must not be stored (and trained on) after DeleteUserFeedback returned, which found none of it to
delete. Against real PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from engine.stores.feedback_store import PostgresFeedbackStore
from tests.engine.test_online_feedback_window import FIRST, _World, start_version  # noqa: F401 - fixture
from tests.registry.conftest import make_peft, make_registry, pool  # noqa: F401 - fixtures


async def test_a_user_erased_while_a_window_is_read_leaves_no_example_of_theirs(
    pool, start_version: str, tmp_path: Path  # noqa: F811 - fixtures
) -> None:
    world = _World(pool, tmp_path, start_version)
    await world.start()
    await world.feedback(*(replace(e, time=datetime.now(UTC) - timedelta(hours=1)) for e in FIRST))
    feedback = PostgresFeedbackStore(pool)
    builder = world.parts.feedback
    real = builder.rebuild
    erased = []

    async def rebuild(*args, **kwargs):
        built = await real(*args, **kwargs)
        erased.append(await feedback.delete_user("u2"))  # DeleteUserFeedback for u2, as the window is read
        return built

    builder.rebuild = rebuild  # type: ignore[method-assign]
    session = await world.worker()
    await session._take_feedback()
    assert erased[0].events == 1  # its correction, deleted with nothing of it stored yet
    left = await pool.fetch("SELECT prompt, users FROM online_examples WHERE session_id = $1 ORDER BY seq", "s1")
    assert not [r for r in left if "u2" in r["users"]], (
        f"DeleteUserFeedback for u2 returned {erased[0]}, yet the session stored {[dict(r) for r in left]}")
