"""ST7789 TFT (240x240 modules, 135x240 on TTGO T-Display-style boards), SPI, RGB565.

The controller's RAM is 240x320; smaller glass sits at an offset in it (135x240: column 52,
row 40) which the profile gives for rotation 0 and `ColourPanel` mirrors for the others.
Init per the ST7789V datasheet (v1.6): SWRESET, then 120 ms before SLPOUT; SLPOUT, then
120 ms; COLMOD 0x55; INVON, because these IPS panels show true colours only inverted;
NORON. MADCTL per rotation: 0x00, MX|MV, MX|MY, MY|MV.
"""

from firmware.display.colour import COLMOD, INVON, NORON, SLPOUT, SWRESET, ColourPanel


class ST7789(ColourPanel):
    INIT = (
        (SWRESET, b"", 120),
        (SLPOUT, b"", 120),
        (COLMOD, b"\x55", 0),
        (INVON, b"", 0),
        (NORON, b"", 0),
    )
    MADCTL = (0x00, 0x60, 0xC0, 0xA0)
