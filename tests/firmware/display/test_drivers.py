"""The drivers' byte streams against the controllers' datasheets, on a recording bus.

Checked here: the init sequence (commands, parameters, order), the address window for
each panel and rotation, and the pixel data of a known frame (a pixel in two opposite
corners). What the glass then shows (inversion, mirroring, BGR order, offsets of a
particular batch of modules) needs a real panel: see docs/displays.md.
"""

import pytest

from firmware.display.ili9341 import ILI9341
from firmware.display.ssd1306 import SSD1306_I2C, SSD1306_SPI
from firmware.display.st7789 import ST7789
from tests.firmware.display import recording
from tests.firmware.display.recording import expected

# SSD1306 datasheet rev 1.1, section 9 (command table), in the software-initialization order.
SSD1306_INIT = bytes.fromhex(
    "ae"  # display off
    "a83f"  # multiplex ratio 64
    "d300"  # display offset 0
    "40"  # start line 0
    "a1"  # segment remap: column 127 -> SEG0
    "c8"  # COM scan from COM63
    "da12"  # COM pins: alternative configuration, for 64 rows
    "81ff"  # contrast
    "d9f1"  # precharge
    "db30"  # VCOMH deselect level
    "a4"  # display follows RAM
    "a7"  # inverse: a set bit is a dark pixel
    "d580"  # clock divide / oscillator
    "2000"  # horizontal addressing
    "8d14"  # charge pump on
)
SSD1306_WINDOW = bytes.fromhex("21007f220007")  # columns 0..127, pages 0..7


