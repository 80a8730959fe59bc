"""The unit's session with the server: connect, authenticate, heartbeat, answer commands.

    session = Session(device_id, secret, urls, commands, status)
    await session.run_forever()

`commands.handle(msg)` runs one server command and returns the ack's extra fields, or raises
messages.CommandError(code, message); `status()` returns the heartbeat's changing fields;
`untrusted(url, reason)` is told when a server fails to prove itself, a message's MAC is wrong,
or a wss:// server's certificate fails the checks of `tls` (firmware.net.tls: the unit's trust
anchor, the host name, the dates); the session then ends and backs off as from any failed
attempt. `clock()`, when given, is awaited before each wss:// attempt, since a certificate's
dates are checked against the unit's clock: False (the clock is not set; it says why) skips
the attempt, which backs off like a failed one. This module is sequencing:
firmware.net.policy decides which server is next, how long to back off and when a server is
gone; `connect` opens the connection (firmware.net.ws.connect by default; a tethered unit's is
firmware.net.tether's, through its bridge) and firmware.proto parses what it carries.
"""

import asyncio
import gc

from firmware.compat import const, ticks_add, ticks_diff, ticks_ms
from firmware.net.policy import backoff_ms, server_order, server_silent
from firmware.proto import auth, messages
from firmware.proto.close import CLOSE_ABNORMAL, CLOSE_GOING_AWAY, ConnectionClosed
from firmware.proto.errors import MessageError, ProtocolError
from firmware.proto.messages import (
    MAX_ERROR_MESSAGE,
    MIN_MESSAGE,
    SILENT_HEARTBEATS,
    CommandError,
)

_AUTH_TIMEOUT_S = 10
_MAX_MESSAGE = const(4096)  # a unit's largest message when its hello names none


class AuthRefused(Exception):
    pass


