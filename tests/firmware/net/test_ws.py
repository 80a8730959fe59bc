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
