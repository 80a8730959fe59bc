"""`GET /api/events`: the audit log as Server-Sent Events, live and resumable.

Every audit entry is one event: its seq is the event's `id`, its action names the event's type
(TYPES), and what a caller sees of them is its scope (`visible`): the admin and the operator
see every event; an agent sees the unit and transaction events that name it. An event is sent
as `id:`, `event:` and one line of JSON `data:`, then a blank line (`frame`); a `: keepalive`
comment every KEEPALIVE_S keeps proxies from closing a quiet stream. Those parts are plain
functions; the rest moves entries from the store to the connections.

The store is the source of truth, so any instance serves any event: every instance's registry
writes the same audit log (one SQLite file, or one Valkey), and entries become visible in seq
order (SQLite serialises its writers; Valkey numbers an entry inside the EXEC that commits it).
A client that reconnects with `Last-Event-ID: N` (or `?last_event_id=N`) gets every event
after N exactly once and in order, through whichever instance it reaches:

1. the backlog after N, read from the store in pages of PAGE, until a page comes back short;
2. then it joins the instance's feed (`EventFeed`): ONE task per instance polls the store every
   POLL_S while anyone listens, and hands each new entry to the subscribers that may see it;
3. then one more read from the store covers what the feed had passed before the join, and the
   live events follow, skipping the ids already sent.

A subscriber's buffer holds at most BUFFER events: one that falls that far behind is ended,
and its client reconnects with Last-Event-ID and resumes from the store, so memory stays
bounded and nothing is lost. Streams are capped per caller (a token, or one dashboard login)
and per instance; each chunk must be taken within host.http.WRITE_TIMEOUT_S. Nothing outlives
the server: `close()` ends the feed and every stream.
"""

import asyncio
import json
from collections import Counter, deque

from host import login
from host.http import ApiError, Stream
from host.log import Tally
from host.registry import RegistryError
from host.registry.errors import format_time

PAGE = 500  # entries per store read
POLL_S = 0.2  # how often the feed looks for new entries
BUFFER = 1000  # events waiting for one subscriber before it is ended
KEEPALIVE_S = 15
RECONNECT_MS = 1000  # the `retry:` a browser's EventSource waits before it reconnects
MAX_STREAMS = 256  # per instance
MAX_STREAMS_PER_CALLER = 8  # per token or dashboard login, per instance
_MAX_ID_DIGITS = 19  # an audit seq fits in 63 bits

# Audit action -> event type.
TYPES = {
    "register": "unit.registered",
    "session": "unit.online",
    "offline": "unit.offline",
    "link": "unit.linked",
    "unlink": "unit.unlinked",
    "transfer": "unit.transferred",
    "screen": "unit.screen",
    "reserve": "txn.reserved",
    "shown": "txn.shown",
    "complete": "txn.completed",
    "cancel": "txn.cancelled",
    "expire": "txn.expired",
    "release": "txn.expired",
    "superseded": "txn.superseded",
    "retry": "txn.retried",
    "create_location": "location.created",
    "set_policy": "location.policy",
    "create_agent": "agent.created",
    "start": "instance.started",
    "update": "unit.update",
    "publish": "release.published",
    "start_rollout": "rollout.started",
    "advance_rollout": "rollout.wave",
    "pause_rollout": "rollout.paused",
    "resume_rollout": "rollout.resumed",
    "abort_rollout": "rollout.aborted",
    "complete_rollout": "rollout.completed",
}
_AGENT_KINDS = ("unit", "txn")  # what an agent may see of the events that name it
_SCREENS = ("screen", "shown")  # actions whose detail is the kind of screen drawn
KEEPALIVE = b": keepalive\n\n"
_HELLO = f"retry: {RECONNECT_MS}\n\n".encode()


# -- events, scope, framing (no I/O)


def event_of(entry):
    """The event for an audit entry (`host.registry.AuditEntry`), or None for an action that
    has no event type."""
    kind = TYPES.get(entry.action)
    if kind is None:
        return None
    event = {
        "id": entry.seq,
        "type": kind,
        "at": format_time(entry.at),
        "actor": entry.actor,
        "device_id": entry.device_id,
        "agent_id": entry.agent_id,
        "txn_id": entry.txn_id,
        "detail": entry.detail,
    }
    if entry.action in _SCREENS:
        event["screen"] = entry.detail
    return event


