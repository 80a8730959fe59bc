"""`qrfleet bridge` (host.bridge) between a unit's end of the link and real WebSocket servers on
127.0.0.1: the unit's messages arrive whole and unchanged (with the Via header once in the
upgrade request), the bridge goes nowhere else, says why when it cannot, and lets go of the
server the moment it loses the unit.

The unit's end is firmware.proto.link driven by hand behind a TCP socket that the bridge opens
as the pyserial port `socket://127.0.0.1:PORT`; the servers are the `websockets` library's. The
virtual boards' rfc2217:// ports and the firmware's own end (firmware/net/tether.py) are tried
in the tethered harness scenarios."""

import asyncio
import contextlib
import dataclasses
import random
import socket
import ssl
import string

import pytest
import websockets
from websockets.asyncio.server import serve

from firmware.compat import ticks_ms
from firmware.proto import link
from firmware.proto.link import CLOSE, DATA, OPEN, OPENED, REFUSED
from host import bridge as bridge_module
from host.bridge import Bridge, BridgeError
from tools.certs import CertificateAuthority

DEVICE_ID = "qrf-0a0b0c0d0e0f"
VIA = "bridge@till-pc"
DEADLINE_S = 8
NOISE_EVERY = 10
STOP_S = 2


def message_of(size, seed):
    """A message of `size` characters, not repetitive, with some of more than one byte (the
    link may split one between two frames)."""
    alphabet = string.ascii_letters + string.digits + string.punctuation + " é€"
    return "".join(random.Random(seed).choices(alphabet, k=size))


class Unit:
    """A unit's end of the link behind a socket:// "serial port", one bridge at a time."""

    def __init__(self, device_id=DEVICE_ID):
        self.device_id = device_id
        self.silent = False  # writes nothing, as a unit that hung
        self.noise = None  # [pieces in, pieces out] once line noise is on
        self.damaged_out = 0  # bytes damaged on their way to the bridge
        self.connections = 0
        self._writer = None
        self.restart()

    async def start(self):
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = f"socket://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    def stop(self):
        self.unplug()
        self._server.close()

    def restart(self):
        """Power cycle: a new nonce, nothing of the old streams."""
        self.link = link.Link(
            self.device_id, False, link.UNIT_WINDOW, link.UNIT_PAYLOAD, inbox=bytearray(8192)
        )
        self.answers = {}  # stream -> "opened", or ("refused" | "closed", why)
        self.received = {}  # stream -> the messages the server sent on it

    def unplug(self):
        if self._writer:
            self._writer.transport.abort()

    async def _serve(self, reader, writer):
        self.connections += 1
        self._writer = writer
        ticking = asyncio.create_task(self._tick())
        try:
            while data := await reader.read(4096):
                self.link.receive(self._damaged(data, 0), ticks_ms())
                for kind, payload in self.link.events:
                    stream, rest = payload[0], bytes(payload[1:]).decode()
                    if kind == DATA:
                        self.received.setdefault(stream, []).append(rest)
                    elif kind == OPENED:
                        self.answers[stream] = "opened"
                    elif kind in (REFUSED, CLOSE):
                        self.answers[stream] = ("refused" if kind == REFUSED else "closed", rest)
                self.link.events.clear()
                self._flush()
        except ConnectionError:
            pass
        finally:
            ticking.cancel()

    async def _tick(self):
        while True:
            await asyncio.sleep(0.02)
            self._flush()

    def _flush(self):
        if self.silent or self._writer is None or self._writer.is_closing():
            return
        data = self.link.data_to_send(ticks_ms())
        if data:
            self._writer.write(self._damaged(data, 1))

    def _damaged(self, data, way):
        """Every NOISE_EVERY-th piece of data a way: one bit flipped, and on the way out a
        log line put in between two frames."""
        if self.noise is None:
            return data
        self.noise[way] += 1
        if self.noise[way] % NOISE_EVERY:
            return data
        data = bytearray(data)
        data[len(data) // 2] ^= 0x04
        if way:
            self.damaged_out += 1
            end = data.find(b"\n") + 1
            data[end:end] = b"rst:0x1 (POWERON_RESET),boot:0x13\r\n"
        return bytes(data)

    # -- what the firmware's tether would do ----------------------------------------------------

    def log(self, text):
        """A log line of the firmware, on the same UART as the frames."""
        self._writer.write(text.encode() + b"\r\n")

    async def open(self, stream, url):
        self.link.send(OPEN, link.stream_payload(stream, url))
        self._flush()
        await until(lambda: stream in self.answers, f"an answer to OPEN of stream {stream}")
        return self.answers[stream]

    def send(self, stream, message):
        self.link.send(DATA, link.stream_payload(stream, message))
        self._flush()

    def close(self, stream, why="unit closed the connection"):
        self.link.send(CLOSE, link.stream_payload(stream, why))
        self._flush()

    async def messages(self, stream, count, timeout=DEADLINE_S):
        await until(
            lambda: len(self.received.get(stream, ())) >= count, f"{count} messages", timeout
        )
        return self.received[stream]


@dataclasses.dataclass
class Served:
    """One connection the server took: its upgrade request, what arrived, whether it ended."""

    conn: object
    received: list = dataclasses.field(default_factory=list)
    ended: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)

    def via(self):
        return self.conn.request.headers.get_all("X-Qrfleet-Via")


