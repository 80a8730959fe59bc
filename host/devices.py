"""The `/ws/device` endpoint: unit sessions, authentication, heartbeats and commands.

The WebSocket protocol and the app messages are `firmware.proto`, the code the units run; the
byte mover is `firmware.net.ws.WebSocket`, shared with the units too. This module is policy:

- the server and the unit prove to each other that they hold the unit's secret, and every
  message after that carries a MAC (firmware.proto.auth; the secret never crosses the wire);
  unknown units and wrong answers are refused with `auth_failed` and logged, and a message
  with a wrong MAC closes the session with 1008 (`device_bad_mac` in the log);
- an authenticated session takes the unit's lease in the registry: a new epoch, larger than any
  before, so a newer session always wins; an older session of the same unit here is closed
  with 4001 and every write the old one tries afterwards is refused by the epoch;
- a unit on a USB cable reaches the server through `qrfleet bridge` on the PC it is plugged
  into, which adds `X-Qrfleet-Via: bridge@<host>` to the upgrade request; the session records
  it as the unit's `via` (`bridge_via`). It is what the bridge says of itself, for people
  diagnosing the path: the unit's authentication is end to end, so a bridge proves nothing;
- heartbeats renew the lease; a unit silent for 3 heartbeats is dropped and its lease runs out.
  Heartbeats arriving within a few milliseconds of each other share one registry operation
  (`HeartbeatBatch`): at thousands of units, one store transaction each would queue QR
  requests behind them;
- commands are sent only while the session still holds the unit (checked right before the
  send), and each gets its ack or error, or fails, within one deadline, sending included;
- a unit that stops reading is given up after `ws.SEND_TIMEOUT_S` (its commands fail at
  once), and one that sends more than PINGS_PER_S pings and pongs (after a burst of PING_BURST)
  is closed with 1008: answering pings costs the server, not the sender.
"""

import asyncio
import time
from collections import Counter

from firmware.net.ws import ConnectionClosed, WebSocket
from firmware.proto import auth, messages
from firmware.proto.close import CLOSE_GOING_AWAY, CLOSE_POLICY_VIOLATION
from firmware.proto.errors import MessageError, ProtocolError
from firmware.proto.frames import CLOSE_REPLACED
from firmware.proto.messages import MAX_ERROR_MESSAGE, SILENT_HEARTBEATS
from firmware.proto.server import ServerProtocol
from firmware.proto.websocket import DEFAULT_MAX_SIZE, OPEN, Ping, Pong
from host import streams
from host.log import Tally
from host.metrics import code_label
from host.registry import RegistryError

ACCEPT_PER_S = 200
PINGS_PER_S = 2  # pings and pongs a unit may send; a unit sends none, websockets one per 20 s
PING_BURST = 20
_HELLO_TIMEOUT_S = 10
_HEARTBEAT_ACK = messages.encode("heartbeat_ack")
_HEARTBEAT_BATCH_S = 0.05
VIA_HEADER = "x-qrfleet-via"
MAX_VIA = 80
_VIA_PREFIX = "bridge@"


def bridge_via(claimed):
    """The bridge a unit came through, from its upgrade request's X-Qrfleet-Via value
    (`claimed`, None without one) -> "bridge@<host>", or None unless it reads so: visible
    ASCII, at most MAX_VIA characters (a repeated header, joined with ", ", does not)."""
    if (
        claimed is None
        or not claimed.startswith(_VIA_PREFIX)
        or not len(_VIA_PREFIX) < len(claimed) <= MAX_VIA
        or not all("!" <= c <= "~" for c in claimed)
    ):
        return None
    return claimed


