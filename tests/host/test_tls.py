"""`qrfleet serve --tls-cert --tls-key`: https:// and wss:// on one port, checked by the unit
and the API client against the shop's own CA."""

import pytest

from firmware.net import ws
from firmware.proto.auth import Untrusted
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
    unit.session.tls = ws.tls_context(shop_ca.der)  # what Session(ca=...) builds
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
        background.run(ws.connect(tls_server.device_url, ssl_context=ws.tls_context(stranger.der)))
    with pytest.raises(ValueError, match="needs a TLS trust anchor"):
        background.run(ws.connect(tls_server.device_url))  # a unit has no CA store
