"""The link between a tethered unit and its bridge over the USB UART, without I/O: frames and
their reliable, ordered delivery. The unit (firmware/net/tether.py) and the bridge on the
cashier's PC (host/bridge.py) each drive one `Link`.

A frame is one line of printable ASCII:

    "~" base64(kind, seq, ack, sender, receiver, payload..., CRC-32 LE of what precedes) "\\r\\n"

Lines, because the same UART carries the unit's log lines and, at a reset, the ROM's boot chatter
(and a terminal's cooked mode may turn "\\n" into "\\r\\n"): anything that is not a whole line
with a good CRC is not a frame, and the bridge shows it as the unit's console. Printable, because
the unit's UART turns a Ctrl-C byte (0x03) into KeyboardInterrupt: a frame never holds one, so a
technician's Ctrl-C still breaks into the REPL while a bridge runs. Ended by "\\r\\n", because
a unit left at its REPL takes "\\r" as Enter: the bridge's lines are then refused one by one (a
line of base64 cannot call anything) instead of piling up in its heap.

How the unit tells a bridge from a terminal: the bridge speaks first, a HELLO frame each second
it has sent nothing else (each fifth second while no unit answers). The unit writes frames only
while it has heard a bridge within PEER_TIMEOUT_MS; a terminal never sends a line with a good
CRC, so it sees nothing but the unit's log.

Delivery: OPEN, OPENED, REFUSED, DATA and CLOSE are numbered (`seq`, modulo 256) and every frame
carries `ack`, the next number its sender expects. The receiver takes only the next number in
order (go-back-N) and acknowledges what it has; the sender keeps what is unacknowledged, sends
at most `window` of it and sends it all again after `retry_ms`, doubling up to four times that.
A frame damaged by line noise is therefore sent again, never lost. Each side's window fits the
other's receive buffer: the ESP32 port keeps at most 260 bytes of UART input until the firmware
reads it, so the bridge has one frame of at most BRIDGE_PAYLOAD bytes in flight to the unit.

A HELLO names its sender by a nonce chosen at start: a new nonce (the unit restarted, a new
bridge) resets both numberings, and whatever stream the old peer had is ended. Numbered frames
and ACKs carry the first two bytes of the sender's and the receiver's nonces: a frame of the old
numbering still on its way (a retransmission crossing the restart) is not taken for one of the
new.

The unit opens one stream at a time to a server (OPEN names the server's URL, one of the unit's
own); the bridge opens a WebSocket to it (TLS for wss://) and answers OPENED, or REFUSED with the
reason. Then each DATA carries one WebSocket message, either way (a longer one goes as PARTs and
a last DATA, and arrives whole, as one DATA event); CLOSE ends the stream, from either side. Each
of those frames starts with the stream's number, so frames of a stream already ended are told
from those of the next.
"""

import os
from binascii import a2b_base64, b2a_base64, crc32

from firmware.compat import const, ticks_diff

HELLO = const(1)  # unnumbered: (nonce 4 bytes, name) - the bridge each second, the unit replying
ACK = const(2)  # unnumbered: only the ack
OPEN = const(16)  # unit -> bridge: stream, the server's URL
OPENED = const(17)  # bridge -> unit: stream
REFUSED = const(18)  # bridge -> unit: stream, why (UTF-8)
DATA = const(19)  # either way: stream, a message (or its last part)
CLOSE = const(20)  # either way: stream, why (UTF-8)
PART = const(21)  # either way: stream, a part of a message that DATA ends

UNIT_WINDOW = const(4)
UNIT_PAYLOAD = const(512)
BRIDGE_WINDOW = const(1)
BRIDGE_PAYLOAD = const(150)  # 219 bytes of line: with two ACK lines, inside the unit's 260
HELLO_MS = const(1000)
_HELLO_UNANSWERED_MS = const(5000)  # nobody there (or a unit at its REPL): HELLO less often
PEER_TIMEOUT_MS = const(3500)
RETRY_MS = const(500)
_HEADER = const(7)  # kind, seq, ack, 2 bytes of each nonce
_LINE_MAX = const(1024)
_CONSOLE_MAX = const(32)


