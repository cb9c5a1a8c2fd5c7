"""Weighted traffic between the active version and a candidate, and what each side served.

A :class:`TrafficSplit` sends ``share`` of the alias's requests to the candidate:

- with a user id (the ``x-user-id`` header, else the OpenAI body's ``user`` field), the side is a hash of the id
  and the candidate's name: the same user always lands on the same side of a given split, and a larger share only
  moves users from the active version to the candidate, never back;
- without one, requests are dealt in turn: the n-th goes to the candidate when ``floor(n * share)`` grows, so any
  run of requests follows the share to within one request (10% is every tenth request).

Each side counts its requests, errors (HTTP 5xx or no answer from the serving engine), fail-overs (candidate
requests retried on the active version) and latency, from the split's start. Once the serving engine has lost the
candidate (``lose``), every request goes to the active version.
"""

from __future__ import annotations

import enum
import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

USER_HEADER = "x-user-id"


class Role(enum.StrEnum):
    ACTIVE = "active"
    CANDIDATE = "candidate"


@dataclass(frozen=True)
class Route:
    """Where one side of the alias goes: the name the serving engine knows, and its adapter version."""

    upstream: str
    version: str = ""  # "" = the base model


@dataclass(frozen=True)
class Tally:
    """What one side served: requests, those that failed at the serving engine, those failed over, seconds."""

    requests: int = 0
    errors: int = 0
    failovers: int = 0
    seconds: float = 0.0  # summed latency, to the last byte

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def mean_seconds(self) -> float:
        return self.seconds / self.requests if self.requests else 0.0

    def plus(self, *, errors: int = 0, failovers: int = 0, seconds: float = 0.0) -> Tally:
        return replace(self, requests=self.requests + 1, errors=self.errors + errors,
                       failovers=self.failovers + failovers, seconds=self.seconds + seconds)


def sum_tallies(tallies: Iterable[Tally]) -> Tally:
    """What several gateways counted on one side, together."""
    total = Tally()
    for t in tallies:
        total = Tally(total.requests + t.requests, total.errors + t.errors, total.failovers + t.failovers,
                      total.seconds + t.seconds)
    return total


def sticky_fraction(candidate: str, user: str) -> float:
    """Where ``user`` falls in [0, 1) for a split to ``candidate``: the candidate's side when below the share."""
    digest = hashlib.sha256(f"{candidate}\n{user}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(eq=False)
class TrafficSplit:
    """A share of the alias's requests sent to ``candidate``; the rest go where the alias points."""

    candidate: Route
    share: float
    tallies: dict[Role, Tally] = field(default_factory=lambda: {Role.ACTIVE: Tally(), Role.CANDIDATE: Tally()})
    lost: str = ""  # why the candidate left traffic; "" while it serves
    _dealt: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.share < 1.0:
            raise ValueError(f"share must be in (0, 1), got {self.share}")

    def side(self, user: str = "") -> Role:
        """The side of the next request (of ``user``, when given)."""
        if self.lost:
            return Role.ACTIVE
        if user:
            return Role.CANDIDATE if sticky_fraction(self.candidate.upstream, user) < self.share else Role.ACTIVE
        n = self._dealt
        self._dealt += 1
        return Role.CANDIDATE if math.floor((n + 1) * self.share) > math.floor(n * self.share) else Role.ACTIVE

    def count(self, role: Role, *, error: bool, failover: bool = False, seconds: float = 0.0) -> None:
        self.tallies[role] = self.tallies[role].plus(errors=int(error), failovers=int(failover), seconds=seconds)

    def lose(self, why: str) -> bool:
        """The serving engine lost the candidate: no more requests go to it. True the first time only."""
        if self.lost:
            return False
        self.lost = why or "the serving engine lost the candidate"
        return True
