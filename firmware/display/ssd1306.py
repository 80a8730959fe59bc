"""SSD1306 monochrome OLED (128x64), over I2C or SPI.

The framebuffer is the controller's own GDDRAM layout (MONO_VLSB: one byte = 8 rows of a
column, a "page"), so `show()` sends it as it is after setting a full-screen window in
horizontal addressing mode. The display runs inverted (0xA7): a set bit (INK) is an unlit
pixel, so a QR shows dark modules on a lit background, the way phone scanners expect.
Command values and the init order follow the SSD1306 datasheet (rev 1.1, section 9 and the
"software initialization" flow); precharge 0xF1 is the value modules with the internal
charge pump are run at.
"""

import framebuf

from firmware.compat import const
from firmware.display.bus import SPIBus

_SET_MEM_MODE = const(0x20)  # + 0x00: horizontal addressing
_SET_COL_ADDR = const(0x21)  # + start, end column
_SET_PAGE_ADDR = const(0x22)  # + start, end page
_SET_START_LINE = const(0x40)
_SET_CONTRAST = const(0x81)
_SET_CHARGE_PUMP = const(0x8D)  # + 0x14: enable
_SEG_REMAP = const(0xA0)  # | 1: column 127 drives SEG0
_ENTIRE_ON_RAM = const(0xA4)  # show the RAM, not all pixels on
_DISPLAY_INVERSE = const(0xA7)
_SET_MUX_RATIO = const(0xA8)
_DISPLAY_OFF = const(0xAE)
_DISPLAY_ON = const(0xAF)
_COM_SCAN = const(0xC0)  # | 8: scan COM[N-1] to COM0
_SET_DISPLAY_OFFSET = const(0xD3)
_SET_CLOCK_DIV = const(0xD5)
_SET_PRECHARGE = const(0xD9)
_SET_COM_PINS = const(0xDA)
_SET_VCOM_DESELECT = const(0xDB)


class SSD1306(framebuf.FrameBuffer):
    """Panel logic; a bus subclass supplies `write_cmd(byte)` and `write_data(buffer)`.

    rotation: 0 (pins at the top, as most modules are mounted) or 180.
    """

    def __init__(self, width=128, height=64, rotation=0):
        if rotation not in (0, 180):
            raise ValueError("SSD1306 rotation must be 0 or 180, not %r" % (rotation,))
        self.width = width
        self.height = height
        pages = height // 8
        self.buffer = bytearray(pages * width)
        super().__init__(self.buffer, width, height, framebuf.MONO_VLSB)
        flip = 0 if rotation else 1
        self._init_cmds = bytes(
            (
                _DISPLAY_OFF,
                _SET_MUX_RATIO, height - 1,
                _SET_DISPLAY_OFFSET, 0,
                _SET_START_LINE,
                _SEG_REMAP | flip,
                _COM_SCAN | flip << 3,
                _SET_COM_PINS, 0x12 if height == 64 else 0x02,
                _SET_CONTRAST, 0xFF,
                _SET_PRECHARGE, 0xF1,
                _SET_VCOM_DESELECT, 0x30,
                _ENTIRE_ON_RAM,
                _DISPLAY_INVERSE,
                _SET_CLOCK_DIV, 0x80,
                _SET_MEM_MODE, 0x00,
                _SET_CHARGE_PUMP, 0x14,
            )
        )  # fmt: skip
        self._window_cmds = bytes((_SET_COL_ADDR, 0, width - 1, _SET_PAGE_ADDR, 0, pages - 1))
        self.init_display()

    def init_display(self):
        for cmd in self._init_cmds:
            self.write_cmd(cmd)
        self.fill(0)
        self.show()
        self.write_cmd(_DISPLAY_ON)

    def show(self):
        window = self._window_cmds
        for i in range(len(window)):  # indexing: a bytes iterator would be an allocation
            self.write_cmd(window[i])
        self.write_data(self.buffer)


class SSD1306_I2C(SSD1306):
    """I2C: each transfer starts with a control byte, 0x00 = command, 0x40 = data."""

    def __init__(self, i2c, addr=0x3C, width=128, height=64, rotation=0):
        self.i2c = i2c
        self.addr = addr
        self._cmd = bytearray(2)  # [0x00, command]
        self._data = [b"\x40", None]  # writevto sends both without copying the frame
        super().__init__(width, height, rotation)

    def write_cmd(self, cmd):
        self._cmd[1] = cmd
        self.i2c.writeto(self.addr, self._cmd)

    def write_data(self, buf):
        self._data[1] = buf
        self.i2c.writevto(self.addr, self._data)


class SSD1306_SPI(SPIBus, SSD1306):
    def __init__(self, spi, dc, cs=None, rst=None, width=128, height=64, rotation=0):
        self.attach_spi(spi, dc, cs, rst)
        self.reset()
        super().__init__(width, height, rotation)
