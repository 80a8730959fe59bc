"""firmware.net.ws on CPython and on the MicroPython Unix port."""

from tests.firmware.both import run_both

_LATE_MESSAGES = """
import asyncio
import time

from firmware.net import ws
from firmware.proto.frames import OP_PING, OP_TEXT, header
from firmware.proto.server import accept_response
from firmware.proto.websocket import ClientProtocol


def frame(opcode, text):
    data = header(opcode, len(text))
    data.extend(text.encode())
    return bytes(data)


class LateReader:
    # Each read returns its frame 20 ms after the caller's 50 ms deadline: the frame arrives
    # while the caller gives up waiting, as on a unit too busy to keep time.
    def __init__(self, frames):
        self.frames = frames

    async def read(self, n):
        if not self.frames:
            await asyncio.sleep(60)
        await asyncio.sleep(0.04)
        time.sleep(0.03)
        return self.frames.pop(0)


class Writer:
    def write(self, data):
        pass

    async def drain(self):
        pass

    def close(self):
        pass


async def main():
    proto = ClientProtocol("server", "/ws/device")
    proto.receive_data(accept_response(proto.key))
    proto.events_received()
    proto.data_to_send()
    frames = [frame(OP_TEXT, "show_qr 1"), frame(OP_PING, ""), frame(OP_TEXT, "show_qr 2")]
    conn = ws.WebSocket(LateReader(frames), Writer(), proto)
    got = []
    for _ in range(10):
        try:
            got.append(await conn.recv(0.05))
        except asyncio.TimeoutError:
            pass
    print(got)


asyncio.run(main())
"""


def test_a_message_arriving_as_the_wait_times_out_is_kept_for_the_next_recv(unix_port):
    """A unit waits for commands with a deadline (its next heartbeat): a show_qr landing in the
    same instant must not be dropped with the wait, or the cashier's QR never shows."""
    on_cpython, on_micropython = run_both(unix_port, _LATE_MESSAGES)
    assert on_micropython == on_cpython == "['show_qr 1', 'show_qr 2']\n"


_URLS = """
import asyncio

from firmware.net import ws


class Hangup:
    # A server that reads the upgrade request and closes: what the unit asked for is kept.
    def __init__(self):
        self.sent = bytearray()

    async def read(self, n):
        return b""

    def write(self, data):
        self.sent.extend(data)

    async def drain(self):
        pass

    def close(self):
        pass


async def host_header(url):
    peer = Hangup()

    async def opener(host, port, ssl):
        return peer, peer

    try:
        await ws.connect(url, timeout_s=1, opener=opener)
    except Exception:
        pass
    return bytes(peer.sent).split(b"\\r\\n")[1].decode()


for url in (
    "ws://10.0.0.2:8000/ws/device",
    "wss://qr.example.com/ws/device",
    "ws://[fd00::2]:8000/ws/device",
    "wss://[fd00::2]",
    "ws://[fd00::2]:/ws/device",
    "ws://[fd00::2/ws/device",
    "ws://:8000/",
    "http://10.0.0.2/",
):
    try:
        print(ws.parse_url(url))
    except ValueError as e:
        print(e)
for url in ("ws://[fd00::2]:8000/ws/device", "ws://[fd00::2]/ws/device", "ws://h:80/"):
    print(asyncio.run(host_header(url)))
"""


def test_server_urls_parse_alike_with_ipv6_addresses_and_clear_errors(unix_port):
    """A unit or a bridge given an IPv6 server (`ws://[fd00::2]:8000/...`) connects to the
    address and names it in brackets in the upgrade request's Host, as RFC 3986 writes it."""
    on_cpython, on_micropython = run_both(unix_port, _URLS)
    assert on_micropython == on_cpython
    assert on_cpython.splitlines() == [
        "(False, '10.0.0.2', 8000, '/ws/device')",
        "(True, 'qr.example.com', 443, '/ws/device')",
        "(False, 'fd00::2', 8000, '/ws/device')",
        "(True, 'fd00::2', 443, '/')",
        "server URL 'ws://[fd00::2]:/ws/device' has a bad port",
        "server URL 'ws://[fd00::2/ws/device' has a bad IPv6 address",
        "server URL 'ws://:8000/' has no host",
        "server URL 'http://10.0.0.2/' must start with ws:// or wss://",
        "Host: [fd00::2]:8000",
        "Host: [fd00::2]",
        "Host: h",
    ]
