"""Every display profile the firmware supports, end to end on a virtual board at the default heap:
real drivers through the virtual panels, and the virtual-* profiles. Each comes online, shows
its pairing QR and payment QRs that read back byte for byte off its screen, and keeps its heap
over many QRs of the largest payload its panel shows."""

import pytest

from firmware.display import profiles
from host.client import ApiClientError
from tools.profile_heap import SCHEME_PAYLOADS, ProfileUnit, largest_payload, measure
from tools.serverproc import running_server

_SHOWS = 1000


@pytest.fixture(scope="module")
def shop_server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("profiles"), heartbeat_s=1) as server:
        yield server


@pytest.fixture
def unit(request, shop_server, background, tmp_path):
    profile, _, link = request.param.partition(":")
    unit = ProfileUnit(shop_server, tmp_path, profile, background, link=link or "wifi")
    yield unit
    unit.stop()


@pytest.mark.slow
@pytest.mark.parametrize("unit", sorted(profiles.PROFILES), indirect=True)
def test_every_profile_shows_verified_qrs_and_keeps_its_heap(unit, record):
    pairing = unit.start()
    assert pairing.startswith(f"qrfleet://pair?device={unit.board.device_id}&code=")
    figures = measure(unit, _SHOWS)
    for name, value in figures.items():
        record(name, value)

    assert figures["verified"] and figures["read_back"], figures
    assert abs(figures["after_all"] - figures["after_first"]) <= 1024, figures
    assert "panel:" not in (unit.board.dir / "serial.log").read_text(errors="replace")


@pytest.mark.slow
@pytest.mark.parametrize("unit", ["esp32-2432s028:usb"], indirect=True)
def test_a_tethered_unit_with_the_largest_panel_shows_its_largest_qrs_and_keeps_its_heap(
    unit, record
):
    # Its bridge speaks WebSocket: the unit has no WebSocket code, so more heap than on Wi-Fi.
    unit.start()
    figures = measure(unit, _SHOWS // 5)
    for name, value in figures.items():
        record(name, value)
    assert figures["verified"] and figures["read_back"], figures
    assert abs(figures["after_all"] - figures["after_first"]) <= 1024, figures


@pytest.mark.slow
@pytest.mark.parametrize("unit", ["virtual-320x240", "esp32-2432s028"], indirect=True)
def test_payment_schemes_payloads_read_back_exactly_on_a_320x240_unit(unit):
    unit.start()
    for scheme, payload in SCHEME_PAYLOADS.items():
        doc = unit.show(payload, read_back=True)
        assert doc["verified"] and doc["read_back"], scheme


@pytest.mark.parametrize("unit", ["virtual-128x64"], indirect=True)
def test_a_payload_too_large_for_a_128x64_panel_is_refused_and_the_unit_stays_online(unit):
    unit.start()
    too_large = largest_payload("virtual-320x240")

    with pytest.raises(ApiClientError) as refused:
        unit.show(too_large)

    assert refused.value.status == 422 and refused.value.code == "payload_too_large"
    assert "this unit takes, for the largest QR its panel and memory show, at most 512 bytes" in (
        refused.value.message
    )
    fits = largest_payload("virtual-128x64")
    assert unit.show(fits, read_back=True)["read_back"]
