"""Board profiles: each builds its panel on the buses and pins the HAL hands out."""

import pytest

from firmware.display import profiles
from firmware.display.virtual import VirtualDisplay
from tests.firmware.display import recording


class BenchHal:
    """The four HAL calls profiles.build makes, answered with recording fakes."""

    def __init__(self):
        self.buses = []
        self.pins = {}
        self.wire = recording.Wire()
        self.frames = []

    def i2c(self, bus, scl, sda, freq):
        self.buses.append(("i2c", bus, {"scl": scl, "sda": sda, "freq": freq}))
        return recording.I2C(self.wire)

    def spi(self, bus, baudrate, polarity, phase, sck, mosi):
        self.buses.append(("spi", bus, {"baudrate": baudrate, "mode": polarity << 1 | phase,
                                        "sck": sck, "mosi": mosi}))  # fmt: skip
        return self

    def write(self, buf):  # the SPI bus: D/C and CS are checked in test_drivers
        self.wire.receive("D", buf)

    def pin(self, number):
        return self.pins.setdefault(number, recording.Pin())

    def show_frame(self, width, height, rows):
        self.frames.append((width, height, bytes(rows)))


PHYSICAL = {
    "ssd1306-i2c": ((128, 64), ("i2c", 0, {"scl": 22, "sda": 21, "freq": 400_000}), None),
    "ssd1306-spi": ((128, 64), ("spi", 2, {"baudrate": 8_000_000, "mode": 0, "sck": 18, "mosi": 23}), None),
    "ttgo-t-display": ((135, 240), ("spi", 1, {"baudrate": 40_000_000, "mode": 0, "sck": 18, "mosi": 19}), 4),
    "st7789-240": ((240, 240), ("spi", 2, {"baudrate": 40_000_000, "mode": 3, "sck": 18, "mosi": 23}), 4),
    "esp32-2432s028": ((320, 240), ("spi", 1, {"baudrate": 10_000_000, "mode": 0, "sck": 14, "mosi": 13}), 21),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(PHYSICAL))
def test_board_profile_builds_its_panel_on_its_bus_with_the_backlight_on(name):
    size, bus, backlight = PHYSICAL[name]
    hal = BenchHal()
    display = profiles.build(name, hal)
    assert (display.width, display.height) == size
    assert hal.buses == [bus]
    assert hal.wire.runs, "the panel was initialised"
    if backlight is not None:
        assert hal.pins[backlight].level == 1


@pytest.mark.parametrize("size", [(128, 64), (135, 240), (240, 240), (320, 240)])
def test_virtual_profiles_publish_each_frame_through_the_hal(size):
    hal = BenchHal()
    display = profiles.build(f"virtual-{size[0]}x{size[1]}", hal)
    assert isinstance(display, VirtualDisplay)
    display.pixel(0, 0, 1)
    display.show()
    rows = bytearray((size[0] + 7) // 8 * size[1])
    rows[0] = 0x80  # MONO_HLSB, as PBM: the first pixel is the top bit of the first byte
    assert hal.frames == [(*size, bytes(rows))]


def test_the_plain_unix_ports_screen_is_128x64():
    from firmware.hal import unix

    assert profiles.screen_size(unix.DISPLAY) == (128, 64)


def test_unknown_profile_is_refused_naming_the_known_ones():
    with pytest.raises(profiles.UnknownProfile) as refused:
        profiles.build("ttgo-t-display-s3", BenchHal())
    message = str(refused.value)
    assert "'ttgo-t-display-s3'" in message
    assert all(name in message for name in profiles.PROFILES)


NO_ALLOCATION_SNIPPET = """
import gc
from firmware.display.ssd1306 import SSD1306_I2C, SSD1306_SPI
from firmware.display.st7789 import ST7789
from firmware.display.ili9341 import ILI9341

class Sink:
    def write(self, buf): pass
    def writeto(self, addr, buf): pass
    def writevto(self, addr, bufs): pass

def pin(level): pass

def allocated_by(show):
    gc.collect()
    before = gc.mem_alloc()
    for _ in range(3):
        show()
    return gc.mem_alloc() - before

for display in (
    SSD1306_I2C(Sink()),
    SSD1306_SPI(Sink(), pin, pin, pin),
    ST7789(Sink(), pin, pin, pin, 135, 240, 52, 40, rotation=90),
    ILI9341(Sink(), pin, None, None, 240, 320, rotation=90),
):
    display.fill_rect(3, 3, 40, 40, 1)
    print(type(display).__name__, allocated_by(display.show))
"""


def test_sending_a_frame_allocates_nothing_on_the_unix_port(unix_port):
    out = unix_port(NO_ALLOCATION_SNIPPET)
    assert out.split() == ["SSD1306_I2C", "0", "SSD1306_SPI", "0", "ST7789", "0", "ILI9341", "0"]
