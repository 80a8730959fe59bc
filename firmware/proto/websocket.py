"""RFC 6455 connections as sans-I/O state machines: bytes in, events and bytes out.

The same code is the device's client and, with `firmware.proto.server.ServerProtocol` (a
module a unit never imports), the host's `/ws/device` endpoint::

    proto = ClientProtocol("server.local:8080", "/ws/device")
    write(proto.data_to_send())          # the upgrade request
    proto.receive_data(read())           # may raise ProtocolError
    for event in proto.events_received():
        ...                              # Response, then str / bytes / Ping / Pong / Close
    proto.send_text('{"type": "hello", ...}')
    write(proto.data_to_send())

The I/O layer only moves bytes:

- `receive_data(data)` and `receive_eof()` take what the socket read;
- `events_received()` returns what arrived, in order: the handshake head
  (`http11.Request` on a server, `http11.Response` on a client), text messages
  as `str`, binary messages as `bytes`, and `Ping`, `Pong` and `Close` events;
- `data_to_send()` returns the byte strings to write, in order;
- once `state` is CLOSED, close the transport (the server closes first after a
  close handshake, §7.1.1; a client may wait briefly for the server to do so).

A peer that breaks the protocol makes `receive_data()` raise a `ProtocolError`
and leaves the connection CLOSED with the answer already queued: a `FrameError`
carries the close code (1002, 1007 or 1009) sent in a close frame, and a server
refusing a handshake queues an HTTP error response. Events parsed before the
fault are still in `events_received()`.

Memory: a connection has two buffers allocated once, `max_size` bytes to
reassemble data messages (or the caller's `buffer`, which a unit allocates once at
boot and hands to each of its connections) and 125 for control frames. Payloads are copied from
the receive buffer into them and unmasked in place; a frame that would take a
message past `max_size` is refused with 1009 from its header alone, before any
of its payload is read, whatever length it claims.
"""

import os

from firmware.compat import const
from firmware.proto.close import CLOSE_ABNORMAL
from firmware.proto.errors import FrameError, HandshakeError, HeadError, ProtocolError
from firmware.proto.frames import (
    CLOSE_NORMAL,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOO_BIG,
    MAX_CLOSE_REASON,
    MAX_CONTROL_PAYLOAD,
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    apply_mask,
    close_payload,
    decode_utf8,
    header,
    parse_close,
)
from firmware.proto.handshake import check_response, client_request, new_key
from firmware.proto.http11 import MAX_HEAD, parse_response_head, read_head

CONNECTING = const(0)
OPEN = const(1)
CLOSING = const(2)
CLOSED = const(3)
STATE_NAMES = ("CONNECTING", "OPEN", "CLOSING", "CLOSED")

# The device's messages are small JSON texts; an ESP32 cannot spare more per connection.
DEFAULT_MAX_SIZE = const(4096)


class Ping:
    def __init__(self, data):
        self.data = data


class Pong:
    def __init__(self, data):
        self.data = data


class Close:
    """The peer closed with `code` and `reason`; 1005 if it gave no code, 1006 if it just vanished."""

    def __init__(self, code, reason):
        self.code = code
        self.reason = reason


