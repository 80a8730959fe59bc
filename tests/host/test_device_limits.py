"""Units that misbehave on their connection cost only themselves: a unit that stops reading, a
unit that floods pings, a unit that speaks another protocol version."""

import asyncio
import time

import pytest

from firmware.net import ws
from firmware.proto import auth, messages
from host.api import COMMAND_TIMEOUT_S
from host.client import ApiClientError
from host.devices import PING_BURST
from tests.conftest import wait_for
from tests.host.conftest import Shop
from tools import hostile, provision
from tools.bench.stats import percentile
from tools.serverproc import running_server

HEARTBEAT_S = 1  # the `server` fixture's


def registered(shop, n):
    """A unit registered at the shop, not started -> (device_id, secret)."""
    device_id, secret = f"qrf-00000000{n:04x}", provision.new_secret()
    shop.admin.post(
        "/api/devices", {"device_id": device_id, "secret": secret, "location_id": shop.location}
    )
    return device_id, secret


def linked_raw_unit(shop, background, agent, agent_id, n):
    """A registered unit logged in over a small receive window, acking commands, linked to
    `agent_id` by the pairing code it was sent -> (device_id, connection, its answering task)."""
    device_id, secret = registered(shop, n)
    conn = background.run(
        hostile.log_in(shop.server.device_url, device_id, secret, opener=hostile.small_window)
    )
    received = []
    answering = background.call(asyncio.ensure_future, hostile.answer_commands(conn, received))
    wait_for(lambda: any(m["type"] == "show_pairing" for m in received), what="a pairing code")
    code = next(m["code"] for m in received if m["type"] == "show_pairing")
    agent.post(
        f"/api/agents/{agent_id}/devices",
        {"pairing": messages.pairing_uri(device_id, code)},
    )
    return device_id, conn, answering


def test_a_unit_that_stops_reading_fails_its_owners_qr_in_time_and_blocks_no_watchdog(
    shop, background
):
    agent = shop.agent("till-1")
    device_id, conn, answering = linked_raw_unit(shop, background, agent, "till-1", 1)
    silent_id, silent_secret = registered(shop, 2)

    async def stall():
        answering.cancel()
        hostile.stall(conn)

    background.run(stall())
    # The server's answers pile up, and it stops reading the unit; by the time the unit is
    # found silent, another unit has logged in and goes silent a watchdog round later.
    time.sleep(2 * HEARTBEAT_S)
    silent_conn = background.run(hostile.log_in(shop.server.device_url, silent_id, silent_secret))
    silence = background.call(asyncio.ensure_future, hostile.listen_until_closed(silent_conn))

    started = time.monotonic()
    with pytest.raises(ApiClientError) as refused:
        agent.post("/api/agents/till-1/qr", {"payload": "upi://pay?pa=shop@bank&am=1.00"})
    waited = time.monotonic() - started

    assert refused.value.code in ("device_offline", "device_timeout")
    assert waited < COMMAND_TIMEOUT_S + 1.5
    silent_s, code = background.run(asyncio.wait_for(asyncio.shield(silence), 15))
    assert code == 1001
    assert silent_s < 5 * HEARTBEAT_S + 1
    wait_for(
        lambda: shop.admin.get(f"/api/devices/{device_id}")["status"] == "offline",
        what="the stalled unit to be offline",
    )
    # Given up by its send timeout (5 s) or by the silence watchdog's close (3 s, then a 2 s
    # close handshake), whichever comes first: either way it ends, so neither is asserted.
    conn.abort()


def test_a_ping_flood_is_closed_with_1008_and_the_api_stays_fast(shop, background):
    device_id, secret = registered(shop, 1)
    flooding = True
    closes = []

    async def flood():
        while flooding:
            conn = await hostile.log_in(shop.server.device_url, device_id, secret)
            hostile.send_raw(conn, lambda proto: [proto.send_ping(b"p") for _ in range(2000)])
            try:
                while True:
                    await conn.recv()
            except ws.ConnectionClosed as e:
                closes.append(e)

    flooder = background.call(asyncio.ensure_future, flood())
    health_ms = []
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        started = time.perf_counter()
        shop.admin.get("/api/health")
        health_ms.append((time.perf_counter() - started) * 1000)
        time.sleep(0.02)
    flooding = False
    background.run(asyncio.wait_for(asyncio.shield(flooder), 10))

    assert closes and all(e.code == 1008 for e in closes)
    assert "pings a second" in closes[0].reason
    assert percentile(health_ms, 50) < 50
    assert shop.admin.get("/api/metrics")["ping_floods"] == len(closes)


def test_a_few_pings_are_answered_and_the_session_goes_on(shop, background):
    device_id, secret = registered(shop, 1)

    async def ping_a_few():
        conn = await hostile.log_in(shop.server.device_url, device_id, secret)
        hostile.send_raw(conn, lambda proto: [proto.send_ping(b"p") for _ in range(PING_BURST)])
        await conn.send(
            messages.encode(
                "heartbeat", uptime_s=1, free_heap=1, rssi=None, fw="raw", screen="status"
            )
        )
        reply = None
        while reply is None or reply["type"] != "heartbeat_ack":
            reply = messages.from_server(await conn.recv())
        await conn.close()

    background.run(ping_a_few())
    assert shop.admin.get("/api/metrics")["ping_floods"] == 0


@pytest.mark.parametrize(
    "proto", [1, messages.PROTOCOL_VERSION + 1], ids=["older-firmware", "newer-firmware"]
)
def test_a_unit_speaking_another_protocol_version_is_told_so_and_closed(shop, background, proto):
    device_id, secret = registered(shop, 1)

    async def hello_in_another_version():
        conn = await ws.connect(shop.server.device_url)
        # A version 1 unit sends no nonce of its own: its hello must still be understood.
        await conn.send(messages.encode("hello", device_id=device_id, fw="old", proto=proto))
        answer = messages.from_server(await conn.recv())
        with pytest.raises(ws.ConnectionClosed) as closed:
            await conn.recv()
        return answer, closed.value.code

    answer, code = background.run(hello_in_another_version())

    assert answer["type"] == "error"
    assert answer["code"] == messages.UNSUPPORTED_VERSION
    assert f"version {messages.PROTOCOL_VERSION}" in answer["message"]
    assert code == 1008
    assert shop.admin.get(f"/api/devices/{device_id}")["status"] == "offline"
    assert shop.admin.get("/api/metrics")["unsupported_version"] == 1


def test_strangers_do_not_spend_the_admission_meant_for_reconnecting_units(tmp_path, background):
    strangers = 40  # at 2 admissions a second, 20 s of turns if strangers took them
    with running_server(tmp_path, heartbeat_s=1, extra=["--new-sessions-per-s", "2"]) as server:
        shop = Shop(server, background)
        device_id, secret = registered(shop, 1)

        async def stranger(n):
            conn, challenge, nonce = await hostile.hello(server.device_url, f"qrf-5e5e5e5e{n:04x}")
            await conn.send(
                messages.encode("auth", mac=auth.answer(secret, challenge["nonce"], nonce, "x"))
            )
            return (await hostile.listen_until_closed(conn))[1]

        async def log_in_during_a_storm():
            storm = asyncio.gather(*(stranger(n) for n in range(strangers)))
            await asyncio.sleep(0.3)  # the strangers are in line first
            started = time.monotonic()
            conn = await hostile.log_in(server.device_url, device_id, secret)
            waited = time.monotonic() - started
            await conn.close()
            return await storm, waited

        codes, waited = background.run(log_in_during_a_storm(), timeout=60)

    assert codes == [1008] * strangers
    assert waited < 2