def ssd1306_frame(*pixels):
    """GDDRAM bytes: page p, column x holds rows 8p..8p+7, bit 0 at the top."""
    frame = bytearray(128 * 8)
    for x, y in pixels:
        frame[(y // 8) * 128 + x] |= 1 << (y % 8)
    return bytes(frame)


def rgb565_frame(width, height, *pixels):
    """Big-endian RGB565 on the wire: white everywhere, black where the INK pixels are."""
    frame = bytearray(b"\xff" * (width * height * 2))
    for x, y in pixels:
        i = (y * width + x) * 2
        frame[i : i + 2] = b"\x00\x00"
    return bytes(frame)


def window(caset, raset):
    """CASET 0x2A / RASET 0x2B (start, end as 16-bit big-endian) then RAMWR 0x2C."""
    return [
        ("C", b"\x2a"),
        ("D", caset[0].to_bytes(2, "big") + caset[1].to_bytes(2, "big")),
        ("C", b"\x2b"),
        ("D", raset[0].to_bytes(2, "big") + raset[1].to_bytes(2, "big")),
        ("C", b"\x2c"),
    ]


def spi_wire():
    wire, dc, cs, rst = recording.Wire(), recording.Pin(), recording.Pin(1), recording.Pin()
    return wire, recording.SPI(wire, dc, cs), dc, cs, rst


# ---- SSD1306


SSD1306_BOOT = [("C", SSD1306_INIT + SSD1306_WINDOW), ("D", ssd1306_frame()), ("C", b"\xaf")]


def merged(*runs):
    """The dump of these runs once adjacent runs of one kind merge, as they do on the wire."""
    out = []
    for kind, data in runs:
        if out and out[-1][0] == kind:
            out[-1] = (kind, out[-1][1] + data)
        else:
            out.append((kind, data))
    return expected(*out)


def test_ssd1306_i2c_boots_with_the_datasheet_sequence_and_a_cleared_frame():
    wire = recording.Wire()
    SSD1306_I2C(recording.I2C(wire))
    assert wire.dump() == merged(*SSD1306_BOOT)


def test_ssd1306_spi_sends_the_same_stream_after_a_hardware_reset():
    wire, spi, dc, cs, rst = spi_wire()
    SSD1306_SPI(spi, dc, cs, rst)
    assert wire.dump() == merged(*SSD1306_BOOT)
    assert rst.level == 1 and cs.level == 1


@pytest.mark.parametrize("bus", ["i2c", "spi"])
def test_ssd1306_frame_goes_out_page_by_page_in_a_full_window(bus):
    if bus == "i2c":
        wire = recording.Wire()
        display = SSD1306_I2C(recording.I2C(wire))
    else:
        wire, spi, dc, cs, rst = spi_wire()
        display = SSD1306_SPI(spi, dc, cs, rst)
    wire.clear()
    display.pixel(0, 0, 1)
    display.pixel(127, 63, 1)
    display.show()
    assert wire.dump() == expected(("C", SSD1306_WINDOW), ("D", ssd1306_frame((0, 0), (127, 63))))


def test_ssd1306_rotated_180_flips_segment_and_com_scan():
    wire = recording.Wire()
    SSD1306_I2C(recording.I2C(wire), rotation=180)
    sent = wire.runs[0][1]
    assert sent[sent.index(0x40) + 1 : sent.index(0x40) + 3] == b"\xa0\xc0"


# ---- ST7789 and ILI9341 (MIPI DCS)

ST7789_INIT = [
    ("C", b"\x01"),  # SWRESET
    ("C", b"\x11"),  # SLPOUT
    ("C", b"\x3a"), ("D", b"\x55"),  # COLMOD: 16 bits per pixel
    ("C", b"\x21\x13"),  # INVON (IPS glass), NORON
]  # fmt: skip
ILI9341_INIT = [
    ("C", b"\x01"),  # SWRESET
    ("C", b"\x11"),  # SLPOUT
    ("C", b"\x3a"), ("D", b"\x55"),  # COLMOD (PIXSET): 16 bits per pixel
    ("C", b"\x13"),  # NORON
]  # fmt: skip


def colour_boot(init, madctl, caset, raset, width, height):
    runs = init + [("C", b"\x36"), ("D", bytes([madctl]))] + window(caset, raset)
    runs.append(("D", rgb565_frame(width, height)))
    runs.append(("C", b"\x29"))  # DISPON, once RAM is cleared
    return runs


# (profile-like setup, rotation) -> MADCTL, CASET, RASET, visible size.
# The 135x240 offsets per rotation are the ones TFT_eSPI uses for the T-Display's panel.
COLOUR_CASES = {
    "st7789-240x240-r0": (ST7789, (240, 240, 0, 0), 0, 0x00, (0, 239), (0, 239), (240, 240)),
    "st7789-240x240-r180": (ST7789, (240, 240, 0, 0), 180, 0xC0, (0, 239), (80, 319), (240, 240)),
    "st7789-135x240-r0": (ST7789, (135, 240, 52, 40), 0, 0x00, (52, 186), (40, 279), (135, 240)),
    "st7789-135x240-r90": (ST7789, (135, 240, 52, 40), 90, 0x60, (40, 279), (53, 187), (240, 135)),
    "st7789-135x240-r180": (
        ST7789,
        (135, 240, 52, 40),
        180,
        0xC0,
        (53, 187),
        (40, 279),
        (135, 240),
    ),
    "st7789-135x240-r270": (
        ST7789,
        (135, 240, 52, 40),
        270,
        0xA0,
        (40, 279),
        (52, 186),
        (240, 135),
    ),
    "ili9341-r90": (ILI9341, (240, 320, 0, 0), 90, 0x28, (0, 319), (0, 239), (320, 240)),
    "ili9341-r0": (ILI9341, (240, 320, 0, 0), 0, 0x48, (0, 239), (0, 319), (240, 320)),
}


def build_colour(case):
    panel, geometry, rotation = COLOUR_CASES[case][:3]
    wire, spi, dc, cs, rst = spi_wire()
    return wire, panel(spi, dc, cs, rst, *geometry, rotation=rotation)


@pytest.mark.parametrize("case", sorted(COLOUR_CASES))
def test_colour_panel_boots_with_the_datasheet_sequence_and_a_white_screen(case):
    panel, _, _, madctl, caset, raset, (width, height) = COLOUR_CASES[case]
    wire, display = build_colour(case)
    init = ST7789_INIT if panel is ST7789 else ILI9341_INIT
    assert (display.width, display.height) == (width, height)
    assert wire.dump() == merged(*colour_boot(init, madctl, caset, raset, width, height))


@pytest.mark.parametrize("case", ["st7789-135x240-r90", "ili9341-r90"])
def test_colour_panel_frame_is_black_ink_on_white_in_its_window(case):
    _, _, _, _, caset, raset, (width, height) = COLOUR_CASES[case]
    wire, display = build_colour(case)
    wire.clear()
    display.pixel(0, 0, 1)
    display.pixel(width - 1, height - 1, 1)
    display.show()
    frame = rgb565_frame(width, height, (0, 0), (width - 1, height - 1))
    assert wire.dump() == expected(*window(caset, raset), ("D", frame))


def test_a_rotation_that_is_not_a_right_angle_is_refused():
    wire, spi, dc, cs, rst = spi_wire()
    with pytest.raises(ValueError, match="0, 90, 180 or 270"):
        ST7789(spi, dc, cs, rst, 240, 240, rotation=45)


# ---- the same streams from the real framebuf on the Unix port

UNIX_SNIPPET = """
from tests.firmware.display import recording
from firmware.display.ssd1306 import SSD1306_I2C
from firmware.display.st7789 import ST7789
from firmware.display.ili9341 import ILI9341
wire = recording.Wire()
d = SSD1306_I2C(recording.I2C(wire))
d.pixel(0, 0, 1); d.pixel(127, 63, 1); d.show()
print(wire.dump()); print("--")
for panel, geometry, rotation in (
    (ST7789, (135, 240, 52, 40), 90), (ILI9341, (240, 320, 0, 0), 90)
):
    wire, dc, cs = recording.Wire(), recording.Pin(), recording.Pin(1)
    d = panel(recording.SPI(wire, dc, cs), dc, cs, recording.Pin(), *geometry, rotation=rotation)
    d.pixel(0, 0, 1); d.pixel(d.width - 1, d.height - 1, 1); d.show()
    print(wire.dump()); print("--")
"""


def test_unix_port_drivers_send_the_same_streams(unix_port):
    dumps = unix_port(UNIX_SNIPPET).split("--\n")[:3]
    assert len(dumps) == 3
    frame = [("C", SSD1306_WINDOW), ("D", ssd1306_frame((0, 0), (127, 63)))]
    assert dumps[0].strip() == merged(*SSD1306_BOOT, *frame)
    for dump, case, init in zip(
        dumps[1:], ("st7789-135x240-r90", "ili9341-r90"), (ST7789_INIT, ILI9341_INIT), strict=True
    ):
        _, _, _, madctl, caset, raset, (width, height) = COLOUR_CASES[case]
        frame = rgb565_frame(width, height, (0, 0), (width - 1, height - 1))
        boot = colour_boot(init, madctl, caset, raset, width, height)
        assert dump.strip() == merged(*boot, *window(caset, raset), ("D", frame))
