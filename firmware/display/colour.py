"""Colour TFT panels driven through MIPI DCS commands (ST7789, ILI9341), black and white.

The frame lives in RAM as MONO_HLSB (INK/PAPER, 1 bit a pixel: 9.6 KB at 320x240 instead
of 150 KB of RGB565) and `show()` expands it while sending: `blit` with a two-entry
palette turns a band of rows into RGB565 (PAPER -> 0xFFFF white, INK -> 0x0000 black) in
one preallocated buffer, so a frame costs no allocation and no Python loop per pixel.
Black and white are the same in either byte order, which is why the RGB565 buffer
(little-endian in framebuf) can go to the panel (big-endian on the wire) unswapped.

Addressing (DCS 1.02, same values in both datasheets): CASET 0x2A and RASET 0x2B take
start and end as 16-bit big-endian, RAMWR 0x2C streams pixels into that window.
"""

import framebuf

from firmware.compat import const, sleep_ms
from firmware.display import INK, PAPER
from firmware.display.bus import SPIBus

SWRESET = const(0x01)
SLPOUT = const(0x11)
NORON = const(0x13)
INVON = const(0x21)
DISPON = const(0x29)
COLMOD = const(0x3A)  # + 0x55: 16 bits per pixel, RGB565
_CASET = const(0x2A)
_RASET = const(0x2B)
_RAMWR = const(0x2C)
_MADCTL = const(0x36)
_MADCTL_MY = const(0x80)  # mirror the 320-row direction of the controller's RAM
_MADCTL_MX = const(0x40)  # mirror the 240-column direction
_MADCTL_MV = const(0x20)  # exchange rows and columns (landscape)
_RAM_COLUMNS = const(240)
_RAM_ROWS = const(320)
_BAND_ROWS = const(2)


class ColourPanel(SPIBus, framebuf.FrameBuffer):
    """A panel of `width` x `height` (portrait, as mounted on the controller's RAM) at
    (x_offset, y_offset) in that RAM, shown at `rotation` 0/90/180/270 degrees.

    Subclasses give INIT: (command, parameters, wait ms) run after reset, and MADCTL: the
    memory-access byte for each rotation.
    """

    INIT = ()
    MADCTL = (0, 0, 0, 0)

    def __init__(self, spi, dc, cs, rst, width, height, x_offset=0, y_offset=0, rotation=0):
        if rotation not in (0, 90, 180, 270):
            raise ValueError("rotation must be 0, 90, 180 or 270 degrees, not %r" % (rotation,))
        self.attach_spi(spi, dc, cs, rst)
        madctl = self.MADCTL[rotation // 90]
        # Where the visible window starts in RAM once MADCTL mirrors and swaps the axes.
        col = _RAM_COLUMNS - width - x_offset if madctl & _MADCTL_MX else x_offset
        row = _RAM_ROWS - height - y_offset if madctl & _MADCTL_MY else y_offset
        if madctl & _MADCTL_MV:
            width, height, col, row = height, width, row, col
        self.width = width
        self.height = height
        self.buffer = bytearray((width + 7) // 8 * height)
        super().__init__(self.buffer, width, height, framebuf.MONO_HLSB)
        self._caset = bytes(
            (col >> 8, col & 0xFF, (col + width - 1) >> 8, (col + width - 1) & 0xFF)
        )
        self._raset = bytes(
            (row >> 8, row & 0xFF, (row + height - 1) >> 8, (row + height - 1) & 0xFF)
        )
        band = bytearray(width * 2 * _BAND_ROWS)
        self._band = framebuf.FrameBuffer(band, width, _BAND_ROWS, framebuf.RGB565)
        self._band_bytes = band
        tail = height % _BAND_ROWS
        self._tail_bytes = memoryview(band)[: width * 2 * tail] if tail else band
        self._palette = framebuf.FrameBuffer(bytearray(4), 2, 1, framebuf.RGB565)
        self._palette.pixel(PAPER, 0, 0xFFFF)
        self._palette.pixel(INK, 0, 0x0000)
        self._madctl = bytes((madctl,))
        self.init_display()

    def init_display(self):
        self.reset()
        for cmd, params, wait_ms in self.INIT:
            self.write_cmd(cmd)
            if params:
                self.write_data(params)
            if wait_ms:
                sleep_ms(wait_ms)
        self.write_cmd(_MADCTL)
        self.write_data(self._madctl)
        self.fill(PAPER)
        self.show()  # RAM holds noise after reset: clear it before the panel shows it
        self.write_cmd(DISPON)

    def show(self):
        self.write_cmd(_CASET)
        self.write_data(self._caset)
        self.write_cmd(_RASET)
        self.write_data(self._raset)
        self.write_cmd(_RAMWR)
        full = self.height - self.height % _BAND_ROWS
        for y in range(0, self.height, _BAND_ROWS):
            self._band.blit(self, 0, -y, -1, self._palette)
            self.write_data(self._band_bytes if y < full else self._tail_bytes)