class Link:
    """One side's end. `receive(data)` takes bytes from the UART; `events` then holds the
    numbered frames delivered in order as (kind, payload); `data_to_send(now)` gives the bytes
    to write (ticks_ms() times). `bridge`: this end speaks first (HELLO each HELLO_MS)."""

    def __init__(
        self,
        name,
        bridge,
        window,
        max_payload,
        retry_ms=RETRY_MS,
        console=False,
        inbox=None,
        line_max=_LINE_MAX,
    ):
        self.name = name.encode()
        self.bridge = bridge
        self.window = window
        self.max_payload = max_payload
        self.retry_ms = retry_ms
        self.nonce = os.urandom(4)
        self.peer = None  # the peer's nonce, once heard
        self.peer_name = ""
        self.heard_at = None  # when a good frame last arrived
        self.events = []
        self.started = None  # when data_to_send was first called
        self.console = [] if console else None  # lines that were not frames
        self.resets = 0  # peers changed: a stream held across one is gone
        self.damaged = 0  # frame lines that failed their CRC (line noise)
        # Where a message that comes in PARTs is put together: a bytearray as large as the
        # largest message this end takes (the unit's is its session's, found once in one piece).
        self.inbox = inbox
        self._filled = 0  # bytes of it so far; -1: too large, dropped up to its last part
        self._line = bytearray(line_max)  # longer lines than the peer sends are noise
        self._length = 0  # of the line so far; past line_max: too long, dropped at its end
        self._out = []
        self._hello_at = None
        self._restart_numbering()

    def _restart_numbering(self):
        self._next_seq = 0
        self._expected = 0
        self._queue = []  # (kind, payload) waiting for room in the window
        self._flight = []  # (seq, line) sent, not yet acknowledged
        self._sent_at = 0
        self._backoff = self.retry_ms
        self._ack_due = False

    # -- state ------------------------------------------------------------------------------

    def attached(self, now):
        """A peer was heard within PEER_TIMEOUT_MS."""
        return self.heard_at is not None and ticks_diff(now, self.heard_at) < PEER_TIMEOUT_MS

    def idle(self):
        """Everything sent has been acknowledged."""
        return not self._queue and not self._flight

    # -- sending ----------------------------------------------------------------------------

    def send(self, kind, payload=b""):
        """Queue a numbered frame; DATA longer than max_payload goes as PARTs and a last DATA,
        any other frame (a reason, a URL) is cut to max_payload."""
        if kind != DATA or len(payload) <= self.max_payload:
            self._queue.append((kind, bytes(payload[: self.max_payload])))
            return
        stream = payload[:1]
        step = self.max_payload - 1
        last = len(payload) - 1 - (len(payload) - 2) % step  # where the last part starts
        for i in range(1, len(payload), step):
            self._queue.append((DATA if i == last else PART, stream + payload[i : i + step]))

    def data_to_send(self, now):
        """The lines due now: a HELLO when one is due, numbered frames the window has room for,
        the whole window again when its acknowledgement is late, or a lone ACK."""
        out = self._out
        self._out = []
        if self.started is None:
            self.started = now
        if self.bridge and self._hello_due(now):
            out.append(self._hello())
        if not self.bridge and not self.attached(now):
            return b"".join(out)  # a terminal, or nobody: the unit writes no frames
        if self._flight and ticks_diff(now, self._sent_at) >= self._backoff:
            out.extend(line for _, line in self._flight)
            self._sent_at = now
            self._backoff = min(self._backoff * 2, self.retry_ms * 4)
            self._ack_due = False
        while self._queue and len(self._flight) < self.window:
            kind, payload = self._queue.pop(0)
            seq = self._next_seq
            self._next_seq = (seq + 1) & 0xFF
            line = self._line_of(kind, seq, payload)
            if not self._flight:
                self._sent_at = now
            self._flight.append((seq, line))
            out.append(line)
            self._ack_due = False
        if self._ack_due:
            self._ack_due = False
            out.append(self._line_of(ACK, 0, b""))
        if out:
            self._hello_at = now  # any frame tells the unit the bridge is there
        return b"".join(out)

    def _hello_due(self, now):
        if self._hello_at is None:
            return True
        answered = self.attached(now) or (
            self.heard_at is None and ticks_diff(now, self.started) < PEER_TIMEOUT_MS
        )
        return ticks_diff(now, self._hello_at) >= (HELLO_MS if answered else _HELLO_UNANSWERED_MS)

    def _hello(self):
        return self._line_of(HELLO, 0, self.nonce + self.name)

    def next_due_ms(self, now):
        """Milliseconds until data_to_send has something to send again, at most HELLO_MS."""
        due = HELLO_MS
        if self._flight:
            due = min(due, self._backoff - ticks_diff(now, self._sent_at))
        if self.bridge and self._hello_at is not None:
            due = min(due, HELLO_MS - ticks_diff(now, self._hello_at))
        if self._ack_due or self._out:
            due = 0
        return max(0, due)

    def _line_of(self, kind, seq, payload):
        end = _HEADER + len(payload)
        body = bytearray(end + 4)
        body[0] = kind
        body[1] = seq
        body[2] = self._expected  # the ack rides on every frame
        body[3:5] = self.nonce[:2]
        if self.peer is not None:
            body[5:7] = self.peer[:2]
        body[_HEADER:end] = payload
        body[end:] = (crc32(memoryview(body)[:end]) & 0xFFFFFFFF).to_bytes(4, "little")
        return b"~" + b2a_base64(body, newline=False) + b"\r\n"

    # -- receiving --------------------------------------------------------------------------

    def receive(self, data, now):
        """Bytes read from the UART; a frame takes effect once its line is whole."""
        buf = self._line
        most = len(buf)
        n = self._length
        for byte in data:
            if byte == 10:  # "\n"
                if n <= most:
                    self._take_line(memoryview(buf)[:n], now)
                n = 0
            elif n < most:
                buf[n] = byte
                n += 1
            else:
                n = most + 1  # noise without a newline: dropped up to the next one
        self._length = n

    def _take_line(self, line, now):
        if line and line[-1] == 13:  # "\r"
            line = line[:-1]
        if line and line[0] == 126:  # "~"
            body = _decode(line)
            if body is None:
                self.damaged += 1  # sent again by its sender, never shown as console text
            else:
                self._take_frame(body, now)
            return
        if self.console is not None and line:
            if len(self.console) >= _CONSOLE_MAX:
                self.console.pop(0)
            self.console.append(bytes(line).decode("utf-8", "replace"))

    def _take_frame(self, body, now):
        kind, seq, ack = body[0], body[1], body[2]
        payload = body[_HEADER:-4]
        if kind == HELLO:
            if payload[:4] == self.nonce:
                return  # our own, echoed by the port
            self._hello_from(payload[:4], payload[4:])
            self.heard_at = now
            if not self.bridge:  # the unit answers each HELLO: the bridge knows it is there
                self._out.append(self._hello())
            return
        if self.peer is None or body[3:5] != self.peer[:2] or body[5:7] != self.nonce[:2]:
            return  # not from the peer we know, or not for us: another numbering's frame
        self.heard_at = now
        self._take_ack(ack, now)
        if kind == ACK:
            return
        self._ack_due = True
        if seq == self._expected:
            self._expected = (seq + 1) & 0xFF
            if kind == PART or (kind == DATA and self._filled):
                self._assemble(kind, payload)
            else:
                self.events.append((kind, payload))

    def _assemble(self, kind, payload):
        """PART ... PART DATA: one DATA event with the stream's number and the whole message; a
        message larger than the inbox becomes a CLOSE of its stream."""
        size = len(payload) - 1
        if self._filled >= 0:
            if self.inbox is None or self._filled + size > len(self.inbox):
                self._filled = -1
            else:
                self.inbox[self._filled : self._filled + size] = memoryview(payload)[1:]
                self._filled += size
        if kind == PART:
            return
        if self._filled < 0:
            self.events.append((CLOSE, stream_payload(payload[0], "message too large")))
        else:
            whole = bytearray(1 + self._filled)
            whole[0] = payload[0]
            whole[1:] = memoryview(self.inbox)[: self._filled]
            self.events.append((DATA, whole))
        self._filled = 0

    def _hello_from(self, nonce, name):
        if nonce == self.peer:
            return
        if self.peer is not None or not self.idle():
            self.resets += 1
        self.peer = bytes(nonce)
        self.peer_name = bytes(name).decode("utf-8", "replace")
        self.events.clear()  # the old peer's: whatever they belonged to has ended
        self._filled = 0
        self._restart_numbering()

    def _take_ack(self, ack, now):
        flight = self._flight
        if not flight:
            return
        done = (ack - flight[0][0]) & 0xFF
        if 0 < done <= len(flight):  # a late or stray ack acknowledges nothing
            del flight[:done]
            self._sent_at = now
            self._backoff = self.retry_ms


def _decode(line):
    """The body of a frame line, or None when it is not one (bad base64, short, bad CRC)."""
    try:
        body = a2b_base64(memoryview(line)[1:])
    except ValueError:
        return None
    if len(body) < _HEADER + 4:
        return None
    if crc32(memoryview(body)[:-4]) & 0xFFFFFFFF != int.from_bytes(body[-4:], "little"):
        return None
    return body


# -- stream payloads ---------------------------------------------------------------------------


def stream_payload(stream, data=b""):
    """Every stream frame: the stream's number, then the message's bytes or the URL's or the
    reason's UTF-8."""
    if isinstance(data, str):
        data = data.encode()
    return bytes((stream,)) + data
