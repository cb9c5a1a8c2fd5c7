"""Online sessions: a served adapter that keeps learning from the examples its clients send.

A session is a job of the typed job core (kind ``onlineSession``): its :class:`OnlineSessionSpec` is what was
asked, its :class:`OnlineOutput` what it has done (stats, the adapter it serves now, its publications and
checkpoints), written only by the worker that holds it. What clients and the serving side change while it runs
(learning rate, enabled, forced updates and publications, the gate's verdicts, the live alias) is its
:class:`Controls` row, and its examples are rows of their own (engine.stores.online_store).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from engine.domain import ChatMessage, Example, Objective
from engine.errors import AlreadyExists, FailedPrecondition, NotFound
from engine.jobs.core import Job, JobKind, JobState
from engine.training.spec import CheckpointRecord, ParentFisherProgress

LOSS_WINDOW = 100  # updates the average loss is over
SPIKE_WINDOW = 20  # updates a spike is judged against (their median)
SPIKE_MIN_UPDATES = 10  # updates before a spike can be judged
LIVE_PREFIX = "online/live"  # artifact-store keys of the live adapters a worker stores and serving processes load
CHECKPOINT_PREFIX = "online/checkpoints"


class OnlineOptimizer(enum.StrEnum):
    ADAM = "ADAM"
    ADAMW = "ADAMW"
    SGD = "SGD"


@dataclass(frozen=True)
class OnlineSessionSpec:
    base_model: str
    start_version: str  # resolved at create time (the active version when none was named)
    buffer_size: int = 1000
    update_every: int = 10
    optimizer: OnlineOptimizer = OnlineOptimizer.ADAMW
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    ewc_lambda: float = 0.0  # 0: no EWC
    replay_fraction: float = 0.5
    checkpoint_every: int = 100
    publish_every: int = 100  # 0: only on request
    max_seq_length: int = 512
    live_alias: str = ""
    loss_spike_factor: float = 4.0  # 0: no spike check
    seed: int = 0
    learn_from_feedback: bool = False  # feedback on the live model's answers becomes examples
    negative_feedback_margin: float = 0.1  # a negative-feedback spike on the live model; 0: no check
    negative_feedback_min_ratings: int = 20  # ratings of the live model in the window before it judges
    loss: Objective = Objective.SFT  # KTO: every example carries its label (desirable or not) and a target


@dataclass(frozen=True)
class OnlineStats:
    total_examples: int = 0  # read by the worker
    skipped_examples: int = 0  # by the worker (no target tokens, non-finite loss)
    total_updates: int = 0
    buffer_size: int = 0
    pending_examples: int = 0
    average_loss: float | None = None  # None before the first update (JSON has no NaN)
    last_loss: float | None = None
    learning_rate: float = 0.0
    enabled: bool = True
    last_sequence: int = 0
    published_versions: int = 0


@dataclass(frozen=True)
class LiveAdapter:
    """The session's adapter as served after an update: its archive in the artifact store."""

    update: int
    key: str
    sha256: str
    refresh: int = 0  # counts the session's refreshes (a put-back is one without an update); names the adapter


@dataclass(frozen=True)
class Publication:
    version: str
    update: int
    first_sequence: int
    last_sequence: int
    time: datetime


@dataclass(frozen=True)
class OnlineOutput:
    stats: OnlineStats = field(default_factory=OnlineStats)
    live: LiveAdapter | None = None
    publications: tuple[Publication, ...] = ()
    checkpoints: tuple[CheckpointRecord, ...] = ()  # newest first
    device: str = ""
    fisher_snapshot: str = ""  # what the EWC penalty was measured as ("" : no EWC)
    force_updates_seen: int = 0
    publish_requests_seen: int = 0
    # feedback (by event time) up to here has become examples: what the API shows, a copy of the store's watermark
    # (OnlineStore.feedback_through), which moves with the examples and is what a resumed session goes on from
    feedback_through: datetime | None = None
    ratings_since: datetime | None = None  # the live model's ratings are judged from here on (None: creation)
    refused_warned: int = 0  # of Controls.refused_examples, how many an EXAMPLES_REFUSED warning has covered
    # the times in a row a store's error sent the session back to the queue with no update in between (an update
    # sets it to 0): the MAX_INTERRUPTIONS-th fails it (engine.online.interruptions)
    interruptions: int = 0
    verdicts_told: tuple[str, ...] = ()  # the publications whose gate verdict a GateJudged event has told


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    failed_checks: tuple[str, ...] = ()
    gated: bool = True  # False: the server has no gate (off, and no golden suite), so nothing was checked


