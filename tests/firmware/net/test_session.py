"""The unit's session (firmware.net.session) against real `websockets` servers on 127.0.0.1."""

import asyncio
import socket
import time

import pytest
from websockets.asyncio.server import serve

from firmware.net import ws
from firmware.net.policy import start_index
from firmware.net.session import Session
from firmware.proto import messages
from tests.firmware.unit_server import UnitServer, authenticate

DEVICE_ID = "qrf-0a1b2c"
SECRET = "5e" * 16


class Idle:
    """A unit with nothing on its screen: no commands arrive in these tests."""

    def handle(self, msg):
        raise AssertionError(f"unexpected command {msg}")

    def status(self):
        return {"uptime_s": 1, "free_heap": 100000, "rssi": None, "fw": "test", "screen": "idle"}


def session(urls, lines):
    unit = Idle()
    return Session(DEVICE_ID, SECRET, urls, unit, unit.status, "test", log=lines.append)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def unreachable_url():
    """A loopback port nobody listens on: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"ws://127.0.0.1:{s.getsockname()[1]}/ws/device"


def test_session_ends_when_the_server_says_nothing_for_three_heartbeats():
    """The server welcomes the unit with a 1 s heartbeat, then reads but never answers."""
    closes, heartbeats = [], []

    async def mute(conn):
        link = await authenticate(conn, {DEVICE_ID: SECRET})
        await link.send(messages.encode("welcome", heartbeat_s=1, server_id="mute"))
        async for text in conn:
            heartbeats.append(messages.from_device(link.open(text)))
        closes.append((conn.close_code, conn.close_reason))

    async def main():
        async with serve(mute, "127.0.0.1", 0, ping_interval=None) as server:
            url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ws/device"
            unit = session([url], [])
            started = time.monotonic()
            with pytest.raises(ws.ConnectionClosed) as caught:
                await unit.run_once(url)
            return caught.value, time.monotonic() - started

    ended, took = run(main())
    assert (ended.code, ended.reason) == (1006, "server silent for 3 heartbeats")
    assert 3 <= took < 5
    # It kept beating meanwhile: one a second, from the start.
    assert 3 <= len(heartbeats) <= 4
    assert closes == [(1001, "unit going away")]


@pytest.mark.parametrize("servers", [2, 3])
def test_unit_moves_past_unreachable_servers_in_list_order_to_one_that_answers(servers, background):
    # The one live server is the last the unit reaches from its start position, so with three
    # servers the unit also wraps around the end of the list.
    first = start_index(DEVICE_ID, servers)
    live = (first + servers - 1) % servers
    unit_server = UnitServer({DEVICE_ID: SECRET})
    background.run(unit_server.start())
    urls = [unreachable_url() for _ in range(servers)]
    urls[live] = unit_server.url
    lines = []

    async def main():
        unit = session(urls, lines)
        task = asyncio.create_task(unit.run_forever())
        while not unit.connected:
            await asyncio.sleep(0.05)
        task.cancel()

    try:
        run(main())
    finally:
        background.run(unit_server.stop())
    tried = [next(i for i, url in enumerate(urls) if url in line) for line in lines]
    assert tried == [(first + k) % servers for k in range(servers)]
    assert lines[-1] == f"qrfleet: online at {unit_server.url} (server test-server)"
