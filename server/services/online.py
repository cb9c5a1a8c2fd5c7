"""OnlineLearningService: validate, convert, call the online sessions, convert back."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator

import grpc

from engine.errors import FieldViolation, InvalidArgument
from engine.jobs.core import JobEvent
from engine.names import check_chosen_id
from engine.online.service import Added, OnlineSessions, SessionView
from engine.online.spec import Updated
from learning.v1 import online_pb2 as pb
from learning.v1 import online_pb2_grpc as pb_grpc
from server import online_convert as oc
from server.convert_jobs import after_sequence_from_pb, as_sent, check_request_id, page_size

MAX_REQUEST_ID = 128
MAX_REASON = 500
SHOWN_REFUSALS = 20  # the last refusals of a stream, in each of its answers


class OnlineLearningService(pb_grpc.OnlineLearningServiceServicer):
    def __init__(self, sessions: OnlineSessions, defaults: oc.OnlineDefaults) -> None:
        self._sessions = sessions
        self._defaults = defaults

    async def CreateOnlineSession(
        self, request: pb.CreateOnlineSessionRequest,
        context: grpc.aio.ServicerContext[pb.CreateOnlineSessionRequest, pb.CreateOnlineSessionResponse],
    ) -> pb.CreateOnlineSessionResponse:
        check_request_id(request.request_id, "request_id", MAX_REQUEST_ID)
        received = as_sent(request)
        earlier = await self._sessions.created(request.request_id, received)
        if earlier is not None:  # a retry, before anything of it is checked
            return pb.CreateOnlineSessionResponse(session=oc.session_to_pb(earlier))
        session_id = check_chosen_id(request.session_id, oc.COLLECTION, "session_id") if request.session_id else ""
        view = await self._sessions.create(oc.spec_from_pb(request.spec, self._defaults), session_id=session_id,
                                           request_id=request.request_id, received=received)
        return pb.CreateOnlineSessionResponse(session=oc.session_to_pb(view))

    async def GetOnlineSession(
        self, request: pb.GetOnlineSessionRequest,
        context: grpc.aio.ServicerContext[pb.GetOnlineSessionRequest, pb.GetOnlineSessionResponse],
    ) -> pb.GetOnlineSessionResponse:
        view = await self._sessions.get(oc.session_id_from_name(request.name))
        return pb.GetOnlineSessionResponse(session=oc.session_to_pb(view))

    async def ListOnlineSessions(
        self, request: pb.ListOnlineSessionsRequest,
        context: grpc.aio.ServicerContext[pb.ListOnlineSessionsRequest, pb.ListOnlineSessionsResponse],
    ) -> pb.ListOnlineSessionsResponse:
        views, token = await self._sessions.list(page_size=page_size(request.page_size),
                                                 page_token=request.page_token)
        return pb.ListOnlineSessionsResponse(sessions=[oc.session_to_pb(v) for v in views], next_page_token=token)

    async def StopOnlineSession(
        self, request: pb.StopOnlineSessionRequest,
        context: grpc.aio.ServicerContext[pb.StopOnlineSessionRequest, pb.StopOnlineSessionResponse],
    ) -> pb.StopOnlineSessionResponse:
        view = await self._sessions.stop(oc.session_id_from_name(request.name))
        return pb.StopOnlineSessionResponse(session=oc.session_to_pb(view))

    async def SetLearningRate(
        self, request: pb.SetLearningRateRequest,
        context: grpc.aio.ServicerContext[pb.SetLearningRateRequest, pb.SetLearningRateResponse],
    ) -> pb.SetLearningRateResponse:
        view = await self._sessions.set_learning_rate(oc.session_id_from_name(request.name), request.learning_rate)
        return pb.SetLearningRateResponse(session=oc.session_to_pb(view))

    async def EnableOnlineLearning(
        self, request: pb.EnableOnlineLearningRequest,
        context: grpc.aio.ServicerContext[pb.EnableOnlineLearningRequest, pb.EnableOnlineLearningResponse],
    ) -> pb.EnableOnlineLearningResponse:
        view = await self._sessions.set_enabled(oc.session_id_from_name(request.name), True)
        return pb.EnableOnlineLearningResponse(session=oc.session_to_pb(view))

    async def DisableOnlineLearning(
        self, request: pb.DisableOnlineLearningRequest,
        context: grpc.aio.ServicerContext[pb.DisableOnlineLearningRequest, pb.DisableOnlineLearningResponse],
    ) -> pb.DisableOnlineLearningResponse:
        view = await self._sessions.set_enabled(oc.session_id_from_name(request.name), False,
                                                reason=request.reason[:MAX_REASON] or "disabled by a client")
        return pb.DisableOnlineLearningResponse(session=oc.session_to_pb(view))

    async def ForceUpdate(
        self, request: pb.ForceUpdateRequest,
        context: grpc.aio.ServicerContext[pb.ForceUpdateRequest, pb.ForceUpdateResponse],
    ) -> pb.ForceUpdateResponse:
        view = await self._sessions.force_update(oc.session_id_from_name(request.name))
        return pb.ForceUpdateResponse(session=oc.session_to_pb(view))

    async def PublishOnlineSession(
        self, request: pb.PublishOnlineSessionRequest,
        context: grpc.aio.ServicerContext[pb.PublishOnlineSessionRequest, pb.PublishOnlineSessionResponse],
    ) -> pb.PublishOnlineSessionResponse:
        view = await self._sessions.publish(oc.session_id_from_name(request.name))
        return pb.PublishOnlineSessionResponse(session=oc.session_to_pb(view))

    async def MoveLiveAlias(
        self, request: pb.MoveLiveAliasRequest,
        context: grpc.aio.ServicerContext[pb.MoveLiveAliasRequest, pb.MoveLiveAliasResponse],
    ) -> pb.MoveLiveAliasResponse:
        view = await self._sessions.move_alias(oc.session_id_from_name(request.name), request.version)
        return pb.MoveLiveAliasResponse(session=oc.session_to_pb(view))

    async def RemoveLiveAlias(
        self, request: pb.RemoveLiveAliasRequest,
        context: grpc.aio.ServicerContext[pb.RemoveLiveAliasRequest, pb.RemoveLiveAliasResponse],
    ) -> pb.RemoveLiveAliasResponse:
        view = await self._sessions.remove_alias(oc.session_id_from_name(request.name))
        return pb.RemoveLiveAliasResponse(session=oc.session_to_pb(view))

    async def GetOnlineStats(
        self, request: pb.GetOnlineStatsRequest,
        context: grpc.aio.ServicerContext[pb.GetOnlineStatsRequest, pb.GetOnlineStatsResponse],
    ) -> pb.GetOnlineStatsResponse:
        view = await self._sessions.get(oc.session_id_from_name(request.name))
        return pb.GetOnlineStatsResponse(stats=oc.stats_to_pb(view.stats, view.unread))

    async def WatchOnlineSession(
        self, request: pb.WatchOnlineSessionRequest,
        context: grpc.aio.ServicerContext[pb.WatchOnlineSessionRequest, pb.WatchOnlineSessionResponse],
    ) -> AsyncIterator[pb.WatchOnlineSessionResponse]:
        session_id = oc.session_id_from_name(request.name)
        view = await self._sessions.get(session_id)  # NOT_FOUND before the stream starts
        after = after_sequence_from_pb(request.after_sequence)
        async for item in self._sessions.watch(session_id, after_sequence=after):
            if isinstance(item, JobEvent):
                yield pb.WatchOnlineSessionResponse(event=oc.event_to_pb(item))
            else:
                yield pb.WatchOnlineSessionResponse(snapshot=oc.session_to_pb(view.with_job(item)))

    async def AddExamples(
        self, request: pb.AddExamplesRequest,
        context: grpc.aio.ServicerContext[pb.AddExamplesRequest, pb.AddExamplesResponse],
    ) -> pb.AddExamplesResponse:
        added = await self._sessions.add(oc.session_id_from_name(request.name),
                                         oc.examples_from_pb(list(request.examples)))
        return pb.AddExamplesResponse(accepted=added.accepted, refused=len(added.refusals),
                                      refusals=list(added.refusals), last_sequence=added.last_sequence,
                                      duplicates=added.duplicates)

    async def StreamExamples(
        self, request_iterator: AsyncIterator[pb.StreamExamplesRequest],
        context: grpc.aio.ServicerContext[pb.StreamExamplesRequest, pb.StreamExamplesResponse],
    ) -> AsyncIterator[pb.StreamExamplesResponse]:
        """Stores what the client sends while answering with the stats: once at the start, after each update,
        and, once the client has closed its side, a last time when the worker has read every example it sent and
        trained on all that make up a full update (or learning is off). Any of its tasks failing (receiving,
        following the session, settling) ends the stream with that error's status: the last answer would never come."""
        iterator = aiter(request_iterator)
        first = await anext(iterator, None)
        if first is None or not first.name:
            raise InvalidArgument("ONLINE_STREAM_UNNAMED", "the first message of the stream must name the session",
                                  violations=[FieldViolation("name", "required on the first message")])
        session_id = oc.session_id_from_name(first.name)
        view = await self._sessions.get(session_id)
        tally = _Tally()
        answers: asyncio.Queue[pb.StreamExamplesResponse | None] = asyncio.Queue()

        def answer(current: SessionView) -> pb.StreamExamplesResponse:
            return pb.StreamExamplesResponse(stats=oc.stats_to_pb(current.stats, current.unread),
                                             accepted=tally.accepted, refused=tally.refused,
                                             refusals=list(tally.refusals), duplicates=tally.duplicates)

        async def receive() -> None:
            message: pb.StreamExamplesRequest | None = first
            while message is not None:
                if message.name and message.name != first.name:
                    raise InvalidArgument("MALFORMED_NAME", "every message of a stream names the same session",
                                          violations=[FieldViolation("name", f"must be {first.name} or empty")])
                added = await self._sessions.add(session_id, oc.examples_from_pb(list(message.examples)),
                                                 offset=tally.received)
                tally.add(len(message.examples), added)
                message = await anext(iterator, None)
            tally.closed = True

        async def follow() -> None:
            async for item in self._sessions.watch(session_id, after_sequence=view.job.last_sequence,
                                                   through_alias=False):  # the stream ends with the session
                if isinstance(item, JobEvent) and isinstance(item.payload, Updated):
                    await answers.put(answer(await self._sessions.get(session_id)))
            await answers.put(None)  # the session ended

        async def settle() -> None:
            """After the client closed its side: the last answer once what it sent is read and trained on."""
            while not tally.closed:
                await asyncio.sleep(0.1)
            while True:
                current = await self._sessions.get(session_id)
                stats, every = current.stats, current.job.spec.update_every
                read = current.job.output.stats.last_sequence >= tally.last_sequence
                if (read and (stats.pending_examples < every or not stats.enabled)) or current.job.state.terminal:
                    await answers.put(answer(current))
                    await answers.put(None)
                    return
                await asyncio.sleep(0.2)

        yield answer(view)
        helpers = [asyncio.ensure_future(t()) for t in (receive, follow, settle)]
        running = set(helpers)
        getter = asyncio.ensure_future(answers.get())
        try:
            while True:
                await asyncio.wait({getter, *running}, return_when=asyncio.FIRST_COMPLETED)
                for task in [t for t in running if t.done()]:
                    running.discard(task)
                    task.result()  # its error (bad input, the database restarting) ends the stream with its status
                if getter.done():
                    item = getter.result()
                    if item is None:
                        return
                    yield item
                    getter = asyncio.ensure_future(answers.get())
        finally:
            getter.cancel()
            for task in helpers:
                task.cancel()
            for task in helpers:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


class _Tally:
    def __init__(self) -> None:
        self.received = 0
        self.accepted = 0
        self.duplicates = 0
        self.refused = 0
        # Only the last refusals, which the answers show: a long stream of refused examples holds no more.
        self.refusals: collections.deque[str] = collections.deque(maxlen=SHOWN_REFUSALS)
        self.last_sequence = 0
        self.closed = False

    def add(self, received: int, added: Added) -> None:
        self.received += received
        self.accepted += added.accepted
        self.duplicates += added.duplicates
        self.refused += len(added.refusals)
        self.refusals.extend(added.refusals)
        self.last_sequence = max(self.last_sequence, added.last_sequence)