class Upstream:
    """A WebSocket server on 127.0.0.1 at /ws/device that echoes each message (404 elsewhere)."""

    def __init__(self, tls=None):
        self.tls = tls
        self.connections = []  # Served

    async def start(self, port=0):
        self._server = await serve(
            self._serve,
            "127.0.0.1",
            port,
            ssl=self.tls,
            compression=None,
            ping_interval=None,
            process_request=_only_ws_device,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self, scheme="ws"):
        return f"{scheme}://127.0.0.1:{self.port}/ws/device"

    async def _serve(self, conn):
        served = Served(conn)
        self.connections.append(served)
        try:
            async for message in conn:
                served.received.append(message)
                await conn.send(message)
        except websockets.ConnectionClosed:
            pass
        finally:
            served.ended.set()

    async def connection(self, index=0):
        await until(lambda: len(self.connections) > index, "the bridge's connection")
        return self.connections[index]

    def stop(self):
        self._server.close()


def _only_ws_device(conn, request):
    if request.path != "/ws/device":
        return conn.respond(404, "Not Found\n")
    return None


async def until(predicate, what, timeout=DEADLINE_S):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Running:
    """A Bridge for `servers` serving `ports`, with its log lines kept."""

    def __init__(self, servers, ports, **options):
        self.lines = []
        self.bridge = Bridge(servers, name="till-pc", log=self.lines.append, **options)
        self.ports = ports

    async def __aenter__(self):
        self.task = asyncio.create_task(self.bridge.run(self.ports))
        return self

    async def __aexit__(self, kind, *exc):
        self.task.cancel()
        done, _ = await asyncio.wait([self.task], timeout=STOP_S)
        assert done or kind, f"the bridge did not stop within {STOP_S} s"

    def logged(self, text):
        return any(text in line for line in self.lines)

    async def wait_log(self, text):
        try:
            await until(lambda: self.logged(text), repr(text))
        except TimeoutError as e:
            raise TimeoutError(f"{e}; the log:\n" + "\n".join(self.lines)) from None


def run(scenario):
    asyncio.run(asyncio.wait_for(scenario(), 30))


async def attached_unit(running, unit):
    await running.wait_log(f"unit {unit.device_id} attached on {unit.port}")


@contextlib.asynccontextmanager
async def started(*upstreams):
    """A Unit and `upstreams` (one plain Upstream if none) started, as (unit, *upstreams), and
    stopped afterwards even when the scenario fails."""
    upstreams = upstreams or (Upstream(),)
    unit = await Unit().start()
    for upstream in upstreams:
        await upstream.start()
    try:
        yield (unit, *upstreams)
    finally:
        unit.stop()
        for upstream in upstreams:
            upstream.stop()


@contextlib.asynccontextmanager
async def bridge_for(unit, servers, **options):
    """A Running bridge for `servers` on the unit's port, given once the unit is attached."""
    async with Running(servers, [unit.port], **options) as running:
        await attached_unit(running, unit)
        yield running


