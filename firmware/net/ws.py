"""WebSocket connections over asyncio streams: moves bytes between a socket and proto.websocket.

All parsing and framing is in `firmware.proto.websocket`; this module opens the unit's TCP (or
TLS) connection, feeds what it reads into the protocol and writes what the protocol wants sent.
`WebSocket` does not depend on the role: the host's `/ws/device` end is one too.

    ws = await connect("ws://10.0.0.2:8000/ws/device")
    await ws.send('{"type": "hello", ...}')
    text = await ws.recv()          # raises ConnectionClosed when the session ends
    await ws.close()
"""

import asyncio

from firmware.proto.auth import Untrusted
from firmware.proto.close import CLOSE_ABNORMAL, CLOSE_POLICY_VIOLATION, ConnectionClosed
from firmware.proto.errors import ProtocolError
from firmware.proto.frames import CLOSE_NORMAL, CLOSE_PROTOCOL_ERROR
from firmware.proto.websocket import CLOSED, ClientProtocol, Close, Ping, Pong

_READ_SIZE = 512
_CLOSE_WAIT_S = 2  # the whole close handshake, sending our close frame included
# A peer that has not taken what we sent after this long (its buffers and ours are full) has
# stopped reading: the connection is given up rather than waited on.
SEND_TIMEOUT_S = 5


def parse_url(url):
    """(secure, host, port, path) of a ws:// or wss:// URL; ValueError names what is wrong."""
    if url.startswith("ws://"):
        secure, rest, port = False, url[5:], 80
    elif url.startswith("wss://"):
        secure, rest, port = True, url[6:], 443
    else:
        raise ValueError("server URL %r must start with ws:// or wss://" % url)
    slash = rest.find("/")
    hostport, path = (rest, "/") if slash < 0 else (rest[:slash], rest[slash:])
    host, text = hostport, None
    if hostport.startswith("["):  # an IPv6 address: [::1] or [::1]:8000
        end = hostport.find("]")
        if end < 0 or hostport[end + 1 : end + 2] not in ("", ":"):
            raise ValueError("server URL %r has a bad IPv6 address" % url)
        host, text = hostport[1:end], hostport[end + 2 :] if end + 1 < len(hostport) else None
    elif ":" in hostport:
        host, text = hostport.rsplit(":", 1)
    if text is not None:
        if not text.isdigit():
            raise ValueError("server URL %r has a bad port" % url)
        port = int(text)
    if not host:
        raise ValueError("server URL %r has no host" % url)
    return secure, host, port, path


def open_tcp(host, port, ssl=None):
    """asyncio.open_connection, with `ssl` passed only when there is one (as the port wants)."""
    if ssl is None:
        return asyncio.open_connection(host, port)
    return asyncio.open_connection(host, port, ssl=ssl)


async def connect(url, timeout_s=10, ssl_context=None, buffer=None, opener=None, headers=()):
    """Open the connection and complete the opening handshake; returns a WebSocket.

    `opener(host, port, ssl)` opens the byte stream (the HAL's, on a board; default open_tcp);
    a wss:// URL needs `ssl_context` (firmware.net.tls.tls_context); `headers`: (name, value)
    pairs the upgrade request adds. Raises OSError / asyncio.TimeoutError when the server cannot
    be reached, Untrusted when its TLS certificate fails the check (the reason says which
    part), and ProtocolError (HandshakeError) when it answers but not as a WebSocket server
    should. `buffer`: where messages are assembled (proto.websocket.Protocol).
    """
    secure, host, port, path = parse_url(url)
    if secure and ssl_context is None:
        raise ValueError("%s needs a TLS trust anchor: a unit has no CA store" % url)
    try:
        return await _open(
            host, port, path, secure, timeout_s, ssl_context, buffer, opener or open_tcp, headers
        )
    except ValueError as e:
        if not secure:
            raise
        # MicroPython's asyncio defers the TLS handshake to the first write: the certificate
        # check may fail in the WebSocket handshake as well as in the opener.
        from firmware.net.tls import tls_refusal

        raise tls_refusal(e) from None


async def _open(host, port, path, secure, timeout_s, ssl_context, buffer, opener, headers):
    reader, writer = await asyncio.wait_for(
        opener(host, port, ssl_context if secure else None), timeout_s
    )
    hostname = "[%s]" % host if ":" in host else host
    if port != (443 if secure else 80):
        hostname = "%s:%d" % (hostname, port)
    proto = ClientProtocol(hostname, path, extra_headers=headers, buffer=buffer)
    ws = WebSocket(reader, writer, proto)
    try:
        await asyncio.wait_for(ws.handshake(), timeout_s)
    except BaseException:
        ws.abort()
        raise
    return ws


