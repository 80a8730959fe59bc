"""The host's `/ws/device` end, `host.devices.ServerWebSocket` (the firmware's
`firmware.net.ws.WebSocket` accepting an upgrade that host/http.py parsed), against a real
`websockets` 17 client over 127.0.0.1."""

import asyncio

import pytest
from websockets.asyncio.client import connect as websockets_connect
from websockets.exceptions import ConnectionClosedError

from firmware.net import ws
from firmware.proto.server import ServerProtocol, parse_request_head
from host.devices import ServerWebSocket

TIMEOUT = 5


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


async def host_echo(reader, writer, log, max_size):
    """The host's end: the head parsed as host/http.py does, then ServerWebSocket echoes text
    and answers binary with its length, logging what it received and how it ended."""
    request = parse_request_head(await reader.readuntil(b"\r\n\r\n"))
    log.append(request)
    conn = ServerWebSocket(reader, writer, ServerProtocol(max_size))
    await conn.accept(request, b"")
    try:
        while True:
            message = await conn.recv()
            log.append(message)
            await conn.send(message if isinstance(message, str) else f"{len(message)} bytes")
    except ws.ConnectionClosed as e:
        log.append(e)
    finally:
        conn.abort()


async def start_host(log, max_size=4096):
    server = await asyncio.start_server(lambda r, w: host_echo(r, w, log, max_size), "127.0.0.1", 0)
    return server, f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ws/device"


def test_websockets_client_exchanges_messages_with_the_hosts_end():
    log = []

    async def main():
        server, url = await start_host(log)
        async with server:
            async with websockets_connect(url, max_size=None) as client:
                await client.send("grüße")
                assert await client.recv() == "grüße"
                await client.send(b"\x00\xff" * 1000)
                assert await client.recv() == "2000 bytes"
                await client.send(["frag", "ment", "ed"])
                assert await client.recv() == "fragmented"
                # The client's ping is answered without the application's help.
                assert await asyncio.wait_for(await client.ping(b"hb"), TIMEOUT) >= 0
            assert (client.close_code, client.protocol.close_rcvd.code) == (1000, 1000)

    run(main())
    request, *messages, ended = log
    assert (request.method, request.path) == ("GET", "/ws/device")
    assert messages == ["grüße", b"\x00\xff" * 1000, "fragmented"]
    assert ended.code == 1000


def test_oversized_message_from_a_websockets_client_is_closed_with_1009():
    log = []

    async def main():
        server, url = await start_host(log, max_size=1024)
        async with server:
            async with websockets_connect(url) as client:
                await client.send("x" * 2000)
                with pytest.raises(ConnectionClosedError) as caught:
                    await client.recv()
            assert caught.value.rcvd.code == 1009
            assert "the limit is 1024" in caught.value.rcvd.reason

    run(main())
    assert log[-1].code == 1009