@contextlib.asynccontextmanager
async def bridged(stream=None):
    """The usual scenario's start: a unit attached to a bridge for one Upstream, as (unit,
    upstream, running), with `stream` already opened to the upstream if one is given."""
    async with started() as (unit, upstream), bridge_for(unit, [upstream.url()]) as running:
        if stream is not None:
            assert await unit.open(stream, upstream.url()) == "opened"
        yield unit, upstream, running


def test_messages_go_both_ways_whole_and_unchanged_with_the_via_header_once():
    async def scenario():
        hello = '{"type": "hello"}'
        long = message_of(3000, 1)  # over 3 KB of UTF-8: more than 20 frames to the unit
        # No stream yet: a log line is to come through before there is one.
        async with bridged() as (unit, upstream, running):
            unit.log("qrfleet: link usb, waiting for the bridge")
            await running.wait_log(f"{unit.port}: qrfleet: link usb, waiting for the bridge")

            assert await unit.open(1, upstream.url()) == "opened"
            await running.wait_log(f"stream to {upstream.url()} opened for unit {DEVICE_ID}")
            served = await upstream.connection()
            assert served.conn.request.path == "/ws/device"
            assert served.via() == [VIA]

            unit.send(1, hello)
            unit.send(1, long)
            assert await unit.messages(1, 2) == [hello, long]  # the server's echo
            assert served.received == [hello, long]

            (status,) = running.bridge.status()
            assert (status.device_id, status.attached, status.stream) == (
                DEVICE_ID,
                True,
                upstream.url(),
            )
            assert status.to_server == status.to_unit == len((hello + long).encode())

            unit.close(1)
            await asyncio.wait_for(served.ended.wait(), DEADLINE_S)
            assert served.conn.close_code == 1000
            await running.wait_log(
                f"stream to {upstream.url()} closed: closed by the unit: unit closed the connection"
            )

    run(scenario)


def test_a_message_too_large_for_the_bridge_ends_its_stream_and_the_unit_is_told():
    async def scenario():
        async with bridged(stream=1) as (unit, upstream, _):
            served = await upstream.connection()
            unit.send(1, message_of(bridge_module.MESSAGE_MAX + 1, 2))
            await until(lambda: unit.answers[1] != "opened", "the unit to hear of it")
            assert unit.answers[1] == ("closed", "message too large")
            await asyncio.wait_for(served.ended.wait(), DEADLINE_S)
            assert served.received == []

    run(scenario)


@pytest.mark.parametrize(
    "server_does, unit_hears",
    [
        ("close", "the server closed the connection (1001) going away"),
        ("binary", "the server sent a binary message; qrfleet's are text"),
    ],
)
def test_the_server_ending_a_stream_is_told_to_the_unit(server_does, unit_hears):
    async def scenario():
        async with bridged(stream=7) as (unit, upstream, running):
            served = await upstream.connection()
            if server_does == "close":
                await served.conn.close(1001, "going away")
            else:
                await served.conn.send(b"\x00\x01")
            await until(lambda: unit.answers[7] != "opened", "the unit to hear of it")
            assert unit.answers[7] == ("closed", unit_hears)
            await asyncio.wait_for(served.ended.wait(), DEADLINE_S)
            assert running.bridge.status()[0].stream is None
            await running.wait_log(f"stream to {upstream.url()} closed: {unit_hears}")

    run(scenario)


def test_a_server_not_in_the_bridges_list_is_refused_without_connecting():
    async def scenario():
        async with started(Upstream(), Upstream()) as (unit, mine, other):
            async with bridge_for(unit, [mine.url()]) as running:
                assert await unit.open(1, other.url()) == (
                    "refused",
                    f"this bridge does not serve ws://127.0.0.1:{other.port}",
                )
                # The bridge's own server, but asked for with TLS: not what it serves either.
                assert await unit.open(2, mine.url("wss")) == (
                    "refused",
                    f"this bridge does not serve wss://127.0.0.1:{mine.port}",
                )
                assert await unit.open(3, f"http://127.0.0.1:{mine.port}") == (
                    "refused",
                    f"server URL 'http://127.0.0.1:{mine.port}' must start with ws:// or wss://",
                )
                assert await unit.open(4, f"ws://[::1]:{mine.port}/ws/device") == (
                    "refused",
                    f"this bridge does not serve ws://[::1]:{mine.port}",
                )
                assert running.logged(f"refused unit {DEVICE_ID} on {unit.port} a stream to ws://")
            assert other.connections == [] and mine.connections == []

    run(scenario)