class WebSocket:
    def __init__(self, reader, writer, proto):
        self.reader = reader
        self.writer = writer
        self.proto = proto
        self._pending = []
        # Once both sides are authenticated: the firmware.proto.auth.Channel that seals what is
        # sent and opens what arrives. Sealing happens in send() before its first await, so
        # messages are sealed in the order they go out, whichever task sends them.
        self.channel = None

    async def _flush(self):
        out = self.proto.data_to_send()
        if not out:
            return
        for chunk in out:
            self.writer.write(chunk)
        try:
            await self._drain()
        except asyncio.TimeoutError:
            self.abort()
            raise ConnectionClosed(
                CLOSE_ABNORMAL, "peer took nothing we sent for %d s" % SEND_TIMEOUT_S
            ) from None

    async def _drain(self):
        transport = getattr(self.writer, "transport", None)  # CPython's; MicroPython has none
        if transport is not None and not transport.get_write_buffer_size():
            # All of it is with the kernel, so drain() cannot wait: no deadline (a timer and a
            # task per message, and a wait_for that may swallow a cancel before Python 3.12).
            await self.writer.drain()
        else:
            await asyncio.wait_for(self.writer.drain(), SEND_TIMEOUT_S)

    def _received(self, events):
        self._pending.extend(events)

    async def _feed(self):
        """Read once from the socket into the protocol; queue what arrived."""
        data = await self.reader.read(_READ_SIZE)
        try:
            if data:
                self.proto.receive_data(data)
            else:
                self.proto.receive_eof()
        finally:
            self._received(self.proto.events_received())
            await self._flush()  # pongs, close replies, or the close frame for a fault

    async def handshake(self):
        await self._flush()
        while not self._pending:
            await self._feed()
        self._pending.pop(0)  # the server's 101 response, already checked by the protocol

    async def recv(self, timeout_s=None):
        """The next text (str) or binary (bytes) message; raises ConnectionClosed at the end, and
        asyncio.TimeoutError when none arrived within `timeout_s`.

        Only the wait is bounded, never the taking: a message that arrives as the deadline
        passes stays queued for the next call. (asyncio.wait_for around a call that returns the
        message loses it when both happen in one pass of MicroPython's scheduler.)"""
        if timeout_s is None:
            await self._arrival()
        else:
            await asyncio.wait_for(self._arrival(), timeout_s)
        event = self._pending.pop(0) if self._pending else None
        if isinstance(event, (str, bytes)):
            return await self._open(event)
        self.abort()
        if isinstance(event, Close):
            raise ConnectionClosed(event.code, event.reason)
        raise ConnectionClosed(self.proto.close_code or CLOSE_ABNORMAL, self.proto.close_reason)

    async def _arrival(self):
        """Read until a message or the end is queued; pings and pongs (answered by the
        protocol) are dropped on the way."""
        pending = self._pending
        while True:
            while pending and isinstance(pending[0], (Ping, Pong)):
                pending.pop(0)
            if pending or self.proto.state == CLOSED:
                return
            try:
                await self._feed()
            except ProtocolError as e:
                self.abort()
                raise ConnectionClosed(
                    self.proto.close_code or CLOSE_PROTOCOL_ERROR, str(e)
                ) from None
            except OSError as e:
                self.abort()
                raise ConnectionClosed(CLOSE_ABNORMAL, "connection lost: %s" % e) from None

    async def _open(self, message):
        """The message as the app reads it; a wrong MAC ends the connection (Untrusted)."""
        if self.channel is None:
            return message
        try:
            return self.channel.open(message)
        except Untrusted:
            await self.close(CLOSE_POLICY_VIOLATION, "message authentication failed")
            raise

    async def send(self, text):
        if self.proto.state == CLOSED:
            raise ConnectionClosed(self.proto.close_code or CLOSE_ABNORMAL, self.proto.close_reason)
        if self.channel is not None:
            text = self.channel.seal(text)
        self.proto.send_text(text)
        try:
            await self._flush()
        except OSError as e:
            self.abort()
            raise ConnectionClosed(CLOSE_ABNORMAL, "connection lost: %s" % e) from None

    async def close(self, code=CLOSE_NORMAL, reason=""):
        """Close handshake, bounded in time as a whole (a peer that reads nothing cannot hold
        it up); the socket is closed in every case."""
        try:
            if self.proto.state != CLOSED:
                self.proto.send_close(code, reason)
                await asyncio.wait_for(self._close_handshake(), _CLOSE_WAIT_S)
        except Exception:  # noqa: BLE001 - closing: the peer may already be gone
            pass
        self.abort()

    async def _close_handshake(self):
        await self._flush()
        while self.proto.state != CLOSED:
            await self._feed()

    def abort(self):
        try:
            self.writer.close()
        except Exception:  # noqa: BLE001
            pass
