"""The RUNNING phase of an online session's run (engine.online.runner describes the whole run): the loop that reads
the controls, the new examples and the feedback on the live model, hands each update to the learner's worker
thread, and stops for a client, a worker's shutdown or a store out of reach. What it stores is
engine.online.artifacts; what it does on a spike, engine.online.spikes.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from engine import telemetry
from engine.domain import Example, FeedbackSource, Objective
from engine.errors import Cancelled, FailedPrecondition
from engine.jobs.core import Noticed, Warned
from engine.jobs.ports import StopReason
from engine.online.interruptions import TRANSIENT_ERRORS, hand_back, steady_since
from engine.online.learner import UpdateResult
from engine.online.spec import LossSpike, NewExample, Updated, live_model, told, untold_verdicts
from engine.online.spikes import SessionSpikes

FEEDBACK_LAG_SECONDS = 5.0  # feedback is read up to this long ago: events sent a moment late are not missed


def _row(example: Example, desirable: bool | None) -> NewExample | None:
    """An example as a session stores it: the last user turn and the answer (earlier turns are not kept), with
    its KTO label (None: an SFT session's)."""
    if not example.is_chat:
        return NewExample(example.prompt, example.completion, example.weight, desirable) \
            if example.prompt.strip() else None
    users = [m.content for m in example.messages if m.role == "user"]
    answer = example.messages[-1]
    if not users or answer.role != "assistant":
        return None
    return NewExample(users[-1], answer.content, example.weight, desirable)


class RunningSession(SessionSpikes):
    """The running loop of one session (see the module docstring)."""

    async def loop(self) -> str:
        self.ran_since = time.monotonic()
        while True:
            if self.ctx.cancel.cancelled:
                return await self._stop()
            try:
                updated = await self._tick()
            except TRANSIENT_ERRORS as exc:
                return await self._interrupted(exc)
            if not updated:
                await asyncio.sleep(self.r.config.poll_seconds)

    async def _tick(self) -> bool:
        """One look at the controls and the examples, and an update when one is due; whether one was made."""
        ctx, learner = self.ctx, self.learner
        controls = await self.r.store.controls(self.id)
        if controls.refused_examples > ctx.job.output.refused_warned:
            await self._warn_refused(controls.refused_examples)
        if controls.erasures != self.erasures_seen:
            await self._forget_erased(controls.erasures)
        if time.monotonic() - self.feedback_at >= self.r.config.feedback_seconds:
            self.feedback_at = time.monotonic()
            if self.spec.learn_from_feedback:
                await self._take_feedback()
            if controls.enabled and await self._feedback_spike():
                controls = await self.r.store.controls(self.id)
        room = self.spec.buffer_size - len(learner.pending)  # the rest wait in the database, never dropped
        rows = await self.r.store.after(self.id, learner.last_sequence, room) if room > 0 else []
        if rows:
            warnings = learner.add(rows)
            if warnings:
                ctx.record(Warned("EXAMPLES_SKIPPED", f"{len(warnings)} examples skipped: {warnings[0]}"))
        output = ctx.job.output
        forced = controls.force_updates > output.force_updates_seen
        publish = controls.publish_requests > output.publish_requests_seen
        updated = False
        if controls.enabled and time.monotonic() >= self.resting_until and learner.due(forced):
            await self._update(controls.learning_rate)
            updated = True
        elif forced and not learner.pending:  # done at once, with nothing done: said, as an update would be
            ctx.record(Noticed("NOTHING_TO_UPDATE", "an update was asked for (ForceUpdate), and no example waits "
                                                    "for one: every example read is in an update already"))
        if publish and learner.updates > 0:
            await self._publish()
        judged = untold_verdicts(ctx.job.output, controls)  # by a serving process, since the last look
        for verdict in judged:
            ctx.record(verdict)
        output = told(ctx.job.output, judged)
        ctx.set_output(replace(
            output,
            stats=learner.stats(learning_rate=controls.learning_rate, enabled=controls.enabled,
                                published=len(output.publications)),
            # a forced update is done once one update followed it (or there was nothing to update)
            force_updates_seen=controls.force_updates if forced and (updated or not learner.pending)
            else output.force_updates_seen,
            publish_requests_seen=controls.publish_requests if learner.updates > 0
            else output.publish_requests_seen,
        ))
        if rows or forced or publish or updated or judged:
            await ctx.persist()
        return updated

    async def _update(self, learning_rate: float) -> None:
        ctx, learner, spec = self.ctx, self.learner, self.spec
        began = time.monotonic()
        result: UpdateResult = await ctx.in_worker(learner.update, learning_rate)
        self.changed = True  # also a skipped update: its counters and optimiser moved
        took = time.monotonic() - began
        share = self.r.config.max_update_share
        self.resting_until = time.monotonic() + (took * (1 - share) / share if 0 < share < 1 else 0.0)
        spiked = not math.isnan(result.spike_median)
        self.spike_unstored = spiked
        telemetry.online_update(self.id, "SKIPPED" if result.skipped else "SPIKE" if spiked else "TRAINED",
                                result.loss)
        if result.skipped:
            ctx.record(Warned("UPDATE_SKIPPED", f"update {result.update}: {result.skipped}"))
            return
        await self._refresh_live(result.update)
        if spiked:
            factor = result.loss / result.spike_median
            # The publications made after the update whose weights were put back published weights put aside.
            aside = [p.version for p in ctx.job.output.publications if p.update > result.put_back_to]
            reason = (f"loss spike at update {result.update}: loss {result.loss:.4g} is {factor:.1f}x the median "
                      f"{result.spike_median:.4g} of the last updates (limit {spec.loss_spike_factor:g}x); the "
                      "adapter was put back to its weights before the update that made it"
                      f"{f' (those of update {result.put_back_to})' if result.put_back_to else ''}")
            if aside:
                reason += (f"; {', '.join(aside)} published weights it put aside: "
                           f"{'it fails' if len(aside) == 1 else 'they fail'} the gate (loss_spike)")
            await ctx.persist()  # a session read as disabled already serves the weights put back
            reason, back = await self._loss_spike_write(reason, aside)
            if back is not None:
                ctx.record(Warned("LIVE_ALIAS_MOVED_BACK", f"the live alias served {back[0]}, whose weights the "
                                                           f"loss spike at update {result.update} put aside; it "
                                                           f"serves {back[1]} again"))
            self.spike_unstored = False
            ctx.record(LossSpike(result.update, result.loss, result.spike_median, factor))
            ctx.record(Warned("LEARNING_DISABLED", reason))
        stats = learner.stats(learning_rate=learning_rate, enabled=math.isnan(result.spike_median),
                              published=len(ctx.job.output.publications))
        # an update made and its live adapter stored: the stores answer, the interruptions in a row start again
        ctx.set_output(replace(ctx.job.output, stats=stats, interruptions=0))
        ctx.record(Updated(result.update, result.loss, result.examples, result.replayed, result.ewc_penalty, stats))
        if spec.publish_every and learner.updates % spec.publish_every == 0:
            await self._publish()
        if learner.updates % spec.checkpoint_every == 0:
            await self._checkpoint()

    async def _warn_refused(self, refused: int) -> None:
        """Examples the API refused on arrival since the last warning (it counts them on the controls; the response
        that sent them named each and why): one EXAMPLES_REFUSED warning for them, stored at once with the count it
        covers, so that it is given once, also across a restart."""
        ctx = self.ctx
        new = refused - ctx.job.output.refused_warned
        ctx.set_output(replace(ctx.job.output, refused_warned=refused))
        ctx.record(Warned("EXAMPLES_REFUSED", f"{new} example{'' if new == 1 else 's'} refused on arrival ({refused} "
                                              "in all); the AddExamples or StreamExamples response that sent "
                                              f"{'it' if new == 1 else 'them'} said which and why"))
        await ctx.persist()

    async def _take_feedback(self) -> None:
        """The feedback on the live model's answers since the last read, as examples: what a training job's
        feedback dataset of the session's loss makes of it. SFT keeps corrections and responses voted for, never
        a voted-down response; KTO keeps those as desirable, and voted-down responses (and responses a correction
        replaced) as undesirable, each with its label.

        The last read ends at the store's watermark, not at the job's ``feedback_through`` (the copy the API
        shows): the store moves it in the transaction that stores the window's examples, and the job is stored
        after. A worker that dies (or fails to store the job) in between leaves the window read, so the worker
        going on from the job does not make the same feedback into examples, and train on them, twice."""
        ctx, spec = self.ctx, self.spec
        if self.r.feedback is None:
            return
        stored = await self.r.store.feedback_through(self.id)
        shown = ctx.job.output.feedback_through
        # The store's is later after a crash between the two writes: the job shows it from now on. The job's copy is
        # later only where a worker of an earlier server version read on after migration 0026 copied it to the
        # store: that window was made into examples too, so the read starts after it.
        if stored is not None and (shown is None or stored > shown):
            ctx.set_output(replace(ctx.job.output, feedback_through=stored))
        start = ctx.job.output.feedback_through or ctx.job.create_time
        end = datetime.now(UTC) - timedelta(seconds=FEEDBACK_LAG_SECONDS)
        if end <= start:
            return
        source = FeedbackSource(adapter_version=live_model(spec.base_model, self.id), min_samples=0)
        kto = spec.loss is Objective.KTO
        found: list[tuple[Example, bool | None, frozenset[str]]]
        try:
            built = await self.r.feedback.rebuild(source, spec.loss, start, end, base_model=spec.base_model)
            if kto:
                found = list(zip(built.examples, built.desirable, built.users, strict=True))
            else:
                found = [(e, None, u) for e, u in zip(built.wanted(), built.wanted_users(), strict=True)]
        except FailedPrecondition:  # none in the window
            found = []
        kept = [(row, users) for row, users in ((_row(e, d), u) for e, d, u in found) if row is not None]
        rows = [row for row, _ in kept]
        # each with its users, so that DeleteUserFeedback deletes it with their events
        stored_rows = await self.r.store.add_feedback(self.id, rows, [users for _, users in kept], since=stored,
                                                      through=end)
        if stored_rows is None:
            return  # read already, by a worker that held the session before this one; the next read goes on after it
        if stored_rows:
            ctx.record(Noticed("FEEDBACK_EXAMPLES", f"{stored_rows} examples from the feedback on "
                                                    f"{source.adapter_version} up to {end:%H:%M:%S} UTC"))
        ctx.set_output(replace(ctx.job.output, feedback_through=end))
        await ctx.persist()

    async def _forget_erased(self, erasures: int) -> None:
        """DeleteUserFeedback deleted data this session may hold: the session's own examples, or its lineage's
        data (other sessions' examples, feedback events). What the learner holds of it (to train on, or to replay)
        goes too. What earlier updates learnt from it stays in the weights, as in any version trained on it."""
        learner = self.learner
        held = [h.seq for h in (*learner.buffer, *learner.pending)]
        present = await self.r.store.present(self.id, held)
        lineage = await self.lineage() if self.lineage is not None and learner.earlier else None
        dropped = await self.ctx.in_worker(learner.forget, present, lineage)
        self.erasures_seen = erasures
        if dropped:
            self.ctx.record(Noticed("EXAMPLES_ERASED", f"dropped {dropped} of the examples held in memory: they were "
                                                       "made from feedback deleted since (DeleteUserFeedback)"))
            await self.ctx.persist()

    async def _stop(self) -> str:
        """A stop asked by a client (a last checkpoint, then CANCELLED) or by this worker's shutdown or a pause
        (a checkpoint, then the session goes to another worker); a lost lease writes nothing more. A store out of
        reach does not turn a client's stop into a failure: the checkpoint is then not stored (a notice says so)
        and the examples not read yet are not counted."""
        reason = self.ctx.cancel.reason
        if reason is not StopReason.LEASE_LOST and self.changed:
            await self._checkpoint_if_possible()
        if reason is StopReason.CANCEL:
            raise Cancelled("JOB_CANCELLED", await self._untrained())
        raise Cancelled("JOB_CANCELLED", "stopped to continue later")

    async def _interrupted(self, exc: BaseException) -> str:
        """A store could not be reached for a moment (``TRANSIENT_ERRORS``): the session stops as at this worker's
        shutdown instead of failing. After a wait that grows with the interruptions in a row (none after the
        first), it stores a checkpoint if it can (the store may still be down: the worker going on from it then
        starts from the previous one) and goes back to the queue; the worker that takes it resumes from its
        checkpoint and reads the examples after it again by sequence number, so an example read (or popped for an
        update the error cut short) is trained on, once the stores are back. The ``MAX_INTERRUPTIONS``-th in a row
        fails the session with the error (engine.online.interruptions). A stop asked meanwhile goes on as asked (a
        client's stop ends the session; a lost lease writes nothing)."""
        if not await hand_back(self.ctx, exc, steady=steady_since(self.ran_since)):
            return await self._stop()  # a client's stop, asked before or during the wait
        if self.changed and not self.spike_unstored:
            await self._checkpoint_if_possible()
        raise Cancelled("JOB_CANCELLED", "stopped to continue later")

    async def _untrained(self) -> str:
        """The end of a session a client stopped: what it trained on, and the examples it received and never will
        train on (those waiting for a full update, and those stored and not read yet), with an EXAMPLES_NOT_TRAINED
        warning when there are any."""
        learner = self.learner
        waiting = len(learner.pending)
        try:
            # The session stored as stopping (CANCELLING) first: a client's insert of examples looks at that under
            # the session's lock, which the count takes too, so each example is counted here or refused there
            # (OnlineStore.add), none told it was stored and left out.
            await self.ctx.persist()
            unread: int | None = await self.r.store.count_after(self.id, learner.last_sequence)
        except TRANSIENT_ERRORS:  # the store out of reach: the examples not read yet are not counted
            unread = None
        trained = max(0, learner.total_examples - learner.skipped - waiting)
        said = f"stopped after {learner.updates} updates on {trained} examples"
        what, warning = untrained_examples(waiting, unread, self.spec.update_every)
        if warning is not None:
            self.ctx.record(warning)
        return f"{said}; {what}" if what else said


def untrained_examples(waiting: int, unread: int | None, update_every: int) -> tuple[str, Warned | None]:
    """What a stopped session says of the examples it received and will never train on: ``waiting`` for a full
    update of ``update_every``, ``unread`` stored and not read yet (None: they could not be counted). The words for
    its end ("" when there is nothing to say) and an EXAMPLES_NOT_TRAINED warning when there are any."""
    untrained = waiting + (unread or 0)
    if not untrained:
        return ("" if unread is not None else "the examples not read yet could not be counted"), None
    unread_said = f"{unread} not read yet" if unread is not None else "those not read yet could not be counted"
    what = (f"{untrained} example{'' if untrained == 1 else 's'} received {'was' if untrained == 1 else 'were'} "
            f"not trained on ({waiting} waiting for a full update of {update_every}, {unread_said})")
    return what, Warned("EXAMPLES_NOT_TRAINED", f"{what}: the session stopped, so no update will train on them; "
                                                "they stay in its examples until the retention deletes them")
