"""Every screen on the virtual display at each panel size, read back by an independent
decoder (zxing-cpp) from the PBM the display wrote, in CPython and on the Unix port."""

import pytest
import zxingcpp
from PIL import Image, ImageOps

from firmware import qr
from firmware.display.render import PayloadTooLarge, Renderer, max_version
from firmware.display.virtual import PBMFile, VirtualDisplay
from firmware.proto.messages import pairing_uri
from tests.firmware.display.payloads import payload

PANELS = [(128, 64), (135, 240), (240, 240), (320, 240)]
ECC_LEVELS = "LMQH"
MODES = ("numeric", "alphanumeric", "byte", "utf8")


def largest(mode, width, height, ecc):
    """The longest payload of `mode` the panel shows at `ecc` (UTF-8 pays for its ECI header)."""
    version = max_version(width, height)
    if mode != "utf8":
        return qr.capacity(version, ecc, mode)
    length = qr.capacity(version, ecc, "byte")
    while True:
        try:
            return length if qr.encode(payload(mode, length), ecc, version).version else 0
        except qr.QRError:
            length -= 1


def edge_cases(width, height, ecc):
    """1, the middle and the largest length of every mode: [(mode, length)]."""
    cases = []
    for mode in MODES:
        most = largest(mode, width, height, ecc)
        cases += [(mode, n) for n in (1, most // 2, most)]
    return cases


def decode(path, scale):
    """What a scanner reads from the PBM: scaled up, framed by a dark bezel as on a real
    panel, decoded without trying inverted colours."""
    image = Image.open(path).convert("L")
    factor = max(1, 4 // scale)
    image = image.resize((image.width * factor, image.height * factor), Image.NEAREST)
    image = ImageOps.expand(image, border=10 * factor, fill=0)
    found = zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode, try_invert=False)
    return [(code.text, code.ec_level) for code in found]


@pytest.fixture
def screen(tmp_path):
    def make(width, height):
        return Renderer(VirtualDisplay(width, height, PBMFile(str(tmp_path / "display.pbm"))))

    return make


def panel_id(panel):
    return f"{panel[0]}x{panel[1]}"


# ---- payment QR, CPython


@pytest.mark.parametrize("ecc", ECC_LEVELS)
@pytest.mark.parametrize("panel", PANELS, ids=panel_id)
def test_payment_qr_decodes_to_the_payload_from_1_byte_to_the_largest(screen, panel, ecc):
    renderer = screen(*panel)
    for mode, length in edge_cases(*panel, ecc):
        data = payload(mode, length)
        drawn = renderer.payment(data, caption="12.50 EUR Counter 3", ecc=ecc)
        assert decode(renderer.display.publish.path, drawn.scale) == [(data, ecc)], (mode, length)


@pytest.mark.parametrize("panel", PANELS, ids=panel_id)
def test_one_byte_more_than_the_largest_is_refused_naming_what_fits(screen, panel):
    renderer = screen(*panel)
    for ecc in ECC_LEVELS:
        most = largest("byte", *panel, ecc)
        with pytest.raises(PayloadTooLarge) as refused:
            renderer.payment(payload("byte", most + 1), ecc=ecc)
        assert f"the largest it shows is {most} bytes" in str(refused.value)
        assert f"at ECC {ecc}" in str(refused.value)


def test_too_large_payload_leaves_the_previous_screen_intact(screen):
    renderer = screen(128, 64)
    renderer.payment("https://pay.example/t/123", caption="12.50 EUR")
    before = open(renderer.display.publish.path, "rb").read()
    framebuffer = bytes(renderer.display.buffer)
    with pytest.raises(PayloadTooLarge, match="shorten the payload or lower the ECC level"):
        renderer.payment(payload("byte", 500), caption="99.00 EUR")
    assert open(renderer.display.publish.path, "rb").read() == before
    assert bytes(renderer.display.buffer) == framebuffer
    assert decode(renderer.display.publish.path, 1) == [("https://pay.example/t/123", "M")]


def test_payload_beyond_any_qr_version_is_refused_the_same_way(screen):
    renderer = screen(320, 240)
    with pytest.raises(PayloadTooLarge, match="the largest it shows is 666 bytes"):
        renderer.payment(payload("byte", 5000), ecc="M")


@pytest.mark.parametrize("panel", PANELS, ids=panel_id)
def test_qr_gets_the_largest_module_size_centred_with_at_least_2_modules_quiet(screen, panel):
    width, height = panel
    renderer = screen(width, height)
    for data in ("1", payload("byte", 40), payload("byte", 120)):
        drawn = renderer.payment(data)
        size, scale = drawn.qr.size, drawn.scale
        assert (size + 4) * scale <= min(panel) < (size + 4) * (scale + 1)
        image = Image.open(renderer.display.publish.path).convert("L")
        left, top, right, bottom = ImageOps.invert(image).getbbox()
        margins = (left, top, width - right, height - bottom)
        assert min(margins) >= 2 * scale, margins
        assert abs(margins[0] - margins[2]) <= 1 and abs(margins[1] - margins[3]) <= 1


def test_caption_goes_where_it_costs_the_qr_nothing(screen):
    tall = screen(135, 240)
    drawn = tall.payment("https://pay.example/t/123", caption="12.50 EUR")
    image = Image.open(tall.display.publish.path).convert("1")
    qr_bottom = (240 - 8) // 2 + drawn.qr.size * drawn.scale  # generous: the QR sits higher
    assert any(image.getpixel((x, y)) == 0 for x in range(135) for y in range(qr_bottom, 240))


def test_drawn_reports_the_symbol_on_the_glass(screen):
    renderer = screen(240, 240)
    drawn = renderer.payment("https://pay.example/t/123", ecc="Q")
    assert drawn.screen == "payment"
    symbol = qr.encode("https://pay.example/t/123", "Q")
    assert (drawn.qr.version, drawn.qr.ecc, drawn.qr.mask) == (symbol.version, "Q", symbol.mask)
    assert drawn.qr.matrix == symbol.matrix


# ---- pairing, status, result


@pytest.mark.parametrize("panel", PANELS, ids=panel_id)
def test_pairing_qr_carries_the_device_and_code(screen, panel):
    renderer = screen(*panel)
    drawn = renderer.pairing("qf-a1b2c3d4e5f6", "483920")
    assert drawn.screen == "pairing"
    expected = "qrfleet://pair?device=qf-a1b2c3d4e5f6&code=483920"
    assert pairing_uri("qf-a1b2c3d4e5f6", "483920") == expected
    assert decode(renderer.display.publish.path, drawn.scale) == [(expected, "M")]


STATUS_SCREENS = [
    ("status", "unprovisioned", "qf-a1b2c3d4e5f6"),
    ("status", "booting", "qrfleet 0.1.0"),
    ("status", "wifi", "joining shop-guest"),
    ("status", "connecting", "ws://10.0.0.5:8080/ws/device"),
    ("status", "offline", "server unreachable: connection refused"),
    ("status", "ready", "Counter 3"),
    ("result", "paid", "12.50 EUR"),
    ("result", "cancelled", None),
    ("result", "expired", "ask the cashier for a new code"),
]


@pytest.mark.parametrize("panel", PANELS, ids=panel_id)
def test_status_and_result_screens_keep_their_text_inside_the_panel(screen, panel):
    width, height = panel
    renderer = screen(width, height)
    for kind, name, detail in STATUS_SCREENS:
        drawn = getattr(renderer, kind)(name, detail)
        assert drawn.screen == kind and drawn.qr is None
        image = ImageOps.invert(Image.open(renderer.display.publish.path).convert("L"))
        left, top, right, bottom = image.getbbox()
        if kind == "status":  # the result band spans the width on purpose
            assert left > 0 and right < width, (name, left, right)
        assert top > 0 and bottom < height, (name, top, bottom)


def test_unknown_status_names_the_known_ones(screen):
    with pytest.raises(
        ValueError,
        match="booting, bridge, clock, connecting, offline, ready, unprovisioned, untrusted, "
        "updating, wifi",
    ):
        screen(128, 64).status("rebooting")


# ---- the same on the MicroPython Unix port (heap 160K), decoded here

UNIX_SNIPPET = """
import os
from firmware.display.render import PayloadTooLarge, Renderer
from firmware.display.virtual import PBMFile, VirtualDisplay
from tests.firmware.display.payloads import payload
path = %r
renderer = Renderer(VirtualDisplay(%d, %d, PBMFile(path)))
for i, (mode, length) in enumerate(%r):
    try:
        print(renderer.payment(payload(mode, length), "12.50 EUR", %r).scale)
    except PayloadTooLarge as e:
        print(e)
    os.rename(path, path + str(i))
"""

KEEPS_SCREEN_SNIPPET = """
from firmware.display.render import PayloadTooLarge, Renderer
from firmware.display.virtual import PBMFile, VirtualDisplay
renderer = Renderer(VirtualDisplay(128, 64, PBMFile(%r)))
renderer.payment("https://pay.example/t/123")
try:
    renderer.payment("x" * 500)
except PayloadTooLarge as e:
    print(e)
"""


@pytest.mark.parametrize("ecc", ECC_LEVELS)
@pytest.mark.parametrize("panel", PANELS, ids=panel_id)
def test_unix_port_renders_the_same_decodable_qrs(unix_port, tmp_path, panel, ecc):
    # One unit renders every case in turn, as in service: the 160K heap must hold each
    # symbol, up to version 40, after the ones before it.
    cases = edge_cases(*panel, ecc)
    path = str(tmp_path / "display.pbm")
    scales = unix_port(UNIX_SNIPPET % (path, *panel, cases, ecc)).splitlines()
    for i, ((mode, length), scale) in enumerate(zip(cases, scales, strict=True)):
        assert scale.isdigit(), (mode, length, scale)
        assert decode(path + str(i), int(scale)) == [(payload(mode, length), ecc)], (mode, length)


def test_unix_port_keeps_the_previous_screen_when_a_payload_is_too_large(unix_port, tmp_path):
    path = str(tmp_path / "display.pbm")
    refused = unix_port(KEEPS_SCREEN_SNIPPET % path)
    assert refused.startswith("a payload of 500 bytes does not fit a 128x64 display at ECC M")
    assert decode(path, 1) == [("https://pay.example/t/123", "M")]
    assert not (tmp_path / "display.pbm.tmp").exists()


def test_a_unit_out_of_heap_keeps_its_screen_and_says_so(screen, monkeypatch):
    renderer = screen(240, 240)
    renderer.payment("https://pay.example/t/123")
    before = open(renderer.display.publish.path, "rb").read()

    def out_of_heap(data, ecc="M", version=None, mask=None, workspace=None):
        raise MemoryError("memory allocation failed, allocating 31329 bytes")

    monkeypatch.setattr(qr, "encode", out_of_heap)
    with pytest.raises(PayloadTooLarge, match="needs more memory than this unit has free"):
        renderer.payment(payload("byte", 2000))
    assert open(renderer.display.publish.path, "rb").read() == before
