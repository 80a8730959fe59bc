"""4-wire SPI command/data writes shared by the SPI panels (SSD1306_SPI, ST7789, ILI9341).

`SPIBus` is a mixin, as in micropython-lib's drivers: the panel class owns the framebuffer
and the command sequences, the bus overrides only `write_cmd`/`write_data`. The D/C pin
tells the controller which is which: low = command byte, high = parameters or pixels.
"""

from firmware.compat import sleep_ms


def _absent(value):
    """Stands in for a pin a board does not wire (CS tied low, RST tied to EN)."""


class SPIBus:
    def attach_spi(self, spi, dc, cs=None, rst=None):
        self.spi = spi
        self.dc = dc
        self.cs = cs or _absent
        self.rst = rst or _absent
        self._cmd = bytearray(1)
        self.cs(1)

    def reset(self):
        """Hardware reset: RST low for 10 ms, then 120 ms for the controller to come up."""
        if self.rst is _absent:
            return
        self.rst(1)
        sleep_ms(1)
        self.rst(0)
        sleep_ms(10)
        self.rst(1)
        sleep_ms(120)

    def write_cmd(self, cmd):
        self._cmd[0] = cmd
        self.dc(0)
        self.cs(0)
        self.spi.write(self._cmd)
        self.cs(1)

    def write_data(self, buf):
        self.dc(1)
        self.cs(0)
        self.spi.write(buf)
        self.cs(1)
