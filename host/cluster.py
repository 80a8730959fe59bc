"""Several `qrfleet serve` instances on one Valkey/Redis: command routing and takeover.

Which instances are alive is the registry's instance presence (`Registry.join`/`renew`,
renewed by the server): an instance that stops renewing is gone for everyone after its TTL,
and so is everything it was granted.

A command for a unit held by another instance goes to that instance over pub/sub, with the
epoch of the holder's session as the caller saw it; the holder runs it only if that session
is still the unit's newest (fencing) and answers on the caller's reply channel. The caller
waits up to a deadline; if the holder's presence is gone it answers "offline" at once.

Pub/sub keeps nothing for a subscriber that is not there: while Valkey restarts (or Sentinel
fails over to a replica), every instance's subscription is gone until its listener subscribes
again on a fresh connection (from the client's pool: behind Sentinel, to the new primary). A
PUBLISH answers how many subscribers got the message, so a request or a reply that reached
nobody is sent again (every `_RESEND_S`) until it is received or its deadline passes; it was
not delivered, so this can neither lose nor duplicate it. Without that, a command published in
the moments after Valkey came back would wait out its whole deadline, with its unit's screen
held on the calling instance.

When an instance takes a unit's session, it announces the new epoch; the instance that held the
older session closes it with 4001 at once (it would also learn it at its next heartbeat, when
the registry refuses its stale renewal).

Channels carry the store's prefix and database, so clusters sharing one Valkey stay apart:
{prefix}{db}:cmd:{server_id}  {prefix}{db}:reply:{server_id}  {prefix}{db}:takeover
"""

import asyncio
import itertools
import json

from valkey.exceptions import ValkeyError

from host.devices import CommandFailed

_WATCH_S = 0.25  # how often a routed command checks that its holder still holds the unit
_POLL_S = 1.0  # longest single wait for a pub/sub message (below the client's socket timeout)
_RESEND_S = 0.05  # how often a message nobody received is sent again
_RESUBSCRIBE_S = 0.1  # how often a listener that lost Valkey tries to subscribe again


class HolderChanged(CommandFailed):
    """The instance a command was routed to died or lost the unit before answering."""

    def __init__(self, device_id, server_id):
        super().__init__(
            "device_offline",
            f"Unit {device_id} left server {server_id} while a "
            "command was on its way; it is reconnecting to another server.",
        )