class Protocol:
    """What both roles share; create a ClientProtocol (or the host's server.ServerProtocol)."""

    def __init__(self, client, max_size, buffer=None):
        """`buffer`: a bytearray to assemble messages in, whose length is the largest message
        taken; a unit keeps one for all its connections rather than find 4 KB in one piece
        each time. Messages are copied out of it as they complete."""
        self._client = client
        self.state = CONNECTING
        self._message = bytearray(max_size) if buffer is None else buffer
        self.max_size = len(self._message)
        # Code and reason that ended the connection, set once it is CLOSED.
        self.close_code = None
        self.close_reason = ""
        self._buf = bytearray()
        self._control = bytearray(MAX_CONTROL_PAYLOAD)
        self._mask_key = bytearray(4)
        self._events = []
        self._out = []
        self._sending = None  # opcode of a fragmented message being sent
        self._parser = self._handshake()
        next(self._parser)

    # -- the I/O layer's side

    def receive_data(self, data):
        """Feed bytes read from the socket; raises ProtocolError if the peer broke the protocol."""
        if self.state == CLOSED:
            return
        self._buf.extend(data)
        self._step()

    def receive_eof(self):
        """The peer closed the socket; raises HandshakeError if that cut the handshake short."""
        if self.state == CLOSED:
            return
        if self.state == CONNECTING:
            self._closed(CLOSE_ABNORMAL, "connection closed during the opening handshake")
            raise HandshakeError("connection closed during the opening handshake")
        self._closed(CLOSE_ABNORMAL, "connection closed without a close frame")
        self._events.append(Close(CLOSE_ABNORMAL, self.close_reason))

    def events_received(self):
        events, self._events = self._events, []
        return events

    def data_to_send(self):
        out, self._out = self._out, []
        return out

    # -- the application's side

    def send_text(self, data, fin=True):
        """Send a text message (str or UTF-8 bytes); fin=False starts a fragmented one."""
        self._send_data(OP_TEXT, data, fin)

    def send_binary(self, data, fin=True):
        self._send_data(OP_BINARY, data, fin)

    def send_continuation(self, data, fin):
        """Send the next fragment of the message begun with fin=False."""
        self._send_data(OP_CONTINUATION, data, fin)

    def send_ping(self, data=b""):
        self._send_control(OP_PING, data)

    def send_pong(self, data=b""):
        self._send_control(OP_PONG, data)

    def send_close(self, code=CLOSE_NORMAL, reason=""):
        """Start the close handshake; the connection is CLOSED when the peer's close arrives."""
        self._check_open("close")
        self._send_frame(OP_CLOSE, close_payload(code, reason))
        self.state = CLOSING

    # -- parsing

    def _step(self):
        try:
            next(self._parser)
        except ProtocolError as exc:
            self._fail(exc)
            raise

    def _fail(self, exc):
        if isinstance(exc, FrameError):
            if self.state == OPEN:
                self._send_frame(OP_CLOSE, close_payload(exc.code, _truncate(str(exc))))
            self._closed(exc.code, str(exc))
        else:
            self._closed(CLOSE_ABNORMAL, str(exc))

    def _closed(self, code, reason):
        self.state = CLOSED
        self.close_code, self.close_reason = code, reason

    def _frames(self):
        buf = self._buf
        message_op = 0  # opcode of the data message being reassembled, 0 between messages
        message_len = 0
        while True:
            while len(buf) < 2:
                yield
            b0, b1 = buf[0], buf[1]
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            if b0 & 0x70:
                raise FrameError(
                    CLOSE_PROTOCOL_ERROR, "reserved bits set, but no extension was negotiated"
                )
            masked = b1 & 0x80
            if self._client and masked:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "a server must not mask its frames")
            if not self._client and not masked:
                raise FrameError(CLOSE_PROTOCOL_ERROR, "a client must mask its frames")
            length = b1 & 0x7F
            size = 2 + (2 if length == 126 else 8 if length == 127 else 0) + (4 if masked else 0)
            while len(buf) < size:
                yield
            if length == 126:
                length = buf[2] << 8 | buf[3]
            elif length == 127:
                if buf[2] & 0x80:
                    raise FrameError(
                        CLOSE_PROTOCOL_ERROR, "64-bit frame length has its top bit set"
                    )
                length = 0
                for i in range(2, 10):
                    length = length << 8 | buf[i]

            if opcode >= OP_CLOSE:
                if opcode > OP_PONG:
                    raise FrameError(CLOSE_PROTOCOL_ERROR, "opcode 0x%x is reserved" % opcode)
                if not fin:
                    raise FrameError(CLOSE_PROTOCOL_ERROR, "control frames must not be fragmented")
                if length > MAX_CONTROL_PAYLOAD:
                    raise FrameError(
                        CLOSE_PROTOCOL_ERROR,
                        "control frame of %d bytes; the limit is %d"
                        % (length, MAX_CONTROL_PAYLOAD),
                    )
                dest, start = self._control, 0
            else:
                if opcode > OP_BINARY:
                    raise FrameError(CLOSE_PROTOCOL_ERROR, "opcode 0x%x is reserved" % opcode)
                if opcode == OP_CONTINUATION and not message_op:
                    raise FrameError(
                        CLOSE_PROTOCOL_ERROR, "continuation frame without a message to continue"
                    )
                if opcode != OP_CONTINUATION and message_op:
                    raise FrameError(
                        CLOSE_PROTOCOL_ERROR, "new message began before the previous one finished"
                    )
                if length > self.max_size - message_len:
                    raise FrameError(
                        CLOSE_TOO_BIG,
                        "message of %d bytes or more; the limit is %d"
                        % (message_len + length, self.max_size),
                    )
                dest, start = self._message, message_len
            if masked:
                for i in range(4):
                    self._mask_key[i] = buf[size - 4 + i]
            buf[:size] = b""

            end = start + length
            pos = start
            while pos < end:
                if not buf:
                    yield
                    continue
                take = min(end - pos, len(buf))
                dest[pos : pos + take] = memoryview(buf)[:take]
                buf[:take] = b""
                pos += take
            if masked:
                apply_mask(dest, start, end, self._mask_key)

            if opcode >= OP_CLOSE:
                self._control_frame(opcode, memoryview(dest)[:end])
                while self.state == CLOSED:  # nothing after a close frame is read (§5.5.1)
                    yield
            else:
                if opcode != OP_CONTINUATION:
                    message_op = opcode
                message_len = end
                if fin:
                    data = memoryview(dest)[:end]
                    self._events.append(decode_utf8(data) if message_op == OP_TEXT else bytes(data))
                    message_op = message_len = 0

    def _control_frame(self, opcode, payload):
        if opcode == OP_PING:
            data = bytes(payload)
            self._events.append(Ping(data))
            if self.state == OPEN:
                self._send_frame(OP_PONG, data)
        elif opcode == OP_PONG:
            self._events.append(Pong(bytes(payload)))
        else:
            code, reason = parse_close(payload)
            if self.state == OPEN:
                # §5.5.1: answer with a close frame, echoing the code.
                self._send_frame(OP_CLOSE, close_payload(code))
            self._closed(code, reason)
            self._events.append(Close(code, reason))

    # -- sending

    def _check_open(self, what):
        if self.state != OPEN:
            raise ProtocolError("cannot %s: the connection is %s" % (what, STATE_NAMES[self.state]))

    def _send_data(self, opcode, data, fin):
        self._check_open("send a message")
        if opcode == OP_CONTINUATION:
            if self._sending is None:
                raise ProtocolError("no fragmented message to continue; begin one with fin=False")
        elif self._sending is not None:
            raise ProtocolError(
                "finish the fragmented message with send_continuation(..., fin=True) first"
            )
        if isinstance(data, str):
            data = data.encode()
        self._sending = None if fin else (self._sending or opcode)
        self._send_frame(opcode, data, fin)

    def _send_control(self, opcode, data):
        self._check_open("send a control frame")
        if len(data) > MAX_CONTROL_PAYLOAD:
            raise ValueError(
                "control frame payload is %d bytes; the limit is %d"
                % (len(data), MAX_CONTROL_PAYLOAD)
            )
        self._send_frame(opcode, data)

    def _send_frame(self, opcode, payload, fin=True):
        n = len(payload)
        if self._client:
            # §5.3: a fresh unpredictable key per frame.
            key = os.urandom(4)
            frame = header(opcode, n, fin, key)
            start = len(frame)
            frame.extend(payload)
            apply_mask(frame, start, start + n, key)
        else:
            frame = header(opcode, n, fin)
            frame.extend(payload)
        self._out.append(frame)


class ClientProtocol(Protocol):
    """The client role: sends the upgrade request at once, masks what it sends."""

    def __init__(self, host, path="/", extra_headers=(), max_size=DEFAULT_MAX_SIZE, buffer=None):
        self.key = new_key()
        super().__init__(True, max_size, buffer)
        self._out.append(client_request(host, path, self.key, extra_headers))

    def _handshake(self):
        head = yield from read_head(self._buf, MAX_HEAD)
        try:
            response = parse_response_head(head)
        except HeadError as exc:
            raise HandshakeError("server did not answer in HTTP: %s" % exc) from None
        check_response(response, self.key)
        self.state = OPEN
        self._events.append(response)
        yield from self._frames()


def _truncate(text):
    """`text` as a close reason: at most 123 bytes, cut on a character boundary."""
    data = text.encode()
    if len(data) <= MAX_CLOSE_REASON:
        return text
    cut = MAX_CLOSE_REASON
    while data[cut] & 0xC0 == 0x80:
        cut -= 1
    return str(data[:cut], "utf-8")