# The verdicts on a publication that no gate judged: the weights a negative-feedback spike put aside (the spike
# records it on every publication the gate had not judged, so none of them moves the live alias), and a version
# deleted before the gate judged it.
SPIKE_VERDICT = GateVerdict(passed=False, failed_checks=("feedback_spike",))
DELETED_VERDICT = GateVerdict(passed=False, failed_checks=("deleted",))


class AliasState(enum.StrEnum):
    """Where a session's live alias is (migration 0024)."""

    NONE = ""  # the session named none
    FOLLOWING = "FOLLOWING"  # the session runs: the alias follows its publications that pass the gate
    KEPT = "KEPT"  # the session ended: the alias serves alias_version until an operator moves or removes it
    ENDED = "ENDED"  # the session ended with no publication that passed the gate: the alias is not routed
    REMOVED = "REMOVED"  # an operator removed it: not routed

    @property
    def routed(self) -> bool:
        return self in (AliasState.FOLLOWING, AliasState.KEPT)


@dataclass(frozen=True)
class Controls:
    """What the API and the serving side set on a session (while it runs, and its live alias after)."""

    session_id: str
    enabled: bool
    learning_rate: float
    disabled_reason: str = ""
    force_updates: int = 0
    publish_requests: int = 0
    refused_examples: int = 0
    alias_version: str = ""  # what the live alias serves ("" : the start version)
    gates: tuple[tuple[str, GateVerdict], ...] = ()
    erasures: int = 0  # DeleteUserFeedback calls that deleted data the session may hold (migration 0021)
    base_model: str = ""
    start_version: str = ""
    live_alias: str = ""
    alias_state: AliasState = AliasState.NONE

    def gate(self, version: str) -> GateVerdict | None:
        return dict(self.gates).get(version)

    @property
    def alias_serves(self) -> str:
        """The version the live alias serves while it is routed."""
        return self.alias_version or self.start_version


@dataclass(frozen=True)
class NewExample:
    """An example a client sent, or one made from feedback, before it is stored."""

    prompt: str
    target: str  # "" : self-supervised
    weight: float = 1.0
    desirable: bool | None = None  # KTO's label: an answer to give (True) or to avoid (False); None: none
    # the client's idempotency key, unique within the session (migration 0029); "" : none (never a duplicate)
    client_example_id: str = ""


@dataclass(frozen=True)
class StoredRows:
    """What a store of new examples did: the sequence number of the last one the session holds (0: none), and how
    many were duplicates (their client_example_id stored already), not stored again."""

    last_sequence: int
    duplicates: int = 0


@dataclass(frozen=True)
class StoredExample:
    seq: int
    prompt: str
    target: str  # "" : self-supervised
    weight: float
    desirable: bool | None = None  # KTO's label (a KTO session's examples); None: an SFT session's

    def example(self) -> Example:
        """A supervised row is a chat turn (what the gateway's chat completions answer); one without a target is
        text the model learns to continue."""
        if self.target:
            return Example(messages=(ChatMessage("user", self.prompt), ChatMessage("assistant", self.target)),
                           weight=self.weight)
        return Example(prompt="", completion=self.prompt, weight=self.weight)


# ---- events ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Updated:
    """Event: one update ended; the session's stats after it."""

    update: int
    loss: float
    examples: int  # new examples trained on
    replayed: int
    ewc_penalty: float
    stats: OnlineStats


@dataclass(frozen=True)
class Published:
    """Event: the session's adapter was published as ``version``."""

    publication: Publication


