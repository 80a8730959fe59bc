"""A machine on the unit's path (a rogue access point, a spoofed DNS answer, a compromised router)
cannot make a unit show its QR: a virtual board, a real server, and a proxy between them that
rewrites what passes, or answers in the server's place."""

import asyncio
import json
import ssl

import pytest
import websockets
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from firmware import qr
from firmware.proto import auth, messages
from host.client import ApiClientError
from tests.conftest import wait_for
from tests.host.boards import link_and_sell, serial_log, shows, start_board, untrusted_screen
from tests.host.conftest import Shop
from tools.certs import CertificateAuthority
from tools.harness.tether import Forwarder
from tools.serverproc import running_server
from tools.vboard.screen import decode_qr

ATTACKER = "upi://pay?pa=attacker@bank&am=2.50"


class Proxy:
    """Terminates the unit's WebSocket and opens its own to the server (websockets, an
    independent implementation). `mode`, changed at any time, decides what it does with the
    next connection: "relay" passes every message; "rewrite" puts ATTACKER in each show_qr
    on its way to the unit and answers the server with a forged ack; "impersonate" never
    reaches the server and plays it with a challenge of its own."""

    def __init__(self, upstream, tls=None, upstream_tls=None):
        """`tls`: the server side's ssl context (wss://, with a certificate of the attacker's);
        `upstream_tls`: the one it reaches the server with."""
        self.upstream = upstream
        self.tls = tls
        self.upstream_tls = upstream_tls
        self.mode = "relay"
        self.rewritten = 0
        self.answers_to_impostor = 0
        self.port = None
        self._server = None
        self._live = set()

    async def start(self):
        self._server = await serve(self._unit, "127.0.0.1", 0, ping_interval=None, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self):
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.port}/ws/device"

    async def stop(self):
        self._server.close()
        await self._server.wait_closed()

    async def switch(self, mode):
        """Take up `mode`, and drop the connections made before: units come back through it."""
        self.mode = mode
        for unit in list(self._live):
            await unit.close()

    async def _unit(self, unit):
        self._live.add(unit)
        try:
            if self.mode == "impersonate":
                await self._impersonate(unit)
                return
            async with connect(self.upstream, ping_interval=None, ssl=self.upstream_tls) as server:
                await asyncio.gather(self._to_server(unit, server), self._to_unit(server, unit))
        except websockets.ConnectionClosed:
            pass
        finally:
            self._live.discard(unit)

    async def _to_server(self, unit, server):
        try:
            async for text in unit:
                await server.send(text)
        finally:
            await server.close()

    async def _to_unit(self, server, unit):
        try:
            async for text in server:
                if self.mode == "rewrite" and '"show_qr"' in text:
                    mac, body = text[: auth.MAC_DIGITS], json.loads(text[auth.MAC_DIGITS :])
                    body["payload"] = ATTACKER
                    await unit.send(mac + messages.encode("show_qr", **_fields(body)))
                    await server.send(_forged_ack(body["id"]))
                    self.rewritten += 1
                    continue
                await unit.send(text)
        finally:
            await unit.close()

    async def _impersonate(self, unit):
        await unit.recv()  # hello
        # Without the unit's secret, the proof can only be a guess.
        await unit.send(messages.encode("challenge", nonce=auth.new_nonce(), proof="ab" * 32))
        await unit.recv()  # a unit that took the proof answers; one that did not has closed
        self.answers_to_impostor += 1
        await unit.send(messages.encode("welcome", heartbeat_s=1, server_id="impostor"))
        await unit.send(messages.encode("show_qr", id=1, payload=ATTACKER))
        await unit.recv()


def _fields(body):
    return {k: v for k, v in body.items() if k != "type"}


def _forged_ack(command_id):
    """The ack a unit would send for ATTACKER's symbol: the digest the server checks."""
    symbol = qr.encode(ATTACKER, "M")
    return messages.encode(
        "ack",
        id=command_id,
        version=symbol.version,
        mask=symbol.mask,
        ecc="M",
        sha256=messages.matrix_digest(symbol),
        scale=1,
        screen="payment",
    )


@pytest.fixture
def shop_server(tmp_path):
    with running_server(tmp_path, heartbeat_s=1) as server:
        yield server


@pytest.fixture
def shop(shop_server, background):
    return Shop(shop_server, background)


@pytest.fixture
def proxy(shop_server, background):
    proxy = Proxy(shop_server.device_url)
    background.run(proxy.start())
    yield proxy
    background.run(proxy.stop())