def visible(actor, event):
    """Whether `actor` (host.registry.Actor) may see `event`."""
    if actor.kind in ("admin", "operator"):
        return True
    return (
        actor.kind == "agent"
        and event["agent_id"] == actor.id
        and event["type"].partition(".")[0] in _AGENT_KINDS
    )


def frame(event):
    """One event as Server-Sent Events bytes (JSON escapes line breaks: `data:` is one line)."""
    data = json.dumps(event, separators=(",", ":"))
    return f"id: {event['id']}\nevent: {event['type']}\ndata: {data}\n\n".encode()


def last_event_id(header, query):
    """Where a stream resumes: the `Last-Event-ID` header, else the `last_event_id` query
    parameter (a browser reconnecting sends the header with the newest id it got, and keeps
    the URL it first opened), else None (from the log's newest entry on)."""
    value = header if header is not None else query
    if value is None:
        return None
    if not (value.isascii() and value.isdigit() and len(value) <= _MAX_ID_DIGITS):
        raise ApiError(
            400,
            "bad_last_event_id",
            "Last-Event-ID (or ?last_event_id=) must be the id of an event received before, "
            f"a whole number such as 1234; got {value[:40]!r}.",
        )
    return int(value)


# -- the feed and the streams


class _Subscriber:
    """One stream's place in the feed: the events it may see, buffered until it takes them."""

    def __init__(self, actor, limit):
        self.actor = actor
        self.limit = limit
        self.pending = deque()  # (seq, framed event)
        self.ended = False
        self.behind = False
        self._woken = asyncio.Event()

    def offer(self, seq, chunk):
        if self.ended:
            return
        if len(self.pending) >= self.limit:
            self.behind = True
            self.end()
            return
        self.pending.append((seq, chunk))
        self._woken.set()

    def end(self):
        self.ended = True
        self._woken.set()

    async def wait(self, timeout_s):
        """Until there is something to take or the subscriber ended -> False after `timeout_s`
        with neither. (An Event, not a queue: a wait cut off by its timeout loses nothing.)"""
        try:
            await asyncio.wait_for(self._woken.wait(), timeout_s)
        except asyncio.TimeoutError:
            return False
        self._woken.clear()
        return True

    def take(self):
        taken = list(self.pending)
        self.pending.clear()
        return taken


class _Chunks:
    """A stream's chunks, holding its place under the caps until closed. (Closing an async
    generator that never started runs none of its code, so the place is given back here.)"""

    def __init__(self, chunks, release):
        self._chunks = chunks
        self._release = release

    def __aiter__(self):
        return self

    def __anext__(self):
        return self._chunks.__anext__()

    async def aclose(self):
        if self._release:
            self._release()
            self._release = None
        await self._chunks.aclose()


