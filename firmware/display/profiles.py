"""Board profiles: which panel a board has, on which bus and pins, and how it is mounted.

The device config names a profile (DEFAULT when it names none); `build(name, hal)`
returns the ready display (panel initialised, cleared, backlight on). Only the chosen
driver module is imported, so a board does not spend RAM on the others. `build` needs
four things from the HAL, and nothing else:

    hal.i2c(bus, scl=, sda=, freq=)          -> machine.I2C-like: writeto, writevto
    hal.spi(bus, baudrate=, polarity=, phase=, sck=, mosi=)  -> machine.SPI-like: write
    hal.pin(number)                          -> an output pin, called as pin(0|1)
    hal.show_frame(width, height, rows)      virtual profiles: publish a MONO_HLSB frame

Pin numbers are ESP32 GPIOs. SPI clocks stay within each controller's datasheet write
cycle (ST7789 16 ns, ILI9341 100 ns; SSD1306 100 ns).
"""

# name: (panel, size, rotation in degrees, bus and pins). Size is (width, height) as the
# glass is mounted on the controller, and for ST7789/ILI9341 also its (x, y) offset in RAM.
PROFILES = {
    # Generic ESP32 board with a 0.96" SSD1306 module on the default I2C pins.
    "ssd1306-i2c": ("ssd1306-i2c", (128, 64), 0, {"bus": 0, "scl": 22, "sda": 21, "addr": 0x3C}),
    # The same module, SPI version (7 pins), on VSPI.
    "ssd1306-spi": (
        "ssd1306-spi",
        (128, 64),
        0,
        {"bus": 2, "baudrate": 8_000_000, "sck": 18, "mosi": 23, "dc": 16, "rst": 17, "cs": 5},
    ),
    # LilyGO TTGO T-Display: 1.14" ST7789 135x240 at RAM offset (52, 40), portrait.
    "ttgo-t-display": (
        "st7789",
        (135, 240, 52, 40),
        0,
        {
            "bus": 1,
            "baudrate": 40_000_000,
            "sck": 18,
            "mosi": 19,
            "dc": 16,
            "rst": 23,
            "cs": 5,
            "bl": 4,
        },
    ),
    # 1.3" ST7789 240x240 module without CS, which needs SPI mode 3, on VSPI.
    "st7789-240": (
        "st7789",
        (240, 240, 0, 0),
        0,
        {
            "bus": 2,
            "baudrate": 40_000_000,
            "polarity": 1,
            "phase": 1,
            "sck": 18,
            "mosi": 23,
            "dc": 16,
            "rst": 17,
            "bl": 4,
        },
    ),
    # ESP32-2432S028 "cheap yellow display": ILI9341 on HSPI, landscape 320x240; RST is tied to EN.
    "esp32-2432s028": (
        "ili9341",
        (240, 320, 0, 0),
        90,
        {"bus": 1, "baudrate": 10_000_000, "sck": 14, "mosi": 13, "dc": 2, "cs": 15, "bl": 21},
    ),
    # Virtual boards: the screen sizes of the physical panels, published via hal.show_frame.
    "virtual-128x64": ("virtual", (128, 64), 0, {}),
    "virtual-135x240": ("virtual", (135, 240), 0, {}),
    "virtual-240x240": ("virtual", (240, 240), 0, {}),
    "virtual-320x240": ("virtual", (320, 240), 0, {}),
}


class UnknownProfile(ValueError):
    pass


def screen_size(name):
    """(width, height) a profile's display draws at, once rotated."""
    _, size, rotation, _ = _profile(name)
    return (size[1], size[0]) if rotation in (90, 270) else (size[0], size[1])


def _profile(name):
    if name not in PROFILES:
        raise UnknownProfile(
            "unknown display profile %r: set display to one of %s"
            % (name, ", ".join(sorted(PROFILES)))
        )
    return PROFILES[name]


def build(name, hal):
    """The display for profile `name`, built on the buses and pins `hal` provides."""
    panel, size, rotation, bus = _profile(name)
    if panel == "virtual":
        from firmware.display.virtual import VirtualDisplay

        return VirtualDisplay(size[0], size[1], hal.show_frame)
    if panel == "ssd1306-i2c":
        from firmware.display.ssd1306 import SSD1306_I2C

        i2c = hal.i2c(bus["bus"], scl=bus["scl"], sda=bus["sda"], freq=400_000)
        return SSD1306_I2C(i2c, bus["addr"], size[0], size[1], rotation)
    spi = hal.spi(
        bus["bus"],
        baudrate=bus["baudrate"],
        polarity=bus.get("polarity", 0),
        phase=bus.get("phase", 0),
        sck=bus["sck"],
        mosi=bus["mosi"],
    )
    pins = [hal.pin(bus[key]) if key in bus else None for key in ("dc", "cs", "rst")]
    if panel == "ssd1306-spi":
        from firmware.display.ssd1306 import SSD1306_SPI

        return SSD1306_SPI(spi, *pins, width=size[0], height=size[1], rotation=rotation)
    if panel == "st7789":
        from firmware.display.st7789 import ST7789 as Panel
    else:
        from firmware.display.ili9341 import ILI9341 as Panel
    display = Panel(spi, *pins, *size, rotation=rotation)
    hal.pin(bus["bl"])(1)  # backlight on only now that the panel shows a cleared frame
    return display
