"""What a running online session does on a spike (engine.online.runner describes both).

A loss spike (the learner has put the adapter back): learning off, a failed gate verdict (``loss_spike``) on every
publication of the weights it put aside, and the live alias moved off them, in one write. A negative-feedback spike
on the live model: the start version's weights put back and checkpointed, then learning off, the alias back on the
start version and a failed verdict on every publication the gate has not judged, in one write.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from engine.errors import NotFound
from engine.jobs.core import Warned
from engine.online.artifacts import SessionArtifacts
from engine.online.spec import SPIKE_VERDICT, AliasState, FeedbackSpike, GateVerdict, live_model
from engine.thresholds import at_most

BASELINE_WINDOW = timedelta(days=7)  # the start version's ratings a negative-feedback spike is judged against
# The verdict a loss spike records on the publications of the weights it put aside (not judged yet by the gate).
LOSS_SPIKE_VERDICT = GateVerdict(passed=False, failed_checks=("loss_spike",))
# Where the store moves a session's alias_version: the alias follows the session, or the session named none.
_ALIAS_MOVABLE = (AliasState.NONE, AliasState.FOLLOWING)


class SessionSpikes(SessionArtifacts):
    """A running session's answer to a loss spike or a negative-feedback spike."""

    async def _loss_spike_write(self, reason: str, aside: list[str]) -> tuple[str, tuple[str, str] | None]:
        """Learning off after a loss spike, in one write (as a negative-feedback spike's) with a failed verdict
        (``loss_spike``) on each publication of ``aside`` the gate has not judged, and the live alias moved off the
        one of them it serves, if any: back to the newest publication before them that passed the gate and is
        still published (made after the last negative-feedback spike, which put those before it aside), or else
        the start version. Where the alias serves another version it is written again as it is, so that a verdict
        the gate records between the read and the write does not leave it on weights put aside.

        The store moves the alias only onto a version still published, and only while it follows the session:
        what it serves is read from the controls the write returns, not assumed. A version deleted between the
        look-up and the write leaves the alias where it was, and the next one is tried. Where it could not move
        (a kept alias never does; nothing to go back to is published any more) ``reason`` says what it still serves.
        The reason as stored, and (version it served, version it serves now) when it moved."""
        ctx, spec = self.ctx, self.spec
        if not aside:
            await self.r.store.set(self.id, enabled=False, disabled_reason=reason)
            return reason, None
        controls = await self.r.store.controls(self.id)
        since = ctx.job.output.ratings_since
        passed = [p.version for p in reversed(ctx.job.output.publications) if p.version not in aside
                  and (since is None or p.time >= since)
                  and (verdict := controls.gate(p.version)) is not None and verdict.passed]
        versions = iter((*passed, spec.start_version))  # newest first, the start version last

        async def next_published() -> str | None:
            for version in versions:
                try:
                    await self.r.registry.get(spec.base_model, version)
                except NotFound:  # deleted since it was published (DeleteAdapter, retention)
                    continue
                return version
            return None

        target = controls.alias_version
        if controls.alias_serves in aside:
            target = await next_published() or controls.alias_version
        after = await self.r.store.set(self.id, enabled=False, disabled_reason=reason, alias_version=target,
                                       verdicts={v: LOSS_SPIKE_VERDICT for v in aside})
        # what the alias served of the weights put aside: as read, or as the gate moved it meanwhile
        served = controls.alias_serves if controls.alias_serves in aside else after.alias_serves
        while after.alias_serves in aside and after.alias_state in _ALIAS_MOVABLE:
            version = await next_published()
            if version is None:
                break
            after = await self.r.store.set(self.id, alias_version=version)
        if after.alias_serves not in aside:
            return reason, ((served, after.alias_serves) if served in aside else None)
        if after.alias_state.routed:
            if after.alias_state is AliasState.KEPT:
                why = "it is kept there (it no longer follows the session) and was not moved"
            else:
                why = ("no publication that passed the gate before them is still published, nor is the start "
                       f"version {spec.start_version}")
            reason += (f"; the live alias {after.live_alias or spec.live_alias!r} still serves {after.alias_serves}, "
                       f"whose weights the spike put aside: {why} (MoveLiveAlias moves it)")
            await self.r.store.set(self.id, disabled_reason=reason)
        return reason, None

    async def _feedback_spike(self) -> bool:
        """Whether users rate the live model down: its negative rate over the ratings window (at least
        ``negative_feedback_min_ratings`` ratings) above the start version's over the last week by more than
        ``negative_feedback_margin``. If so, learning is disabled, the live model is put back to the start
        version's weights and the alias to the start version, with the figures."""
        ctx, spec = self.ctx, self.spec
        if self.r.rates is None or spec.negative_feedback_margin <= 0:
            return False
        now = datetime.now(UTC)
        since = max(ctx.job.output.ratings_since or ctx.job.create_time,
                    now - timedelta(seconds=self.r.config.ratings_window_seconds))
        live = await self.r.rates.named(since, live_model(spec.base_model, self.id), base_model=spec.base_model)
        if live.total < spec.negative_feedback_min_ratings:
            return False
        start = await self.r.rates.counts(spec.base_model, spec.start_version, now - BASELINE_WINDOW)
        if at_most(live.negative_rate, start.negative_rate + spec.negative_feedback_margin):
            return False
        spike = FeedbackSpike(self.learner.updates, live.total, live.negative, start.negative_rate, start.total,
                              spec.negative_feedback_margin)
        reason = (f"negative-feedback spike: {live.negative} of {live.total} ratings of "
                  f"{live_model(spec.base_model, self.id)} since {since:%H:%M:%S} UTC were negative "
                  f"({spike.negative_rate:.1%}), above {spec.start_version}'s {start.negative_rate:.1%} of "
                  f"{start.total} by more than {spec.negative_feedback_margin:.1%}; the live model was put back to "
                  f"{spec.start_version}'s weights and the alias to {spec.start_version}")
        # The live model is put back and stored first, so a session read as disabled already serves the start
        # weights, and checkpointed (with the job), so a worker that goes on from here, after a stop or a crash,
        # resumes the start weights and not those users rated down. The ratings are put aside last: a crash before
        # that finds the same spike again on resume.
        await ctx.in_worker(self.learner.put_back_start)
        self.changed = True
        await self._refresh_live(self.learner.updates)
        await self._checkpoint()
        # Learning off, the alias back on the start version and a failed verdict on every publication the gate has
        # not judged yet, in one write: the gate, which judges a publication against what the alias serves and
        # moves it onto one that passes, never moves it back onto weights of before the spike.
        await self.r.store.set(self.id, enabled=False, disabled_reason=reason, alias_version=spec.start_version,
                               verdicts={p.version: SPIKE_VERDICT for p in ctx.job.output.publications})
        ctx.set_output(replace(ctx.job.output, ratings_since=now))
        ctx.record(spike)
        ctx.record(Warned("LEARNING_DISABLED", reason))
        await ctx.persist()
        return True