@pytest.fixture
def unit(shop, proxy, background, tmp_path):
    """A virtual board registered with the server, whose only way to it is through the proxy."""
    board = start_board(shop, tmp_path / "board", [proxy.url])
    yield board
    background.run(board.stop())


@pytest.fixture
def till(shop, unit):
    """A cashier linked to the unit while the proxy only relays: everything works."""
    return shop, link_and_sell(shop, unit)


def back_online(shop, unit, epoch):
    device = shop.admin.get(f"/api/devices/{unit.device_id}")
    return device["status"] == "online" and device["epoch"] > epoch


def test_a_rewritten_qr_and_a_forged_ack_are_refused_on_both_sides(unit, proxy, till, background):
    shop, agent = till
    before = shop.admin.get(f"/api/devices/{unit.device_id}")["epoch"]
    background.run(proxy.switch("rewrite"))
    wait_for(lambda: back_online(shop, unit, before), 30, "the unit to come back via the proxy")

    with pytest.raises(ApiClientError) as refused:
        agent.post("/api/agents/till-1/qr", {"payload": "upi://pay?pa=shop@bank&am=2.50"})

    assert refused.value.status == 503, refused.value
    assert proxy.rewritten == 1, refused.value
    wait_for(lambda: "has a wrong MAC" in serial_log(unit), 10, "the unit to refuse the message")
    assert ATTACKER not in decode_qr(unit.dir / "display.pbm")
    assert shop.admin.get("/api/metrics")["bad_macs"] == 1
    assert "device_bad_mac" in open(shop.server.log_path).read()


def test_a_unit_does_not_take_commands_from_an_impostor(unit, proxy, till, background):
    shop, agent = till
    background.run(proxy.switch("impersonate"))

    wait_for(lambda: "could not prove it knows" in serial_log(unit), 30, "the unit to refuse")
    wait_for(lambda: shows(unit, untrusted_screen(proxy.url)), 5, "the untrusted screen")
    assert proxy.answers_to_impostor == 0
    with pytest.raises(ApiClientError) as refused:
        agent.post("/api/agents/till-1/qr", {"payload": "upi://pay?pa=shop@bank&am=3.00"})
    assert refused.value.code == "device_offline"
    assert shows(unit, untrusted_screen(proxy.url))  # no QR at any time


def test_over_wss_a_man_in_the_middle_with_another_cas_certificate_is_refused(tmp_path, background):
    """The router first forwards the unit's TLS to the server; then it hands the unit's
    connections to a proxy with a certificate from the attacker's own CA (for the right host),
    which would relay everything and rewrite every QR."""
    shop_ca = CertificateAuthority(tmp_path, "shop")
    attacker_ca = CertificateAuthority(tmp_path, "attacker")
    with running_server(tmp_path, heartbeat_s=1, tls=shop_ca.issue(), ca_file=shop_ca.pem) as s:
        shop = Shop(s, background)
        attacker_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        attacker_tls.load_cert_chain(*attacker_ca.issue())
        proxy = Proxy(s.device_url, tls=attacker_tls, upstream_tls=s.ssl_context())
        proxy.mode = "rewrite"
        router = Forwarder(("127.0.0.1", int(s.url.rsplit(":", 1)[1])))
        background.run(proxy.start())
        background.run(router.start())
        url = f"wss://127.0.0.1:{router.port}/ws/device"
        unit = start_board(shop, tmp_path / "board", [url], server_ca=shop_ca.der)
        try:
            agent = link_and_sell(shop, unit)

            background.call(router.divert, ("127.0.0.1", proxy.port))

            wait_for(
                lambda: "signed by a CA this unit does not trust" in serial_log(unit),
                30,
                "the unit to refuse the attacker's certificate",
            )
            wait_for(lambda: shows(unit, untrusted_screen(url)), 5, "the untrusted screen")
            wait_for(
                lambda: shop.admin.get(f"/api/devices/{unit.device_id}")["status"] == "offline",
                10,
                "the server to see the unit gone",
            )
            with pytest.raises(ApiClientError) as refused:
                agent.post("/api/agents/till-1/qr", {"payload": "upi://pay?pa=shop@bank&am=3.00"})
            assert refused.value.code == "device_offline"
            assert proxy.rewritten == 0
            assert shows(unit, untrusted_screen(url))  # no QR, the attacker's least of all
            assert f"{url} is not trusted: its TLS certificate is signed by a CA" in (
                serial_log(unit)
            )
            assert shop.admin.get("/api/metrics")["refusals"]["device_offline"] == 1
            assert "device_offline" in open(s.log_path).read()
        finally:
            background.run(unit.stop())
            background.run(router.stop())
            background.run(proxy.stop())