class Cluster:
    def __init__(self, address, server_id, hub, log):
        """`address`: the store's parsed URL (`host.registry.redis.Address`)."""
        self.address = address
        self.server_id = server_id
        self.hub = hub
        self.log = log
        ns = f"{address.prefix}{address.db}:"
        self._cmd = ns + "cmd:"
        self._reply = ns + "reply:"
        self._takeover = ns + "takeover"
        self._pending = {}
        self._ids = itertools.count(1)
        self.routed_out = 0
        self.routed_in = 0

    async def start(self):
        self.redis = self.address.client()  # behind Sentinel, reconnects to the new primary
        self.pubsub = self.redis.pubsub()
        await self.pubsub.subscribe(
            self._cmd + self.server_id, self._reply + self.server_id, self._takeover
        )
        self.hub.tasks.spawn(self._listen())

    async def close(self):
        """After the server's tasks (`hub.tasks`, which run this cluster's loops) are closed."""
        await self.pubsub.aclose()
        await self.redis.aclose()

    async def instances(self):
        """{server_id: load} of the instances alive now."""
        return {
            i.server_id: {"units": i.units, "epoch": i.epoch}
            for i in await self.hub.registry.instances()
        }

    async def alive(self, server_id):
        return await self.hub.registry.instance_alive(server_id)

    # -- routing

    async def command(self, server_id, device_id, epoch, kind, timeout_s, txn_id=None, **fields):
        """Run a command on a unit held by `server_id` -> the unit's ack fields; with `txn_id`,
        only while that transaction holds the unit."""
        try:
            return await self._command(server_id, device_id, epoch, kind, timeout_s, txn_id, fields)
        except ValkeyError as e:
            raise CommandFailed(
                "store_unavailable",
                f"The cluster's Valkey cannot be reached ({e}); retry in a few seconds.",
            ) from None

    async def _command(self, server_id, device_id, epoch, kind, timeout_s, txn_id, fields):
        if not await self.alive(server_id):
            raise CommandFailed(
                "device_offline",
                f"Unit {device_id} was held by server {server_id}, which is down; "
                "it reconnects to a live server by itself within seconds.",
            )
        request_id = f"{self.server_id}:{next(self._ids)}"
        future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        request = {
            "id": request_id,
            "reply_to": self.server_id,
            "device_id": device_id,
            "epoch": epoch,
            "kind": kind,
            "txn_id": txn_id,
            "fields": fields,
            "timeout_s": timeout_s,
        }
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s + 1
        watch_at = loop.time() + _WATCH_S
        text = json.dumps(request)
        try:
            self.routed_out += 1
            sent = await self.redis.publish(self._cmd + server_id, text) > 0
            while True:
                try:
                    wait_s = _WATCH_S if sent else _RESEND_S
                    reply = await asyncio.wait_for(asyncio.shield(future), wait_s)
                    break
                except (asyncio.TimeoutError, TimeoutError):
                    pass
                if loop.time() > deadline:
                    raise CommandFailed(
                        "device_timeout",
                        f"Server {server_id} holding unit {device_id} did not "
                        f"answer within {int((timeout_s + 1) * 1000)} ms.",
                    ) from None
                if not sent:  # the holder is subscribing again (module docstring)
                    sent = await self.redis.publish(self._cmd + server_id, text) > 0
                # Do not wait out the deadline on a holder that died or lost the unit.
                if loop.time() >= watch_at:
                    watch_at = loop.time() + _WATCH_S
                    if not await self._still_held(server_id, device_id, epoch):
                        raise HolderChanged(device_id, server_id)
        finally:
            self._pending.pop(request_id, None)
        if "error" in reply:
            raise CommandFailed(reply["error"], reply["message"])
        return reply["ack"]

    async def _still_held(self, server_id, device_id, epoch):
        if not await self.alive(server_id):
            return False
        status = await self.hub.registry.get_device(device_id)
        return status.server_id == server_id and status.epoch == epoch

    async def announce_takeover(self, device_id, epoch):
        await self.redis.publish(
            self._takeover,
            json.dumps({"device_id": device_id, "epoch": epoch, "server_id": self.server_id}),
        )

    async def _listen(self):
        """Deliver routed commands, replies and takeovers; after a lost connection (Valkey
        restarting), subscribe again on a fresh one. Reads wait at most _POLL_S at a time:
        a blocking read would hit the client's socket timeout whenever the cluster is quiet."""
        while True:
            try:
                while True:
                    message = await self.pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=_POLL_S
                    )
                    if message is not None:
                        self._dispatch(message["channel"].decode(), json.loads(message["data"]))
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001
                self.log.warning("cluster_listen_failed", reason=str(e))
            await self._resubscribe()

    async def _resubscribe(self):
        """Subscribe again on a fresh connection, trying every _RESUBSCRIBE_S until Valkey
        answers: what is published to this instance meanwhile reaches nobody, and waits for
        it (module docstring). Logged once per outage."""
        failures = 0
        while True:
            await asyncio.sleep(_RESUBSCRIBE_S)
            try:
                await self.pubsub.aclose()
                self.pubsub = self.redis.pubsub()
                await self.pubsub.subscribe(
                    self._cmd + self.server_id, self._reply + self.server_id, self._takeover
                )
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - not back yet: try again
                if not failures:
                    self.log.warning("cluster_resubscribe_failed", reason=str(e))
                failures += 1
                continue
            self.log.info("cluster_resubscribed", attempts=failures + 1)
            return

    def _dispatch(self, channel, msg):
        if channel == self._takeover:
            if msg["server_id"] != self.server_id:
                self.hub.tasks.spawn(self.hub.drop_older(msg["device_id"], msg["epoch"]))
        elif channel.startswith(self._reply):
            future = self._pending.get(msg["id"])
            if future and not future.done():
                future.set_result(msg)
        else:
            self.hub.tasks.spawn(self._serve(msg))

    async def _serve(self, msg):
        """Run a routed command here, if the caller's epoch is still this unit's session."""
        self.routed_in += 1
        until = asyncio.get_running_loop().time() + msg["timeout_s"] + 1  # the caller's deadline
        reply = {"id": msg["id"]}
        session = self.hub.session(msg["device_id"])
        if session is None or session.epoch != msg["epoch"]:
            reply.update(
                error="device_offline",
                message=f"Unit {msg['device_id']} is no longer held by server {self.server_id}.",
            )
        else:
            try:
                reply["ack"] = await session.command(
                    msg["kind"], msg["timeout_s"], msg["txn_id"], **msg["fields"]
                )
            except CommandFailed as e:
                reply.update(error=e.code, message=e.message)
        await self._answer(msg["reply_to"], json.dumps(reply), until)

    async def _answer(self, caller, text, until):
        """Publish a reply until the caller receives it or stops waiting (loop time `until`).
        A reply sent twice is taken once, so a publish that failed (Valkey going away) is
        repeated too."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                if await self.redis.publish(self._reply + caller, text):
                    return
                reason = "not subscribed"
            except ValkeyError as e:
                reason = str(e)
            if loop.time() + _RESEND_S > until:
                self.log.warning("cluster_reply_lost", caller=caller, reason=reason)
                return
            await asyncio.sleep(_RESEND_S)
