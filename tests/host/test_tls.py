"""`qrfleet serve --tls-cert --tls-key`: https:// and wss:// on one port, checked by the unit
and the API client against the shop's own CA."""

import ssl

import pytest

from firmware.net import tls, ws
from firmware.proto.auth import Untrusted
from tests.conftest import wait_for
from tests.host.boards import (
    link_and_sell,
    serial_log,
    shows,
    start_board,
    status_screen,
    untrusted_screen,
)
from tests.host.conftest import Shop
from tools.certs import CertificateAuthority
from tools.serverproc import running_server


@pytest.fixture
def shop_ca(tmp_path):
    return CertificateAuthority(tmp_path, "shop")


@pytest.fixture
def tls_server(tmp_path, shop_ca):
    with running_server(tmp_path, heartbeat_s=1, tls=shop_ca.issue(), ca_file=shop_ca.pem) as s:
        yield s


def test_a_unit_over_wss_shows_a_cashiers_qr_requested_over_https(tls_server, shop_ca, background):
    assert tls_server.url.startswith("https://127.0.0.1:")
    assert tls_server.device_url.startswith("wss://127.0.0.1:")
    shop = Shop(tls_server, background)
    agent = shop.agent("till-1")
    unit = shop.unit(1, online=False)
    unit.session.tls = tls.tls_context(shop_ca.der)  # what Session(ca=...) builds
    shop.start(unit)
    shop.link(agent, "till-1", unit)

    doc = agent.post("/api/agents/till-1/qr", {"payload": "upi://pay?pa=shop@bank&am=2.50"})

    assert doc["verified"] and doc["device_id"] == unit.device_id
    assert unit.shown[-1] == ("payment", "upi://pay?pa=shop@bank&am=2.50")
    shop.stop(unit)


def test_a_unit_that_does_not_trust_the_servers_certificate_does_not_connect(
    tls_server, background, tmp_path
):
    stranger = CertificateAuthority(tmp_path, "elsewhere")

    with pytest.raises(Untrusted, match="signed by a CA this unit does not trust"):
        background.run(ws.connect(tls_server.device_url, ssl_context=tls.tls_context(stranger.der)))
    with pytest.raises(ValueError, match="needs a TLS trust anchor"):
        background.run(ws.connect(tls_server.device_url))  # a unit has no CA store


# Virtual boards: the firmware's own TLS (mbedTLS on the MicroPython Unix port) against a real
# server, with the trust anchor from the config provisioning writes.


def test_a_board_trusting_the_shops_ca_shows_a_verified_qr_over_wss(
    tls_server, shop_ca, background, tmp_path
):
    shop = Shop(tls_server, background)
    board = start_board(shop, tmp_path / "board", [tls_server.device_url], shop_ca.der)
    try:
        link_and_sell(shop, board)  # verified by the server, read back off the screen
        log = serial_log(board)
        # Its clock read 2000 at power-on, as a unit's: set from the bench's time server first.
        assert log.index("clock set from pool.ntp.org: ") < log.index(
            f"online at {tls_server.device_url}"
        )
    finally:
        background.run(board.stop())


def test_a_board_whose_clock_cannot_be_set_says_so_and_stays_off_a_wss_server(
    tls_server, shop_ca, background, tmp_path
):
    """No answer from the time server: its clock reads 2000, when no certificate was valid yet,
    so it does not try the server; it keeps asking, and says why on screen and serial port."""
    shop = Shop(tls_server, background)
    board = start_board(
        shop, tmp_path / "board", [tls_server.device_url], shop_ca.der, answers_time=False
    )
    try:
        line = (
            "qrfleet: clock not set: pool.ntp.org: no answer to 3 requests in 2000 ms each; "
            "wss:// servers wait for it"
        )
        wait_for(lambda: serial_log(board).count(line) >= 2, 40, "two failed syncs logged")
        assert shows(board, status_screen("clock", "pool.ntp.org"))  # "Clock not set"
        assert shop.admin.get(f"/api/devices/{board.device_id}")["status"] != "online"
        assert "not trusted" not in serial_log(board)  # no handshake was tried

        board.radio.answers_time = True  # the shop's network lets NTP through again
        wait_for(lambda: "online at" in serial_log(board), 30, "online once the clock is set")
        assert "clock set from pool.ntp.org" in serial_log(board)
    finally:
        background.run(board.stop())


@pytest.mark.parametrize(
    "case, reason",
    [
        ("another CA", "its TLS certificate is signed by a CA this unit does not trust"),
        ("another host name", "its TLS certificate is issued for another host name"),
        ("expired", "its TLS certificate has expired"),
    ],
)
def test_a_board_refuses_a_server_whose_certificate_fails_and_says_which_way(
    case, reason, shop_ca, background, tmp_path
):
    anchor, issue = shop_ca.der, {}
    if case == "another CA":
        anchor = CertificateAuthority(tmp_path, "elsewhere").der
    elif case == "another host name":
        issue = {"hosts": ["qr.elsewhere.example"]}
    else:
        issue = {"valid_days": (-30, -1)}
    with running_server(tmp_path, tls=shop_ca.issue(**issue), ca_file=shop_ca.pem) as server:
        server.ssl_context = _unchecked  # the test's own admin calls; the unit checks
        shop = Shop(server, background)
        board = start_board(shop, tmp_path / "board", [server.device_url], anchor)
        try:
            url = server.device_url
            wait_for(lambda: f"{url} is not trusted: {reason}" in serial_log(board), 30, reason)
            wait_for(lambda: shows(board, untrusted_screen(url)), 5, "the untrusted screen")
            assert shop.admin.get(f"/api/devices/{board.device_id}")["status"] != "online"
        finally:
            background.run(board.stop())


def _unchecked():
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