class EventFeed:
    """One instance's event streams and the task that feeds them (started by the first
    subscriber, ended when the last one leaves or the server closes)."""

    def __init__(
        self,
        registry,
        tasks,
        log,
        max_streams=MAX_STREAMS,
        max_streams_per_caller=MAX_STREAMS_PER_CALLER,
        poll_s=POLL_S,
        keepalive_s=KEEPALIVE_S,
        buffer=BUFFER,
    ):
        self.registry = registry
        self.tasks = tasks
        self.log = log
        self.max_streams = max_streams
        self.max_streams_per_caller = max_streams_per_caller
        self.poll_s = poll_s
        self.keepalive_s = keepalive_s
        self.buffer = buffer
        self.streams = Counter()  # caller -> its open streams
        self.open_streams = 0
        self.ended_behind = 0  # streams ended because their client fell BUFFER events behind
        self._subscribers = set()
        self._cursor = 0  # the newest entry the feed handed out
        self._task = None
        self._closed = False
        self._store_failures = Tally(log, "event_feed_read_failed")
        self._behind = Tally(log, "event_stream_behind")

    def endpoint(self, caller):
        """The `GET /api/events` handler; `caller(req)` -> the Actor asking (host.api)."""

        async def events(req):
            actor = await caller(req)
            after = last_event_id(req.headers.get("last-event-id"), req.query.get("last_event_id"))
            key = req.bearer() or req.cookie(login.COOKIE)
            return 200, Stream(
                await self.open(actor, key, after), headers=[("X-Accel-Buffering", "no")]
            )

        return events

    async def open(self, actor, key, after=None):
        """The chunks of a new stream for `actor`, counted against `key`'s cap, with the events
        after `after` (None: only new ones). Refused with 429/503 `too_many_streams` past a cap."""
        if self._closed:
            raise ApiError(503, "server_stopping", "This server is stopping; connect to another.")
        if self.streams[key] >= self.max_streams_per_caller:
            raise ApiError(
                429,
                "too_many_streams",
                f"This token (or login) already has {self.max_streams_per_caller} event streams "
                "open on this server; close one before opening another.",
                {"limit": self.max_streams_per_caller},
            )
        if self.open_streams >= self.max_streams:
            raise ApiError(
                503,
                "too_many_streams",
                f"This server holds its limit of {self.max_streams} event streams; retry in a "
                "moment or connect to another instance.",
                {"limit": self.max_streams},
            )
        self.streams[key] += 1
        self.open_streams += 1
        try:
            tip = await self.registry.audit(limit=1)
        except BaseException:
            self._release(key)
            raise
        newest = tip[-1].seq if tip else 0
        # An id past the newest entry is from a log that was reset: start at its newest.
        start = newest if after is None or after > newest else after
        return _Chunks(self._stream(actor, start), lambda: self._release(key))

    def _release(self, key):
        self.open_streams -= 1
        self.streams[key] -= 1
        if not self.streams[key]:
            del self.streams[key]

    async def _stream(self, actor, sent):
        yield _HELLO
        subscriber = None
        try:
            # The backlog first, before joining: a long one must not fill the live buffer.
            more = True
            while more:
                chunk, sent, more = await self._page(actor, sent)
                if chunk:
                    yield chunk
            subscriber = self._join(actor, sent)
            # What the feed had passed before the join comes from the store.
            more = True
            while more:
                chunk, sent, more = await self._page(actor, sent)
                if chunk:
                    yield chunk
            while not subscriber.ended:
                if not await subscriber.wait(self.keepalive_s):
                    yield KEEPALIVE
                    continue
                taken = subscriber.take()
                if subscriber.ended:  # behind (its client resumes from the store) or closing
                    break
                fresh = [chunk for seq, chunk in taken if seq > sent]
                if taken:
                    sent = max(sent, taken[-1][0])  # offered in order
                if fresh:
                    yield b"".join(fresh)
        except RegistryError as e:  # the store retried already: end; the client resumes
            self._store_failures.note(reason=str(e))
        finally:
            if subscriber:
                self._subscribers.discard(subscriber)
                if subscriber.behind:
                    self.ended_behind += 1
                    self._behind.note(actor=str(actor), after=sent, buffer=self.buffer)

    async def _page(self, actor, sent):
        """One page of the entries after `sent` -> (what the caller sees of it, framed; the
        newest id read; whether the store may hold more)."""
        entries = await self.registry.audit_after(sent, PAGE)
        events = (e for e in map(event_of, entries) if e and visible(actor, e))
        newest = entries[-1].seq if entries else sent
        return b"".join(map(frame, events)), newest, len(entries) == PAGE

    def _join(self, actor, sent):
        """Subscribe: from now on, every entry the feed reads reaches the subscriber. The feed
        starts at `sent` if it is not running (then nobody else listens)."""
        subscriber = _Subscriber(actor, self.buffer)
        self._subscribers.add(subscriber)
        if self._task is None and not self._closed:
            self._cursor = sent
            self._task = self.tasks.spawn(self._run())
        if self._task is None:  # the server is closing
            subscriber.end()
        return subscriber

    async def _run(self):
        """Poll the store for new entries while anyone listens; each is framed once and handed
        to every subscriber that may see it."""
        entries = []
        try:
            while self._subscribers:
                if len(entries) < PAGE:  # else more are waiting: read on at once
                    await asyncio.sleep(self.poll_s)
                try:
                    entries = await self.registry.audit_after(self._cursor, PAGE)
                except RegistryError as e:  # the store retried already; so will the next poll
                    self._store_failures.note(reason=str(e))
                    entries = []
                    continue
                for entry in entries:
                    event = event_of(entry)
                    if event is None:
                        continue
                    chunk = frame(event)
                    for subscriber in self._subscribers:
                        if visible(subscriber.actor, event):
                            subscriber.offer(entry.seq, chunk)
                if entries:
                    self._cursor = entries[-1].seq
        finally:
            # Ended by the last subscriber leaving (checked above with no wait since), by
            # close(), or by a failure (logged by host.tasks): whoever listens reconnects.
            self._task = None
            for subscriber in self._subscribers:
                subscriber.end()

    async def close(self):
        """End the feed and every stream; open() refuses from now on."""
        self._closed = True
        for subscriber in self._subscribers:
            subscriber.end()
        task = self._task
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