class Session:
    def __init__(
        self,
        device_id,
        secret,
        urls,
        commands,
        status,
        fw,
        log=print,
        opener=None,
        untrusted=None,
        tls=None,
        max_message=_MAX_MESSAGE,
        clock=None,
        reset=None,
        update=None,
        connect=None,
    ):
        self.device_id = device_id
        self.secret = secret
        self.commands = commands
        self.status = status
        self.fw = fw
        self.log = log
        self.opener = opener
        if connect is None:  # a tethered unit's comes from firmware.net.tether, without these
            from firmware.net.ws import connect
        self.connect = connect
        self.untrusted = untrusted or _ignore
        self.tls = tls
        self.clock = clock
        self.reset = reset  # why the unit last started, told to each server in hello
        # The version on trial or the last update's outcome as the unit started, told in each
        # hello (after an in-session commit, a server proves the trial again: harmless).
        self.update = update
        # Where every connection assembles its messages, found once in one piece: as large as
        # the largest message this unit can use (told to the server in hello), 4 KB at most.
        self._buffer = bytearray(max(MIN_MESSAGE, min(max_message, _MAX_MESSAGE)))
        self.server_id = None
        self.connected = False
        self.connects = 0
        self._servers = server_order(device_id, urls)

    async def run_forever(self):
        attempt = 0
        while True:
            url = next(self._servers)
            connects = self.connects
            try:
                if self.clock is None or not url.startswith("wss://") or await self.clock():
                    await self.run_once(url)
            except AuthRefused as e:
                self.log("qrfleet: %s refused us: %s" % (url, e))
            except auth.Untrusted as e:
                self.log("qrfleet: %s is not trusted: %s" % (url, e))
                self.untrusted(url, str(e))
            except (OSError, asyncio.TimeoutError, ProtocolError, ConnectionClosed) as e:
                self.log("qrfleet: %s: %s" % (url, _describe(e)))
            except MemoryError:
                # Out of heap mid-message: the connection's state is unknown, so start afresh.
                self.log("qrfleet: %s: out of memory; reconnecting" % url)
            self.connected = False
            if self.connects != connects:
                attempt = 0  # that session got going: start the backoff afresh
            delay = backoff_ms(attempt)
            attempt += 1
            gc.collect()
            await asyncio.sleep(delay / 1000)

    async def run_once(self, url):
        """One session with one server, until it ends; raises what ended it."""
        conn = await self.connect(
            url, opener=self.opener, ssl_context=self.tls, buffer=self._buffer
        )
        try:
            heartbeat_s = await self._authenticate(conn)
            self.connected = True
            self.connects += 1
            self.log("qrfleet: online at %s (server %s)" % (url, self.server_id))
            await self._serve(conn, heartbeat_s)
        finally:
            self.connected = False
            await conn.close(CLOSE_GOING_AWAY, "unit going away")

    async def _authenticate(self, conn):
        """Mutual authentication (firmware.proto.auth): the server proves it knows our secret
        before anything it sends is taken as a command; then every message is sealed."""
        nonce = auth.new_nonce()
        await conn.send(
            messages.encode(
                "hello",
                device_id=self.device_id,
                fw=self.fw,
                proto=messages.PROTOCOL_VERSION,
                nonce=nonce,
                max_message=len(self._buffer),
                reset=self.reset,
                update=self.update,
            )
        )
        msg = await self._expect(conn, "challenge")
        if not auth.check_proof(self.secret, nonce, msg["nonce"], self.device_id, msg["proof"]):
            raise auth.Untrusted(
                "it could not prove it knows this unit's secret (not our server, or the unit "
                "is not registered there)"
            )
        await conn.send(
            messages.encode(
                "auth", mac=auth.answer(self.secret, msg["nonce"], nonce, self.device_id)
            )
        )
        conn.channel = auth.Channel(self.secret, nonce, msg["nonce"], self.device_id, "unit")
        msg = await self._expect(conn, "welcome")
        self.server_id = msg["server_id"]
        return msg["heartbeat_s"]

    async def _expect(self, conn, kind):
        msg = messages.from_server(await conn.recv(_AUTH_TIMEOUT_S))
        if msg["type"] == "error":
            raise AuthRefused("%s: %s" % (msg["code"], msg["message"]))
        if msg["type"] != kind:
            raise AuthRefused("expected %s, got %s" % (kind, msg["type"]))
        return msg

    async def _serve(self, conn, heartbeat_s):
        period_ms = heartbeat_s * 1000
        last_heard = ticks_ms()
        next_beat = last_heard
        while True:
            now = ticks_ms()
            if server_silent(now, last_heard, period_ms):
                raise ConnectionClosed(
                    CLOSE_ABNORMAL, "server silent for %d heartbeats" % SILENT_HEARTBEATS
                )
            if ticks_diff(next_beat, now) <= 0:
                await conn.send(messages.encode("heartbeat", **self.status()))
                next_beat = ticks_add(now, period_ms)
            wait_ms = max(1, ticks_diff(next_beat, ticks_ms()))
            try:
                # Decoded as it arrives, the text not kept: a large show_qr's text would
                # otherwise hold its KBs of heap while the QR is encoded.
                msg = _decode(await conn.recv(wait_ms / 1000))
            except asyncio.TimeoutError:
                continue
            last_heard = ticks_ms()
            reply = self._answer(msg)
            if reply:
                await conn.send(reply)

    def _answer(self, msg):
        """The reply to one decoded server message (None when it needs none); never raises."""
        if isinstance(msg, MessageError):
            return messages.encode("error", id=msg.id, code=msg.code, message=_short(str(msg)))
        kind = msg["type"]
        if kind in ("heartbeat_ack", "challenge", "welcome", "error"):
            return None
        try:
            fields = self.commands.handle(msg) or {}
        except MemoryError:
            gc.collect()
            return messages.encode(
                "error",
                id=msg["id"],
                code=messages.BUSY,
                message="unit is out of memory; try again",
            )
        except CommandError as e:
            return messages.encode("error", id=msg["id"], code=e.code, message=_short(e.message))
        except Exception as e:  # noqa: BLE001 - a failing command must not end the session
            return messages.encode(
                "error",
                id=msg["id"],
                code=messages.RENDER_FAILED,
                message=_short("%s: %s" % (type(e).__name__, e)),
            )
        return messages.encode("ack", id=msg["id"], **fields)


def _decode(text):
    """The message `text` holds, or the MessageError that says what is wrong with it."""
    try:
        return messages.from_server(text)
    except MessageError as e:
        return e


def _ignore(url, reason):
    pass


def _short(text):
    return text if len(text) <= MAX_ERROR_MESSAGE else text[: MAX_ERROR_MESSAGE - 3] + "..."


def _describe(e):
    return "%s %s" % (type(e).__name__, e)
