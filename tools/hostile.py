"""Hostile and broken peers, for the tests and the benchmark (tools/bench/abuse.py) that show
they cost only themselves.

A unit here is reduced to its connection: it logs in with the firmware's own WebSocket client,
then does only what it is told (answer commands, fall silent, stop reading, flood pings). The
loads at the end run until cancelled, each starting over when the server ends an attempt.
"""

import asyncio
import socket
import time

from firmware.net import ws
from firmware.proto import auth, messages
from firmware.proto.errors import ProtocolError

ATTACKER = "127.0.0.2"  # another address on the loopback: a peer other than the cashier's
BODYLESS_POST = (
    b"POST /api/locations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: 10\r\n\r\n"
)
STALL_MESSAGES = 60000  # malformed messages: 7 MB of answers, past the kernel's buffers


async def hello(url, device_id, proto=messages.PROTOCOL_VERSION, opener=ws.open_tcp):
    """Connect and say hello -> (connection, the server's answer as a dict, our nonce)."""
    conn = await ws.connect(url, opener=opener)
    nonce = auth.new_nonce()
    await conn.send(
        messages.encode("hello", device_id=device_id, fw="raw", proto=proto, nonce=nonce)
    )
    return conn, messages.from_server(await conn.recv()), nonce


async def log_in(url, device_id, secret, opener=ws.open_tcp):
    """-> an authenticated connection, past the server's welcome (its proof is not checked)."""
    conn, challenge, nonce = await hello(url, device_id, opener=opener)
    await conn.send(
        messages.encode("auth", mac=auth.answer(secret, challenge["nonce"], nonce, device_id))
    )
    conn.channel = auth.Channel(secret, nonce, challenge["nonce"], device_id, "unit")
    welcome = messages.from_server(await conn.recv())
    assert welcome["type"] == "welcome", welcome
    return conn


async def answer_commands(conn, received):
    """Ack every command as a unit would (without drawing), appending each to `received`."""
    while True:
        msg = messages.from_server(await conn.recv())
        if "id" in msg and msg["type"] not in ("error", "heartbeat_ack"):
            received.append(msg)
            await conn.send(messages.encode("ack", id=msg["id"]))


async def listen_until_closed(conn):
    """Answer nothing, send nothing -> (seconds until the server closed, close code)."""
    started = time.monotonic()
    try:
        while True:
            await conn.recv()
    except ws.ConnectionClosed as e:
        return time.monotonic() - started, e.code


async def small_window(host, port, ssl=None):
    """An opener whose socket has a 4 KB receive buffer: a unit that stops reading fills it
    (and the server's buffers behind it) quickly."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    return await asyncio.open_connection(sock=sock)


def send_raw(conn, frames):
    """Write what `frames(conn.proto)` queued, without waiting for the peer to take it."""
    frames(conn.proto)
    for chunk in conn.proto.data_to_send():
        conn.writer.write(chunk)


def stall(conn):
    """Stop reading, ever, and send STALL_MESSAGES malformed messages, each answered with an
    error the server cannot deliver."""
    conn.writer.transport.pause_reading()
    # Sealed, so the server reads each one and answers it (a wrong MAC would end it at once).
    malformed = [conn.channel.seal("x") for _ in range(STALL_MESSAGES)]
    send_raw(conn, lambda proto: [proto.send_text(text) for text in malformed])


# -- loads: coroutines that run until cancelled


async def bodyless_posts(host, port, count=300):
    """Keeps `count` connections from ATTACKER open, each a POST head whose body never comes."""

    async def one():
        reader, writer = await asyncio.open_connection(host, port, local_addr=(ATTACKER, 0))
        try:
            writer.write(BODYLESS_POST)
            await reader.read()  # until the server gives up on it
        finally:
            writer.close()

    await asyncio.gather(*(_again(one) for _ in range(count)))


async def stalled_unit(url, device_id, secret, hold_s=8):
    """Logs in as the unit and stalls (see stall()); every `hold_s`, again."""

    async def one():
        conn = await log_in(url, device_id, secret, opener=small_window)
        try:
            stall(conn)
            await asyncio.sleep(hold_s)
        finally:
            conn.abort()

    await _again(one)


async def ping_flood(url, device_id, secret, batch=500):
    """Logs in as the unit and sends pings, `batch` at a time, until the server closes."""

    async def one():
        conn = await log_in(url, device_id, secret)
        reading = asyncio.ensure_future(listen_until_closed(conn))
        try:
            while not reading.done():
                send_raw(conn, lambda proto: [proto.send_ping(b"p") for _ in range(batch)])
                await conn.writer.drain()
                await asyncio.sleep(0.01)
        except (ProtocolError, OSError):  # closed meanwhile
            pass
        finally:
            reading.cancel()
            conn.abort()

    await _again(one)


async def _again(attack):
    while True:
        try:
            await attack()
        except (OSError, asyncio.TimeoutError, ProtocolError, ws.ConnectionClosed):
            await asyncio.sleep(0.1)
