"""The unit's WebSocket client, `firmware.net.ws.connect()`, against a real `websockets` 17
server over 127.0.0.1 (the host's end of the same adapter: tests/host/test_server_websocket.py).
"""

import asyncio

import pytest
from websockets.asyncio.server import serve

from firmware.net import ws
from firmware.proto.errors import HandshakeError

TIMEOUT = 5


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


async def echo(conn):
    """websockets handler: echoes messages; a few words ask for something else."""
    async for message in conn:
        if message == "fragments please":
            await conn.send(["frag", "ment", "ed"])
        elif message == "binary please":
            await conn.send(bytes(range(256)) * 10)
        elif message == "ping me":
            pong = await conn.ping(b"are you there")
            await asyncio.wait_for(pong, TIMEOUT)
            await conn.send("pong arrived")
        elif message == "big please":
            await conn.send(b"x" * 5000)
        elif message == "go away":
            await conn.close(1001, "restarting")
        else:
            await conn.send(message)


async def serve_recording(closes):
    """A websockets echo server that records the close code and reason of each connection."""

    async def handler(conn):
        try:
            await echo(conn)
        finally:
            closes.append((conn.close_code, conn.close_reason))

    server = await serve(handler, "127.0.0.1", 0)
    return server, f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ws"


def test_unit_client_exchanges_messages_with_a_websockets_server():
    closes = []

    async def main():
        server, url = await serve_recording(closes)
        async with server:
            conn = await ws.connect(url)
            await conn.send("héllo")
            assert await conn.recv() == "héllo"
            await conn.send("binary please")
            assert await conn.recv() == bytes(range(256)) * 10
            await conn.send("fragments please")
            assert await conn.recv() == "fragmented"
            # The server's ping is answered without the application's help.
            await conn.send("ping me")
            assert await conn.recv() == "pong arrived"
            await conn.close(1000, "done")
            # The close handshake completed: the server closed the TCP connection.
            assert await conn.reader.read() == b""

    run(main())
    assert closes == [(1000, "done")]


def test_unit_client_reports_the_code_a_websockets_server_closes_with():
    async def main():
        server, url = await serve_recording([])
        async with server:
            conn = await ws.connect(url)
            await conn.send("go away")
            with pytest.raises(ws.ConnectionClosed) as caught:
                await conn.recv()
            assert (caught.value.code, caught.value.reason) == (1001, "restarting")

    run(main())


def test_message_over_the_units_limit_from_a_websockets_server_is_closed_with_1009():
    closes = []

    async def main():
        server, url = await serve_recording(closes)
        async with server:
            conn = await ws.connect(url)
            await conn.send("big please")
            with pytest.raises(ws.ConnectionClosed) as caught:
                await conn.recv()
            assert caught.value.code == 1009
            assert "the limit is 4096" in caught.value.reason

    run(main())
    assert [code for code, _ in closes] == [1009]


def test_unit_client_refuses_a_server_answering_with_a_wrong_accept():
    async def impostor(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        )
        await writer.drain()
        await reader.read()
        writer.close()

    async def main():
        server = await asyncio.start_server(impostor, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            with pytest.raises(HandshakeError, match="Sec-WebSocket-Accept"):
                await ws.connect(f"ws://127.0.0.1:{port}/ws")

    run(main())
