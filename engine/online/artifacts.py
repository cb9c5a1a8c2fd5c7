"""What a running online session stores: its live adapter after every update (the serving side loads the newest:
engine.online.serving), its checkpoints (a worker going on from the session resumes from the newest:
engine.online.runner) and its publications (registry versions, each claiming the examples trained on since the one
before).
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import torch

from engine.domain import DatasetSummary, OnlineExamplesSource
from engine.jobs.core import Noticed
from engine.online.interruptions import TRANSIENT_ERRORS, describe
from engine.online.session_state import SessionState
from engine.online.spec import LiveAdapter, Publication, Published
from engine.registry import PublishRequest
from engine.registry.records import AdapterSource
from engine.training.loading import save_adapter

STATE_FILE = "online.pt"
LIVE_KEPT = 3  # live archives kept in the store (the serving side needs only the newest)
CHECKPOINTS_KEPT = 2


class SessionArtifacts(SessionState):
    """The live adapter, the checkpoints and the publications a running session stores."""

    async def _save_adapter(self, name: str) -> Path:
        folder = self.ctx.work_dir / name
        await asyncio.to_thread(shutil.rmtree, folder, True)
        return await self.ctx.in_worker(save_adapter, self.learner.loaded.model, folder)

    async def _refresh_live(self, update: int) -> None:
        """The adapter as it is now, stored for the serving side to load (the newest few are kept)."""
        folder = await self._save_adapter("live")
        live = self.ctx.job.output.live
        refresh = (live.refresh if live is not None else 0) + 1
        record = await self.live_archive.save(self.id, refresh, self.ctx.lease_token, folder, loss=0.0,
                                              eval_loss=None)
        self.ctx.set_output(replace(self.ctx.job.output, live=LiveAdapter(update, record.key, record.sha256,
                                                                          refresh)))
        self.live_keys.append(record.key)
        if len(self.live_keys) > LIVE_KEPT:
            await self.r.artifacts.delete([self.live_keys.popleft()])

    async def _publish(self) -> None:
        """Publish the adapter as it is now, claiming the examples trained on since the last publication. Nothing
        is published, with a PUBLISH_SKIPPED notice, when the session's last publication is at this update or a
        later one (a worker that resumed from an older checkpoint: its weights are older than that publication's,
        which it would follow as a child), or when no example was trained on since it."""
        ctx, learner, spec = self.ctx, self.learner, self.spec
        done = ctx.job.output.publications
        skipped = ""
        if done and learner.updates <= done[-1].update:
            skipped = (f"{done[-1].version} was published at update {done[-1].update}, which this session has not "
                       "gone past since it resumed from an older checkpoint; the next publication after that update "
                       f"follows on from {done[-1].version}")
        elif learner.trained_through < learner.window_first:
            skipped = (f"no example was trained on since {done[-1].version if done else 'the last publication'}, "
                       f"whose window ended at example {learner.window_first - 1}")
        if skipped:
            ctx.record(Noticed("PUBLISH_SKIPPED", f"nothing published at update {learner.updates}: {skipped}"))
            return
        parent = self.start
        if done:
            parent = await self.r.registry.get(spec.base_model, done[-1].version)
        folder = await self._save_adapter("publish")
        first, last = learner.window_first, learner.trained_through
        trained_on = await self.r.store.window(self.id, first, last)  # read again by later jobs' EWC and replay
        wanted = len(trained_on.wanted())
        count = len(trained_on.examples)
        parts = (("online", count),) if trained_on.desirable is None else tuple(
            (k, n) for k, n in (("online_desirable", wanted), ("online_undesirable", count - wanted)) if n)
        dataset = DatasetSummary(digest=trained_on.digest, example_count=count, composition=parts,
                                 objective=spec.loss, source=OnlineExamplesSource(self.id, first, last))
        try:
            record = await self.r.registry.publish(PublishRequest(
                base_model=spec.base_model, adapter_dir=folder, parent=parent, patch=True, source=AdapterSource.ONLINE,
                training_job=ctx.job.name, train_loss=learner.stats(learning_rate=0, enabled=True,
                                                                    published=0).average_loss or 0.0,
                ewc_lambda=spec.ewc_lambda, fisher_snapshot=ctx.job.output.fisher_snapshot, dataset=dataset,
                labels=(("online_session", self.id), ("examples", f"{first}-{last}")),
                request_id=f"{ctx.job.name}/publish/{learner.updates}", fence=(ctx.job.id, ctx.lease_token),
            ))
        finally:
            await asyncio.to_thread(shutil.rmtree, folder, True)
        publication = Publication(record.version, learner.updates, first, last, datetime.now(UTC))
        learner.published(last)
        ctx.set_output(replace(ctx.job.output, publications=(*done, publication)))
        ctx.record(Published(publication))
        await ctx.persist()

    async def _checkpoint(self) -> None:
        ctx, learner = self.ctx, self.learner
        if not self.changed and ctx.job.output.checkpoints:
            return
        folder = ctx.work_dir / "checkpoint"
        await asyncio.to_thread(shutil.rmtree, folder, True)

        def write() -> None:
            learner.loaded.model.save_pretrained(folder / "adapter", safe_serialization=True)
            torch.save(learner.state(), folder / STATE_FILE)

        await ctx.in_worker(write)
        archive = self.checkpoint_archive
        record = await archive.save(self.id, learner.updates, ctx.lease_token, folder,
                                    loss=learner.last_loss, eval_loss=None)
        # a second checkpoint at the same update (a feedback spike's) is stored under the same key: it replaces it
        kept = (record, *(c for c in ctx.job.output.checkpoints if c.key != record.key))
        ctx.set_output(replace(ctx.job.output, checkpoints=kept[:CHECKPOINTS_KEPT]))
        await ctx.persist()
        self.changed = False
        if len(kept) > CHECKPOINTS_KEPT:
            await archive.delete(list(kept[CHECKPOINTS_KEPT:]))

    async def _checkpoint_if_possible(self) -> None:
        """A checkpoint before the session goes to another worker; if a store cannot be reached, the worker going
        on from it starts from the previous one (the job, naming the checkpoints, is stored when it is released)."""
        ctx = self.ctx
        before = ctx.job.output.checkpoints
        try:
            await self._checkpoint()
        except TRANSIENT_ERRORS as exc:
            if ctx.job.output.checkpoints == before:  # not stored (else only the job's write failed: its release
                # writes the job, which names it)
                ctx.record(Noticed("CHECKPOINT_NOT_STORED", f"no checkpoint stored at update {self.learner.updates} "
                                                            f"({describe(exc)}): the worker going on "
                                                            "from the session starts from the previous one and "
                                                            "trains on the examples after it again"))
