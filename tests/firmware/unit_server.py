"""A minimal server for firmware tests, built on the `websockets` library (an independent
WebSocket implementation) and speaking the app protocol with firmware.proto's messages."""

import asyncio
import itertools

import websockets
from websockets.asyncio.server import serve

from firmware.proto import auth, messages
from firmware.proto.close import CLOSE_POLICY_VIOLATION


class UnitServer:
    def __init__(self, secrets, heartbeat_s=1, process_response=None):
        self.secrets = secrets  # device_id -> secret
        self.heartbeat_s = heartbeat_s
        self.process_response = process_response
        self.heartbeats = []
        self.sessions = {}
        self.authenticated = 0
        self.refused = 0
        self._ids = itertools.count(1)
        self._pending = {}
        self._server = None
        self.port = 0

    async def start(self, port=0):
        self._server = await serve(
            self._handler,
            "127.0.0.1",
            port,
            compression=None,
            ping_interval=None,
            process_response=self.process_response,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    @property
    def url(self):
        return f"ws://127.0.0.1:{self.port}/ws/device"

    async def stop(self):
        self._server.close()
        await self._server.wait_closed()
        self.sessions.clear()

    async def _handler(self, conn):
        link = await authenticate(conn, self.secrets)
        if link is None:
            self.refused += 1
            return
        device_id = link.device_id
        await link.send(
            messages.encode("welcome", heartbeat_s=self.heartbeat_s, server_id="test-server")
        )
        self.authenticated += 1
        self.sessions[device_id] = link
        try:
            async for text in conn:
                msg = messages.from_device(link.open(text))
                if msg["type"] == "heartbeat":
                    self.heartbeats.append(msg)
                    await link.send(messages.encode("heartbeat_ack"))
                elif msg["id"] in self._pending:
                    self._pending.pop(msg["id"]).set_result(msg)
        except websockets.ConnectionClosed:
            pass
        finally:
            if self.sessions.get(device_id) is link:
                del self.sessions[device_id]

    async def command(self, device_id, kind, timeout=10, **fields):
        command_id = next(self._ids)
        return await self.raw_command(
            device_id, command_id, messages.encode(kind, id=command_id, **fields), timeout
        )

    async def raw_command(self, device_id, command_id, text, timeout=10):
        """Send any text as a command and wait for the reply carrying `command_id`."""
        future = asyncio.get_running_loop().create_future()
        self._pending[command_id] = future
        await self.sessions[device_id].send(text)
        return await asyncio.wait_for(future, timeout)

    async def send_raw(self, device_id, text):
        await self.sessions[device_id].send(text)


async def authenticate(conn, secrets):
    """The server's side of the handshake (firmware.proto.auth) on a `websockets` connection
    -> a SealedLink, or None when the unit is refused (an error, then close 1008)."""
    hello = messages.from_device(await conn.recv())
    device_id = hello["device_id"]
    secret = secrets.get(device_id)
    nonce = auth.new_nonce()
    proof = auth.proof(secret, hello["nonce"], nonce, device_id) if secret else "0" * 64
    await conn.send(messages.encode("challenge", nonce=nonce, proof=proof))
    try:
        reply = messages.from_device(await conn.recv())
    except websockets.ConnectionClosed:
        return None  # the unit did not take our proof
    if not secret or not auth.check_answer(secret, nonce, hello["nonce"], device_id, reply["mac"]):
        await conn.send(
            messages.encode("error", code=messages.AUTH_FAILED, message="authentication failed")
        )
        await conn.close(CLOSE_POLICY_VIOLATION, "authentication failed")
        return None
    link = SealedLink(conn, auth.Channel(secret, hello["nonce"], nonce, device_id, "server"))
    link.device_id = device_id
    return link


class SealedLink:
    """A `websockets` connection whose messages are sealed as a server seals them, in the order
    they are sent; `open(text)` checks one that arrived."""

    def __init__(self, conn, channel):
        self.conn = conn
        self.channel = channel
        self.device_id = None
        self._order = asyncio.Lock()

    def open(self, text):
        return self.channel.open(text)

    async def send(self, text):
        async with self._order:
            await self.conn.send(self.channel.seal(text))

    async def close(self, *args):
        await self.conn.close(*args)
