"""`GET /api/events` on a running `qrfleet serve`, read as a browser's EventSource reads it;
the feed behind it in-process, where a test can make a client fall behind or the server close."""

import asyncio
import http.client
import io
import json
import time
from urllib.parse import urlsplit

import pytest

from host import events, login
from host.events import EventFeed
from host.log import Log
from host.registry import ADMIN, OPERATOR, Actor, AuditEntry, open_registry
from host.tasks import Tasks

SALE = {"payload": "upi://pay?pa=shop@bank&am=12.50"}


class EventStream:
    """One `GET /api/events` connection, read event by event (it does not reconnect)."""

    def __init__(self, url, token=None, last_event_id=None, query="", cookie=None, timeout=10):
        parts = urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        headers = {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if cookie:
            headers["Cookie"] = f"{login.COOKIE}={cookie}"
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        self.connection.request("GET", "/api/events" + query, headers=headers)
        self.response = self.connection.getresponse()  # the stream's start is fixed by now
        self.status = self.response.status

    def refusal(self):
        return self.status, json.loads(self.response.read())

    def next(self):
        """The next event's data, checked against its `id:` and `event:` fields."""
        fields = {}
        while True:
            line = self.response.readline()
            if not line:
                raise EOFError("the server ended the stream")
            line = line.decode().rstrip("\n")
            if line.startswith(":"):  # a comment (keepalive)
                continue
            if line:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
            elif "data" in fields:
                data = json.loads(fields["data"])
                assert (str(data["id"]), data["type"]) == (fields["id"], fields["event"])
                return data
            else:  # a block without data (`retry:`) dispatches nothing
                fields = {}

    def until(self, done):
        """Events up to and including the first for which `done(event)` is true."""
        received = []
        while not received or not done(received[-1]):
            received.append(self.next())
        return received

    def close(self):
        self.connection.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def completed(txn_id):
    return lambda e: e["type"] == "txn.completed" and e["txn_id"] == txn_id


def audit_seqs(admin, first, last):
    return [
        e["seq"] for e in admin.get("/api/audit?limit=10000")["audit"] if first <= e["seq"] <= last
    ]


def in_order(expected, types):
    """Whether `expected` occurs in `types` in this order (other types may come between)."""
    rest = iter(types)
    return all(t in rest for t in expected)


def test_the_admin_sees_a_unit_come_online_and_its_sale_reserved_and_completed(shop):
    url, token = shop.server.url, shop.server.admin_token
    with (
        EventStream(url, token) as bearer,
        EventStream(url, cookie=login.issue("admin", token)) as dashboard,
    ):
        till = shop.agent("till-1")
        unit = shop.unit(1)
        shop.link(till, "till-1", unit)
        sale = till.post("/api/agents/till-1/qr", SALE)
        till.post(f"/api/txns/{sale['txn_id']}/complete")

        for stream in (bearer, dashboard):
            received = stream.until(completed(sale["txn_id"]))
            types = [e["type"] for e in received]
            # Only new events: the shop's location was created before the stream opened.
            assert types[0] == "agent.created"
            sale_events = ["txn.reserved", "txn.shown", "txn.completed"]
            assert in_order(["unit.registered", "unit.online", "unit.linked", *sale_events], types)
            for e in received:
                if e["type"].startswith("txn."):
                    assert (e["txn_id"], e["device_id"], e["agent_id"]) == (
                        sale["txn_id"],
                        unit.device_id,
                        "till-1",
                    )
            assert [e.get("screen") for e in received if e["type"] == "txn.shown"] == ["payment"]
            # Every entry of the log, once, in order.
            ids = [e["id"] for e in received]
            assert ids == audit_seqs(shop.admin, ids[0], ids[-1])


def test_an_agent_sees_only_its_own_units_and_sales(shop):
    mine, theirs = shop.agent("till-1"), shop.agent("till-2")
    shop.link(mine, "till-1", shop.unit(1))
    shop.link(theirs, "till-2", shop.unit(2))
    other = theirs.post("/api/agents/till-2/qr", SALE)
    theirs.post(f"/api/txns/{other['txn_id']}/complete")
    sale = mine.post("/api/agents/till-1/qr", SALE)
    mine.post(f"/api/txns/{sale['txn_id']}/complete")

    # From the start of the log: the agent's own creation and the other till's sale are in it.
    with EventStream(shop.server.url, mine.token, last_event_id=0) as stream:
        received = stream.until(completed(sale["txn_id"]))

    assert {e["agent_id"] for e in received} == {"till-1"}
    types = [e["type"] for e in received]
    assert in_order(["unit.linked", "txn.reserved", "txn.shown", "txn.completed"], types)
    assert all(t.startswith(("unit.", "txn.")) for t in types)  # not even agent.created of itself
    assert other["txn_id"] not in {e["txn_id"] for e in received}


def test_a_stream_resumed_with_last_event_id_misses_nothing_and_repeats_nothing(shop):
    url, token = shop.server.url, shop.server.admin_token
    till = shop.agent("till-1")
    shop.link(till, "till-1", shop.unit(1))
    with EventStream(url, token) as stream:
        first = till.post("/api/agents/till-1/qr", SALE)
        before = stream.until(lambda e: e["type"] == "txn.reserved")
    # Disconnected: the sale ends and another one runs meanwhile.
    till.post(f"/api/txns/{first['txn_id']}/complete")
    second = till.post("/api/agents/till-1/qr", SALE)
    till.post(f"/api/txns/{second['txn_id']}/complete")
    resumed_at = before[-1]["id"]

    with EventStream(url, token, last_event_id=resumed_at) as stream:
        after = stream.until(completed(second["txn_id"]))
    with EventStream(url, token, query=f"?last_event_id={resumed_at}") as stream:
        assert stream.until(completed(second["txn_id"])) == after  # for clients without headers
    # A browser reconnecting sends the header with its newest id and keeps its first URL.
    with EventStream(url, token, after[0]["id"], query=f"?last_event_id={resumed_at}") as stream:
        assert stream.next() == after[1]

    ids = [e["id"] for e in before + after]
    assert ids == audit_seqs(shop.admin, ids[0], ids[-1])
    ended = [e["type"] for e in after if e["txn_id"] == first["txn_id"]]
    assert ended == ["txn.shown", "txn.completed"]


def test_a_last_event_id_that_is_not_an_event_id_is_refused(server):
    admin = server.admin()
    for header, query in (("abc", ""), (None, "?last_event_id=-1"), ("9" * 30, "")):
        with EventStream(server.url, server.admin_token, header, query) as stream:
            status, body = stream.refusal()
        assert (status, body["error"]) == (400, "bad_last_event_id")
        assert "whole number" in body["message"]

    # An id past the newest (from a log since reset) starts at the newest.
    with EventStream(server.url, server.admin_token, last_event_id=10**12) as stream:
        admin.post("/api/locations", {"location_id": "shop-2", "name": "Shop 2"})
        assert stream.next()["type"] == "location.created"


def test_past_its_stream_cap_a_caller_is_refused_and_others_are_not(shop):
    url, token = shop.server.url, shop.server.admin_token
    till = shop.agent("till-1")
    opened = [EventStream(url, token) for _ in range(events.MAX_STREAMS_PER_CALLER)]
    try:
        assert {s.status for s in opened} == {200}
        with EventStream(url, token) as refused:
            status, body = refused.refusal()
        assert (status, body["error"]) == (429, "too_many_streams")
        assert str(events.MAX_STREAMS_PER_CALLER) in body["message"]
        with (
            EventStream(url, till.token) as agent,
            EventStream(url, cookie=login.issue("admin", token)) as dashboard,
        ):
            assert (agent.status, dashboard.status) == (200, 200)
    finally:
        for stream in opened:
            stream.close()


def test_a_client_that_closes_its_stream_gives_its_place_back_at_once(shop):
    url, token = shop.server.url, shop.server.admin_token
    for _ in range(3 * events.MAX_STREAMS_PER_CALLER):  # a page reloaded again and again
        deadline = time.monotonic() + 1  # the server learns of each close within a moment
        while True:
            stream = EventStream(url, token)
            if stream.status == 200 or time.monotonic() > deadline:
                break
            stream.close()
            time.sleep(0.05)
        assert stream.status == 200
        stream.close()


# -- the feed, in-process


def test_each_audit_action_is_an_event_in_its_scope():
    shown = AuditEntry(7, 0.0, "server:s1", "shown", "qrf-1", "till-1", "t1", "payment")
    event = events.event_of(shown)
    assert event == {
        "id": 7,
        "type": "txn.shown",
        "at": "1970-01-01T00:00:00Z",
        "actor": "server:s1",
        "device_id": "qrf-1",
        "agent_id": "till-1",
        "txn_id": "t1",
        "detail": "payment",
        "screen": "payment",
    }
    assert events.frame(event) == (
        b'id: 7\nevent: txn.shown\ndata: {"id":7,"type":"txn.shown","at":"1970-01-01T00:00:00Z",'
        b'"actor":"server:s1","device_id":"qrf-1","agent_id":"till-1","txn_id":"t1",'
        b'"detail":"payment","screen":"payment"}\n\n'
    )
    created = events.event_of(AuditEntry(8, 0.0, "admin", "create_agent", agent_id="till-1"))
    for actor, sees in ((ADMIN, True), (OPERATOR, True), (Actor.agent("till-1"), True)):
        assert events.visible(actor, event) is sees
    assert not events.visible(Actor.agent("till-2"), event)
    assert events.visible(OPERATOR, created)
    assert not events.visible(Actor.agent("till-1"), created)
    assert events.event_of(AuditEntry(9, 0.0, "admin", "no_such_action")) is None


def run_feed(tmp_path, test, **caps):
    async def main():
        registry = open_registry(f"sqlite:///{tmp_path}/events.db")
        tasks = Tasks(Log(stream=io.StringIO()))
        feed = EventFeed(registry, tasks, Log(stream=io.StringIO()), poll_s=0.01, **caps)
        try:
            await test(feed, registry)
        finally:
            await feed.close()
            await tasks.close()
            await registry.close()

    asyncio.run(main())


async def created(registry, *ids):
    for location_id in ids:
        await registry.create_location(location_id, location_id)


def ids_in(chunk):
    return [int(line[4:]) for line in chunk.decode().splitlines() if line.startswith("id: ")]


async def read_events(chunks, until_id):
    """The ids in the chunks up to `until_id`."""
    ids = []
    while not ids or ids[-1] < until_id:
        ids += ids_in(await asyncio.wait_for(chunks.__anext__(), 5))
    return ids


def test_a_client_that_falls_behind_is_ended_and_resumes_from_the_store(tmp_path):
    async def test(feed, registry):
        chunks = await feed.open(ADMIN, "admin")
        await chunks.__anext__()  # `retry:`
        waiting = asyncio.ensure_future(chunks.__anext__())  # joins the feed, then waits
        await asyncio.sleep(0.05)
        await created(registry, "a")
        got = ids_in(await asyncio.wait_for(waiting, 5))
        assert got == [1]
        await created(registry, *"bcdefgh")  # not taken: past the buffer of 3
        await asyncio.sleep(0.2)  # the feed polls every 0.01 s
        with pytest.raises(StopAsyncIteration):
            while True:
                await asyncio.wait_for(chunks.__anext__(), 5)
        await chunks.aclose()
        assert feed.ended_behind == 1

        resumed = await feed.open(ADMIN, "admin", after=got[-1])
        await resumed.__anext__()
        assert got + await read_events(resumed, 8) == list(range(1, 9))
        await resumed.aclose()

    run_feed(tmp_path, test, buffer=3)


def test_caps_count_open_streams_and_close_ends_them_all(tmp_path):
    async def test(feed, registry):
        first = await feed.open(ADMIN, "admin")
        with pytest.raises(events.ApiError) as refused:
            await feed.open(ADMIN, "admin")
        assert (refused.value.status, refused.value.code) == (429, "too_many_streams")
        agent = await feed.open(Actor.agent("till-1"), "till-1 token")
        with pytest.raises(events.ApiError) as refused:
            await feed.open(OPERATOR, "operator")
        assert (refused.value.status, refused.value.code) == (503, "too_many_streams")
        await first.aclose()  # never read from: its place is given back all the same
        again = await feed.open(ADMIN, "admin")

        await again.__anext__()
        waiting = asyncio.ensure_future(again.__anext__())
        await asyncio.sleep(0.05)
        await feed.close()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(waiting, 5)
        with pytest.raises(events.ApiError) as refused:
            await feed.open(OPERATOR, "operator")
        assert refused.value.code == "server_stopping"
        await agent.aclose()
        await again.aclose()
        assert feed.open_streams == 0

    run_feed(tmp_path, test, max_streams=2, max_streams_per_caller=1)
