"""Interoperability with a real `websockets` 17 peer over 127.0.0.1, in both roles.

The asyncio code here only moves bytes between a socket and the sans-I/O protocol,
as firmware.net and the host's endpoint do.
"""

import asyncio

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosedError

from firmware.proto import http11, websocket
from firmware.proto.errors import FrameError, HandshakeError, ProtocolError

TIMEOUT = 5


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


class Pump:
    """Moves bytes between an asyncio stream and a protocol; hands out its events."""

    def __init__(self, reader, writer, proto):
        self.reader, self.writer, self.proto = reader, writer, proto
        self.pending = []

    async def flush(self):
        for data in self.proto.data_to_send():
            self.writer.write(data)
        await self.writer.drain()

    async def next_event(self):
        while not self.pending:
            data = await asyncio.wait_for(self.reader.read(4096), TIMEOUT)
            try:
                if data:
                    self.proto.receive_data(data)
                else:
                    self.proto.receive_eof()
            finally:
                self.pending.extend(self.proto.events_received())
                await self.flush()
        return self.pending.pop(0)


async def open_client(port, max_size=websocket.DEFAULT_MAX_SIZE):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    pump = Pump(
        reader, writer, websocket.ClientProtocol(f"127.0.0.1:{port}", "/ws", max_size=max_size)
    )
    await pump.flush()
    return pump


async def echo(ws):
    """websockets handler: echoes messages; a few words ask for something else."""
    async for message in ws:
        if message == "fragments please":
            await ws.send(["frag", "ment", "ed"])
        elif message == "ping me":
            pong = await ws.ping(b"are you there")
            await asyncio.wait_for(pong, TIMEOUT)
            await ws.send("pong arrived")
        elif message == "big please":
            await ws.send(b"x" * 5000)
        elif message == "go away":
            await ws.close(1001, "restarting")
        else:
            await ws.send(message)


def test_client_exchanges_messages_with_a_websockets_server():
    async def main():
        async with serve(echo, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            client = await open_client(port)
            response = await client.next_event()
            assert response.status == 101

            client.proto.send_text("héllo")
            client.proto.send_binary(bytes(range(256)) * 10)
            await client.flush()
            assert await client.next_event() == "héllo"
            assert await client.next_event() == bytes(range(256)) * 10

            # Fragments with a ping between them, both ways.
            client.proto.send_text("frag", fin=False)
            client.proto.send_ping(b"mid")
            client.proto.send_continuation("mented", fin=True)
            client.proto.send_text("fragments please")
            await client.flush()
            pong = await client.next_event()
            assert isinstance(pong, websocket.Pong) and pong.data == b"mid"
            assert await client.next_event() == "fragmented"
            assert await client.next_event() == "fragmented"

            # The server's ping is answered without the application's help.
            client.proto.send_text("ping me")
            await client.flush()
            ping = await client.next_event()
            assert isinstance(ping, websocket.Ping) and ping.data == b"are you there"
            assert await client.next_event() == "pong arrived"

            client.proto.send_close(1000, "done")
            await client.flush()
            close = await client.next_event()
            assert (close.code, client.proto.state) == (1000, websocket.CLOSED)
            assert await client.reader.read() == b""  # the server closes the TCP connection first
            client.writer.close()

    run(main())


def test_client_answers_a_server_close_and_reports_its_code():
    async def main():
        async with serve(echo, "127.0.0.1", 0) as server:
            client = await open_client(server.sockets[0].getsockname()[1])
            await client.next_event()
            client.proto.send_text("go away")
            await client.flush()
            close = await client.next_event()
            assert (close.code, close.reason) == (1001, "restarting")
            client.writer.close()

    run(main())


def test_message_over_max_size_from_a_websockets_server_is_closed_with_1009():
    async def main():
        codes = []

        async def handler(ws):
            try:
                await echo(ws)
            finally:
                codes.append(ws.close_code)

        async with serve(handler, "127.0.0.1", 0) as server:
            client = await open_client(server.sockets[0].getsockname()[1], max_size=4096)
            await client.next_event()
            client.proto.send_text("big please")
            await client.flush()
            with pytest.raises(FrameError) as caught:
                await client.next_event()
            assert caught.value.code == 1009
            client.writer.close()
        assert codes == [1009]

    run(main())


def test_server_answering_with_a_wrong_accept_fails_the_handshake():
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
            client = await open_client(server.sockets[0].getsockname()[1])
            with pytest.raises(HandshakeError, match="Sec-WebSocket-Accept"):
                await client.next_event()
            assert client.proto.state == websocket.CLOSED
            client.writer.close()

    run(main())


async def serve_with_protocol(reader, writer, log, max_size=websocket.DEFAULT_MAX_SIZE):
    """The server role over asyncio: accepts /ws, echoes messages, logs every event."""
    pump = Pump(reader, writer, websocket.ServerProtocol(max_size))
    try:
        while pump.proto.state != websocket.CLOSED:
            event = await pump.next_event()
            log.append(event)
            if isinstance(event, http11.Request):
                pump.proto.accept(event)
            elif isinstance(event, str):
                pump.proto.send_text(event)
            elif isinstance(event, bytes):
                pump.proto.send_binary(event)
            await pump.flush()
    except ProtocolError as exc:
        log.append(exc)
    finally:
        writer.close()


def test_websockets_client_exchanges_messages_with_the_server_protocol():
    log = []

    async def main():
        server = await asyncio.start_server(
            lambda r, w: serve_with_protocol(r, w, log), "127.0.0.1", 0
        )
        async with server:
            port = server.sockets[0].getsockname()[1]
            async with connect(f"ws://127.0.0.1:{port}/ws", max_size=None) as ws:
                await ws.send("grüße")
                assert await ws.recv() == "grüße"
                await ws.send(b"\x00\xff" * 1000)
                assert await ws.recv() == b"\x00\xff" * 1000
                await ws.send(["frag", "ment", "ed"])
                assert await ws.recv() == "fragmented"
                latency = await asyncio.wait_for(await ws.ping(b"hb"), TIMEOUT)
                assert latency >= 0
            assert (ws.close_code, ws.protocol.close_rcvd.code) == (1000, 1000)

    run(main())
    request = log[0]
    assert (request.method, request.path) == ("GET", "/ws")
    assert [e for e in log[1:] if isinstance(e, (str, bytes))] == [
        "grüße",
        b"\x00\xff" * 1000,
        "fragmented",
    ]
    assert [e.data for e in log if isinstance(e, websocket.Ping)] == [b"hb"]
    assert isinstance(log[-1], websocket.Close) and log[-1].code == 1000


def test_oversized_message_from_a_websockets_client_is_closed_with_1009():
    log = []

    async def main():
        server = await asyncio.start_server(
            lambda r, w: serve_with_protocol(r, w, log, 1024), "127.0.0.1", 0
        )
        async with server:
            port = server.sockets[0].getsockname()[1]
            async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
                await ws.send("x" * 2000)
                with pytest.raises(ConnectionClosedError) as caught:
                    await ws.recv()
            assert caught.value.rcvd.code == 1009
            assert "the limit is 1024" in caught.value.rcvd.reason

    run(main())
    assert isinstance(log[-1], FrameError) and log[-1].code == 1009
