"""What online sessions need from elsewhere, as interfaces: where their examples and controls are kept, and the
feedback on their answers.

``engine.stores.online_store.PostgresOnlineStore`` implements :class:`OnlineStore` and
``engine.feedback.dataset.FeedbackDatasetBuilder`` :class:`FeedbackExamples`; the composition root passes them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol

from engine.domain import FeedbackSource, Objective, OnlineExamples
from engine.feedback.dataset import FeedbackDataset
from engine.online.spec import Controls, GateVerdict, NewExample, StoredExample, StoredRows


class OnlineStore(Protocol):
    def creating(self, session_id: str) -> AbstractAsyncContextManager[object]:
        """Creates of ``session_id`` take turns for the block, in every process (held around :meth:`create` and the
        job's insert)."""
        ...

    async def create(self, session_id: str, learning_rate: float, *, base_model: str = "", start_version: str = "",
                     live_alias: str = "", request_id: str = "") -> None:
        """The session's controls, under :meth:`creating` (those of a create whose job was never stored are
        replaced); ALREADY_EXISTS (ONLINE_SESSION_EXISTS) when the session exists, (ONLINE_SESSION_ID_IN_USE) when
        a job of another kind has its id; FAILED_PRECONDITION
        (ONLINE_ALIAS_IN_USE) for a ``live_alias`` another session of ``base_model`` holds (but one created by the
        same ``request_id``); NOT_FOUND (ADAPTER_NOT_FOUND) when ``start_version`` is not published."""
        ...

    async def discard(self, session_id: str) -> None: ...

    async def controls(self, session_id: str) -> Controls:
        """NOT_FOUND (ONLINE_SESSION_NOT_FOUND) for a session it does not know."""
        ...

    async def controls_of(self, session_ids: Sequence[str]) -> dict[str, Controls]: ...

    async def set(self, session_id: str, *, verdicts: Mapping[str, GateVerdict] | None = None,
                  **changes: Any) -> Controls:
        """Change the controls (``enabled``, ``disabled_reason``, ``learning_rate``, ``alias_version``) and record
        ``verdicts`` on those of their versions the gate has not judged, in one write."""
        ...

    async def request(self, session_id: str, counter: str, *, while_enabled: bool = False) -> tuple[Controls, bool]:
        """One more request of ``counter``, only while learning is enabled if ``while_enabled`` (one write): the
        controls after it, and whether it was requested."""
        ...

    async def aliases(self, base_model: str) -> list[Controls]:
        """The sessions of ``base_model`` whose live alias is routed (FOLLOWING or KEPT)."""
        ...

    async def end_alias(self, session_id: str, *, untouched_for: float = 0.0) -> Controls | None:
        """Settle the alias of an ended session (KEPT or ENDED); None when it was not FOLLOWING, or its controls
        changed within the last ``untouched_for`` seconds."""
        ...

    async def move_alias(self, session_id: str, version: str) -> Controls | None:
        """None when the session's alias is not routed; an alias never moves to a version that is not published,
        nor while its delete runs (the controls say where it is)."""
        ...

    async def remove_alias(self, session_id: str) -> Controls | None:
        """None when the session's alias is not routed."""
        ...

    async def claim_gate(self, session_id: str, version: str, owner: str, lease_seconds: float) -> bool:
        """Whether ``owner`` (one serving process) runs the gate on ``version``: exactly one process at a time."""
        ...

    async def record_gate(self, session_id: str, version: str, verdict: GateVerdict) -> Controls:
        """Record ``verdict`` on ``version`` unless one is recorded already, and move the alias to it when this one,
        recorded, passed, in one write; the controls after."""
        ...

    async def add(self, session_id: str, rows: Sequence[NewExample], refused: int = 0,
                  users: Sequence[Collection[str]] = ()) -> StoredRows:
        """Store ``rows`` in order, but those whose client_example_id the session holds already (duplicates); the
        last sequence number the session holds of them. ``users`` per row: whose feedback it was made from.
        FAILED_PRECONDITION (ONLINE_SESSION_ENDED), storing nothing, once the session is stopping or has ended,
        decided so that a row stored is one :meth:`count_after` at the stop counts."""
        ...

    async def feedback_through(self, session_id: str) -> datetime | None:
        """How far (by event time) the feedback on the session's live model has become examples: the session's
        watermark, None before its first read. NOT_FOUND (ONLINE_SESSION_NOT_FOUND) for a session it does not
        know."""
        ...

    async def add_feedback(self, session_id: str, rows: Sequence[NewExample], users: Sequence[Collection[str]],
                           *, since: datetime | None, through: datetime) -> int | None:
        """Store ``rows`` made from the feedback timed in [``since``, ``through``) (``users`` per row, as for
        ``add``) and move the watermark from ``since`` to ``through``, atomically; how many rows were stored (not
        those of a user erased since ``through``: DeleteUserFeedback ran after the read), or None, storing
        nothing, when the watermark is no longer ``since`` (the window was read already)."""
        ...

    async def present(self, session_id: str, seqs: Sequence[int]) -> frozenset[int]:
        """Which of ``seqs`` are still stored (DeleteUserFeedback deletes the examples made from a user's
        feedback)."""
        ...

    async def after(self, session_id: str, seq: int, limit: int) -> list[StoredExample]: ...

    async def count_after(self, session_id: str, seq: int) -> int:
        """How many of the session's examples are stored after ``seq`` (received, not read yet), those being
        stored as it starts included."""
        ...

    async def unread(self, after: Mapping[str, int]) -> dict[str, int]:
        """For each session of ``after``, how many of its examples are stored after its sequence number there (what
        its stats do not count yet); a plain read, beside any insert under way."""
        ...

    async def by_sequence(self, session_id: str, seqs: Sequence[int]) -> list[StoredExample]: ...

    async def delete_examples(self, session_id: str, keep: Sequence[tuple[int, int]] = ()) -> int:
        """Delete the session's examples but those in the ``keep`` windows (first, last); how many went."""
        ...

    async def window(self, session_id: str, first: int, last: int) -> OnlineExamples:
        """The session's examples ``first``..``last`` with their KTO labels, if any (what a publication trained on;
        engine.continual reads them again through its OnlineExampleWindows port)."""
        ...


class FeedbackExamples(Protocol):
    async def rebuild(self, source: FeedbackSource, objective: Objective, start: datetime,
                      end: datetime, *, base_model: str = "") -> FeedbackDataset:
        """The examples ``source``'s feedback on ``base_model`` timed in [start, end] gives (FAILED_PRECONDITION
        when none)."""
        ...