@dataclass(frozen=True)
class GateJudged:
    """Event: the gate's verdict on the publication ``version`` (stored on the controls by a serving process)."""

    version: str
    verdict: GateVerdict


def untold_verdicts(output: OnlineOutput, controls: Controls) -> tuple[GateJudged, ...]:
    """The verdicts on the session's publications that no event has told yet, in the order they were published."""
    already = set(output.verdicts_told)
    return tuple(GateJudged(p.version, verdict) for p in output.publications
                 if p.version not in already and (verdict := controls.gate(p.version)) is not None)


def told(output: OnlineOutput, judged: Sequence[GateJudged]) -> OnlineOutput:
    """``output`` with the verdicts of ``judged`` recorded as told (untold_verdicts leaves them out from then on)."""
    return replace(output, verdicts_told=output.verdicts_told + tuple(j.version for j in judged))


@dataclass(frozen=True)
class LossSpike:
    """Event: an update's loss was ``factor`` times the median of the ones before; learning was disabled and the
    adapter put back to its weights before the update that made the weights this loss was measured on."""

    update: int
    loss: float
    median: float
    factor: float


@dataclass(frozen=True)
class FeedbackSpike:
    """Event: the live model's negative-feedback rate exceeded the start version's by more than ``margin``;
    learning was disabled, the live model put back to the start version's weights and the alias to the start
    version."""

    update: int
    ratings: int
    negative: int
    baseline_rate: float
    baseline_ratings: int
    margin: float

    @property
    def negative_rate(self) -> float:
        return self.negative / self.ratings if self.ratings else 0.0


ONLINE_SESSION = JobKind("onlineSession", "onlineSessions", OnlineSessionSpec, OnlineOutput,
                         event_types=(Updated, Published, GateJudged, LossSpike, FeedbackSpike,
                                      ParentFisherProgress))
OnlineSession = Job[OnlineSessionSpec, OnlineOutput]


def live_model(base_model: str, session_id: str) -> str:
    """The name the session's adapter is served under."""
    return f"{base_model}@{session_id}"


def live_adapter_name(base_model: str, session_id: str, refresh: int) -> str:
    """The serving engine's name of one refresh (a new name per refresh, so nothing served is unloaded)."""
    return f"{live_model(base_model, session_id)}-r{refresh}"


def session_exists(session_id: str) -> AlreadyExists:
    return AlreadyExists("ONLINE_SESSION_EXISTS", f"online session onlineSessions/{session_id} exists",
                         metadata={"name": f"onlineSessions/{session_id}"})


def session_id_in_use(session_id: str, kind: str) -> AlreadyExists:
    """``session_id`` is the id of a job of another ``kind``: sessions are jobs, and share their ids with every job."""
    return AlreadyExists("ONLINE_SESSION_ID_IN_USE", f"session_id {session_id!r} is the id of a {kind} job (online "
                                                     "sessions share their ids with every job); choose another",
                         metadata={"session_id": session_id, "kind": kind})


def session_ended(session_id: str, state: JobState) -> FailedPrecondition:
    """The session is stopping or has ended (``state``): it takes no more examples or changes."""
    name = f"onlineSessions/{session_id}"
    return FailedPrecondition("ONLINE_SESSION_ENDED", f"online session {name} has ended ({state.value})",
                              metadata={"name": name, "state": state.value})


def learning_disabled(session_id: str, reason: str) -> FailedPrecondition:
    """An update asked of a session whose learning is off: it would wait, unseen, until learning is enabled, and
    then run at a time no one chose; the caller enables learning first."""
    name = f"onlineSessions/{session_id}"
    why = f" ({reason})" if reason else ""
    return FailedPrecondition("ONLINE_LEARNING_DISABLED",
                              f"online session {name} has learning disabled{why}; enable it first "
                              "(EnableOnlineLearning), then ask for the update",
                              metadata={"name": name, "disabled_reason": reason})


def not_found(session_id: str) -> NotFound:
    return NotFound("ONLINE_SESSION_NOT_FOUND", f"online session onlineSessions/{session_id} does not exist",
                    metadata={"name": f"onlineSessions/{session_id}"})
