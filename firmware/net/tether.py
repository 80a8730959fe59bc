"""The session over the unit's USB UART, through `qrfleet bridge` on the PC it is plugged into.

    tether = Tether(device_id, trouble=show)      # show(state, reason) puts it on the screen
    asyncio.create_task(tether.run())
    Session(..., connect=tether.connect)          # in place of firmware.net.ws.connect

The UART is the REPL's: the firmware reads what the bridge sends from sys.stdin and writes its
frames to sys.stdout between its log lines (firmware/proto/link.py frames them so that both
survive each other, boot chatter and line noise). Ctrl-C still raises KeyboardInterrupt, so a
technician breaks in as on any unit, and with the bridge stopped mpremote works as usual.

The bridge speaks WebSocket (and TLS, for a wss:// server) to the server; the link carries the
session's messages. They are sealed here with the unit's secret (firmware.proto.auth) as over
Wi-Fi, so the bridge passes on what it cannot forge or alter. The unit needs no WebSocket code
of its own: ~27 KB of heap a 320x240 panel's unit does not have.
"""

import asyncio
import select
import sys

from firmware.compat import const, ticks_diff, ticks_ms
from firmware.proto import link
from firmware.proto.auth import Untrusted
from firmware.proto.close import CLOSE_ABNORMAL, CLOSE_POLICY_VIOLATION, ConnectionClosed
from firmware.proto.link import CLOSE, DATA, OPEN, OPENED, REFUSED

_TICK_MS = const(100)  # retransmits, and a bridge that went quiet, are noticed this often
_ATTACH_WAIT_MS = const(2500)  # a bridge says HELLO each second: two chances after a boot
_OPEN_TIMEOUT_MS = const(15000)  # the bridge gives up connecting after 10 s and says why
_SEND_TIMEOUT_MS = const(5000)  # as firmware.net.ws.SEND_TIMEOUT_S: a peer that takes nothing
_LINE = const(232)  # the longest line the bridge sends (firmware.proto.link.BRIDGE_PAYLOAD)