def test_the_path_is_the_units_and_a_server_that_does_not_upgrade_is_refused_with_its_answer():
    async def scenario():
        async with bridged() as (unit, upstream, _):
            assert await unit.open(1, f"ws://127.0.0.1:{upstream.port}/ws/devices") == (
                "refused",
                f"server 127.0.0.1:{upstream.port} unreachable from the PC: server answered "
                "404 Not Found instead of 101 Switching Protocols; check the URL path",
            )

    run(scenario)


def test_an_unreachable_server_is_refused_with_the_reason_then_left_alone_for_its_backoff(
    monkeypatch,
):
    monkeypatch.setattr(bridge_module, "backoff_ms", lambda attempt: 1000)

    async def scenario():
        # No Upstream at first: its port is to refuse the bridge until the test starts one there.
        unit = await Unit().start()
        port = free_port()
        server_url = f"http://127.0.0.1:{port}"
        device_url = f"ws://127.0.0.1:{port}/ws/device"
        async with bridge_for(unit, [server_url]) as running:
            assert await unit.open(1, device_url) == (
                "refused",
                f"server 127.0.0.1:{port} unreachable from the PC: connection refused",
            )
            assert running.logged(
                f"server {server_url} unreachable: connection refused (next try in 1 s)"
            )

            upstream = await Upstream().start(port)
            assert await unit.open(2, device_url) == (
                "refused",
                f"server 127.0.0.1:{port} unreachable from the PC: connection refused "
                "(next try in 1 s)",
            )
            assert upstream.connections == []

            server = running.bridge.servers[0]
            await until(lambda: running.bridge.backing_off(server) is None, "the backoff")
            assert await unit.open(3, device_url) == "opened"
            await running.wait_log(f"server {server_url} reachable again")
        unit.stop()
        upstream.stop()

    run(scenario)


def test_tls_to_the_server_is_checked_against_the_system_and_the_given_ca(tmp_path):
    shop = CertificateAuthority(tmp_path, "shop")
    cert, key = shop.issue()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)

    async def scenario():
        async with started(Upstream(tls)) as (unit, upstream):
            server_url = f"https://127.0.0.1:{upstream.port}"
            async with bridge_for(unit, [server_url], server_ca=shop.pem):
                assert await unit.open(1, upstream.url("wss")) == "opened"
                unit.send(1, '{"type": "hello"}')
                assert await unit.messages(1, 1) == ['{"type": "hello"}']
                assert (await upstream.connection()).via() == [VIA]
            async with bridge_for(unit, [server_url]):  # the system's CAs only
                assert await unit.open(2, upstream.url("wss")) == (
                    "refused",
                    f"server 127.0.0.1:{upstream.port} unreachable from the PC: its TLS "
                    "certificate is signed by a CA the PC does not trust",
                )
            assert len(upstream.connections) == 1

    run(scenario)


def test_a_unit_gone_silent_loses_its_server_connection_and_is_taken_back_when_it_speaks():
    async def scenario():
        async with bridged(stream=1) as (unit, upstream, running):
            served = await upstream.connection()
            unit.silent = True
            silenced = asyncio.get_running_loop().time()
            await asyncio.wait_for(served.ended.wait(), DEADLINE_S)
            took = asyncio.get_running_loop().time() - silenced
            assert link.PEER_TIMEOUT_MS / 1000 - 1.1 < took < link.PEER_TIMEOUT_MS / 1000 + 0.5
            assert running.logged(f"lost unit {DEVICE_ID} on {unit.port}: no frame for 3.5 s")
            assert running.bridge.status()[0].attached is False

            running.lines.clear()
            unit.silent = False
            await attached_unit(running, unit)
            assert await unit.open(2, upstream.url()) == "opened"

    run(scenario)