class CommandFailed(Exception):
    """The unit could not run a command: `.code` from the unit or one of ours, and why."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


# Units connect with the protocol's default limit (firmware/net/session.py): a larger message
# makes the unit close with 1009 and reconnect.
UNIT_MAX_MESSAGE = DEFAULT_MAX_SIZE
_WIDEST_ID = 0x7FFFFFFF


def command_text(kind, command_id=_WIDEST_ID, limit=UNIT_MAX_MESSAGE, **fields):
    """A command as the unit receives it -> its text; CommandFailed(payload_too_large) if its
    UTF-8 bytes, MAC included, are over `limit` (the unit's, from its hello). With the defaults,
    the widest id and the largest limit of any unit: a request can be refused before anything
    is reserved for it."""
    text = messages.encode(kind, id=command_id, **fields)
    size = len(text.encode()) + auth.SEAL_OVERHEAD
    if size > limit:
        whose = (
            "a unit takes at most"
            if limit == UNIT_MAX_MESSAGE
            else "this unit takes, for the largest QR its panel and memory show, at most"
        )
        raise CommandFailed(
            messages.PAYLOAD_TOO_LARGE,
            f"The {kind} message would be {size} bytes as sent; {whose} {limit} bytes per "
            "message. Shorten the payload or the caption.",
        )
    return text


_SCREENS = {
    "show_qr": "payment",
    "show_pairing": "pairing",
    "show_result": "result",
    "clear": "status",
}


def shown_screen(device_id, kind, fields, ack, txn_id=None):
    """What a unit shows once it acked command `kind` with `fields`, as `Device.shown` keeps it
    (enough to draw it again: a QR's text with the version and mask the unit verified), or None
    for a command that draws nothing."""
    symbol = {"version": ack.get("version"), "mask": ack.get("mask")}
    if kind == "show_qr":
        shown = {**fields, **symbol, "txn_id": txn_id}
    elif kind == "show_pairing":
        shown = {"uri": messages.pairing_uri(device_id, fields["code"]), "ecc": "M", **symbol}
    elif kind == "show_result":
        shown = {"result": fields["result"]}
    elif kind == "clear":
        shown = {"state": "ready"}
    else:
        return None
    return {"screen": _SCREENS[kind], **shown}


class DeviceSession:
    def __init__(self, hub, device_id, epoch, ws, fw, max_message=UNIT_MAX_MESSAGE, update=None):
        self.hub = hub
        self.device_id = device_id
        self.epoch = epoch
        self.ws = ws
        self.fw = fw
        self.max_message = max_message
        self.update = update  # what the unit said in hello of its last update (host/updates.py)
        self.location_id = None  # learnt when the server greets the unit (host.metrics)
        self.connected_at = time.time()
        self.last_heartbeat = None
        self.last_heard = time.monotonic()
        self._pending = {}
        self._next_id = 1
        self.closed = False
        self.closing = False  # the watchdog has begun closing it

    async def command(self, kind, timeout_s, txn_id=None, **fields):
        """Send a command and wait for the unit's answer -> the ack's fields. With `txn_id`,
        only while that transaction still holds the unit. Counted by kind and result. A screen
        the unit drew is recorded (`Device.shown`) before the answer is returned, so the
        dashboard and the event stream know it once the caller does."""
        try:
            ack = await self._command(kind, timeout_s, txn_id, fields)
        except CommandFailed as e:
            self.hub.commands[kind, code_label(e.code)] += 1
            raise
        self.hub.commands[kind, "ack"] += 1
        shown = shown_screen(self.device_id, kind, fields, ack, txn_id)
        if shown is not None:
            try:
                await self.hub.registry.record_screen(self.device_id, self.epoch, shown, txn_id)
            except RegistryError as e:  # the unit shows it all the same; only the record is late
                self.hub.log.warning("screen_not_recorded", device_id=self.device_id, reason=str(e))
        return ack

    async def _command(self, kind, timeout_s, txn_id, fields):
        if self.closed:
            raise CommandFailed("device_offline", f"Unit {self.device_id} has just disconnected.")
        if not await self.hub.registry.holds_device(self.device_id, self.epoch, txn_id):
            self.hub.metrics["fenced_commands"] += 1
            raise CommandFailed(
                "device_offline",
                f"Unit {self.device_id} is now held by a newer session"
                + ("." if txn_id is None else f", or transaction {txn_id} no longer holds it."),
            )
        command_id = self._next_id
        self._next_id = self._next_id % 0x7FFFFFFF + 1
        future = asyncio.get_running_loop().create_future()
        self._pending[command_id] = future
        try:
            return await asyncio.wait_for(
                self._exchange(command_text(kind, command_id, self.max_message, **fields), future),
                timeout_s,
            )
        except (asyncio.TimeoutError, TimeoutError):
            raise CommandFailed(
                "device_timeout",
                f"Unit {self.device_id} did not answer {kind} within {int(timeout_s * 1000)} ms.",
            ) from None
        except ConnectionClosed:
            raise CommandFailed(
                "device_offline", f"Unit {self.device_id} disconnected during {kind}."
            ) from None
        finally:
            self._pending.pop(command_id, None)

    async def _exchange(self, text, reply):
        await self.ws.send(text)
        self.hub.metrics["commands_sent"] += 1
        return await reply

    def answer(self, msg):
        future = self._pending.get(msg.get("id"))
        if future is None or future.done():
            return
        if msg["type"] == "ack":
            future.set_result(msg)
        else:
            future.set_exception(CommandFailed(msg["code"], msg["message"]))

    def fail_pending(self, reason):
        self.closed = True
        for future in self._pending.values():
            if not future.done():
                future.set_exception(CommandFailed("device_offline", reason))


class Allowance:
    """A token bucket: `burst` at once, then `per_s` a second."""

    def __init__(self, per_s, burst):
        self.per_s = per_s
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def take(self):
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.per_s)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class ServerWebSocket(WebSocket):
    """The units' byte mover (firmware.net.ws), in the server role, with the server's limits.

    The protocol answers every ping, as RFC 6455 wants; how many a peer may send is policy and
    needs a clock, so it is counted here, not in the sans-I/O core the units share. `metrics`
    (the hub's) counts connections closed for a ping flood or for taking nothing we sent.
    """

    def __init__(self, reader, writer, proto, metrics=None):
        super().__init__(reader, writer, proto)
        self.metrics = {"ping_floods": 0, "send_timeouts": 0} if metrics is None else metrics
        self._pings = Allowance(PINGS_PER_S, PING_BURST)
        self._flooded = False

    async def accept(self, request, leftover):
        """Answer the upgrade `request` already parsed by host/http.py; `leftover` is what
        arrived after its head. Raises ProtocolError (with the refusal sent) if it is bad."""
        try:
            self.proto.accept(request)
            if leftover:
                self.proto.receive_data(leftover)
        finally:
            self._received(self.proto.events_received())
            await self._flush()

    def _received(self, events):
        for event in events:
            if isinstance(event, (Ping, Pong)) and not self._pings.take():
                self._flooded = self.proto.state == OPEN  # once closing, pings are not answered
        super()._received(events)

    async def _feed(self):
        # A read returns at once while data is buffered: without this turn, a unit with a
        # backlog of messages would keep the event loop from every other unit and request.
        await asyncio.sleep(0)
        await super()._feed()
        if self._flooded:
            self._flooded = False
            self.metrics["ping_floods"] += 1
            reason = f"more than {PINGS_PER_S} pings a second"
            await self.close(CLOSE_POLICY_VIOLATION, reason)
            raise ConnectionClosed(CLOSE_POLICY_VIOLATION, reason)

    async def _drain(self):
        try:
            await super()._drain()
        except asyncio.TimeoutError:
            self.metrics["send_timeouts"] += 1
            raise

    def abort(self):
        streams.close(self.writer)


class HeartbeatBatch:
    """Collects heartbeats for `window_s`, then renews all their leases in one registry write."""

    def __init__(self, registry, server_id, ttl_s, tasks, window_s=_HEARTBEAT_BATCH_S):
        self.registry = registry
        self.tasks = tasks
        self.server_id = server_id
        self.ttl_s = ttl_s
        self.window_s = window_s
        self._waiting = []  # (device_id, epoch, changes, future)
        self._flush = None

    async def renew(self, device_id, epoch, changes):
        """-> False if a newer session took the unit over (as Registry.renew_device)."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((device_id, epoch, changes, future))
        if self._flush is None:
            self._flush = self.tasks.spawn(self._flush_after_window())
        return await future

    async def _flush_after_window(self):
        batch = self._waiting  # renew() adds to this list until the window closes
        try:
            await asyncio.sleep(self.window_s)
            self._waiting, self._flush = [], None
            renewed = await self.registry.renew_devices(
                self.server_id, self.ttl_s, [item[:3] for item in batch]
            )
        except asyncio.CancelledError:  # the server is closing: nobody renews these now
            for *_, future in batch:
                future.cancel()
            raise
        except Exception as e:  # noqa: BLE001 - every heartbeat of the batch learns why
            for *_, future in batch:
                if not future.done():
                    future.set_exception(e)
            return
        for (*_, future), ok in zip(batch, renewed, strict=True):
            if not future.done():
                future.set_result(ok)


class AcceptRate:
    """New sessions are admitted at `per_s` after a burst of one second's worth, so a reconnect
    storm leaves the heartbeats of units already online served. Each arrival is given the next
    free slot at once and sleeps until it: first come, first admitted, one timer each."""

    def __init__(self, per_s):
        self.interval_s = 1 / per_s
        self._next_slot = 0.0

    async def admit(self):
        now = time.monotonic()
        slot = max(self._next_slot, now - 1)
        self._next_slot = slot + self.interval_s
        if slot > now:
            await asyncio.sleep(slot - now)


class DeviceHub:
    def __init__(
        self,
        registry,
        server_id,
        heartbeat_s,
        log,
        tasks,
        on_online=None,
        accept_per_s=ACCEPT_PER_S,
    ):
        """`tasks` (host.tasks.Tasks) runs the hub's background work, and the cluster's."""
        self.registry = registry
        self.tasks = tasks
        self.server_id = server_id
        self.heartbeat_s = heartbeat_s
        self.log = log
        self.on_online = on_online
        self.sessions = {}
        self.commands = Counter()  # (kind, result) -> commands run on units held here
        self.accept_rate = AcceptRate(accept_per_s)
        # Fenced: a write or command refused because a newer session holds the unit.
        self.metrics = {
            "commands_sent": 0,
            "heartbeats": 0,
            "reconnects": 0,  # sessions of units that had one before, here or elsewhere
            "fenced_commands": 0,
            "fenced_writes": 0,
            "sessions_accepted": 0,
            "auth_refused": 0,
            "bad_macs": 0,
            "unsupported_version": 0,
            "ping_floods": 0,
            "send_timeouts": 0,
        }
        self.heartbeats = HeartbeatBatch(registry, server_id, self.lease_ttl_s, tasks)
        self._watchdog = None
        self._handshakes_refused = Tally(log, "device_handshake_refused")

    @property
    def lease_ttl_s(self):
        return SILENT_HEARTBEATS * self.heartbeat_s

    def session(self, device_id):
        return self.sessions.get(device_id)

    async def accept(self, head, leftover, reader, writer):
        """Take over a connection whose head asked for the `/ws/device` upgrade."""
        if self._watchdog is None:
            self._watchdog = self.tasks.spawn(self._close_silent())
        ws = ServerWebSocket(reader, writer, ServerProtocol(), self.metrics)
        try:
            await ws.accept(head, leftover)
        except (ProtocolError, ConnectionClosed) as e:
            self._handshakes_refused.note(reason=str(e))
            ws.abort()
            return
        session = None
        try:
            session = await self._authenticate(
                ws, writer.get_extra_info("peername"), head.headers.get(VIA_HEADER)
            )
            if session:
                await self._serve(session)
        except auth.Untrusted as e:
            self.metrics["bad_macs"] += 1
            self.log.warning(
                "device_bad_mac", device_id=session and session.device_id, reason=str(e)
            )
        except (ConnectionClosed, ProtocolError, OSError, asyncio.TimeoutError):
            pass
        except RegistryError as e:  # the store stayed away past its retries: the unit reconnects
            self.log.warning(
                "device_session_store_failed",
                device_id=session and session.device_id,
                reason=str(e),
            )
        finally:
            if session:
                await self._ended(session)
            ws.abort()

    async def _authenticate(self, ws, peer, claimed_via):
        hello = messages.from_device(await ws.recv(_HELLO_TIMEOUT_S))
        if hello["type"] != "hello":
            await self._refuse(ws, "expected hello first", peer)
            return None
        device_id = hello["device_id"]
        if hello["proto"] != messages.PROTOCOL_VERSION:
            self.metrics["unsupported_version"] += 1
            self.log.warning(
                "device_unsupported_version", device_id=device_id, proto=hello["proto"]
            )
            await self._send_error(
                ws,
                messages.UNSUPPORTED_VERSION,
                f"this server speaks protocol version {messages.PROTOCOL_VERSION}; "
                "flash the unit with firmware of that version",
            )
            return None
        if hello["nonce"] is None:
            await self._refuse(ws, "hello without the unit's nonce", peer, device_id)
            return None
        try:
            secret = await self.registry.device_secret(device_id)
        except RegistryError:  # unknown or malformed id
            secret = None
        # Unknown ids are challenged too, with a proof that is random, so the exchange does not
        # tell which units exist (the unit rejects that proof, as it would an impostor's).
        nonce = auth.new_nonce()
        if secret is None:
            proof = auth.new_nonce() + auth.new_nonce()
        else:
            proof = auth.proof(secret, hello["nonce"], nonce, device_id)
        await ws.send(messages.encode("challenge", nonce=nonce, proof=proof))
        answer = messages.from_device(await ws.recv(_HELLO_TIMEOUT_S))
        if secret is None:
            await self._refuse(ws, f"unit {device_id} is not registered", peer, device_id)
            return None
        # From here on both sides can seal: even a refusal reaches the unit authenticated.
        ws.channel = auth.Channel(secret, hello["nonce"], nonce, device_id, "server")
        if answer["type"] != "auth" or not auth.check_answer(
            secret, nonce, hello["nonce"], device_id, answer["mac"]
        ):
            await self._refuse(
                ws, f"wrong answer to the challenge for {device_id}", peer, device_id
            )
            return None
        # Admission is spent only here, on units that proved who they are: strangers cannot
        # use up the rate meant for a fleet reconnecting.
        await self.accept_rate.admit()
        via = bridge_via(claimed_via)
        if claimed_via is not None and via is None:
            # Logged once the unit proved who it is: strangers cannot fill the log with headers.
            self.log.warning(
                "device_via_ignored", device_id=device_id, via=claimed_via[: 2 * MAX_VIA]
            )
        epoch = await self.registry.acquire_device(
            device_id, self.server_id, self.lease_ttl_s, hello["fw"], hello["reset"], via
        )
        old = self.sessions.get(device_id)
        session = DeviceSession(
            self,
            device_id,
            epoch,
            ws,
            hello["fw"],
            hello["max_message"] or UNIT_MAX_MESSAGE,
            hello["update"],
        )
        self.sessions[device_id] = session
        if old:
            await self._replace(old)
        await ws.send(
            messages.encode("welcome", heartbeat_s=self.heartbeat_s, server_id=self.server_id)
        )
        self.metrics["sessions_accepted"] += 1
        if epoch > 1:
            self.metrics["reconnects"] += 1
        self.log.info(
            "device_online",
            device_id=device_id,
            epoch=epoch,
            fw=hello["fw"],
            peer=str(peer),
            via=via,
        )
        if self.on_online:
            self.tasks.spawn(self.on_online(session))
        return session

    async def _refuse(self, ws, reason, peer, device_id=None):
        """The log says why; the peer only learns that authentication failed."""
        self.metrics["auth_refused"] += 1
        self.log.warning("device_auth_refused", device_id=device_id, reason=reason, peer=str(peer))
        await self._send_error(ws, messages.AUTH_FAILED, "authentication failed")

    async def _send_error(self, ws, code, message):
        """An `error` message, then close with 1008 (docs/protocol.md, close codes)."""
        try:
            await ws.send(messages.encode("error", code=code, message=message))
        except ConnectionClosed:
            pass
        await ws.close(CLOSE_POLICY_VIOLATION, message)

    async def _replace(self, old):
        old.fail_pending("replaced by a newer session of the same unit")
        self.log.info("device_session_replaced", device_id=old.device_id, epoch=old.epoch)
        await old.ws.close(CLOSE_REPLACED, "replaced by a newer session of this unit")

    async def _serve(self, session):
        ws = session.ws
        while True:
            text = await ws.recv()  # a silent unit is closed by _close_silent
            session.last_heard = time.monotonic()
            try:
                msg = messages.from_device(text)
            except MessageError as e:
                await ws.send(
                    messages.encode(
                        "error", id=e.id, code=e.code, message=str(e)[:MAX_ERROR_MESSAGE]
                    )
                )
                continue
            kind = msg["type"]
            if kind == "heartbeat":
                self.metrics["heartbeats"] += 1
                if not await self._heartbeat(session, msg):
                    self.metrics["fenced_writes"] += 1
                    await ws.close(CLOSE_REPLACED, "replaced by a newer session of this unit")
                    return
                await ws.send(_HEARTBEAT_ACK)
            elif kind in ("ack", "error"):
                session.answer(msg)

    async def _heartbeat(self, session, msg):
        session.last_heartbeat = msg
        return await self.heartbeats.renew(
            session.device_id,
            session.epoch,
            {
                "firmware": msg["fw"],
                "last_screen": {
                    "screen": msg["screen"],
                    "free_heap": msg["free_heap"],
                    "uptime_s": msg["uptime_s"],
                    "rssi": msg["rssi"],
                },
            },
        )

    async def _ended(self, session):
        session.fail_pending(f"Unit {session.device_id} disconnected.")
        if self.sessions.get(session.device_id) is session:
            del self.sessions[session.device_id]
        try:
            await self.registry.release_device(session.device_id, session.epoch)
        except Exception:  # noqa: BLE001 - the lease expires by itself anyway
            self.log.exception("device_release_failed", device_id=session.device_id)
        self.log.info("device_offline", device_id=session.device_id, epoch=session.epoch)

    async def _close_silent(self):
        """Close sessions silent for 3 heartbeats. One watchdog for all, every half period: a
        timeout on each receive would cost a task per message, at thousands of units. Each
        close is a task of its own, so no one socket can hold up the watchdog."""
        reason = f"unit silent for {SILENT_HEARTBEATS} heartbeats"
        while True:
            await asyncio.sleep(self.heartbeat_s / 2)
            heard_since = time.monotonic() - SILENT_HEARTBEATS * self.heartbeat_s
            for session in list(self.sessions.values()):
                if session.last_heard < heard_since and not session.closing:
                    session.closing = True
                    self.log.warning("device_silent", device_id=session.device_id)
                    self.tasks.spawn(session.ws.close(CLOSE_GOING_AWAY, reason))

    async def drop_older(self, device_id, epoch):
        """Another instance took the unit with `epoch`: close our older session of it."""
        session = self.sessions.get(device_id)
        if session is not None and session.epoch < epoch:
            await self._replace(session)

    async def close(self):
        if self._watchdog:
            self._watchdog.cancel()
        await asyncio.gather(
            *(s.ws.close(CLOSE_GOING_AWAY, "server shutting down") for s in self.sessions.values())
        )