class Tether:
    """The link, and the session's connection over it (one at a time): connect() returns the
    Tether itself, with the WebSocket's send / recv / close / abort and `channel`."""

    def __init__(self, name, trouble=None, uart_in=None, uart_out=None):
        self.link = link.Link(name, False, link.UNIT_WINDOW, link.UNIT_PAYLOAD, line_max=_LINE)
        self._in = uart_in or sys.stdin.buffer
        self._out = uart_out or sys.stdout.buffer
        self._trouble = trouble or _ignore
        self.channel = None  # firmware.proto.auth.Channel, once the session is authenticated
        self._stream = 0  # the current stream's number; 0: none yet
        self._state = None  # None (no stream), "opening", "open", or why it ended
        self._messages = []  # from the server, not taken yet
        self._arrived = asyncio.Event()
        self._resets = 0

    # -- the UART ---------------------------------------------------------------------------

    async def run(self):
        """Read the UART and keep the link's timers, forever."""
        asyncio.create_task(self._tick())
        stream = asyncio.StreamReader(self._in)
        poller = select.poll()
        poller.register(self._in, select.POLLIN)
        one = bytearray(1)
        while True:
            # One byte at a time: the ESP32's stdin blocks until a read's whole length is in.
            await stream.readinto(one)
            now = ticks_ms()
            self.link.receive(one, now)
            while _readable(poller):
                self._in.readinto(one)
                self.link.receive(one, now)
            self._take_events()
            self._flush()

    async def _tick(self):
        while True:
            await asyncio.sleep_ms(_TICK_MS)
            if self._state in ("opening", "open"):
                if self.link.resets != self._resets:
                    self._end("the bridge restarted")
                elif not self.link.attached(ticks_ms()):
                    self._end(
                        "lost the bridge: no frame for %.1f s" % (link.PEER_TIMEOUT_MS / 1000)
                    )
            self._flush()

    def _flush(self):
        data = self.link.data_to_send(ticks_ms())
        if data:
            self._out.write(data)

    def _take_events(self):
        for kind, payload in self.link.events:
            if not payload or payload[0] != self._stream or self._state not in ("opening", "open"):
                continue  # a stream already ended
            if kind == DATA:
                self._messages.append(payload)
            elif kind == OPENED:
                self._state = "open"
            elif kind in (REFUSED, CLOSE):
                self._state = bytes(payload[1:]).decode() or "the bridge closed the stream"
            self._arrived.set()
        self.link.events.clear()

    def _end(self, why):
        if self._state in ("opening", "open"):
            self._state = why
            self._arrived.set()

    async def _until(self, done):
        while not done():
            self._arrived.clear()
            await self._arrived.wait()

    # -- the connection ---------------------------------------------------------------------

    async def connect(self, url, timeout_s=None, ssl_context=None, buffer=None, opener=None):
        """A new stream to the server at `url` through the bridge (firmware.net.ws.connect's
        signature: the bridge does TLS, and `buffer` is where long messages are put together);
        OSError with the reason the bridge gives (or that there is none), which the screen
        shows too."""
        self.abort()
        start = ticks_ms()
        while not self.link.attached(ticks_ms()):
            if ticks_diff(ticks_ms(), start) > _ATTACH_WAIT_MS:
                self._trouble("bridge", "start qrfleet bridge on the PC")
                raise OSError("no bridge on the USB port: is qrfleet bridge running on the PC?")
            await asyncio.sleep_ms(_TICK_MS)
        self._stream = self._stream % 255 + 1
        self._state = "opening"
        self._resets = self.link.resets
        self._messages = []
        self.channel = None
        self.link.inbox = buffer
        self.link.send(OPEN, link.stream_payload(self._stream, url))
        self._flush()
        try:
            await asyncio.wait_for_ms(self._until(self._opened), _OPEN_TIMEOUT_MS)
        except asyncio.TimeoutError:
            self._end("the bridge did not answer within %d s" % (_OPEN_TIMEOUT_MS // 1000))
        if self._state != "open":
            self._trouble("offline", self._state)
            raise OSError(self._state)
        return self

    def _opened(self):
        return self._state != "opening"

    async def send(self, text):
        """Send one message, sealed once authenticated; returns once the bridge has it all."""
        self._check_open()
        if self.channel is not None:
            text = self.channel.seal(text)
        self.link.send(DATA, link.stream_payload(self._stream, text))
        self._flush()
        start = ticks_ms()
        while not self.link.idle():
            self._check_open()
            if ticks_diff(ticks_ms(), start) > _SEND_TIMEOUT_MS:
                self._end("the bridge took nothing for %d s" % (_SEND_TIMEOUT_MS // 1000))
                self._check_open()
            await asyncio.sleep_ms(10)

    async def recv(self, timeout_s=None):
        """The next message (str); ConnectionClosed once the stream ended, asyncio.TimeoutError
        when none came within `timeout_s` (a message arriving as it passes stays queued)."""
        if timeout_s is None:
            await self._until(self._pending)
        else:
            await asyncio.wait_for(self._until(self._pending), timeout_s)
        if not self._messages:
            self._check_open()
        text = bytes(memoryview(self._messages.pop(0))[1:]).decode()
        if self.channel is None:
            return text
        try:
            return self.channel.open(text)
        except Untrusted:
            await self.close(CLOSE_POLICY_VIOLATION, "message authentication failed")
            raise

    def _pending(self):
        return self._messages or self._state != "open"

    def _check_open(self):
        if self._state != "open":
            raise ConnectionClosed(CLOSE_ABNORMAL, self._state or "no stream")

    async def close(self, code=None, reason="unit closed the connection"):
        self.abort(reason)

    def abort(self, reason="unit closed the connection"):
        if self._state in ("opening", "open"):
            self.link.send(CLOSE, link.stream_payload(self._stream, reason))
            self._flush()
            self._state = reason


def _readable(poller):
    for _ in poller.ipoll(0):  # ipoll: no list per byte, as poll() would make
        return True
    return False


def _ignore(state, reason):
    pass