def test_a_unit_that_restarted_loses_its_old_stream_at_once_and_opens_a_new_one():
    async def scenario():
        async with bridged(stream=1) as (unit, upstream, running):
            old = await upstream.connection()
            running.lines.clear()

            unit.restart()
            await asyncio.wait_for(old.ended.wait(), 2)  # a HELLO: 1 s
            assert running.logged(f"lost unit {DEVICE_ID} on {unit.port}: it restarted")
            await attached_unit(running, unit)
            assert await unit.open(1, upstream.url()) == "opened"
            unit.send(1, '{"type": "hello"}')
            assert await unit.messages(1, 1) == ['{"type": "hello"}']
            new = await upstream.connection(1)
            assert new.received == ['{"type": "hello"}'] and new.via() == [VIA]

    run(scenario)


def test_a_bridge_that_stops_cuts_its_server_connections():
    async def scenario():
        # Not bridged(): what is checked comes after the bridge stops and before the rest does.
        async with started() as (unit, upstream):
            async with bridge_for(unit, [upstream.url()]) as running:
                assert await unit.open(1, upstream.url()) == "opened"
                served = await upstream.connection()
            await asyncio.wait_for(served.ended.wait(), 1)
            assert running.logged(f"stream to {upstream.url()} closed: the bridge stopped")

    run(scenario)


def test_a_cable_pulled_and_plugged_back_comes_back_by_itself():
    async def scenario():
        async with bridged(stream=1) as (unit, upstream, running):
            served = await upstream.connection()
            running.lines.clear()

            unit.unplug()
            await asyncio.wait_for(served.ended.wait(), 1)
            await running.wait_log(
                f"lost unit {DEVICE_ID} on {unit.port}: read failed: socket disconnected"
            )
            unit.restart()  # the cable carried its power, too
            await attached_unit(running, unit)
            assert unit.connections == 2

    run(scenario)


def test_line_noise_and_boot_chatter_lose_nothing_either_way():
    async def scenario():
        sent = [message_of(3000, 3), message_of(200, 4), message_of(1500, 5)]
        async with bridged() as (unit, upstream, running):
            unit.noise = [0, 0]
            assert await unit.open(1, upstream.url()) == "opened"
            for message in sent:
                unit.send(1, message)
            assert await unit.messages(1, len(sent), 20) == sent  # the server's echo
            assert (await upstream.connection()).received == sent
            assert unit.link.damaged > 0 and unit.damaged_out > 0  # frames were sent again
            assert running.logged(f"{unit.port}: rst:0x1 (POWERON_RESET),boot:0x13")

    run(scenario)


def test_auto_follows_virtual_boards_as_they_come_go_and_have_their_cable_cut(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(bridge_module, "RESCAN_S", 0.1)

    async def scenario():
        async with started() as (unit, upstream):
            board = tmp_path / unit.device_id
            async with Running([upstream.url()], ["auto"], vboard_dir=tmp_path) as running:
                board.mkdir()
                (board / "serial-url").write_text(unit.port + "\n")
                await running.wait_log(f"found {unit.port}")
                await attached_unit(running, unit)
                assert [s.port for s in running.bridge.status()] == [unit.port]

                (board / "cut-serial").touch()
                await running.wait_log(f"{unit.port} is gone")
                assert running.bridge.status() == []

                running.lines.clear()
                (board / "cut-serial").unlink()
                await attached_unit(running, unit)

    run(scenario)


@pytest.mark.parametrize(
    "servers, options, error",
    [
        (["ftp://qr.example.com"], {}, "must look like https://HOST"),
        (["http://qr.example.com:port"], {}, "must look like https://HOST"),
        ([], {}, "at least one server URL"),
        (["https://qr.example.com"], {"name": "till 3"}, "visible ASCII characters"),
        (["https://qr.example.com"], {"server_ca": "/nonexistent.pem"}, "cannot read"),
    ],
)
def test_settings_it_cannot_work_with_are_refused_saying_why(servers, options, error):
    with pytest.raises(BridgeError, match=error):
        Bridge(servers, **options)


def test_a_port_pyserial_cannot_open_by_any_means_is_refused_at_start():
    with pytest.raises(BridgeError, match="protocol 'foo' not known"):
        asyncio.run(Bridge(["http://127.0.0.1:8000"], log=print).run(["foo://x"]))
